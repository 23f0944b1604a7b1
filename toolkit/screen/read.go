package screen

import (
	"context"
	"encoding/json"
	"hash/maphash"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// reading is the last full reading and what the next poll compares with.
type reading struct {
	snap       *Snapshot
	regs       *vgaState
	geo        geometry
	width      int
	height     int
	windowHash uint64 // text mode: the text window's bytes
	pixelHash  uint64 // graphics mode: the screendump's pixels
	full       time.Time
}

var hashSeed = maphash.MakeSeed()

// Text reads the screen now: in a text mode the registers and the text
// buffer (the guest is paused for that, a few milliseconds), in a graphics
// mode a screendump read by OCR.
func (s *Screen) Text(ctx context.Context) (*Snapshot, error) {
	snap, err := s.readNow(ctx)
	if err != nil {
		return nil, err
	}
	s.sawSnapshot(snap)
	return snap, nil
}

func (s *Screen) readNow(ctx context.Context) (*Snapshot, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	return s.readFull(ctx, nil)
}

// current returns what the screen shows, reading the registers again only
// when something changed: the text window's bytes or the screendump's size
// (a mode change), or the reading is older than the refresh interval. In a
// graphics mode OCR runs again only when the pixels changed. A poll that
// finds nothing changed pauses nothing.
func (s *Screen) current(ctx context.Context) (*Snapshot, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	c := &s.cache
	if c.snap == nil || time.Since(c.full) > s.refresh {
		return s.readFull(ctx, nil)
	}
	t0 := time.Now()
	img, err := s.screendump(ctx, c.snap.Mode == ModeGraphics)
	if err != nil {
		return nil, err
	}
	if img.w != c.width || img.h != c.height {
		return s.readFull(ctx, nil)
	}
	if c.snap.Mode == ModeText {
		win, err := s.readPhys(ctx, c.geo.windowBase, c.geo.windowSize)
		if err != nil {
			return nil, err
		}
		if maphash.Bytes(hashSeed, win) != c.windowHash {
			return s.readFull(ctx, c.regs)
		}
		return c.snap, nil
	}
	h := maphash.Bytes(hashSeed, img.pix)
	if h == c.pixelHash {
		return c.snap, nil
	}
	snap := &Snapshot{Mode: ModeGraphics, Width: img.w, Height: img.h, At: t0}
	if snap.Lines, err = s.recognise(ctx, img); err != nil {
		return nil, err
	}
	snap.Took = time.Since(t0)
	c.snap, c.pixelHash = snap, h
	return snap, nil
}

// invalidate makes the next poll read everything again (after keys were
// sent: a scrollback moves the start address without touching the buffer).
func (s *Screen) invalidate() {
	s.readMu.Lock()
	s.cache.full = time.Time{}
	s.readMu.Unlock()
}

func (s *Screen) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return vmerr.New(vmerr.Usage, "screen %s is closed", s.name)
	}
	return nil
}

