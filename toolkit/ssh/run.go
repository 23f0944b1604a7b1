package ssh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	gossh "golang.org/x/crypto/ssh"
)

// RunOptions tune one command (command.Options: Stdin, Env, Timeout — 0
// means DefaultRunTimeout). Env is exported by a prefix to the command line
// (`export K='v';`), since servers refuse most SSH "env" requests (OpenSSH's
// AcceptEnv, dropbear).
type RunOptions = command.Options

// Result is what a command did (command.Result): Stdout and Stderr, Output
// the two one after the other; Code 128+n when killed by signal n, -1 when
// the server reported none (connection lost, command timed out); Signal the
// signal that killed it ("TERM", "KILL").
type Result = command.Result

// Channel implements command.Runner: commands go over SSH.
func (c *Client) Channel() string { return "ssh" }

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// lockedBuffer collects one stream and copies it to the transcript.
type lockedBuffer struct {
	mu  *sync.Mutex
	buf bytes.Buffer
	tr  io.Writer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.tr != nil {
		_, _ = b.tr.Write(p)
	}
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Run runs cmd through the server's shell and returns its output and exit
// status; a non-zero exit is not an error. The output is streamed to the
// transcript as it arrives. A command that overruns its timeout is sent
// SIGTERM, given SignalGrace to exit, then its session is closed; the error
// is kind "timeout" with the partial output in its context ("stdout",
// "stderr") and in the returned Result.
func (c *Client) Run(ctx context.Context, cmd string, opt RunOptions) (Result, error) {
	return c.run(ctx, cmd, opt, nil)
}

// run is Run; a non-nil stdoutTo receives stdout instead of Result.Stdout
// and the transcript (file copies through cat).
func (c *Client) run(ctx context.Context, cmd string, opt RunOptions, stdoutTo io.Writer) (Result, error) {
	res := Result{Code: -1}
	full, err := withEnv(cmd, opt.Env)
	if err != nil {
		return res, err
	}
	nonce := newNonce()
	full = "export " + NonceVar + "=" + nonce + "; " + full
	conn, err := c.connection()
	if err != nil {
		return res, err
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultRunTimeout
	}
	x := c.newExecution(cmd, timeout)
	sess, err := x.startSession(ctx, conn, full, opt.Stdin, stdoutTo)
	if err != nil {
		return x.finish(res, err)
	}
	defer sess.Close()
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return x.finish(exitResult(res, err, c, cmd))
	case <-timer.C:
		res := c.interrupt(sess, done, res, cmd, nonce)
		e := c.ctxFields(vmerr.New(vmerr.Timeout, "ssh %s: command %q did not finish within %s; sent SIGTERM", c.cfg.Name, abbreviate(cmd, 80), timeout))
		return x.finish(res, e.With("waited_s", time.Since(x.start).Seconds()))
	case <-ctx.Done():
		res := c.interrupt(sess, done, res, cmd, nonce)
		kind := vmerr.Cancelled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			kind = vmerr.Timeout
		}
		e := c.ctxFields(vmerr.Wrap(kind, context.Cause(ctx), "ssh %s: command %q interrupted after %.1fs; sent SIGTERM", c.cfg.Name, abbreviate(cmd, 80), time.Since(x.start).Seconds()))
		return x.finish(res, e.With("waited_s", time.Since(x.start).Seconds()))
	}
}

// execution is one command of Run: its number, its output buffers (copied
// to the transcript as they fill) and its start.
type execution struct {
	c      *Client
	cmd    string
	seq    int
	start  time.Time
	tr     io.Writer
	trMu   sync.Mutex
	stdout *lockedBuffer
	stderr *lockedBuffer
}

// newExecution records a command's start in the timeline and transcript.
func (c *Client) newExecution(cmd string, timeout time.Duration) *execution {
	x := &execution{c: c, cmd: cmd, seq: c.nextSeq(), start: time.Now(), tr: c.transcriptWriter()}
	x.stdout = &lockedBuffer{mu: &x.trMu, tr: x.tr}
	x.stderr = &lockedBuffer{mu: &x.trMu, tr: x.tr}
	if x.tr != nil {
		x.trMu.Lock()
		fmt.Fprintf(x.tr, "\n### %s #%d [%s] $ %s\n", c.cfg.Name, x.seq, x.start.Format("15:04:05.000"), cmd)
		x.trMu.Unlock()
	}
	c.event("run", map[string]any{"n": x.seq, "cmd": cmd, "timeout_s": timeout.Seconds()})
	return x
}

