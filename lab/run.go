package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// killGrace is how long a cancelled tool has between SIGTERM and SIGKILL.
const killGrace = 5 * time.Second

// tool runs a host tool. Its stdout is returned; stderr goes to the log and,
// on failure, is quoted in the error. Cancelling ctx kills the tool's whole
// process group; the tool also dies with us (Pdeathsig).
type tool struct {
	ctx   context.Context
	log   io.Writer
	dir   string
	env   []string
	stdin io.Reader
	// stdout, if set, receives stdout instead of the returned buffer.
	stdout io.Writer
	// logOut copies stdout to the log too (for chatty tools, not for
	// tools whose stdout is data).
	logOut bool
}

func (t tool) run(name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(t.ctx, name, args...)
	cmd.Dir = t.dir
	if t.env != nil {
		cmd.Env = append(os.Environ(), t.env...)
	}
	cmd.Stdin = t.stdin
	var out, errb bytes.Buffer
	log := t.log
	if log == nil {
		log = io.Discard
	}
	switch {
	case t.stdout != nil:
		cmd.Stdout = t.stdout
	case t.logOut:
		cmd.Stdout = io.MultiWriter(&out, log)
	default:
		cmd.Stdout = &out
	}
	cmd.Stderr = io.MultiWriter(&errb, log)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// On cancel: SIGTERM to the whole group first (mmdebstrap unmounts and
	// removes its chroot on TERM), SIGKILL to the group a few seconds later.
	cmd.Cancel = func() error {
		pid := cmd.Process.Pid
		syscall.Kill(-pid, syscall.SIGTERM)
		time.AfterFunc(killGrace, func() { syscall.Kill(-pid, syscall.SIGKILL) })
		return nil
	}
	cmd.WaitDelay = killGrace + 5*time.Second
	fmt.Fprintf(log, "+ %s %s\n", name, strings.Join(args, " "))
	err := cmd.Run()
	if err != nil {
		if ctxErr := t.ctx.Err(); ctxErr != nil {
			return out.Bytes(), fmt.Errorf("%s: %w", name, ctxErr)
		}
		return out.Bytes(), &toolError{cmd: name + " " + strings.Join(args, " "), err: err, stderr: errb.String()}
	}
	return out.Bytes(), nil
}

// toolError is a failed tool run with its stderr.
type toolError struct {
	cmd    string
	err    error
	stderr string
}

func (e *toolError) Error() string {
	cmd := e.cmd
	if len(cmd) > 300 {
		cmd = cmd[:300] + "…"
	}
	s := strings.TrimSpace(e.stderr)
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	if s == "" {
		return fmt.Sprintf("%s: %v", cmd, e.err)
	}
	return fmt.Sprintf("%s: %v; stderr: %q", cmd, e.err, s)
}

func (e *toolError) Unwrap() error { return e.err }
