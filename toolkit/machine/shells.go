package machine

import (
	"context"

	"github.com/vmscript/vmscript/toolkit/shell"
)

// Login logs in on the guest's serial getty and returns the command
// channel (see shell.Login); the run defaults to the machine's.
func (m *Machine) Login(ctx context.Context, opt shell.LoginOptions) (*shell.Shell, error) {
	if opt.Run == nil {
		opt.Run = m.run
	}
	return shell.Login(ctx, m.Console, opt)
}

// Shell takes over a shell already at its prompt on the serial console (the
// mini lab, an emergency shell, a fork of a guest checkpointed at a
// prompt; see shell.Attach).
func (m *Machine) Shell(ctx context.Context, opt shell.Options) (*shell.Shell, error) {
	if opt.Run == nil {
		opt.Run = m.run
	}
	return shell.Attach(ctx, m.Console, opt)
}

// ResumeShell resumes the serial command channel on a fork. The guest's
// shell is still at the prompt it showed at the checkpoint, but the fork's
// console is a fresh socket on which nothing has been printed: it presses
// Enter (a fresh prompt, and a line ending for a half-typed line) and takes
// the shell over. A shell of the original machine must not be used on the
// fork: it is bound to the original's console.
func (m *Machine) ResumeShell(ctx context.Context, opt shell.Options) (*shell.Shell, error) {
	if err := m.Console.Send(ctx, "\r"); err != nil {
		return nil, err
	}
	return m.Shell(ctx, opt)
}
