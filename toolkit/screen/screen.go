// Package screen reads what a QEMU guest's display shows and types on its
// keyboard, so that boot menus and early errors, which real boot media put
// on the VGA screen and not on the serial port, can be waited for like a
// console.
//
// In a VGA text mode the screen is read exactly: the adapter's registers
// (mode, geometry, start address, cursor) through the I/O ports with the
// guest paused for a few milliseconds, and the characters and attributes
// from the text buffer, code page 437 mapped to Unicode. In a graphics mode
// (VBE, UEFI's GOP, vesamenu) a screendump is read by OCR (tesseract).
//
//	s, err := screen.New(vm, screen.Options{Name: "vm", Run: run})
//	defer s.Close()
//	m, err := s.Expect(ctx, []console.Pattern{{Text: "GNU GRUB"}}, screen.ExpectOptions{Timeout: time.Minute})
//	err = s.Type(ctx, "c")
//
// Every command this package sends is a QMP command on the interface it is
// given; nothing here depends on how QEMU was started.
//
// # What QEMU 7.2 offers, measured
//
// No QMP or HMP command shows the VGA adapter's state (there is no "info
// vga"; the VGA device's QOM properties are configuration only). HMP "i"
// and "o" reach its I/O ports, so the registers are read as a guest reads
// them: graphics controller register 6 (bit 0: graphics mode; QEMU sets it
// for VBE modes too and decides text or graphics by it; bits 2–3: where the
// host window is), register 5 bit 4 and register 4 bit 1 (odd/even reads,
// so the window returns character and attribute pairs), the miscellaneous
// output register (colour: CRTC at 0x3d4), and the CRTC's horizontal and
// vertical display end, overflow, character height, offset (row stride),
// cursor start, start address and cursor address. An indexed register
// needs its index written first, and a guest writing the same index/data
// pair between our two commands would put its data byte into our register;
// so the guest is paused (QMP stop/cont; a guest that was not running is
// left as it was) and every index register is put back. Each HMP command
// costs QEMU ~1 ms (pipelining them does not help: 0.86 against 0.9 ms), so
// a full reading pauses the guest ~30–45 ms under TCG; a poll reads only the
// registers a running guest changes. The text window is read with pmemsave
// (32 KB in ~2 ms; HMP xp of the same prints 115 KB of hex in ~4 ms).
//
// A poll first takes a screendump (PPM, ~4 ms; only its size is used in a
// text mode, as a mode change) and the text window, unpaused; only when the
// window's bytes or the size changed (or the reading is older than
// Options.Refresh, or keys were sent) does it pause the guest for the
// registers. The screendump's size alone does not tell the mode: 80x25 and
// 80x50 are both 720x400. The pauses show on the timeline as QMP STOP and
// RESUME events.
package screen

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// QMP runs one QMP command and returns its "return" value; *qemu.VM
// satisfies it.
type QMP interface {
	QMP(ctx context.Context, cmd string, args any) (json.RawMessage, error)
}

// QuietQMP is implemented by a QMP whose QMPQuiet runs a command without
// recording it in the run's timeline. The screen polls with dozens of
// commands a second; when q has QMPQuiet they stay out of the timeline,
// which gets the screen's own events instead.
type QuietQMP interface {
	QMPQuiet(ctx context.Context, cmd string, args any) (json.RawMessage, error)
}

// Defaults of Options.
const (
	// DefaultPoll is how often Expect looks at the screen.
	DefaultPoll = 200 * time.Millisecond
	// DefaultTimeout bounds a wait whose options and screen set none.
	DefaultTimeout = 5 * time.Minute
	// DefaultRefresh is how old a reading may get before a poll reads the
	// registers again although neither the text buffer nor the screendump's
	// size changed.
	DefaultRefresh = 5 * time.Second
	// DefaultWatchPoll is how often watchers look at the screen when no
	// wait is polling it.
	DefaultWatchPoll = time.Second
)

// Options configure a Screen.
type Options struct {
	// Name names the screen in errors, in the timeline source
	// "screen:NAME" and in the names of its screenshots (default "vm").
	Name string
	// Run receives the screen's events and screenshots. It may be nil; then
	// Shot needs an absolute path.
	Run *journal.Run
	// Dir is a private directory QEMU writes memory and screen dumps to (it
	// must be writable by QEMU and readable by us). "" makes a fresh one,
	// removed by Close.
	Dir string
	// Poll is how often Expect reads the screen; 0 means DefaultPoll.
	Poll time.Duration
	// DefaultTimeout bounds a wait that sets no Timeout; 0 means
	// DefaultTimeout.
	DefaultTimeout time.Duration
	// Refresh: see DefaultRefresh; 0 means DefaultRefresh.
	Refresh time.Duration
	// WatchPoll is how often watchers read the screen while no wait does; 0
	// means DefaultWatchPoll.
	WatchPoll time.Duration
	// OCR configures the reading of graphics modes.
	OCR OCROptions
	// Keys configures typing.
	Keys KeyOptions
}

