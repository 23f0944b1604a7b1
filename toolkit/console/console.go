// Package console is a lossless serial console with streaming expect.
//
// A Console receives the raw byte stream of a VM's serial port (Attach to the
// serial socket, or Feed bytes directly) and:
//
//   - appends every raw byte to the console log file as it arrives, before
//     anything else looks at it, with no user-space buffering;
//   - keeps the whole stream in memory, both raw and ANSI-stripped, so a
//     wait that starts from an old Mark sees every byte, and any number of
//     concurrent waits each see every byte;
//   - records each completed line (stripped) in the run's timeline;
//   - runs waits (Expect) whose cost is proportional to the bytes that arrive
//     during the wait, never to the size of the history;
//   - ends every wait at once when the console is closed (the VM exited) or
//     a fail watcher matches (kernel panic), not at its timeout.
//
// Offsets and marks: the console has two streams, raw (the bytes as
// received) and text (ANSI-stripped, see the stripping rules below). A Mark
// is a position in both. Matching uses text unless ExpectOptions.Raw is set.
//
// Stripping rules: escape sequences (CSI, OSC, DCS/SOS/PM/APC strings,
// charset selects and other ESC sequences) and C0 controls other than tab
// and newline are removed; "\r\n", "\n" and a lone "\r" followed by more text
// end a line; '\r' never appears in text. Cursor moves to a screen position
// (CSI H/f/d) and erase-display (CSI J) end a non-empty line, and
// cursor-forward and column moves (CSI C, G, `) become one space, and DEC
// line-drawing characters become '+', '-' and '|', so full-screen programs
// such as the Debian installer read as one line per painted row.
//
// Waits (Expect) each keep their own position in the stream and are woken
// through a channel after every chunk; the reader never waits for them.
// Matching is streaming: plain patterns keep len(pattern)-1 bytes of overlap
// across chunks, line regexes look at the current line plus the new bytes,
// multi-line regexes at a bounded window (see Pattern).
package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/eventlog"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Defaults for the Options durations.
const (
	// DefaultExpectTimeout bounds a wait whose ExpectOptions.Timeout is 0.
	DefaultExpectTimeout = 2 * time.Minute
	// DefaultSendTimeout bounds a Send.
	DefaultSendTimeout = 10 * time.Second
	// DefaultEOFGrace is how long the console waits, after its connection
	// reports end of file, for an explicit Close with the real reason (the
	// VM's exit status) before closing itself with a generic one.
	DefaultEOFGrace = 2 * time.Second
	// DrainGrace is how long the reader keeps reading after Close, so bytes
	// still buffered in the connection reach the log.
	DrainGrace = time.Second
	// TailLines is the number of console lines an error carries in "tail".
	TailLines = 20
)

// Options configure a Console.
type Options struct {
	// Name is the VM name, used in errors and in the timeline source
	// "console:NAME".
	Name string
	// Run receives a "line" event for each completed line and a "send"
	// event for each Send. It may be nil.
	Run *journal.Run
	// LogPath is the console log (conventionally <vm>.console.log): every
	// raw byte is appended as it arrives, unbuffered. "" means no log.
	LogPath string
	// LineEnding is what SendLine appends; "" means "\r", which is what a
	// serial getty expects for Enter.
	LineEnding string
	// DefaultTimeout bounds waits that set no Timeout; 0 means
	// DefaultExpectTimeout.
	DefaultTimeout time.Duration
	// SendTimeout bounds each Send; 0 means DefaultSendTimeout.
	SendTimeout time.Duration
	// EOFGrace: after the attached connection ends, the console closes
	// itself (kind "exited") unless Close is called within EOFGrace. 0 means
	// DefaultEOFGrace; a negative value disables the automatic close.
	EOFGrace time.Duration
	// NoDefaultFailures leaves DefaultFailures out; Failures are installed
	// after them (a name of theirs replaces one, action Off removes it).
	NoDefaultFailures bool
	Failures          []Failure
}