// startSession opens a session and starts the command. A session whose exec
// request fails (dropbear sometimes closes a new channel at once, right
// after a refused SFTP subsystem) is retried once on a fresh channel;
// nothing ran, so this is safe.
func (x *execution) startSession(ctx context.Context, conn *gossh.Client, full string, stdin io.Reader, stdoutTo io.Writer) (*gossh.Session, error) {
	c := x.c
	for attempt := 1; ; attempt++ {
		sess, err := c.newSession(ctx, conn)
		if err != nil {
			return nil, err
		}
		sess.Stdout = x.stdout
		if stdoutTo != nil {
			sess.Stdout = stdoutTo
		}
		sess.Stderr = x.stderr
		if stdin != nil {
			sess.Stdin = stdin
		}
		err = sess.Start(full)
		if err == nil {
			return sess, nil
		}
		sess.Close()
		if attempt == 2 || ctx.Err() != nil {
			return nil, c.ctxFields(vmerr.Wrap(vmerr.IO, err, "ssh %s: starting %q", c.cfg.Name, abbreviate(x.cmd, 80)))
		}
		c.event("exec-retry", map[string]any{"n": x.seq, "error": err.Error()})
	}
}

// finish completes the result with the output, records the end in the
// timeline and the transcript, and adds the output to an error.
func (x *execution) finish(res Result, err error) (Result, error) {
	c := x.c
	res.Stdout, res.Stderr = x.stdout.String(), x.stderr.String()
	res.Output = command.Combined(res.Stdout, res.Stderr)
	res.Duration = time.Since(x.start)
	f := map[string]any{"n": x.seq, "code": res.Code, "duration_s": res.Duration.Seconds(),
		"stdout_bytes": len(res.Stdout), "stderr_bytes": len(res.Stderr)}
	if res.Signal != "" {
		f["signal"] = res.Signal
	}
	if err != nil {
		f["error"] = err.Error()
		f["kind"] = vmerr.KindOf(err)
	}
	c.event("exit", f)
	if x.tr != nil {
		x.trMu.Lock()
		tail := ""
		if err != nil {
			tail = " error: " + vmerr.KindOf(err)
		}
		if !strings.HasSuffix(res.Stdout+res.Stderr, "\n") && len(res.Stdout)+len(res.Stderr) > 0 {
			x.tr.Write([]byte("\n"))
		}
		fmt.Fprintf(x.tr, "### #%d exit %d%s (%.3fs)%s\n", x.seq, res.Code, sigSuffix(res.Signal), res.Duration.Seconds(), tail)
		x.trMu.Unlock()
	}
	if ve, ok := err.(*vmerr.Error); ok {
		ve.With("stdout", res.Stdout).With("stderr", res.Stderr).With("cmd", x.cmd)
	}
	return res, err
}

// NonceVar is exported to every command with a value unique to it, so a
// timed-out command can be found and killed on servers that refuse SSH
// signal requests (OpenSSH refuses them for root logins, which run without
// privilege separation).
const NonceVar = "VMSCRIPT_RUN"

// interrupt ends a command: an SSH signal request for SIGTERM, or, when the
// server refuses it, SIGTERM to every process carrying the command's nonce;
// after SignalGrace SIGKILL the same way, then the session is closed.
func (c *Client) interrupt(sess *gossh.Session, done chan error, res Result, cmd, nonce string) Result {
	wait := func() (Result, bool) {
		t := time.NewTimer(SignalGrace)
		defer t.Stop()
		select {
		case err := <-done:
			r, _ := exitResult(res, err, c, cmd)
			return r, true
		case <-t.C:
			return res, false
		}
	}
	how := "ssh-signal"
	if !signalRequest(sess, "TERM") {
		how = "kill-by-nonce"
		c.killByNonce(nonce, "TERM")
	}
	c.event("signal", map[string]any{"signal": "TERM", "method": how, "nonce": nonce})
	if r, ok := wait(); ok {
		return r
	}
	c.killByNonce(nonce, "KILL")
	c.event("signal", map[string]any{"signal": "KILL", "method": "kill-by-nonce", "nonce": nonce})
	if r, ok := wait(); ok {
		return r
	}
	sess.Close()
	select {
	case <-done:
	case <-time.After(SignalGrace):
	}
	return res
}

