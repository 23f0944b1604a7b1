package checkpoint

import (
	"context"

	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/shell"
)

// AttachShell resumes the serial command channel on a fork. The guest's
// shell is still at the prompt it showed at the checkpoint, but the fork's
// console is a fresh socket on which nothing has been printed: AttachShell
// presses Enter (a fresh prompt, and a line ending for a half-typed line)
// and takes the shell over with shell.Attach, which types its setup again
// (harmless in a shell that already had it) and waits for its ready
// marker. A Shell of the original machine must not be used on the fork: it
// is bound to the original's console.
func AttachShell(ctx context.Context, fork *machine.Machine, opt shell.Options) (*shell.Shell, error) {
	if opt.Run == nil {
		opt.Run = fork.Config.Run
	}
	if err := fork.Console.Send(ctx, "\r"); err != nil {
		return nil, err
	}
	return shell.Attach(ctx, fork.Console, opt)
}
