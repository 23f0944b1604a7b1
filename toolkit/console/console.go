// Package console is a lossless serial console with streaming expect.
//
// A Console receives the raw byte stream of a VM's serial port (Attach to the
// serial port, or Feed bytes directly) and:
//
//   - appends every raw byte to the console log file as it arrives, before
//     anything else looks at it, with no user-space buffering;
//   - keeps the whole stream, both raw and ANSI-stripped, its newest
//     megabytes in memory and the rest on disk (see tape), so a wait that
//     starts from an old Mark sees every byte, any number of concurrent
//     waits each see every byte, and memory stays bounded however much the
//     guest writes;
//   - refers to the completed lines in the run's timeline by their byte
//     ranges ("output" events, see outputEvery);
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
	// Run receives "output" events naming the completed lines by their
	// byte ranges (see outputEvery), "match", "send", "failure" and other
	// events; its Notify subscribers (live displays) also get a "line"
	// event, not in the timeline, for each completed line. It may be nil.
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
	// partNeedle: the incomplete last line holds a needle of a watcher of
	// needlesOf.
	partNeedle bool
	needlesOf  []*watcher
	output     outputRange

	// mu guards everything below. It is held only briefly: matching and
	// journal writes run outside it.
	mu       sync.Mutex
	raw      tape[byte] // the raw stream
	text     tape[byte] // the stripped stream
	pairs    tape[offsetPair]
	lines    tape[lineRec]
	partText int64 // stripped start of the incomplete last line
	// histErr is the first failure to read history back from disk.
	histErr  error
	histOnce sync.Once
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
		// Live displays only: the timeline has "output" events instead.
		c.lineLog.Subscribe(func(_ int, l Line) { run.Notify(source, "line", record.Map(l)) })
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
		// Read too: the log is the raw history older than memory holds.
		f, err := os.OpenFile(opt.LogPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
		if err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "console %s: log", opt.Name).With("vm", opt.Name)
		}
		c.log = f
	}
	c.initHistory(opt.LogPath)
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

// Attach starts the reader goroutine on rw (the serial port): every read
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
	// Only a source the kernel buffers while the reader sleeps (a pipe, a
	// socket: one with read deadlines) gains by coalescing.
	_, buffered := rw.(interface{ SetReadDeadline(time.Time) error })
	go c.reader(rw, buffered)
	go c.writer(rw)
	return nil
}

// Coalescing reads: a UART hands its reader a few bytes per read, and every
// read costs a log write, a Feed and a wake-up of each wait. When reads come
// back to back (a flood) and small, the reader lets bytes gather for
// coalesceFor before the next read, and once a flood outlasts floodReads
// such reads (longer than a command's answer) for twice as long each time,
// up to coalesceMax; an idle console's first bytes are read at once. (1 MB
// through the 16550 of a mini guest, read from a pipe outside the network
// poller: the console process used 0.45 s of CPU with a fixed 1 ms, 0.2 s
// with the doubling, on a machine whose two cores QEMU and the console
// share.) A reader that is not a buffered file (a generator handing out one
// chunk per Read) is never made to wait: nothing would gather meanwhile.
const (
	coalesceBelow = 4 << 10
	coalesceFor   = time.Millisecond
	coalesceMax   = 8 * time.Millisecond
	floodReads    = 32
)

func (c *Console) reader(rw io.Reader, coalesce bool) {
	buf := make([]byte, 64<<10)
	var err error
	var last time.Time
	gather, trickle := coalesceFor, 0
	for {
		var n int
		n, err = rw.Read(buf)
		if n > 0 {
			c.Feed(buf[:n])
		}
		if err != nil {
			break
		}
		now := time.Now()
		switch {
		case !coalesce || n >= coalesceBelow || now.Sub(last) >= coalesceFor:
			gather, trickle = coalesceFor, 0 // idle, or reads that fill up
		default:
			// Back to back and small: let bytes gather. A flood that
			// lasts (more reads than a command's answer takes) gathers
			// longer, up to coalesceMax.
			time.Sleep(gather)
			now = time.Now()
			if trickle++; trickle >= floodReads {
				gather = min(2*gather, coalesceMax)
			}
		}
		last = now
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
		c.event("eof", map[string]any{"error": err.Error()})
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
		c.event("close", map[string]any{"reason": r.Message, "kind": r.Kind})
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
	c.flushOutputLocked()
	if c.log != nil && !c.logClosed {
		_ = c.log.Sync()
		// A log that holds history memory no longer does stays open for
		// reading (closed with the console, by the runtime).
		if c.raw.base == 0 {
			if err := c.log.Close(); err != nil && c.logErr == nil {
				c.logErr = err
			}
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
