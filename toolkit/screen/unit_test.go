package screen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func TestCP437(t *testing.T) {
	for code, want := range map[byte]rune{
		0x00: ' ', 0x18: '↑', 0x19: '↓', 'A': 'A', 0x7f: '⌂', 0x80: 'Ç', 0xb3: '│',
		0xc4: '─', 0xda: '┌', 0xbf: '┐', 0xc0: '└', 0xd9: '┘', 0xdb: '█', 0xe1: 'ß', 0xfe: '■', 0xff: ' ',
	} {
		if got := CP437(code); got != want {
			t.Errorf("CP437(%#x) = %q, want %q", code, got, want)
		}
	}
}

// fakeVGA is a QMP that answers what the screen sends: query-status, stop,
// cont, HMP port reads and writes on a VGA register file, pmemsave of a
// text window and screendump. It fails the test on a port write while the
// guest runs.
type fakeVGA struct {
	t       *testing.T
	running bool
	stops   int
	misc    byte
	index   map[int]byte // index register per port
	regs    map[int]*[256]byte
	window  []byte // 32 KB at 0xb8000
	w, h    int
}

func newFakeVGA(t *testing.T) *fakeVGA {
	f := &fakeVGA{t: t, running: true, misc: 0x67, index: map[int]byte{0x3ce: 5, 0x3c4: 1, 0x3d4: 0x0f},
		regs: map[int]*[256]byte{0x3ce: {}, 0x3c4: {}, 0x3d4: {}}, window: make([]byte, 32<<10), w: 720, h: 400}
	gc, cr := f.regs[0x3ce], f.regs[0x3d4]
	gc[gcMode], gc[gcMisc] = 0x10, 0x0e
	cr[crHDispEnd], cr[crOverflow], cr[crMaxScan], cr[crVDispEnd], cr[crLineOffset] = 0x4f, 0x1f, 0x4f, 0x8f, 0x28
	cr[crCursorTop] = 0x0d
	for i := 0; i < len(f.window); i += 2 {
		f.window[i], f.window[i+1] = ' ', 0x07
	}
	return f
}

// put writes text at cell offset off of the buffer.
func (f *fakeVGA) put(off int, s string) {
	for i := 0; i < len(s); i++ {
		f.window[2*(off+i)] = s[i]
	}
}

func (f *fakeVGA) QMP(_ context.Context, cmd string, args any) (json.RawMessage, error) {
	a, _ := args.(map[string]any)
	switch cmd {
	case "query-status":
		return json.Marshal(map[string]any{"running": f.running})
	case "stop":
		f.running = false
		f.stops++
	case "cont":
		f.running = true
	case "pmemsave":
		base, size := a["val"].(uint64), a["size"].(int)
		if base != 0xb8000 || size != len(f.window) {
			f.t.Errorf("pmemsave %#x %d", base, size)
		}
		return json.RawMessage("{}"), os.WriteFile(a["filename"].(string), f.window, 0o600)
	case "screendump":
		var b bytes.Buffer
		fmt.Fprintf(&b, "P6\n# fake\n%d %d\n255\n", f.w, f.h)
		b.Write(make([]byte, f.w*f.h*3))
		return json.RawMessage("{}"), os.WriteFile(a["filename"].(string), b.Bytes(), 0o600)
	case "human-monitor-command":
		return f.hmp(a["command-line"].(string))
	default:
		return nil, vmerr.New(vmerr.Refused, "fake: %s", cmd)
	}
	return json.RawMessage("{}"), nil
}

func (f *fakeVGA) hmp(line string) (json.RawMessage, error) {
	fs := strings.Fields(line)
	port, _ := strconv.ParseInt(fs[2], 0, 32)
	p := int(port)
	if fs[0] == "o" {
		if f.running {
			f.t.Errorf("port write %q while the guest runs", line)
		}
		v, _ := strconv.ParseInt(fs[3], 0, 32)
		if _, ok := f.regs[p]; ok {
			f.index[p] = byte(v)
		} else {
			f.regs[p-1][f.index[p-1]] = byte(v)
		}
		return json.Marshal("")
	}
	var v byte
	switch {
	case p == portMiscRead:
		v = f.misc
	case f.regs[p] != nil:
		v = f.index[p]
	case f.regs[p-1] != nil:
		v = f.regs[p-1][f.index[p-1]]
	}
	return json.Marshal(fmt.Sprintf("portb[0x%04x] = 0x%02x\r\n", p, v))
}

