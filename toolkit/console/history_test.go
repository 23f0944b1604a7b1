package console

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smallTapes makes the tapes spill after a few KiB, for the test.
func smallTapes(t *testing.T) {
	kb, lb, kr, lr := keepBytes, limitBytes, keepRecords, limitRecords
	keepBytes, limitBytes, keepRecords, limitRecords = 4096, 16384, 64, 256
	t.Cleanup(func() { keepBytes, limitBytes, keepRecords, limitRecords = kb, lb, kr, lr })
}

// floodLines is n numbered lines with CRLF and a colour escape in each, so
// raw and text offsets differ, as on a real console.
func floodLines(n int) (raw []byte, lines []string) {
	var b bytes.Buffer
	for i := range n {
		l := fmt.Sprintf("line %06d of the flood, some padding to make it longer", i)
		fmt.Fprintf(&b, "\x1b[1m%s\x1b[0m\r\n", l)
		lines = append(lines, l)
	}
	return b.Bytes(), lines
}

func feedChunks(c *Console, p []byte, chunk int) {
	for len(p) > 0 {
		n := min(chunk, len(p))
		c.Feed(p[:n])
		p = p[n:]
	}
}

func TestHistorySpillsAndReadsBack(t *testing.T) {
	for _, withLog := range []bool{true, false} {
		t.Run(fmt.Sprintf("log=%v", withLog), func(t *testing.T) {
			smallTapes(t)
			opt := Options{}
			if withLog {
				opt.LogPath = filepath.Join(t.TempDir(), "vm1.console.log")
			}
			c := newConsole(t, opt)
			raw, lines := floodLines(5000)
			feedChunks(c, raw, 777)

			c.mu.Lock()
			memRaw, memText, memLines, memPairs := len(c.raw.mem), len(c.text.mem), len(c.lines.mem), len(c.pairs.mem)
			base := c.text.base
			c.mu.Unlock()
			if memRaw > limitBytes || memText > limitBytes || memLines > limitRecords || memPairs > limitRecords {
				t.Fatalf("memory not bounded: raw %d text %d lines %d pairs %d", memRaw, memText, memLines, memPairs)
			}
			if base == 0 {
				t.Fatal("nothing was spilled")
			}
			if got := c.Raw(nil, nil); !bytes.Equal(got, raw) {
				t.Fatalf("Raw: %d bytes, want %d", len(got), len(raw))
			}
			want := strings.Join(lines, "\n") + "\n"
			if got := c.Text(nil, nil); got != want {
				t.Fatalf("Text: %d bytes, want %d", len(got), len(want))
			}
			if got := c.Lines(&Mark{Text: 57}, &Mark{Text: 57 * 3}); strings.Join(got, "|") != strings.Join(lines[1:3], "|") {
				t.Fatalf("Lines of old history: %q", got)
			}
			if got := c.Tail(3); strings.Join(got, "|") != strings.Join(lines[4997:], "|") {
				t.Fatalf("Tail: %q", got)
			}
			if got := c.Tail(200); len(got) != 200 || got[0] != lines[4800] {
				t.Fatalf("Tail(200) reaching past memory: %d lines, first %q", len(got), got[0])
			}
			checkOldMatches(t, c, lines)
		})
	}
}

// checkOldMatches waits from the start for text that is on disk only.
func checkOldMatches(t *testing.T, c *Console, lines []string) {
	ctx := context.Background()
	for _, p := range []Pattern{{Text: "line 000007 of"}, {Regex: `^line (0000\d7) of the flood.*$`}, {Regex: `(?s)0000(17) of.{5}`}} {
		m, err := c.Expect(ctx, []Pattern{p}, ExpectOptions{From: &Mark{}, Timeout: time.Second})
		if err != nil {
			t.Fatalf("%v: %v", p, err)
		}
		if got := c.Text(&m.Start, &m.End); got != m.Text {
			t.Fatalf("%v: text between the marks %q, match %q", p, got, m.Text)
		}
		raw := string(c.Raw(&m.Start, &m.End))
		if raw != m.Text {
			t.Fatalf("%v: raw between the marks %q", p, raw)
		}
		if !strings.HasPrefix(m.Before, lines[0]) {
			t.Fatalf("%v: before %q", p, m.Before)
		}
	}
	// A wait far behind: from the start to the last line, through the
	// whole history read back in pieces; Before keeps the newest MaxBefore.
	m, err := c.Expect(ctx, []Pattern{{Regex: `line 004999 of the (\w+)`}}, ExpectOptions{From: &Mark{}, Timeout: time.Second})
	if err != nil || m.Captures[0] != "flood" || m.Start.Text != 4999*57 {
		t.Fatalf("last line from the start: %+v %v", m, err)
	}
	if int64(len(m.Before))+m.BeforeCut != m.Start.Text || int64(len(m.Before)) > MaxBefore {
		t.Fatalf("before %d bytes, cut %d, match at %d", len(m.Before), m.BeforeCut, m.Start.Text)
	}
}

func TestHistoryBeforeCut(t *testing.T) {
	smallTapes(t)
	c := newConsole(t, Options{})
	big := bytes.Repeat([]byte("0123456789abcdef\n"), (MaxBefore+4096)/17+1)
	feedChunks(c, big, 4096)
	c.Feed([]byte("END\n"))
	m, err := c.Expect(context.Background(), []Pattern{{Text: "END"}}, ExpectOptions{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Before) != MaxBefore || m.BeforeCut != int64(len(big))-MaxBefore || !strings.HasSuffix(m.Before, "abcdef\n") {
		t.Fatalf("before %d bytes, cut %d (of %d)", len(m.Before), m.BeforeCut, len(big))
	}
}

// A fail watcher must see a needle that arrived in an earlier chunk than
// the end of its line, and one split across two chunks.
func TestWatchNeedleAcrossChunks(t *testing.T) {
	c := newConsole(t, Options{NoDefaultFailures: true})
	for _, p := range []string{"PANIC-NOW", "FATAL-ERR"} {
		if _, err := c.Watch(Pattern{Text: p}, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, chunk := range []string{"a PANIC-N", "OW b", " c\n"} {
		c.Feed([]byte(chunk))
	}
	_, err := c.Expect(ctx, []Pattern{{Text: "never"}}, ExpectOptions{Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "PANIC-NOW") {
		t.Fatalf("a needle split across chunks: %v", err)
	}
	c2 := newConsole(t, Options{NoDefaultFailures: true})
	if _, err := c2.Watch(Pattern{Text: "FATAL-ERR"}, true, nil); err != nil {
		t.Fatal(err)
	}
	for _, chunk := range []string{"xx FATAL-ERR yy", strings.Repeat("z", 9000), "\n"} {
		c2.Feed([]byte(chunk))
	}
	_, err = c2.Expect(ctx, []Pattern{{Text: "never"}}, ExpectOptions{Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "FATAL-ERR") {
		t.Fatalf("a needle chunks before its line's end: %v", err)
	}
}

func TestHistoryFileIsGoneWithTheProcess(t *testing.T) {
	smallTapes(t)
	dir := t.TempDir()
	c := newConsole(t, Options{LogPath: filepath.Join(dir, "vm1.console.log")})
	raw, _ := floodLines(2000)
	feedChunks(c, raw, 4096)
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("the run directory holds %v (%v); want only the log", ents, err)
	}
}
