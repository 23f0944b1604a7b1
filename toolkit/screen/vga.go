package screen

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// VGA registers this package reads. QEMU has no QMP or HMP command that
// shows the adapter's state, so they are read through the I/O ports with
// HMP "i" and "o": an indexed register needs its index written first, which
// races with a guest programming the same port pair (its data byte would
// land in our register), so the guest is paused around the reads and every
// index register is put back as it was.
const (
	portMiscRead = 0x3cc // miscellaneous output, read side: bit 0 = colour (CRTC at 0x3d4)
	portGCIndex  = 0x3ce // graphics controller
	portSeqIndex = 0x3c4 // sequencer

	gcReadMap = 4 // read map select (plane for reads outside odd/even)
	gcMode    = 5 // bit 4: odd/even (host reads see char, attribute pairs)
	gcMisc    = 6 // bit 0: graphics mode; bits 2–3: memory map (window)

	seqMemMode = 4 // bit 3: chain 4 (takes precedence over odd/even)

	crHDispEnd   = 0x01
	crOverflow   = 0x07
	crMaxScan    = 0x09
	crCursorTop  = 0x0a // bit 5: cursor off
	crStartHi    = 0x0c
	crStartLo    = 0x0d
	crCursorHi   = 0x0e
	crCursorLo   = 0x0f
	crVDispEnd   = 0x12
	crLineOffset = 0x13
)

// crtcLayout are the CRTC registers of a text mode's layout, which change
// only when the guest sets a mode; crtcMoving are the ones a guest changes
// while it runs (font height, cursor, start address).
var (
	crtcLayout = []byte{crHDispEnd, crOverflow, crVDispEnd, crLineOffset}
	crtcMoving = []byte{crMaxScan, crCursorTop, crStartHi, crStartLo, crCursorHi, crCursorLo}
)

// vgaState is what the registers say about the screen.
type vgaState struct {
	misc byte
	gc   [9]byte
	seq  [5]byte
	crtc [0x19]byte
}

// graphics reports whether the adapter is in a graphics mode (GR06 bit 0;
// QEMU sets it for VBE modes too, and draws from it).
func (v *vgaState) graphics() bool { return v.gc[gcMisc]&1 != 0 }

// geometry is a text mode's layout.
type geometry struct {
	cols, rows int
	charHeight int
	stride     int // cells from one row's start to the next
	start      int // CRTC start address, in cells
	cursor     int // CRTC cursor address, in cells
	cursorOn   bool
	windowBase uint64 // guest-physical base of the host window
	windowSize int
	oddEven    bool // host reads return (character, attribute) pairs
}

// text returns the text mode's geometry as QEMU draws it: columns from the
// horizontal display end, rows from the vertical display end over the
// character height, the row stride from the offset register (two cells per
// unit), the start address and cursor in cells.
func (v *vgaState) text() geometry {
	cr := v.crtc
	g := geometry{
		cols:       int(cr[crHDispEnd]) + 1,
		charHeight: int(cr[crMaxScan]&0x1f) + 1,
		stride:     int(cr[crLineOffset]) * 2,
		start:      int(cr[crStartHi])<<8 | int(cr[crStartLo]),
		cursor:     int(cr[crCursorHi])<<8 | int(cr[crCursorLo]),
		cursorOn:   cr[crCursorTop]&0x20 == 0,
	}
	vde := int(cr[crVDispEnd]) | int(cr[crOverflow]&0x02)<<7 | int(cr[crOverflow]&0x40)<<3
	g.rows = (vde + 1) / g.charHeight
	if g.stride < g.cols {
		g.stride = g.cols
	}
	switch (v.gc[gcMisc] >> 2) & 3 {
	case 0:
		g.windowBase, g.windowSize = 0xa0000, 128<<10
	case 1:
		g.windowBase, g.windowSize = 0xa0000, 64<<10
	case 2:
		g.windowBase, g.windowSize = 0xb0000, 32<<10
	default:
		g.windowBase, g.windowSize = 0xb8000, 32<<10
	}
	g.oddEven = v.gc[gcMode]&0x10 != 0 && v.gc[gcReadMap]&2 == 0
	return g
}