// signalRequest sends an SSH "signal" request and reports whether the server
// accepted it.
func signalRequest(sess *gossh.Session, sig string) bool {
	ch := make(chan bool, 1)
	go func() {
		ok, err := sess.SendRequest("signal", true, gossh.Marshal(struct{ Signal string }{sig}))
		ch <- ok && err == nil
	}()
	select {
	case ok := <-ch:
		return ok
	case <-time.After(SignalGrace):
		return false
	}
}

// killByNonce sends sig to every process whose environment holds the
// command's nonce, through a second session (Linux /proc, POSIX sh and grep,
// which busybox has).
func (c *Client) killByNonce(nonce, sig string) {
	conn, err := c.connection()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := c.newSession(ctx, conn)
	if err != nil {
		return
	}
	defer sess.Close()
	// One grep over every environ (the nonce is unique, so a substring
	// match is exact enough); a loop forking per process is slow under TCG.
	script := fmt.Sprintf(`for f in $(grep -l '%s=%s' /proc/[0-9]*/environ 2>/dev/null); do p=${f#/proc/}; kill -%s ${p%%/environ} 2>/dev/null; done; true`, NonceVar, nonce, sig)
	done := make(chan struct{})
	go func() {
		_ = sess.Run(script)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

func newNonce() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func exitResult(res Result, err error, c *Client, cmd string) (Result, error) {
	if err == nil {
		res.Code = 0
		return res, nil
	}
	var ee *gossh.ExitError
	if errors.As(err, &ee) {
		res.Code = ee.ExitStatus()
		res.Signal = ee.Signal()
		return res, nil
	}
	var me *gossh.ExitMissingError
	if errors.As(err, &me) {
		return res, c.ctxFields(vmerr.Wrap(vmerr.IO, err, "ssh %s: command %q ended without an exit status (connection lost?)", c.cfg.Name, abbreviate(cmd, 80)))
	}
	return res, c.ctxFields(vmerr.Wrap(vmerr.IO, err, "ssh %s: command %q", c.cfg.Name, abbreviate(cmd, 80)))
}

func sigSuffix(sig string) string {
	if sig == "" {
		return ""
	}
	return " signal " + sig
}

// withEnv prefixes cmd with exports of env, sorted by name.
func withEnv(cmd string, env map[string]string) (string, error) {
	if len(env) == 0 {
		return cmd, nil
	}
	names := make([]string, 0, len(env))
	for k := range env {
		if !envName.MatchString(k) {
			return "", vmerr.New(vmerr.Usage, "ssh: environment variable name %q is not valid", k)
		}
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, "export %s=%s; ", k, shellquote.Quote(env[k]))
	}
	b.WriteString(cmd)
	return b.String(), nil
}

// newSession opens a channel, bounded by ctx (a server that stopped
// answering must not hang the caller).
func (c *Client) newSession(ctx context.Context, conn *gossh.Client) (*gossh.Session, error) {
	type result struct {
		s   *gossh.Session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := conn.NewSession()
		ch <- result{s, err}
	}()
	t := time.NewTimer(c.cfg.Timeout)
	defer t.Stop()
	fail := func(kind string, err error, what string) error {
		go func() {
			if r := <-ch; r.s != nil {
				r.s.Close()
			}
		}()
		return c.ctxFields(vmerr.Wrap(kind, err, "ssh %s: %s", c.cfg.Name, what))
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, c.ctxFields(vmerr.Wrap(vmerr.IO, r.err, "ssh %s: opening a session (connection lost? client:wait() reconnects)", c.cfg.Name))
		}
		return r.s, nil
	case <-t.C:
		return nil, fail(vmerr.Timeout, nil, fmt.Sprintf("opening a session took more than %s", c.cfg.Timeout))
	case <-ctx.Done():
		return nil, fail(vmerr.Cancelled, context.Cause(ctx), "opening a session")
	}
}