// readFull reads the registers (all of them, or with prev only those a
// running guest changes) and the text window with the guest paused, and
// refreshes the cache. The screendump is taken before the pause: a mode
// that changes between the two shows as a changed size at the next poll.
func (s *Screen) readFull(ctx context.Context, prev *vgaState) (*Snapshot, error) {
	t0 := time.Now()
	img, err := s.screendump(ctx, true)
	if err != nil {
		return nil, err
	}
	var (
		regs *vgaState
		win  []byte
	)
	paused, err := s.paused(ctx, func() error {
		var err error
		if regs, err = s.readRegs(ctx, prev); err != nil || regs.graphics() {
			return err
		}
		if geo := regs.text(); geo.oddEven {
			win, err = s.readPhys(ctx, geo.windowBase, geo.windowSize)
		} else {
			win, err = s.oddEvenRead(ctx, regs, geo)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	c := &s.cache
	c.full, c.regs, c.width, c.height = t0, regs, img.w, img.h
	if regs.graphics() {
		h := maphash.Bytes(hashSeed, img.pix)
		if c.snap != nil && c.snap.Mode == ModeGraphics && h == c.pixelHash {
			return c.snap, nil // the same pixels: OCR would read the same
		}
		snap := &Snapshot{Mode: ModeGraphics, Width: img.w, Height: img.h, At: t0, Paused: paused}
		if snap.Lines, err = s.recognise(ctx, img); err != nil {
			c.snap = nil
			return nil, err
		}
		snap.Took = time.Since(t0)
		c.snap, c.pixelHash, c.geo = snap, h, geometry{}
		return snap, nil
	}
	geo := regs.text()
	snap := decodeText(geo, win)
	snap.Width, snap.Height, snap.At, snap.Paused = img.w, img.h, t0, paused
	snap.Took = time.Since(t0)
	c.snap, c.geo, c.windowHash = snap, geo, maphash.Bytes(hashSeed, win)
	return snap, nil
}

// decodeText turns the text window's bytes into a snapshot.
func decodeText(g geometry, win []byte) *Snapshot {
	snap := &Snapshot{Mode: ModeText, Cols: g.cols, Rows: g.rows, CharHeight: g.charHeight, Start: g.start}
	snap.Cells = make([]Cell, g.rows*g.cols)
	snap.Lines = make([]string, g.rows)
	var b strings.Builder
	for r := 0; r < g.rows; r++ {
		b.Reset()
		for c := 0; c < g.cols; c++ {
			i := (g.start + r*g.stride + c) * 2
			cell := Cell{Code: 0xff, Rune: ' '}
			if i+1 < len(win) {
				cell = Cell{Code: win[i], Rune: cp437[win[i]], Attr: win[i+1]}
			}
			snap.Cells[r*g.cols+c] = cell
			b.WriteRune(cell.Rune)
		}
		snap.Lines[r] = strings.TrimRight(b.String(), " ")
	}
	if off := g.cursor - g.start; off >= 0 && g.stride > 0 {
		snap.Cursor = Cursor{Row: off / g.stride, Col: off % g.stride}
		snap.Cursor.Visible = g.cursorOn && snap.Cursor.Row < g.rows && snap.Cursor.Col < g.cols
	}
	return snap
}

// paused runs fn with the guest paused, if it runs, and lets it run again
// however fn ends; it returns how long the guest was paused.
func (s *Screen) paused(ctx context.Context, fn func() error) (time.Duration, error) {
	raw, err := s.qmp(ctx, "query-status", nil)
	if err != nil {
		return 0, err
	}
	var st struct {
		Running bool `json:"running"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return 0, vmerr.Wrap(vmerr.Protocol, err, "screen %s: query-status", s.name)
	}
	if !st.Running {
		return 0, fn()
	}
	t0 := time.Now()
	if _, err := s.qmp(ctx, "stop", nil); err != nil {
		return 0, err
	}
	ferr := fn()
	// Resume even when ctx is done: a wait that ends must not leave the
	// guest paused.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, cerr := s.qmp(rctx, "cont", nil)
	took := time.Since(t0)
	if ferr != nil {
		return took, ferr
	}
	return took, cerr
}

// oddEvenRead reads the text window while the guest (paused) has the
// adapter set for plane access, as when it loads a font: odd/even reads are
// switched on for the read and the registers put back.
func (s *Screen) oddEvenRead(ctx context.Context, regs *vgaState, g geometry) (_ []byte, err error) {
	type reg struct {
		port    int
		idx     byte
		old, rw byte
	}
	sets := []reg{
		{portGCIndex, gcReadMap, regs.gc[gcReadMap], regs.gc[gcReadMap] &^ 2},
		{portGCIndex, gcMode, regs.gc[gcMode], regs.gc[gcMode] | 0x10},
		{portSeqIndex, seqMemMode, regs.seq[seqMemMode], regs.seq[seqMemMode] &^ 0x08},
	}
	gi, err := s.inb(ctx, portGCIndex)
	if err != nil {
		return nil, err
	}
	si, err := s.inb(ctx, portSeqIndex)
	if err != nil {
		return nil, err
	}
	if err := s.indexed(ctx, portSeqIndex, []byte{seqMemMode}, regs.seq[:]); err != nil {
		return nil, err
	}
	sets[2].old, sets[2].rw = regs.seq[seqMemMode], regs.seq[seqMemMode]&^0x08
	write := func(useOld bool) error {
		for _, r := range sets {
			v := r.rw
			if useOld {
				v = r.old
			}
			if err := s.outb(ctx, r.port, r.idx); err != nil {
				return err
			}
			if err := s.outb(ctx, r.port+1, v); err != nil {
				return err
			}
		}
		if err := s.outb(ctx, portGCIndex, gi); err != nil {
			return err
		}
		return s.outb(ctx, portSeqIndex, si)
	}
	if err := write(false); err != nil {
		return nil, err
	}
	defer func() {
		if werr := write(true); err == nil {
			err = werr
		}
	}()
	return s.readPhys(ctx, g.windowBase, g.windowSize)
}
