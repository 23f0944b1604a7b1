package ssh

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	gossh "golang.org/x/crypto/ssh"
)

// Default terminal of a pty session. A wide terminal keeps command lines
// and output from wrapping.
const (
	DefaultTerm = "vt100"
	DefaultCols = 200
	DefaultRows = 50
)

// SessionOptions configure an interactive session.
type SessionOptions struct {
	// PTY requests a pseudo-terminal (what sudo, passwd and prompts that
	// check isatty need). Without it, stderr is merged into the console.
	PTY bool
	// Term is the TERM of the pty; default DefaultTerm.
	Term string
	// Cols and Rows are the pty size; default DefaultCols × DefaultRows.
	Cols, Rows int
	// Command runs instead of the login shell when set.
	Command string
	// ExpectTimeout bounds the console's waits that set no timeout; 0 means
	// the console's default.
	ExpectTimeout time.Duration
}

// Session is an interactive session whose output feeds a console, so
// Expect, Send, SendLine, Mark, Lines and Tail work exactly as on a serial
// console (and so does anything built on them, such as dialogs). Its log is
// NAME-sessionN.log in the run directory.
type Session struct {
	// Console receives every byte the session prints. It closes (kind
	// "exited") when the session ends.
	Console *console.Console
	// LogPath is the raw log of the session ("" without a run).
	LogPath string

	c     *Client
	sess  *gossh.Session
	n     int
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	res   Result
	ended error
}

// sessionRW joins the session's stdin and stdout into the io.ReadWriter a
// console attaches to; eof is closed when stdout ends.
type sessionRW struct {
	r    io.Reader
	w    io.Writer
	eof  chan struct{}
	once sync.Once
}

func (s *sessionRW) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil {
		s.once.Do(func() { close(s.eof) })
	}
	return n, err
}

func (s *sessionRW) Write(p []byte) (int, error) { return s.w.Write(p) }

// feedWriter feeds stderr of a session without pty into its console.
type feedWriter struct{ c *console.Console }

func (f feedWriter) Write(p []byte) (int, error) { f.c.Feed(p); return len(p), nil }

// Session starts an interactive session (the login shell, or opt.Command)
// and returns it with its console attached.
func (c *Client) Session(ctx context.Context, opt SessionOptions) (*Session, error) {
	conn, err := c.connection()
	if err != nil {
		return nil, err
	}
	if opt.Term == "" {
		opt.Term = DefaultTerm
	}
	if opt.Cols <= 0 {
		opt.Cols = DefaultCols
	}
	if opt.Rows <= 0 {
		opt.Rows = DefaultRows
	}
	n := c.nextSeq()
	name := fmt.Sprintf("%s-session%d", c.cfg.Name, n)
	logPath := ""
	if c.cfg.Run != nil {
		logPath = c.cfg.Run.Path(unsafeName.ReplaceAllString(name, "_") + ".log")
	}
	sess, err := c.newSession(ctx, conn)
	if err != nil {
		return nil, err
	}
	fail := func(err error, what string) (*Session, error) {
		sess.Close()
		e := c.ctxFields(vmerr.Wrap(vmerr.IO, err, "ssh %s: session: %s", c.cfg.Name, what))
		c.event("session-error", map[string]any{"n": n, "error": e.Error()})
		return nil, e
	}
	if opt.PTY {
		modes := gossh.TerminalModes{gossh.ECHO: 1, gossh.TTY_OP_ISPEED: 38400, gossh.TTY_OP_OSPEED: 38400}
		if err := sess.RequestPty(opt.Term, opt.Rows, opt.Cols, modes); err != nil {
			return fail(err, "requesting a pty")
		}
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		return fail(err, "stdin")
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return fail(err, "stdout")
	}
	con, err := console.New(console.Options{
		Name: name, Run: c.cfg.Run, LogPath: logPath, DefaultTimeout: opt.ExpectTimeout,
		// The session's end (with its exit status) closes the console.
		EOFGrace: -1,
	})
	if err != nil {
		return fail(err, "console")
	}
	if !opt.PTY {
		sess.Stderr = feedWriter{con}
	}
	rw := &sessionRW{r: stdout, w: stdin, eof: make(chan struct{})}
	if err := con.Attach(rw); err != nil {
		con.Close(err)
		return fail(err, "attaching the console")
	}
	if opt.Command != "" {
		err = sess.Start(opt.Command)
	} else {
		err = sess.Shell()
	}
	if err != nil {
		con.Close(err)
		return fail(err, "starting the shell")
	}
	s := &Session{Console: con, LogPath: logPath, c: c, sess: sess, n: n, done: make(chan struct{}), res: Result{Code: -1}}
	go s.wait(rw.eof)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.Close()
		return nil, c.ctxFields(vmerr.New(vmerr.Usage, "ssh %s: client is closed", c.cfg.Name))
	}
	c.sessions[s] = struct{}{}
	c.mu.Unlock()
	c.event("session", map[string]any{"n": n, "pty": opt.PTY, "term": opt.Term, "command": opt.Command, "log": logPath})
	return s, nil
}

// wait records the session's end and closes the console once its output is
// drained.
func (s *Session) wait(eof chan struct{}) {
	err := s.sess.Wait()
	res, rerr := exitResult(Result{Code: -1}, err, s.c, "session")
	select {
	case <-eof:
	case <-time.After(console.DrainGrace):
	}
	s.mu.Lock()
	s.res, s.ended = res, rerr
	s.mu.Unlock()
	f := map[string]any{"n": s.n, "code": res.Code}
	if res.Signal != "" {
		f["signal"] = res.Signal
	}
	if rerr != nil {
		f["error"] = rerr.Error()
	}
	s.c.event("session-end", f)
	reason := vmerr.New(vmerr.Exited, "ssh session %s ended (exit %d%s)", s.Console.Name(), res.Code, sigSuffix(res.Signal)).
		With("code", res.Code)
	s.Console.Close(reason)
	s.c.mu.Lock()
	delete(s.c.sessions, s)
	s.c.mu.Unlock()
	close(s.done)
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Wait waits for the session to end and returns its exit status.
func (s *Session) Wait(ctx context.Context) (Result, error) {
	select {
	case <-s.done:
	case <-ctx.Done():
		return Result{Code: -1}, s.c.ctxFields(vmerr.Wrap(vmerr.Timeout, context.Cause(ctx), "ssh session %s still running", s.Console.Name()))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res, s.ended
}

// Resize changes the pty size.
func (s *Session) Resize(cols, rows int) error {
	return s.sess.WindowChange(rows, cols)
}

// Close ends the session (hanging up the pty) and closes its console.
func (s *Session) Close() error {
	s.once.Do(func() { s.sess.Close() })
	select {
	case <-s.done:
	case <-time.After(2 * console.DrainGrace):
		s.Console.Close(vmerr.New(vmerr.Exited, "ssh session %s closed", s.Console.Name()))
	}
	return nil
}
