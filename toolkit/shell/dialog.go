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
	if len(cases) == 0 {
		return DialogResult{}, vmerr.New(vmerr.Usage, "%s: dialog needs at least one case", con.Name())
	}
	d := newDialog(con, cases, opt)
	dctx, cancel := context.WithDeadline(ctx, d.deadline)
	defer cancel()
	from := opt.From
	if from == nil {
		from = lastLineStart(con)
	}
	cur := newCursor(dctx, con, *from)
	gcases, err := d.goexpectCases(dctx, opt.Retries)
	if err != nil {
		return DialogResult{}, err
	}
	e, _, err := expect.SpawnGeneric(&expect.GenOptions{
		In: nopWriteCloser{}, Out: cur, Wait: cur.wait, Close: cur.close, Check: cur.check,
	}, d.timeout,
		expect.CheckDuration(dialogCheck),
		expect.PartialMatch(true),
		expect.SendTimeout(console.DefaultSendTimeout),
		expect.Verbose(false),
		expect.VerboseWriter(io.Discard),
	)
	if err != nil {
		return DialogResult{}, vmerr.Wrap(vmerr.Internal, err, "%s: dialog", d.name)
	}
	defer e.Close()
	done := make(chan switchResult, 1)
	go d.expectLoop(dctx, e, gcases, done)
	var r switchResult
	select {
	case r = <-done:
	case <-dctx.Done():
		cur.close()
		r = <-done
	}
	return d.result(ctx, r)
}

// dialog is one Dialog's state: its cases and deadline, the outcome of the
// case that ended it (set on goexpect's goroutine) and the transcript.
type dialog struct {
	con      *console.Console
	name     string
	cases    []Case
	timeout  time.Duration
	start    time.Time
	deadline time.Time

	mu         sync.Mutex
	last       outcome
	sendErr    error
	transcript strings.Builder
}

// outcome is what the case that ended a dialog decided.
type outcome struct {
	idx int
	err error
}

// switchResult is one ExpectSwitchCase's return.
type switchResult struct {
	out   string
	match []string
	idx   int
	err   error
}

func newDialog(con *console.Console, cases []Case, opt DialogOptions) *dialog {
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultDialogTimeout
	}
	start := time.Now()
	return &dialog{con: con, name: con.Name(), cases: cases, timeout: timeout, start: start, deadline: start.Add(timeout)}
}

func (d *dialog) setOutcome(o outcome) {
	d.mu.Lock()
	d.last = o
	d.mu.Unlock()
}

// goexpectCases compiles the cases into goexpect's, each with its Tag
// function (caseTag).
func (d *dialog) goexpectCases(ctx context.Context, defRetries int) ([]expect.Caser, error) {
	if defRetries < 0 {
		defRetries = DefaultDialogRetries
	}
	gcases := make([]expect.Caser, len(d.cases))
	for i, c := range d.cases {
		re, err := regexp.Compile(c.Pattern)
		if err != nil {
			return nil, vmerr.Wrap(vmerr.Usage, err, "%s: dialog case %d: bad pattern %q", d.name, i+1, c.Pattern)
		}
		retries := c.Retries
		if retries < 0 {
			retries = defRetries
		}
		// goexpect decrements Rt and stops at 0; caseTag's own count
		// decides first, so its budget stays ample.
		gc := &expect.Case{R: re, Rt: retries + 2}
		gc.T = d.caseTag(ctx, i, c, retries, gc)
		gcases[i] = gc
	}
	return gcases, nil
}

// caseTag is what happens when case i matches: OK ends the dialog, Fail
// fails it, a case that fired more than its retries allow fails it, and
// otherwise its text is sent and the dialog continues.
func (d *dialog) caseTag(ctx context.Context, i int, c Case, retries int, gc *expect.Case) func() (expect.Tag, *expect.Status) {
	fired := 0
	return func() (expect.Tag, *expect.Status) {
		switch {
		case c.OK:
			d.setOutcome(outcome{idx: i})
			return expect.OKTag, nil
		case c.Fail != "":
			kind := c.FailKind
			if kind == "" {
				kind = vmerr.Refused
			}
			d.setOutcome(outcome{idx: i, err: vmerr.New(kind, "%s: dialog: %s (case %d %q matched)", d.name, c.Fail, i+1, c.Pattern)})
			return expect.FailTag, nil
		}
		fired++
		if fired > retries+1 {
			d.setOutcome(outcome{idx: i, err: vmerr.New(vmerr.Refused, "%s: dialog: %q matched %d times (retries %d): the exchange is going in circles",
				d.name, c.Pattern, fired, retries)})
			return expect.FailTag, nil
		}
		if err := d.send(ctx, c); err != nil {
			d.mu.Lock()
			d.sendErr = err
			d.mu.Unlock()
			d.setOutcome(outcome{idx: i, err: err})
			return expect.FailTag, nil
		}
		gc.Rt = retries + 2
		return expect.ContinueTag, nil
	}
}