// Screen is a guest's display and keyboard. It is safe for concurrent use.
type Screen struct {
	q       QMP
	quiet   QuietQMP
	name    string
	source  string
	run     *journal.Run
	dir     string
	ownDir  bool
	poll    time.Duration
	timeout time.Duration
	refresh time.Duration
	wpoll   time.Duration
	ocr     OCROptions
	keys    KeyOptions

	readMu sync.Mutex // one reading at a time: the dump files, the pause
	cache  reading    // the last reading and what it was taken from

	watchMu sync.Mutex // one watcher pass at a time (watcher.seen)

	mu       sync.Mutex
	shots    map[string]int // screenshots taken per kind, for file names
	watchers []*watcher
	fails    []*watchFail
	watchOn  bool
	closed   bool
	done     chan struct{}
}

// New returns the screen of the guest behind q. It sends nothing yet.
func New(q QMP, opt Options) (*Screen, error) {
	if q == nil {
		return nil, vmerr.New(vmerr.Usage, "screen: no QMP")
	}
	s := &Screen{
		q:       q,
		name:    opt.Name,
		run:     opt.Run,
		dir:     opt.Dir,
		poll:    opt.Poll,
		timeout: opt.DefaultTimeout,
		refresh: opt.Refresh,
		wpoll:   opt.WatchPoll,
		ocr:     opt.OCR.withDefaults(),
		keys:    opt.Keys.withDefaults(),
		shots:   map[string]int{},
		done:    make(chan struct{}),
	}
	if qq, ok := q.(QuietQMP); ok {
		s.quiet = qq
	}
	if s.name == "" {
		s.name = "vm"
	}
	s.source = "screen:" + s.name
	if s.poll <= 0 {
		s.poll = DefaultPoll
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.refresh <= 0 {
		s.refresh = DefaultRefresh
	}
	if s.wpoll <= 0 {
		s.wpoll = DefaultWatchPoll
	}
	if s.dir == "" {
		d, err := os.MkdirTemp("", "vmscript-screen-")
		if err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "screen %s: private directory", s.name)
		}
		s.dir, s.ownDir = d, true
	} else if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "screen %s: private directory", s.name)
	}
	return s, nil
}

// Name returns the screen's name.
func (s *Screen) Name() string { return s.name }

// Close stops the watchers and removes the private directory if New made
// it. Reads after Close fail.
func (s *Screen) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if s.ownDir {
		return os.RemoveAll(s.dir)
	}
	return nil
}

// qmp runs a command, quietly when the QMP allows it.
func (s *Screen) qmp(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	if s.quiet != nil {
		return s.quiet.QMPQuiet(ctx, cmd, args)
	}
	return s.q.QMP(ctx, cmd, args)
}

// event writes to the run's timeline, if there is a run.
func (s *Screen) event(kind string, fields map[string]any) {
	if s.run != nil {
		s.run.Event(s.source, kind, fields)
	}
}

// Mode says how the adapter draws.
type Mode string

// Modes of Snapshot.Mode.
const (
	// ModeText is a VGA text mode: the text is exact.
	ModeText Mode = "text"
	// ModeGraphics is a graphics mode: the text is what OCR read.
	ModeGraphics Mode = "graphics"
)

// Cell is one character cell of a text mode.
type Cell struct {
	// Code is the character code in the text buffer (code page 437).
	Code byte
	// Rune is Code in Unicode.
	Rune rune
	// Attr is the attribute byte: background colour in bits 4–6 (bit 7
	// blink or bright background), foreground colour in bits 0–3.
	Attr byte
}

// Cursor is the text cursor's cell.
type Cursor struct {
	Row, Col int
	// Visible is false when the cursor is switched off or outside the
	// screen.
	Visible bool
}

// Snapshot is what the screen showed at one moment.
type Snapshot struct {
	// Mode is text (exact) or graphics (OCR).
	Mode Mode
	// Lines are the screen's rows in a text mode (trailing blanks removed,
	// one string per row) or the lines OCR found in a graphics mode.
	Lines []string
	// Cols and Rows are a text mode's size in cells (80x25, 80x50, …).
	Cols, Rows int
	// CharHeight is a text mode's character height in scan lines.
	CharHeight int
	// Start is a text mode's CRTC start address in cells (a guest that
	// scrolls by moving it shows the buffer from there).
	Start int
	// Cursor is a text mode's cursor.
	Cursor Cursor
	// Cells are a text mode's cells, row by row (Rows*Cols).
	Cells []Cell
	// Width and Height are the screendump's size in pixels, when one was
	// taken (always in a graphics mode).
	Width, Height int
	// At is when the reading began; Took how long it took (OCR included);
	// Paused how long the guest was paused for it. A poll that finds
	// nothing changed returns the earlier reading, At and all.
	At           time.Time
	Took, Paused time.Duration
}

// Text returns the lines joined by newlines, without trailing empty lines.
func (s *Snapshot) Text() string {
	return strings.TrimRight(strings.Join(s.Lines, "\n"), "\n")
}

// Cell returns the cell at row, col of a text mode (the zero Cell outside).
func (s *Snapshot) Cell(row, col int) Cell {
	if row < 0 || col < 0 || row >= s.Rows || col >= s.Cols || len(s.Cells) < s.Rows*s.Cols {
		return Cell{}
	}
	return s.Cells[row*s.Cols+col]
}