func TestReadTextModeFake(t *testing.T) {
	f := newFakeVGA(t)
	// The guest scrolled by moving the start address to cell 160 (two
	// rows); the cursor is at row 1, column 7 of what is shown.
	f.put(160, "first row")
	f.put(160+80, "grub> echo")
	f.put(160+24*80, "last row")
	f.put(0, "scrolled away")
	cr := f.regs[0x3d4]
	cr[crStartHi], cr[crStartLo] = 0, 160
	cur := 160 + 80 + 7
	cr[crCursorHi], cr[crCursorLo] = byte(cur>>8), byte(cur)
	s, err := New(f, Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	snap, err := s.Text(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Mode != ModeText || snap.Cols != 80 || snap.Rows != 25 || snap.CharHeight != 16 || snap.Start != 160 {
		t.Fatalf("snapshot %s %dx%d font %d start %d", snap.Mode, snap.Cols, snap.Rows, snap.CharHeight, snap.Start)
	}
	if snap.Lines[0] != "first row" || snap.Lines[1] != "grub> echo" || snap.Lines[24] != "last row" || strings.Contains(snap.Text(), "scrolled") {
		t.Errorf("text:\n%s", snap.Text())
	}
	if snap.Cursor != (Cursor{Row: 1, Col: 7, Visible: true}) {
		t.Errorf("cursor %+v", snap.Cursor)
	}
	if !f.running || f.stops != 1 || f.index[0x3d4] != 0x0f || f.index[0x3ce] != 5 {
		t.Errorf("running %v stops %d, index registers %#x %#x not restored", f.running, f.stops, f.index[0x3d4], f.index[0x3ce])
	}
	// A poll that finds the buffer unchanged pauses nothing; a changed one
	// reads the registers again.
	if _, err := s.current(ctx); err != nil || f.stops != 1 {
		t.Errorf("unchanged poll: %v, %d stops", err, f.stops)
	}
	f.put(160, "FIRST")
	snap, err = s.current(ctx)
	if err != nil || f.stops != 2 || snap.Lines[0] != "FIRST row" {
		t.Errorf("changed poll: %v, %d stops, %q", err, f.stops, snap.Lines[0])
	}
	// 80x50: the same pixels with an 8-line font.
	cr[crMaxScan] = 0x47
	if snap, err = s.Text(ctx); err != nil || snap.Rows != 50 || snap.CharHeight != 8 {
		t.Errorf("80x50: %v, %d rows, font %d", err, snap.Rows, snap.CharHeight)
	}
	// A paused guest stays paused.
	f.running = false
	if _, err := s.Text(ctx); err != nil || f.running {
		t.Errorf("paused guest: %v, running %v", err, f.running)
	}
}

func TestExpectFake(t *testing.T) {
	f := newFakeVGA(t)
	f.put(80, "GNU GRUB  version 2.06")
	s, err := New(f, Options{Dir: t.TempDir(), Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	m, err := s.Expect(ctx, []console.Pattern{{Text: "nothing"}, {Text: "GNU GRUB version "}}, ExpectOptions{Timeout: time.Second})
	if err != nil || m.Index != 1 || m.Text != "GNU GRUB  version" || m.Line != 1 {
		t.Fatalf("match %+v, %v", m, err)
	}
	_, err = s.Expect(ctx, []console.Pattern{{Text: "absent"}}, ExpectOptions{Timeout: 50 * time.Millisecond})
	var e *vmerr.Error
	if !vmerrAs(err, &e) || e.Kind != vmerr.Timeout || !strings.Contains(e.Context["screen"].(string), "GNU GRUB") {
		t.Fatalf("timeout: %v", err)
	}
	cancel, err := s.Watch(console.Pattern{Regex: `GRUB\s+version`}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expect(ctx, []console.Pattern{{Text: "absent"}}, ExpectOptions{Timeout: time.Second}); !vmerr.Is(err, vmerr.Watch) {
		t.Errorf("with a fail watcher: %v", err)
	}
	cancel()
	if _, err := s.Expect(ctx, []console.Pattern{{Text: "GRUB"}}, ExpectOptions{Timeout: time.Second}); err != nil {
		t.Errorf("after cancel: %v", err)
	}
}

// TestWatchFake: a watcher with a function reads the screen by itself
// while no wait polls, and calls the function once per line that appears.
func TestWatchFake(t *testing.T) {
	f := newFakeVGA(t)
	s, err := New(f, Options{Dir: t.TempDir(), WatchPoll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := make(chan string, 10)
	cancel, err := s.Watch(console.Pattern{Text: "Kernel panic"}, false, func(l string) { got <- l })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	time.Sleep(100 * time.Millisecond)
	s.readMu.Lock()
	f.put(80*3, "Kernel panic - not syncing")
	s.readMu.Unlock()
	select {
	case l := <-got:
		if l != "Kernel panic - not syncing" {
			t.Errorf("line %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher never fired")
	}
	time.Sleep(100 * time.Millisecond)
	if len(got) != 0 {
		t.Errorf("fired again for the same line")
	}
}

func vmerrAs(err error, e **vmerr.Error) bool {
	v, ok := err.(*vmerr.Error)
	*e = v
	return ok
}

func TestMatcher(t *testing.T) {
	lines := []string{"", "   GNU GRUB  version 2.06", "grub> echo hello", "hello", "grub>"}
	for _, c := range []struct {
		p        console.Pattern
		ok       bool
		text     string
		line     int
		captures []string
	}{
		{console.Pattern{Text: "GNU GRUB version"}, true, "GNU GRUB  version", 1, nil},
		{console.Pattern{Text: "grub> "}, true, "grub>", 2, nil},
		{console.Pattern{Text: "hello\ngrub> "}, true, "hello\ngrub>", 3, nil},
		{console.Pattern{Text: "GRUB version 3"}, false, "", 0, nil},
		{console.Pattern{Regex: `version (\d+)\.(\d+)`}, true, "version 2.06", 1, []string{"2", "06"}},
		{console.Pattern{Regex: `^hello\ngrub>$`}, true, "hello\ngrub>", 3, nil},
	} {
		m, err := compile([]console.Pattern{c.p})
		if err != nil {
			t.Fatal(err)
		}
		mt, ok := m.find(lines)
		if ok != c.ok {
			t.Errorf("%s: matched %v", c.p, ok)
			continue
		}
		if ok && (mt.Text != c.text || mt.Line != c.line || fmt.Sprint(mt.Captures) != fmt.Sprint(c.captures)) {
			t.Errorf("%s: %+v", c.p, mt)
		}
	}
	if _, err := compile([]console.Pattern{{Text: "  "}}); err == nil {
		t.Error("a blank pattern was accepted")
	}
}

func TestKeyOf(t *testing.T) {
	for r, want := range map[rune]string{
		'a': "a", 'Z': "shift z", '7': "7", '!': "shift 1", ' ': "spc", '\n': "ret", '\t': "tab",
		'-': "minus", '_': "shift minus", '"': "shift apostrophe", '/': "slash", '?': "shift slash",
	} {
		if k, ok := keyOf(r); !ok || strings.Join(k, " ") != want {
			t.Errorf("keyOf(%q) = %v %v, want %s", r, k, ok, want)
		}
	}
	if _, ok := keyOf('é'); ok {
		t.Error("é has a key")
	}
}

func TestReadPPM(t *testing.T) {
	img, err := readPPM(strings.NewReader("P6\n# comment\n2 1\n255\n\x01\x02\x03\x04\x05\x06"), true)
	if err != nil || img.w != 2 || img.h != 1 || !bytes.Equal(img.pix, []byte{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("%+v %v", img, err)
	}
	if _, err := readPPM(strings.NewReader("P5\n1 1\n255\n\x00"), true); err == nil {
		t.Error("P5 accepted")
	}
}

// TestRunsBackground: light text on a dark screen and dark text on a light
// bar both come out dark on white.
func TestRunsBackground(t *testing.T) {
	const w, h = 64, 12
	rgb := make([]byte, w*h*3)
	set := func(x, y int, v byte) { rgb[3*(y*w+x)], rgb[3*(y*w+x)+1], rgb[3*(y*w+x)+2] = v, v, v }
	for y := 6; y < h; y++ { // a light bar in the lower half
		for x := 0; x < w; x++ {
			set(x, y, 200)
		}
	}
	set(10, 3, 220) // light text on black
	set(10, 9, 0)   // dark text on the bar
	g := runsBackground(w, h, rgb)
	if g[3*w+10] != 0 || g[9*w+10] != 0 || g[3*w+20] != 255 || g[9*w+20] != 255 {
		t.Errorf("text %d %d, background %d %d", g[3*w+10], g[9*w+10], g[3*w+20], g[9*w+20])
	}
}