// Console is a lossless serial console. It is safe for concurrent use.
type Console struct {
	name        string
	logPath     string
	source      string
	run         *journal.Run
	lineEnding  string
	defTimeout  time.Duration
	sendTimeout time.Duration
	eofGrace    time.Duration

	// feedMu serializes Feed (log write, stripping, watchers, line events)
	// and guards the fields below it.
	feedMu    sync.Mutex
	st        stripper
	log       *os.File
	logErr    error
	logClosed bool

	// mu guards everything below. It is held only briefly: matching and
	// journal writes run outside it.
	mu       sync.Mutex
	raw      []byte // the raw stream; append-only
	text     []byte // the stripped stream; append-only
	pairs    []offsetPair
	lines    []lineRec
	partText int64 // stripped start of the incomplete last line
	waiters  map[*waiter]struct{}
	watchers []*watcher // copy-on-write
	// lineLog carries every completed line, as the fn watchers and the
	// timeline see it (its newest lines only: the history is the log file).
	lineLog  *eventlog.Log[Line]
	fails    []*watchFail
	closeErr *vmerr.Error
	// failMu guards failures (SetFailure installs a watcher under mu).
	failMu   sync.Mutex
	failures []*failureWatch
	closedCh chan struct{}
	last     Mark // end of the last successful match
	rw       io.ReadWriter
	reading  bool // the reader goroutine runs
	sendCh   chan *sendReq
	done     chan struct{}
	doneOnce sync.Once
}

// Mark is a position in the console stream: Text is the offset in the
// ANSI-stripped text, Raw the offset in the raw bytes.
type Mark struct {
	Text int64 `json:"text"`
	Raw  int64 `json:"raw"`
}

type waiter struct{ ch chan struct{} }

// New returns a console. It creates (truncates) the log file if LogPath is
// set.
func New(opt Options) (*Console, error) {
	c := &Console{
		name:        opt.Name,
		logPath:     opt.LogPath,
		source:      "console:" + opt.Name,
		run:         opt.Run,
		lineEnding:  opt.LineEnding,
		defTimeout:  opt.DefaultTimeout,
		sendTimeout: opt.SendTimeout,
		eofGrace:    opt.EOFGrace,
		waiters:     map[*waiter]struct{}{},
		lineLog:     eventlog.NewBounded[Line](lineLogKeep),
		closedCh:    make(chan struct{}),
		done:        make(chan struct{}),
	}
	if c.run != nil {
		run, source := c.run, c.source
		c.lineLog.Subscribe(func(_ int, l Line) { run.Event(source, "line", record.Map(l)) })
	}
	if c.lineEnding == "" {
		c.lineEnding = "\r"
	}
	if c.defTimeout <= 0 {
		c.defTimeout = DefaultExpectTimeout
	}
	if c.sendTimeout <= 0 {
		c.sendTimeout = DefaultSendTimeout
	}
	if c.eofGrace == 0 {
		c.eofGrace = DefaultEOFGrace
	}
	if opt.LogPath != "" {
		f, err := os.OpenFile(opt.LogPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
		if err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "console %s: log", opt.Name).With("vm", opt.Name)
		}
		c.log = f
	}
	if err := c.installFailures(opt.NoDefaultFailures, opt.Failures); err != nil {
		c.Close(err)
		return nil, err
	}
	return c, nil
}

// Name returns the VM name the console was created with.
func (c *Console) Name() string { return c.name }

// LogPath returns the console log's path ("" without a log).
func (c *Console) LogPath() string { return c.logPath }

// Attach starts the reader goroutine on rw (the serial socket): every read
// is fed to the console. Send writes to rw. A console can be attached once.
// When rw reports end of file (or an error) the console closes itself after
// Options.EOFGrace unless Close is called first.
func (c *Console) Attach(rw io.ReadWriter) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rw != nil {
		return vmerr.New(vmerr.Usage, "console %s: already attached", c.name).With("vm", c.name)
	}
	if c.closeErr != nil {
		return c.closeErr
	}
	c.rw = rw
	c.reading = true
	c.sendCh = make(chan *sendReq)
	go c.reader(rw)
	go c.writer(rw)
	return nil
}

