package shell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	expect "github.com/google/goexpect"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Dialog defaults.
const (
	// DefaultDialogTimeout bounds a dialog whose DialogOptions.Timeout is 0.
	DefaultDialogTimeout = time.Minute
	// DefaultDialogRetries is how many times a case that sends may fire
	// again after its first time (DialogOptions.Retries < 0 or unset
	// through the Lua binding).
	DefaultDialogRetries = 2
	// dialogCheck is goexpect's CheckDuration: the period at which it
	// looks at its buffer even when a wake-up was missed (default 2 s).
	dialogCheck = 20 * time.Millisecond
	// pollInterval is how often the console cursor looks for new text.
	pollInterval = 10 * time.Millisecond
)

// Case is one prompt of a dialog and what to do when it shows.
type Case struct {
	// Pattern is an RE2 regular expression, matched against the text that
	// arrived since the previous match (ANSI-stripped; "$" is the end of
	// what has arrived, as in goexpect).
	Pattern string
	// Send is typed when the pattern matches; with Line, the console's
	// line ending (Enter) follows. A case with neither sends nothing.
	Send string
	// Line appends Enter to Send.
	Line bool
	// Secret sends with Console.SendSecret (the timeline shows
	// "<secret>") and in one write with its Enter ("\r").
	Secret bool
	// Fail ends the dialog with an error of kind FailKind (default
	// "refused") and this message.
	Fail string
	// FailKind is the error kind of a Fail case.
	FailKind string
	// OK ends the dialog successfully.
	OK bool
	// Retries is how many more times the case may fire after the first;
	// one more match fails the dialog (kind "refused": a prompt that keeps
	// coming back). Negative means DialogOptions.Retries.
	Retries int
}

// DialogOptions tune Dialog.
type DialogOptions struct {
	// Timeout is the one overall deadline (wall clock, never restarted by
	// output); 0 means DefaultDialogTimeout.
	Timeout time.Duration
	// Retries is the default of Case.Retries; negative means
	// DefaultDialogRetries.
	Retries int
	// From is where the dialog starts reading. nil means the start of the
	// console's current last line, so a prompt already showing (printed
	// before Dialog was called) is seen.
	From *console.Mark
}

// DialogResult is the OK case that ended a dialog.
type DialogResult struct {
	// Index is the 0-based index of the case.
	Index int
	// Text is the text the case's pattern matched.
	Text string
	// Output is the dialog's text from its start to the end of the match.
	Output string
}

