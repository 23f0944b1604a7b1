// Package command is the one interface for running a command in a guest,
// whatever carries it — the serial shell, SSH, later the guest agent — and
// the helpers every caller would otherwise write again on top of it:
// run-and-check, wait until a command succeeds, poll until its result says
// so (labgrid's CommandProtocol and CommandMixin are the model).
//
//	r, err := command.Check(ctx, runner, "systemctl is-active sshd", command.Options{})
//	_, err = command.WaitUntil(ctx, runner, "test -e /run/ready", command.Options{}, time.Second)
package command

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Options tune one command.
type Options struct {
	// Timeout bounds the command (wall clock); 0 means the channel's default.
	Timeout time.Duration
	// Stdin is the command's standard input; nil means none. Channels that
	// cannot pass one (the serial shell) refuse a non-nil Stdin.
	Stdin io.Reader
	// Env sets environment variables for the command. Channels that cannot
	// (the serial shell) refuse a non-empty Env.
	Env map[string]string
	// Exact asks for stdout and stderr byte for byte, apart, whatever else
	// writes to the channel (kernel messages on a serial console). SSH is
	// always exact; the serial shell then runs the command with its output
	// in files and fetches them checked (the command's stdout is a file,
	// not the terminal).
	Exact bool
}

// Result is a finished command, the same shape on every channel.
type Result struct {
	// Output is what the command printed as a person reads it: on the
	// serial shell the console text (stdout and stderr interleaved,
	// ANSI-stripped, "\r\n" read as "\n"); over SSH stdout, then stderr.
	Output string `json:"output"`
	// Stdout is the command's standard output; on the serial shell, which
	// cannot tell the streams apart, the same as Output.
	Stdout string `json:"stdout"`
	// Stderr is the command's standard error ("" on the serial shell).
	Stderr string `json:"stderr"`
	// Code is the exit status; 128+n when killed by signal n, -1 when the
	// command did not finish or no status came back.
	Code int `json:"code"`
	// Signal names the signal that killed the command ("TERM"), or "".
	Signal string `json:"signal,omitempty"`
	// Duration is the command's wall time.
	Duration time.Duration `json:"duration"`
}

// Combined returns stdout followed by stderr, on a line of its own when
// stdout does not end one: Output for channels with separate streams.
func Combined(stdout, stderr string) string {
	if stderr == "" {
		return stdout
	}
	if stdout != "" && !strings.HasSuffix(stdout, "\n") {
		stdout += "\n"
	}
	return stdout + stderr
}

// Runner runs commands in a guest. A non-zero exit is a Result, not an
// error; errors are the channel's (a timeout, a VM that exited, a lost
// connection), as *vmerr.Error.
type Runner interface {
	Run(ctx context.Context, cmd string, opt Options) (Result, error)
	// Channel names what carries the commands: "serial", "ssh", "agent".
	Channel() string
}

// Test runs cmd and reports whether it exited 0; errors of the channel
// are returned, not counted as false.
func Test(ctx context.Context, r Runner, cmd string, opt Options) (bool, error) {
	res, err := r.Run(ctx, cmd, opt)
	if err != nil {
		return false, err
	}
	return res.Code == 0, nil
}

// Check runs cmd and fails with kind "failed" when it exits non-zero; the
// error carries the command, its exit code and output.
func Check(ctx context.Context, r Runner, cmd string, opt Options) (Result, error) {
	res, err := r.Run(ctx, cmd, opt)
	if err != nil || res.Code == 0 {
		return res, err
	}
	out := strings.TrimSpace(res.Output)
	if len(out) > 400 {
		out = "…" + out[len(out)-400:]
	}
	return res, vmerr.New(vmerr.Failed, "%s: `%s` exited %d: %s", r.Channel(), cmd, res.Code, out).
		With("command", cmd).With("code", res.Code).With("output", res.Output)
}

// Poll runs cmd every interval until done(result) says so, and returns that
// result. Channel errors end it at once, and so does ctx: on its deadline
// the error (kind "timeout") names the command, the number of tries and the
// last result.
func Poll(ctx context.Context, r Runner, cmd string, opt Options, interval time.Duration, done func(Result) bool) (Result, error) {
	start := time.Now()
	var last Result
	for tries := 1; ; tries++ {
		res, err := r.Run(ctx, cmd, opt)
		if err != nil {
			if ctx.Err() != nil {
				return last, pollErr(ctx, r, cmd, tries-1, start, last)
			}
			return res, err
		}
		if done(res) {
			return res, nil
		}
		last = res
		select {
		case <-ctx.Done():
			return last, pollErr(ctx, r, cmd, tries, start, last)
		case <-time.After(interval):
		}
	}
}

// WaitUntil runs cmd every interval until it exits 0 (Poll on the exit code).
func WaitUntil(ctx context.Context, r Runner, cmd string, opt Options, interval time.Duration) (Result, error) {
	return Poll(ctx, r, cmd, opt, interval, func(res Result) bool { return res.Code == 0 })
}

func pollErr(ctx context.Context, r Runner, cmd string, tries int, start time.Time, last Result) error {
	out := strings.TrimSpace(last.Output)
	if len(out) > 200 {
		out = "…" + out[len(out)-200:]
	}
	return vmerr.New(vmerr.DoneKind(ctx), "%s: `%s` did not succeed in %.1fs (%d tries; last exit %d: %q)",
		r.Channel(), cmd, time.Since(start).Seconds(), tries, last.Code, out).
		With("command", cmd).With("tries", tries).With("code", last.Code).With("output", last.Output)
}