func (c *Console) reader(rw io.Reader) {
	buf := make([]byte, 32<<10)
	var err error
	for {
		var n int
		n, err = rw.Read(buf)
		if n > 0 {
			c.Feed(buf[:n])
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	c.reading = false
	closed := c.closeErr != nil
	c.mu.Unlock()
	if closed {
		c.finish()
		return
	}
	if c.run != nil {
		c.run.Event(c.source, "eof", map[string]any{"error": err.Error()})
	}
	if c.eofGrace < 0 {
		return
	}
	kind := vmerr.IO
	if errors.Is(err, io.EOF) {
		kind = vmerr.Exited
	}
	reason := vmerr.Wrap(kind, err, "console %s: serial connection closed", c.name).With("vm", c.name)
	time.AfterFunc(c.eofGrace, func() { c.Close(reason) })
}

// Feed injects bytes as if they had been read from the serial port (tests,
// replays). Feed must not be mixed with an attached reader unless the
// caller accepts interleaving at chunk boundaries.
func (c *Console) Feed(p []byte) {
	if len(p) == 0 {
		return
	}
	c.feedMu.Lock()
	defer c.feedMu.Unlock()

	// 1. The log, before anything else.
	if c.log != nil && !c.logClosed && c.logErr == nil {
		if _, err := c.log.Write(p); err != nil {
			c.logErr = err
			if c.run != nil {
				c.run.Event(c.source, "log_error", map[string]any{"error": err.Error()})
			}
		}
	}

	// 2. Strip. The stripper owns its scratch slices; only Feed uses them.
	c.mu.Lock()
	rawBase := int64(len(c.raw))
	textBase := int64(len(c.text))
	prevText := c.text // readable without mu while we hold feedMu
	watchers := c.watchers
	partStart := c.partText
	c.mu.Unlock()
	st := &c.st
	st.out, st.pairs, st.lines = st.out[:0], st.pairs[:0], st.lines[:0]
	st.strip(p, rawBase)

	// 3. Watchers see each completed line before it is published, so a
	// waiter can never see data past a fail line without the failure.
	var lineTexts []string
	if c.run != nil || len(watchers) > 0 && mayMatch(watchers, prevText[min(partStart, textBase):], st.out) {
		lineTexts = make([]string, len(st.lines))
		for i, l := range st.lines {
			lineTexts[i] = lineString(prevText, st.out, textBase, l)
		}
	}
	newFails, failureLines := matchInline(watchers, st.lines, lineTexts)

	// 4. Publish and wake the waiters.
	c.mu.Lock()
	c.raw = appendDoubling(c.raw, p)
	c.text = appendDoubling(c.text, st.out)
	c.pairs = appendDoubling(c.pairs, st.pairs)
	c.lines = appendDoubling(c.lines, st.lines)
	c.partText = st.lineText
	for _, f := range newFails {
		if !f.w.cancelled && !f.w.fired {
			f.w.fired = true
			c.fails = append(c.fails, f)
		}
	}
	for w := range c.waiters {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()

	// 5. The line log, outside mu: the timeline and the fn watchers; then
	// the failure patterns' lines, after the lines themselves.
	if lineTexts != nil {
		for i, l := range st.lines {
			c.lineLog.Append(Line{Text: lineTexts[i], RawOffset: l.rawStart})
		}
	}
	c.recordFailures(failureLines)
}

// Line is a completed console line (ANSI-stripped) and where it starts in
// the raw stream.
type Line struct {
	Text      string `json:"text"`
	RawOffset int64  `json:"raw_offset"`
}

// lineLogKeep is how many lines the line log keeps for watchers that lag.
const lineLogKeep = 4096

// appendDoubling is append with capacity doubling: append grows large
// slices by 1.25×, which for a history of N bytes allocates about 5N in
// total; doubling bounds it to 2N.
func appendDoubling[T any](s, add []T) []T {
	if need := len(s) + len(add); need > cap(s) {
		n := make([]T, len(s), max(2*cap(s), need, 1024))
		copy(n, s)
		s = n
	}
	return append(s, add...)
}

// lineString returns the text of l, which may start in prev (the published
// text, whose length is base) and end in cur (this feed's output).
func lineString(prev, cur []byte, base int64, l lineRec) string {
	if l.start >= base {
		return string(cur[l.start-base : l.end-base])
	}
	return string(prev[l.start:base]) + string(cur[:l.end-base])
}

// Close ends the input: every pending and future wait that has not already
// matched in the history fails at once with reason (typically a
// *vmerr.Error of kind "exited" carrying the VM's exit status), with the
// console tail added. A nil reason means kind "exited", "console closed".
// The log is synced; it is closed when the reader has drained what is still
// buffered in the connection (at most DrainGrace), or at once when not
// attached. Only the first Close counts.
func (c *Console) Close(reason error) {
	var r *vmerr.Error
	switch {
	case reason == nil:
		r = vmerr.New(vmerr.Exited, "console %s closed", c.name)
	case errors.As(reason, &r):
		// Keep the caller's error as is; waits get copies.
		if r != reason {
			r = &vmerr.Error{Kind: r.Kind, Message: reason.Error(), Err: reason}
		}
	default:
		r = vmerr.Wrap(vmerr.Exited, reason, "console %s closed", c.name)
	}
	c.mu.Lock()
	if c.closeErr != nil {
		c.mu.Unlock()
		return
	}
	c.closeErr = r
	close(c.closedCh)
	for w := range c.waiters {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	reading := c.reading
	rw := c.rw
	c.mu.Unlock()

	if c.run != nil {
		c.run.Event(c.source, "close", map[string]any{"reason": r.Message, "kind": r.Kind})
	}
	c.feedMu.Lock()
	if c.log != nil && !c.logClosed {
		_ = c.log.Sync()
	}
	c.feedMu.Unlock()
	if !reading {
		c.finish()
		return
	}
	if d, ok := rw.(interface{ SetReadDeadline(time.Time) error }); ok {
		_ = d.SetReadDeadline(time.Now().Add(DrainGrace))
	}
}

// finish closes the log and marks the console done.
func (c *Console) finish() {
	c.feedMu.Lock()
	if c.log != nil && !c.logClosed {
		_ = c.log.Sync()
		if err := c.log.Close(); err != nil && c.logErr == nil {
			c.logErr = err
		}
		c.logClosed = true
	}
	c.feedMu.Unlock()
	c.lineLog.Close(vmerr.New(vmerr.Exited, "console %s: closed", c.name))
	c.doneOnce.Do(func() { close(c.done) })
}

// Done is closed when the console is closed and its input drained: the log
// file is complete and closed.
func (c *Console) Done() <-chan struct{} { return c.done }

// Err returns the close reason, or nil while the console is open.
func (c *Console) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr == nil {
		return nil
	}
	return c.closeErr
}

// LogErr returns the first error writing the log file, if any. The
// in-memory history is complete even then.
func (c *Console) LogErr() error {
	c.feedMu.Lock()
	defer c.feedMu.Unlock()
	return c.logErr
}

// Mark returns the position of the end of what has arrived.
func (c *Console) Mark() Mark {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Mark{Text: int64(len(c.text)), Raw: int64(len(c.raw))}
}

// StartMark returns the position of the first byte of the console.
func (c *Console) StartMark() Mark { return Mark{} }

// Size returns the number of raw bytes received.
func (c *Console) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(len(c.raw))
}

// Text returns the stripped text between two marks (nil from = start, nil
// to = end).
func (c *Console) Text(from, to *Mark) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo, hi := int64(0), int64(len(c.text))
	if from != nil {
		lo = min(max(from.Text, 0), hi)
	}
	if to != nil {
		hi = min(max(to.Text, lo), hi)
	}
	return string(c.text[lo:hi])
}

// Raw returns the raw bytes between two marks (nil from = start, nil to =
// end).
func (c *Console) Raw(from, to *Mark) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	lo, hi := int64(0), int64(len(c.raw))
	if from != nil {
		lo = min(max(from.Raw, 0), hi)
	}
	if to != nil {
		hi = min(max(to.Raw, lo), hi)
	}
	return append([]byte(nil), c.raw[lo:hi]...)
}