// Dialog holds a short scripted exchange on con: it waits for any of the
// cases, acts on the one that matches, and repeats until an OK case, a
// Fail case, a case firing more often than its retries allow, the console
// closing, or the deadline. Cases are tried in list order against the text
// since the previous match (goexpect's ExpectSwitchCase rule: an earlier
// case wins even when a later one matches earlier in the text).
//
// It is built on goexpect's ExpectSwitchCase over a spawner fed from a
// cursor of the lossless console (nothing is missed, whenever Dialog is
// called), with its traps defused: CheckDuration is small (missed wake-ups
// cost 20 ms, not 2 s), PartialMatch keeps the text after a match for the
// next one, SendTimeout is set, it never logs (no verbose mode, no sends
// through goexpect, no ExpectBatch), and, since its timeout is an
// inactivity timer that a chatty console never fires, Dialog enforces its
// own wall-clock deadline and ctx around it. goexpect re-scans its whole
// buffer on every wake-up: dialogs are for short exchanges, not for waiting
// through a boot (use Console.Expect for that).
//
// Errors: "timeout" (deadline), "refused" (a Fail case or too many
// retries; FailKind overrides), the console's close reason ("exited"),
// "cancelled", "usage" (bad pattern).
func Dialog(ctx context.Context, con *console.Console, cases []Case, opt DialogOptions) (DialogResult, error) {
	name := con.Name()
	if len(cases) == 0 {
		return DialogResult{}, vmerr.New(vmerr.Usage, "%s: dialog needs at least one case", name)
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultDialogTimeout
	}
	defRetries := opt.Retries
	if defRetries < 0 {
		defRetries = DefaultDialogRetries
	}
	start := time.Now()
	deadline := start.Add(timeout)
	from := opt.From
	if from == nil {
		from = lastLineStart(con)
	}

	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	cur := newCursor(dctx, con, *from)

	// The outcome of the case that ended the dialog, set by its Tag
	// function (goexpect calls it on the dialog's goroutine).
	type outcome struct {
		idx int
		err error
	}
	var (
		omu  sync.Mutex
		last outcome
	)
	setOutcome := func(o outcome) { omu.Lock(); last = o; omu.Unlock() }
	var sendErr error

	gcases := make([]expect.Caser, len(cases))
	for i, c := range cases {
		re, err := regexp.Compile(c.Pattern)
		if err != nil {
			return DialogResult{}, vmerr.Wrap(vmerr.Usage, err, "%s: dialog case %d: bad pattern %q", name, i+1, c.Pattern)
		}
		retries := c.Retries
		if retries < 0 {
			retries = defRetries
		}
		fired := 0
		gc := &expect.Case{R: re, Rt: retries}
		gc.T = func() (expect.Tag, *expect.Status) {
			switch {
			case c.OK:
				setOutcome(outcome{idx: i})
				return expect.OKTag, nil
			case c.Fail != "":
				kind := c.FailKind
				if kind == "" {
					kind = vmerr.Refused
				}
				e := vmerr.New(kind, "%s: dialog: %s (case %d %q matched)", name, c.Fail, i+1, c.Pattern)
				setOutcome(outcome{idx: i, err: e})
				return expect.FailTag, nil
			}
			fired++
			if fired > retries+1 {
				e := vmerr.New(vmerr.Refused, "%s: dialog: %q matched %d times (retries %d): the exchange is going in circles",
					name, c.Pattern, fired, retries)
				setOutcome(outcome{idx: i, err: e})
				return expect.FailTag, nil
			}
			if c.Send != "" || c.Line {
				var err error
				switch {
				case c.Secret:
					s := c.Send
					if c.Line {
						s += secretEnter
					}
					err = con.SendSecret(dctx, s)
				case c.Line:
					err = con.SendLine(dctx, c.Send)
				default:
					err = con.Send(dctx, c.Send)
				}
				if err != nil {
					sendErr = err
					setOutcome(outcome{idx: i, err: err})
					return expect.FailTag, nil
				}
			}
			// Continue: goexpect decrements Rt and stops at 0; our own
			// count above decides first, so keep its budget ample.
			gc.Rt = retries + 2
			return expect.ContinueTag, nil
		}
		gc.Rt = retries + 2
		gcases[i] = gc
	}

	e, _, err := expect.SpawnGeneric(&expect.GenOptions{
		In:    nopWriteCloser{},
		Out:   cur,
		Wait:  cur.wait,
		Close: cur.close,
		Check: cur.check,
	}, timeout,
		expect.CheckDuration(dialogCheck),
		expect.PartialMatch(true),
		expect.SendTimeout(console.DefaultSendTimeout),
		expect.Verbose(false),
		expect.VerboseWriter(io.Discard),
	)
	if err != nil {
		return DialogResult{}, vmerr.Wrap(vmerr.Internal, err, "%s: dialog", name)
	}
	defer e.Close()

	type swRes struct {
		out   string
		match []string
		idx   int
		err   error
	}
	done := make(chan swRes, 1)
	var transcript strings.Builder
	go func() {
		for {
			// goexpect's own timeout restarts on output; ours below is the
			// real bound. Give it the remaining time so it cannot end
			// early either.
			rem := time.Until(deadline)
			if rem <= 0 {
				rem = time.Millisecond
			}
			out, match, idx, err := e.ExpectSwitchCase(gcases, rem)
			transcript.WriteString(out)
			var te expect.TimeoutError
			if errors.As(err, &te) && time.Now().Before(deadline) && dctx.Err() == nil {
				continue // inactivity only: keep waiting until our deadline
			}
			done <- swRes{out: out, match: match, idx: idx, err: err}
			return
		}
	}()

	var r swRes
	select {
	case r = <-done:
	case <-dctx.Done():
		cur.close()
		r = <-done
	}
	omu.Lock()
	o := last
	omu.Unlock()
	waited := secs(time.Since(start))
	decorate := func(e *vmerr.Error) *vmerr.Error {
		return e.With("vm", name).With("waited_s", waited).With("output", transcript.String()).With("tail", con.Tail(console.TailLines))
	}

	if r.err == nil && r.idx >= 0 && cases[r.idx].OK {
		res := DialogResult{Index: r.idx, Output: transcript.String()}
		if len(r.match) > 0 {
			res.Text = r.match[0]
		}
		return res, nil
	}
	if o.err != nil && r.idx == o.idx {
		if ve, ok := o.err.(*vmerr.Error); ok {
			if sendErr != nil {
				return DialogResult{Index: o.idx}, ve
			}
			return DialogResult{Index: o.idx}, decorate(ve)
		}
		return DialogResult{Index: o.idx}, o.err
	}
	// No case ended it: the deadline, ctx, or the console closed.
	if ctx.Err() != nil {
		return DialogResult{Index: -1}, decorate(vmerr.Wrap(vmerr.Cancelled, context.Cause(ctx), "%s: dialog cancelled", name))
	}
	if !time.Now().Before(deadline) {
		return DialogResult{Index: -1}, decorate(vmerr.New(vmerr.Timeout, "%s: dialog timed out after %s waiting for %s",
			name, fmtDur(timeout), casePatterns(cases)))
	}
	if cerr := con.Err(); cerr != nil {
		ce := &vmerr.Error{Kind: vmerr.KindOf(cerr), Message: fmt.Sprintf("%s: dialog ended: %v", name, cerr.Error()), Err: cerr}
		if ve, ok := cerr.(*vmerr.Error); ok {
			ce.Message = fmt.Sprintf("%s (dialog waiting for %s)", ve.Message, casePatterns(cases))
			for _, k := range ve.Keys() {
				if k != "tail" {
					ce.With(k, ve.Context[k])
				}
			}
		}
		return DialogResult{Index: -1}, decorate(ce)
	}
	msg := "dialog failed"
	if r.err != nil {
		msg = r.err.Error()
	}
	return DialogResult{Index: -1}, decorate(vmerr.New(vmerr.Protocol, "%s: dialog: %s", name, msg))
}