// String describes the mode for the timeline: "80x25 text (9x16 font…)".
func (g geometry) String() string {
	return fmt.Sprintf("%dx%d text, %d-line font, start %d", g.cols, g.rows, g.charHeight, g.start)
}

// hmp runs a human monitor command.
func (s *Screen) hmp(ctx context.Context, line string) (string, error) {
	raw, err := s.qmp(ctx, "human-monitor-command", map[string]any{"command-line": line})
	if err != nil {
		return "", err
	}
	var out string
	if err := json.Unmarshal(raw, &out); err != nil {
		return "", vmerr.Wrap(vmerr.Protocol, err, "screen %s: reply to %q", s.name, line)
	}
	return out, nil
}

// inb reads an I/O port; HMP answers "portb[0x03d4] = 0x0f".
func (s *Screen) inb(ctx context.Context, port int) (byte, error) {
	out, err := s.hmp(ctx, fmt.Sprintf("i /b 0x%x", port))
	if err != nil {
		return 0, err
	}
	_, val, ok := strings.Cut(out, "=")
	if ok {
		if n, err := strconv.ParseUint(strings.TrimSpace(val), 0, 8); err == nil {
			return byte(n), nil
		}
	}
	return 0, vmerr.New(vmerr.Protocol, "screen %s: port 0x%x: unexpected reply %q", s.name, port, out)
}

// outb writes an I/O port.
func (s *Screen) outb(ctx context.Context, port int, val byte) error {
	out, err := s.hmp(ctx, fmt.Sprintf("o /b 0x%x 0x%x", port, val))
	if err == nil && strings.TrimSpace(out) != "" {
		err = vmerr.New(vmerr.Protocol, "screen %s: writing port 0x%x: %q", s.name, port, out)
	}
	return err
}

// indexed reads registers regs of the index/data pair at port, port+1 into
// dst and puts the index register back as the guest left it.
func (s *Screen) indexed(ctx context.Context, port int, regs []byte, dst []byte) error {
	saved, err := s.inb(ctx, port)
	if err != nil {
		return err
	}
	for _, r := range regs {
		if err := s.outb(ctx, port, r); err != nil {
			return err
		}
		if dst[r], err = s.inb(ctx, port+1); err != nil {
			return err
		}
	}
	return s.outb(ctx, port, saved)
}

// readRegs reads the registers that say the mode and, in a text mode, the
// layout; with prev, the layout registers are taken from prev (one HMP
// command costs QEMU ~1 ms, so a poll reads only what a running guest
// changes). The guest must be paused.
func (s *Screen) readRegs(ctx context.Context, prev *vgaState) (*vgaState, error) {
	v := &vgaState{}
	if prev != nil {
		*v = *prev
	} else {
		var err error
		if v.misc, err = s.inb(ctx, portMiscRead); err != nil {
			return nil, err
		}
	}
	if err := s.indexed(ctx, portGCIndex, []byte{gcReadMap, gcMode, gcMisc}, v.gc[:]); err != nil {
		return nil, err
	}
	if v.graphics() {
		return v, nil
	}
	crtc := 0x3b4
	if v.misc&1 != 0 {
		crtc = 0x3d4
	}
	regs := crtcMoving
	if prev == nil {
		regs = append(append([]byte(nil), crtcLayout...), crtcMoving...)
	}
	if err := s.indexed(ctx, crtc, regs, v.crtc[:]); err != nil {
		return nil, err
	}
	return v, nil
}

// readPhys reads size bytes of guest-physical memory at addr with pmemsave
// into the private directory.
func (s *Screen) readPhys(ctx context.Context, addr uint64, size int) ([]byte, error) {
	f := filepath.Join(s.dir, "mem.bin")
	if _, err := s.qmp(ctx, "pmemsave", map[string]any{"val": addr, "size": size, "filename": f}); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "screen %s: reading the memory dump", s.name)
	}
	if len(b) != size {
		return nil, vmerr.New(vmerr.Protocol, "screen %s: pmemsave wrote %d bytes, not %d", s.name, len(b), size)
	}
	return b, nil
}