// Lines returns the completed lines (stripped) that overlap [from, to): a
// line is included when any of its text lies at or after from and it starts
// before to. nil from means the start, nil to the end.
func (c *Console) Lines(from, to *Mark) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := 0
	if from != nil {
		f := from.Text
		i = sort.Search(len(c.lines), func(k int) bool {
			l := c.lines[k]
			return l.end > f || l.start >= f
		})
	}
	var out []string
	for ; i < len(c.lines); i++ {
		l := c.lines[i]
		if to != nil && l.start >= to.Text {
			break
		}
		out = append(out, string(c.text[l.start:l.end]))
	}
	return out
}

// Tail returns the last n lines (stripped), including the incomplete last
// line if it has any text.
func (c *Console) Tail(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tailLocked(n, 0)
}

// tailLocked returns the last n lines; lines longer than maxLen (if > 0)
// are cut to their last maxLen bytes.
func (c *Console) tailLocked(n, maxLen int) []string {
	if n <= 0 {
		return nil
	}
	cut := func(b []byte) string {
		if maxLen > 0 && len(b) > maxLen {
			return "…" + string(b[len(b)-maxLen:])
		}
		return string(b)
	}
	var part []byte
	if int64(len(c.text)) > c.partText {
		part = c.text[c.partText:]
		n--
	}
	first := max(len(c.lines)-n, 0)
	out := make([]string, 0, len(c.lines)-first+1)
	for _, l := range c.lines[first:] {
		out = append(out, cut(c.text[l.start:l.end]))
	}
	if part != nil {
		out = append(out, cut(part))
	}
	return out
}

// errTail is the tail put into errors.
func (c *Console) errTail() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tailLocked(TailLines, 500)
}

// copyErr returns a copy of e that can be decorated for one caller; the
// copy wraps e, so errors.Is(copy, e) holds.
func copyErr(e *vmerr.Error) *vmerr.Error {
	n := &vmerr.Error{Kind: e.Kind, Message: e.Message, Err: e}
	if len(e.Context) > 0 {
		n.Context = make(map[string]any, len(e.Context)+4)
		for k, v := range e.Context {
			n.Context[k] = v
		}
	}
	return n
}

func fmtSeconds(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