func casePatterns(cases []Case) string {
	q := make([]string, len(cases))
	for i, c := range cases {
		q[i] = fmt.Sprintf("%q", c.Pattern)
	}
	return strings.Join(q, ", ")
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// lastLineStart returns the start of the console's last line (complete or
// not).
func lastLineStart(con *console.Console) *console.Mark {
	end := con.Mark()
	lo := max(end.Text-4096, 0)
	text := con.Text(&console.Mark{Text: lo}, &end)
	t := strings.TrimSuffix(text, "\n")
	i := strings.LastIndexByte(t, '\n')
	return &console.Mark{Text: lo + int64(i+1)}
}

// nopWriteCloser is goexpect's In: Dialog sends through the console itself
// (so secrets are logged as such and every send has the console's
// deadline), never through goexpect.
type nopWriteCloser struct{}

func (nopWriteCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriteCloser) Close() error                { return nil }

// cursor is an io.Reader over the console's text from a mark on: Read
// returns text as it arrives and io.EOF when the console is closed and
// drained, or when the cursor is closed.
type cursor struct {
	ctx  context.Context
	con  *console.Console
	mu   sync.Mutex
	pos  int64
	eof  bool // Read has returned io.EOF
	stop chan struct{}
	once sync.Once
}

func newCursor(ctx context.Context, con *console.Console, from console.Mark) *cursor {
	return &cursor{ctx: ctx, con: con, pos: from.Text, stop: make(chan struct{})}
}

func (c *cursor) Read(p []byte) (int, error) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		c.mu.Lock()
		pos := c.pos
		c.mu.Unlock()
		end := c.con.Mark()
		if end.Text > pos {
			hi := min(end.Text, pos+int64(len(p)))
			s := c.con.Text(&console.Mark{Text: pos}, &console.Mark{Text: hi})
			n := copy(p, s)
			c.mu.Lock()
			c.pos += int64(n)
			c.mu.Unlock()
			return n, nil
		}
		// Nothing new: end when the console is closed (and everything up to
		// its end has been read), the cursor is closed, or ctx ends.
		if c.con.Err() != nil && c.con.Mark().Text <= pos {
			return c.setEOF()
		}
		select {
		case <-c.stop:
			return c.setEOF()
		case <-c.ctx.Done():
			return c.setEOF()
		case <-t.C:
		}
	}
}

func (c *cursor) setEOF() (int, error) {
	c.mu.Lock()
	c.eof = true
	c.mu.Unlock()
	return 0, io.EOF
}

// check is goexpect's "session still running": true until Read has
// returned EOF, so the reads that carry the console's last bytes are never
// dropped (goexpect discards a read's data when check fails).
func (c *cursor) check() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.eof
}

func (c *cursor) wait() error {
	select {
	case <-c.stop:
	case <-c.ctx.Done():
	}
	return nil
}

func (c *cursor) close() error {
	c.once.Do(func() { close(c.stop) })
	return nil
}