// send types a case's answer: a secret in one write with its Enter.
func (d *dialog) send(ctx context.Context, c Case) error {
	switch {
	case c.Send == "" && !c.Line:
		return nil
	case c.Secret:
		s := c.Send
		if c.Line {
			s += secretEnter
		}
		return d.con.SendSecret(ctx, s)
	case c.Line:
		return d.con.SendLine(ctx, c.Send)
	}
	return d.con.Send(ctx, c.Send)
}

// expectLoop runs ExpectSwitchCase until a case ends the dialog or the
// deadline or ctx does: goexpect's own timeout is an inactivity timer, so
// it is given the remaining time and, when it fires early, called again.
func (d *dialog) expectLoop(ctx context.Context, e *expect.GExpect, gcases []expect.Caser, done chan<- switchResult) {
	for {
		rem := time.Until(d.deadline)
		if rem <= 0 {
			rem = time.Millisecond
		}
		out, match, idx, err := e.ExpectSwitchCase(gcases, rem)
		d.mu.Lock()
		d.transcript.WriteString(out)
		d.mu.Unlock()
		var te expect.TimeoutError
		if errors.As(err, &te) && time.Now().Before(d.deadline) && ctx.Err() == nil {
			continue // inactivity only: keep waiting until our deadline
		}
		done <- switchResult{out: out, match: match, idx: idx, err: err}
		return
	}
}

// result turns how the dialog ended into its result or error.
func (d *dialog) result(ctx context.Context, r switchResult) (DialogResult, error) {
	d.mu.Lock()
	o, sendErr, transcript := d.last, d.sendErr, d.transcript.String()
	d.mu.Unlock()
	if r.err == nil && r.idx >= 0 && d.cases[r.idx].OK {
		res := DialogResult{Index: r.idx, Output: transcript}
		if len(r.match) > 0 {
			res.Text = r.match[0]
		}
		return res, nil
	}
	if o.err != nil && r.idx == o.idx {
		ve, ok := o.err.(*vmerr.Error)
		if !ok {
			return DialogResult{Index: o.idx}, o.err
		}
		if sendErr != nil {
			return DialogResult{Index: o.idx}, ve
		}
		return DialogResult{Index: o.idx}, d.decorate(ve, transcript)
	}
	// No case ended it: the deadline, ctx, or the console closed.
	return DialogResult{Index: -1}, d.decorate(d.endedErr(ctx, r), transcript)
}

// endedErr says why a dialog that no case ended stopped.
func (d *dialog) endedErr(ctx context.Context, r switchResult) *vmerr.Error {
	if ctx.Err() != nil {
		return vmerr.Wrap(vmerr.Cancelled, context.Cause(ctx), "%s: dialog cancelled", d.name)
	}
	if !time.Now().Before(d.deadline) {
		return vmerr.New(vmerr.Timeout, "%s: dialog timed out after %s waiting for %s", d.name, fmtDur(d.timeout), casePatterns(d.cases))
	}
	if cerr := d.con.Err(); cerr != nil {
		ce := &vmerr.Error{Kind: vmerr.KindOf(cerr), Message: fmt.Sprintf("%s: dialog ended: %v", d.name, cerr.Error()), Err: cerr}
		if ve, ok := cerr.(*vmerr.Error); ok {
			ce.Message = fmt.Sprintf("%s (dialog waiting for %s)", ve.Message, casePatterns(d.cases))
			for _, k := range ve.Keys() {
				if k != "tail" {
					ce.With(k, ve.Context[k])
				}
			}
		}
		return ce
	}
	msg := "dialog failed"
	if r.err != nil {
		msg = r.err.Error()
	}
	return vmerr.New(vmerr.Protocol, "%s: dialog: %s", d.name, msg)
}

// decorate adds the dialog's context to its error.
func (d *dialog) decorate(e *vmerr.Error, transcript string) *vmerr.Error {
	return e.With("vm", d.name).With("waited_s", secs(time.Since(d.start))).With("output", transcript).With("tail", d.con.Tail(console.TailLines))
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
