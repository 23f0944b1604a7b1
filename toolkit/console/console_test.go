package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func newConsole(t *testing.T, opt Options) *Console {
	t.Helper()
	if opt.Name == "" {
		opt.Name = "vm1"
	}
	c, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(nil) })
	return c
}

// expectAsync starts Expect in a goroutine.
func expectAsync(c *Console, pats []Pattern, opt ExpectOptions) <-chan result {
	ch := make(chan result, 1)
	go func() {
		m, err := c.Expect(context.Background(), pats, opt)
		ch <- result{m, err, time.Now()}
	}()
	return ch
}

type result struct {
	m   *Match
	err error
	at  time.Time
}

func text(s string) []Pattern  { return []Pattern{{Text: s}} }
func regex(s string) []Pattern { return []Pattern{{Regex: s}} }
func sec(d float64) ExpectOptions {
	return ExpectOptions{Timeout: time.Duration(d * float64(time.Second))}
}

func waitResult(t testing.TB, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not return")
		return result{}
	}
}

// waitersPending waits until n waits are registered (so a test's Feed
// happens while they wait, not before).
func waitersPending(t testing.TB, c *Console, n int) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		c.mu.Lock()
		k := len(c.waiters)
		c.mu.Unlock()
		if k >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("waiters never reached %d", n)
}

func TestMatchAcrossOneByteChunks(t *testing.T) {
	for _, pats := range [][]Pattern{text("login: "), regex(`log(in): $`), text("line two\nline three")} {
		c := newConsole(t, Options{})
		ch := expectAsync(c, pats, sec(5))
		waitersPending(t, c, 1)
		in := "Debian GNU/Linux 12 lab ttyS0\r\n\r\nline two\r\nline three\r\nlab login: "
		for i := 0; i < len(in); i++ {
			c.Feed([]byte{in[i]})
		}
		r := waitResult(t, ch)
		if r.err != nil {
			t.Fatalf("%v: %v", pats, r.err)
		}
		want := pats[0].Text
		if want == "" {
			want = "login: "
		}
		if r.m.Text != want {
			t.Errorf("%v: matched %q", pats, r.m.Text)
		}
		if pats[0].Regex != "" && (len(r.m.Captures) != 1 || r.m.Captures[0] != "in") {
			t.Errorf("captures %q", r.m.Captures)
		}
	}
}

func TestSeveralPatterns(t *testing.T) {
	c := newConsole(t, Options{})
	c.Feed([]byte("booting\nerror: disk on fire\nlogin: "))
	m, err := c.Expect(context.Background(), []Pattern{{Text: "login: "}, {Regex: `error: (\w+)`}, {Text: "nothing"}}, sec(1))
	if err != nil {
		t.Fatal(err)
	}
	if m.Index != 1 || m.Text != "error: disk" || m.Captures[0] != "disk" {
		t.Fatalf("got index %d %q %q", m.Index, m.Text, m.Captures)
	}
	if m.Before != "booting\n" {
		t.Errorf("before %q", m.Before)
	}
	// The cursor moved: the next wait starts after "error: disk".
	m, err = c.Expect(context.Background(), []Pattern{{Text: "error"}, {Text: "login: "}}, sec(1))
	if err != nil || m.Index != 1 {
		t.Fatalf("second: %v %+v", err, m)
	}
	// Same end: the lower index wins.
	c.Feed([]byte("xx abc yy"))
	m, err = c.Expect(context.Background(), []Pattern{{Text: "bc"}, {Text: "abc"}}, sec(1))
	if err != nil || m.Index != 0 {
		t.Fatalf("tie: %v %+v", err, m)
	}
}

func TestRegexCaptures(t *testing.T) {
	c := newConsole(t, Options{})
	ch := expectAsync(c, regex(`inet (\d+)\.(\d+)\.(\d+)\.(\d+)/(\d+)(x)?`), sec(5))
	waitersPending(t, c, 1)
	for _, s := range []string{"2: ens4: <BROADCAST>\n    in", "et 10.0.2", ".15/24 brd 10.0.2.255 scope global\n"} {
		c.Feed([]byte(s))
	}
	r := waitResult(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	want := []string{"10", "0", "2", "15", "24", ""}
	if fmt.Sprint(r.m.Captures) != fmt.Sprint(want) {
		t.Fatalf("captures %q, want %q", r.m.Captures, want)
	}
	if r.m.Text != "inet 10.0.2.15/24" {
		t.Fatalf("text %q", r.m.Text)
	}
}

func TestRegexLineRules(t *testing.T) {
	c := newConsole(t, Options{})
	c.Feed([]byte("alpha beta\ngamma\n"))
	// A line regex does not span lines.
	if _, err := c.Expect(context.Background(), regex(`beta gamma`), ExpectOptions{Timeout: 50 * time.Millisecond, From: &Mark{}}); !vmerr.Is(err, vmerr.Timeout) {
		t.Fatalf("line regex spanned lines: %v", err)
	}
	// ^ and $ are line anchors; a (?s) or \s regex spans lines.
	for _, re := range []string{`^gamma$`, `beta\s+gamma`, `(?s)alpha.*gamma`} {
		from := c.StartMark()
		if _, err := c.Expect(context.Background(), regex(re), ExpectOptions{Timeout: time.Second, From: &from}); err != nil {
			t.Errorf("%s: %v", re, err)
		}
	}
}

func TestFromStartMark(t *testing.T) {
	c := newConsole(t, Options{})
	c.Feed([]byte("early: the unit failed\n"))
	before := c.Mark()
	c.Feed([]byte("later\nlogin: "))
	if _, err := c.Expect(context.Background(), text("login: "), sec(1)); err != nil {
		t.Fatal(err)
	}
	// From the last match, the old line is not seen.
	if _, err := c.Expect(context.Background(), text("unit failed"), sec(0.05)); !vmerr.Is(err, vmerr.Timeout) {
		t.Fatalf("default From saw history: %v", err)
	}
	start := c.StartMark()
	m, err := c.Expect(context.Background(), text("unit failed"), ExpectOptions{Timeout: time.Second, From: &start})
	if err != nil {
		t.Fatal(err)
	}
	if m.Before != "early: the " || m.Start.Text != 11 || m.End.Raw != 22 {
		t.Errorf("match %+v", m)
	}
	if got := c.Lines(&before, nil); fmt.Sprint(got) != "[later]" {
		t.Errorf("Lines(before) = %q", got)
	}
	if got := c.Lines(nil, &before); fmt.Sprint(got) != "[early: the unit failed]" {
		t.Errorf("Lines(nil, before) = %q", got)
	}
	if got := c.Tail(2); fmt.Sprint(got) != "[later login: ]" {
		t.Errorf("Tail = %q", got)
	}
}

func TestConcurrentWaitsSeeEveryByte(t *testing.T) {
	c := newConsole(t, Options{})
	const n = 8
	// Every wait wants all 200 numbered lines, in order, each in its own
	// Expect call, starting from the same mark.
	start := c.Mark()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := start
			for i := 0; i < 200; i++ {
				m, err := c.Expect(context.Background(), text(fmt.Sprintf("<%d>", i)), ExpectOptions{Timeout: 10 * time.Second, From: &from})
				if err != nil {
					errs <- err
					return
				}
				from = m.End
			}
		}()
	}
	rng := rand.New(rand.NewSource(2))
	var all bytes.Buffer
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&all, "\x1b[1mline\x1b[0m <%d> %s\r\n", i, strings.Repeat("x", rng.Intn(50)))
	}
	p := all.Bytes()
	for len(p) > 0 {
		k := min(1+rng.Intn(40), len(p))
		c.Feed(p[:k])
		p = p[k:]
		if rng.Intn(10) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestTimeoutError(t *testing.T) {
	c := newConsole(t, Options{Name: "baseline"})
	for i := 0; i < 30; i++ {
		c.Feed(fmt.Appendf(nil, "\x1b[32mboot line %d\x1b[0m\r\n", i))
	}
	c.Feed([]byte("partial"))
	t0 := time.Now()
	_, err := c.Expect(context.Background(), []Pattern{{Text: "login: "}, {Regex: `\$ $`}}, sec(0.3))
	took := time.Since(t0)
	var e *vmerr.Error
	if !errors.As(err, &e) || e.Kind != vmerr.Timeout {
		t.Fatalf("err %v", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("took %v", took)
	}
	for _, s := range []string{"baseline", `"login: "`, `/\$ $/`, "0.3s"} {
		if !strings.Contains(e.Message, s) {
			t.Errorf("message %q lacks %q", e.Message, s)
		}
	}
	if e.Context["vm"] != "baseline" {
		t.Errorf("vm %v", e.Context["vm"])
	}
	if w, _ := e.Context["waited_s"].(float64); w < 0.3 || w > 2 {
		t.Errorf("waited_s %v", e.Context["waited_s"])
	}
	if p, _ := e.Context["patterns"].([]string); len(p) != 2 {
		t.Errorf("patterns %v", e.Context["patterns"])
	}
	tail, _ := e.Context["tail"].([]string)
	if len(tail) != TailLines || tail[len(tail)-1] != "partial" || tail[len(tail)-2] != "boot line 29" || tail[0] != "boot line 11" {
		t.Errorf("tail %q", tail)
	}
	if !strings.Contains(err.Error(), "  | boot line 29") {
		t.Errorf("Error() lacks the tail: %s", err)
	}
}

func TestCancelled(t *testing.T) {
	c := newConsole(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := c.Expect(ctx, text("never"), sec(10))
	if !vmerr.Is(err, vmerr.Cancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
}

func TestCloseDuringWait(t *testing.T) {
	c := newConsole(t, Options{})
	c.Feed([]byte("Kernel is going down\r\n"))
	ch := expectAsync(c, text("login: "), sec(30))
	waitersPending(t, c, 1)
	reason := vmerr.New(vmerr.Exited, "qemu exited with status 1").With("exit_code", 1)
	t0 := time.Now()
	c.Close(reason)
	r := waitResult(t, ch)
	if d := r.at.Sub(t0); d > 100*time.Millisecond {
		t.Errorf("Close took %v to end the wait", d)
	}
	var e *vmerr.Error
	if !errors.As(r.err, &e) || e.Kind != vmerr.Exited || !errors.Is(r.err, reason) {
		t.Fatalf("err %v", r.err)
	}
	if tail, _ := e.Context["tail"].([]string); len(tail) != 1 || tail[0] != "Kernel is going down" {
		t.Errorf("tail %q", e.Context["tail"])
	}
	if e.Context["exit_code"] != 1 {
		t.Errorf("reason context lost: %v", e.Context)
	}
	if _, ok := reason.Context["tail"]; ok {
		t.Error("Close reason was mutated")
	}
	// Later waits fail at once too, unless the history has the match.
	if _, err := c.Expect(context.Background(), text("login: "), sec(30)); !vmerr.Is(err, vmerr.Exited) {
		t.Errorf("later wait: %v", err)
	}
	start := c.StartMark()
	if _, err := c.Expect(context.Background(), text("going down"), ExpectOptions{From: &start}); err != nil {
		t.Errorf("history after close: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(time.Second):
		t.Error("Done not closed")
	}
}

func TestFailWatcher(t *testing.T) {
	c := newConsole(t, Options{NoDefaultFailures: true}) // the watcher alone
	var mu sync.Mutex
	var seen []string
	cancel, err := c.Watch(Pattern{Regex: `Kernel panic|Oops`}, true, func(l string) {
		mu.Lock()
		seen = append(seen, l)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := expectAsync(c, text("login: "), sec(30))
	waitersPending(t, c, 1)
	c.Feed([]byte("[    2.1] Kernel pan"))
	t0 := time.Now()
	c.Feed([]byte("ic - not syncing: VFS: Unable to mount root fs\r\nlogin: "))
	r := waitResult(t, ch)
	if d := r.at.Sub(t0); d > 100*time.Millisecond {
		t.Errorf("watcher took %v to end the wait", d)
	}
	var e *vmerr.Error
	if !errors.As(r.err, &e) || e.Kind != vmerr.Watch {
		t.Fatalf("err %v", r.err)
	}
	const line = "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs"
	if e.Context["line"] != line || !strings.Contains(e.Message, line) {
		t.Errorf("error %q context %v", e.Message, e.Context)
	}
	// Later waits fail too, but a match before the fail line succeeds.
	if _, err := c.Expect(context.Background(), text("login: "), sec(5)); !vmerr.Is(err, vmerr.Watch) {
		t.Errorf("later wait: %v", err)
	}
	start := c.StartMark()
	if _, err := c.Expect(context.Background(), text("2.1"), ExpectOptions{From: &start}); err != nil {
		t.Errorf("match before the fail line: %v", err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != line {
		t.Errorf("callback saw %q", seen)
	}
	mu.Unlock()
	cancel()
	cancel()
	if _, err := c.Expect(context.Background(), text("login: "), sec(5)); err != nil {
		t.Errorf("after cancel: %v", err)
	}
}

// A Debian-installer-like screen, as newt/slang paints it on a serial
// console: scroll region, modes, colours, line drawing, cursor moves.
const installerScreen = "\x1b[1;24r\x1b[4l\x1b[?1h\x1b=\x1b[?25l\x1b[H\x1b[J\x1b[0m\x1b[37m\x1b[44m" +
	"\x1b[1;1H                                                                                " +
	"\x1b[4;5H\x1b[30m\x1b[47m\x1b(0lqqqqqqqqqqqqqqqqqqqqqqqu\x1b(B\x1b[31m\x1b[1m [!!] Select a language \x1b[0m\x1b[30m\x1b[47m\x1b(0tqqqqqqqqqqqqqqqqqqqqqqqk\x1b(B" +
	"\x1b[5;5H\x1b(0x\x1b(B\x1b[74G\x1b(0x\x1b(B" +
	"\x1b[6;5H\x1b(0x\x1b(B Choose\x1b[1Cthe\x1b[1Clanguage to be used for the installation process.\x1b[6;78H\x1b(0x\x1b(B" +
	"\x1b[20;5H\x1b(0mqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqj\x1b(B" +
	"\x1b[24;1H\x1b[37m\x1b[44m<Tab> moves; <Space> selects; <Enter> activates buttons\x1b[K\x1b[6;20H"

func TestANSIInstallerScreen(t *testing.T) {
	c := newConsole(t, Options{})
	ch := expectAsync(c, []Pattern{{Text: "Choose language"}, {Text: "Select a language"}}, sec(5))
	waitersPending(t, c, 1)
	for i := 0; i < len(installerScreen); i += 5 {
		c.Feed([]byte(installerScreen[i:min(i+5, len(installerScreen))]))
	}
	r := waitResult(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.m.Index != 1 {
		t.Errorf("index %d", r.m.Index)
	}
	// The raw offset of the match points at the raw text.
	raw := c.Raw(&r.m.Start, &r.m.End)
	if string(raw) != "Select a language" {
		t.Errorf("raw span %q", raw)
	}
	start := c.StartMark()
	m, err := c.Expect(context.Background(), regex(`Choose the language to be used for the (\w+)`), ExpectOptions{From: &start, Timeout: time.Second})
	if err != nil || m.Captures[0] != "installation" {
		t.Fatalf("%v %+v", err, m)
	}
	// Raw matching sees the escapes.
	m, err = c.Expect(context.Background(), text("Choose\x1b[1Cthe"), ExpectOptions{From: &start, Timeout: time.Second, Raw: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Text(&m.Start, &m.End); got != "Choose the" {
		t.Errorf("raw match maps to text %q", got)
	}
	lines := c.Lines(nil, nil)
	if len(lines) < 4 || !strings.Contains(strings.Join(lines, "\n"), "+-----------------------+ [!!] Select a language +") {
		t.Errorf("lines %q", lines)
	}
	t.Logf("installer screen as lines:\n%s", strings.Join(append(lines, c.Tail(1)...), "\n"))
}

func TestLogAndTimeline(t *testing.T) {
	dir := t.TempDir()
	run, err := journal.New(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "vm1.console.log")
	c := newConsole(t, Options{Name: "vm1", Run: run, LogPath: logPath})
	rng := rand.New(rand.NewSource(3))
	var fed bytes.Buffer
	fed.WriteString("\x1b[0mfirst line\r\nsecond\nthird\rfourth\r\n")
	for fed.Len() < 200_000 {
		b := make([]byte, rng.Intn(300))
		rng.Read(b)
		fed.Write(b)
	}
	p := fed.Bytes()
	for len(p) > 0 {
		k := min(1+rng.Intn(4096), len(p))
		c.Feed(p[:k])
		// The log is written before Feed returns: no buffering.
		if fi, err := os.Stat(logPath); err != nil || fi.Size() != int64(fed.Len()-len(p)+k) {
			t.Fatalf("log size %v %v after feeding", fi.Size(), err)
		}
		p = p[k:]
	}
	c.Close(nil)
	<-c.Done()
	got, err := os.ReadFile(logPath)
	if err != nil || !bytes.Equal(got, fed.Bytes()) {
		t.Fatalf("log differs from input (%d vs %d bytes, %v)", len(got), fed.Len(), err)
	}
	if !bytes.Equal(c.Raw(nil, nil), fed.Bytes()) {
		t.Fatal("history differs from input")
	}
	run.Close()
	f, _ := os.Open(filepath.Join(dir, journal.TimelineFile))
	defer f.Close()
	evs, _, err := journal.ReadTimeline(f)
	if err != nil {
		t.Fatal(err)
	}
	// The output events cover the log's lines, in order, without gaps.
	var lines []string
	var next int64
	for _, ev := range evs {
		if ev.Source != "console:vm1" || ev.Kind != "output" {
			continue
		}
		r := ev.Fields["raw"].([]any)
		from, to := int64(r[0].(float64)), int64(r[1].(float64))
		if from != next || ev.Fields["log"] != "vm1.console.log" {
			t.Fatalf("output event %v after %d", ev.Fields, next)
		}
		got, err := ReadLog(logPath, from, to)
		if err != nil || len(got) != int(ev.Fields["lines"].(float64)) {
			t.Fatalf("ReadLog %v: %d lines, %v", ev.Fields, len(got), err)
		}
		lines, next = append(lines, got...), to
	}
	if len(lines) < 4 || fmt.Sprint(lines[:4]) != "[first line second third fourth]" {
		t.Errorf("timeline lines %q", lines[:min(4, len(lines))])
	}
	if all := c.Lines(nil, nil); strings.Join(all, "\n") != strings.Join(lines, "\n") {
		t.Errorf("%d lines in output events, %d lines", len(lines), len(all))
	}
	if n := len(evs); n > 200 {
		t.Errorf("%d timeline events for 200 kB fed at once: output is not coalesced", n)
	}
}

func TestAttachPipeTrickle(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "vm1.console.log")
	c := newConsole(t, Options{LogPath: logPath, EOFGrace: -1})
	a, b := net.Pipe()
	defer b.Close()
	if err := c.Attach(a); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(4))
	var data bytes.Buffer
	for data.Len() < 1<<20 {
		fmt.Fprintf(&data, "[%8.3f] \x1b[32m%s\x1b[0m\r\n", float64(data.Len())/1000, strings.Repeat("y", rng.Intn(100)))
	}
	data.WriteString("lab login: ")
	all := data.Bytes()
	// Two waits, one for the middle and one for the end, both from the start.
	start := c.StartMark()
	mid := expectAsync(c, regex(`\[ *524\.\d+\]`), ExpectOptions{Timeout: 30 * time.Second, From: &start})
	end := expectAsync(c, text("login: "), ExpectOptions{Timeout: 30 * time.Second, From: &start})
	waitersPending(t, c, 2)
	go func() {
		p := all
		for len(p) > 0 {
			k := min(1+rng.Intn(8192), len(p))
			if _, err := b.Write(p[:k]); err != nil {
				return
			}
			p = p[k:]
		}
	}()
	for _, ch := range []<-chan result{mid, end} {
		if r := waitResult(t, ch); r.err != nil {
			t.Fatal(r.err)
		}
	}
	// Send goes to the other end.
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		n, _ := io.ReadAtLeast(b, buf, 5)
		got <- string(buf[:n])
	}()
	if err := c.SendLine(context.Background(), "root"); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "root\r" {
		t.Errorf("guest got %q", s)
	}
	c.Close(vmerr.New(vmerr.Exited, "done"))
	b.Close()
	select {
	case <-c.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("reader did not finish after Close")
	}
	log, _ := os.ReadFile(logPath)
	if !bytes.Equal(log, all) || !bytes.Equal(c.Raw(nil, nil), all) {
		t.Fatalf("log %d / history %d bytes, sent %d", len(log), c.Size(), len(all))
	}
}

func TestEOFClosesAfterGrace(t *testing.T) {
	c := newConsole(t, Options{EOFGrace: 50 * time.Millisecond})
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Attach(struct {
		io.Reader
		io.Writer
	}{r, w}); err != nil {
		t.Fatal(err)
	}
	w.WriteString("bye\n")
	w.Close()
	_, err = c.Expect(context.Background(), text("never"), sec(5))
	if !vmerr.Is(err, vmerr.Exited) || !strings.Contains(err.Error(), "serial connection closed") {
		t.Fatalf("err %v", err)
	}
	r.Close()
}

// blockingRW never completes a write and has no deadlines.
type blockingRW struct{ release chan struct{} }

func (b *blockingRW) Read(p []byte) (int, error)  { <-b.release; return 0, io.EOF }
func (b *blockingRW) Write(p []byte) (int, error) { <-b.release; return 0, io.ErrClosedPipe }

func TestSendDeadline(t *testing.T) {
	// net.Pipe: nobody reads the other end; write deadlines work.
	c := newConsole(t, Options{SendTimeout: 150 * time.Millisecond, EOFGrace: -1})
	a, b := net.Pipe()
	defer b.Close()
	if err := c.Attach(a); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err := c.Send(context.Background(), "hello")
	if !vmerr.Is(err, vmerr.Timeout) || time.Since(t0) > time.Second {
		t.Fatalf("send: %v after %v", err, time.Since(t0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	t0 = time.Now()
	err = c.Send(ctx, "hello")
	if !vmerr.Is(err, vmerr.Cancelled) || time.Since(t0) > time.Second {
		t.Fatalf("send with ctx: %v after %v", err, time.Since(t0))
	}

	// A writer without deadlines: Send still returns on time, and so does
	// the next one while the first write is stuck.
	br := &blockingRW{release: make(chan struct{})}
	c2 := newConsole(t, Options{Name: "vm2", SendTimeout: 100 * time.Millisecond, EOFGrace: -1})
	if err := c2.Attach(br); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		t0 = time.Now()
		if err := c2.SendLine(context.Background(), "x"); !vmerr.Is(err, vmerr.Timeout) || time.Since(t0) > time.Second {
			t.Fatalf("send %d: %v after %v", i, err, time.Since(t0))
		}
	}
	close(br.release)
	// Not attached.
	c3 := newConsole(t, Options{Name: "vm3"})
	if err := c3.Send(context.Background(), "x"); !vmerr.Is(err, vmerr.IO) {
		t.Fatalf("unattached: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	c := newConsole(t, Options{})
	for _, pats := range [][]Pattern{nil, {{}}, {{Text: "a", Regex: "b"}}, {{Regex: "("}}} {
		if _, err := c.Expect(context.Background(), pats, sec(1)); !vmerr.Is(err, vmerr.Usage) {
			t.Errorf("%v: %v", pats, err)
		}
	}
	if _, err := c.Watch(Pattern{Regex: "("}, true, nil); !vmerr.Is(err, vmerr.Usage) {
		t.Errorf("watch: %v", err)
	}
}

// TestSettle: with Settle a match counts only when it is the last thing on
// the console and stays so: a '#' mid-banner, a number still growing and a
// prompt that a kernel line follows are passed over; the real prompt wins,
// and Before still starts at From.
func TestSettle(t *testing.T) {
	// The pauses between feeds are a tenth of the settle time: a loaded
	// machine would have to stall ten times longer to fake a settled match.
	const settle = time.Second
	t.Run("prompt", func(t *testing.T) {
		c := newConsole(t, Options{})
		ch := expectAsync(c, regex(`[#$] ?$`), ExpectOptions{Timeout: 5 * time.Second, Settle: settle, From: &Mark{}})
		waitersPending(t, c, 1)
		// A '#' at the end of a chunk, followed within the settle time.
		c.Feed([]byte("Linux lab 6.1.0 #"))
		time.Sleep(settle / 10)
		c.Feed([]byte("1 SMP\n$ "))
		time.Sleep(settle / 10)
		c.Feed([]byte("[   12.3] late kernel line\n"))
		time.Sleep(settle / 10)
		c.Feed([]byte("root@lab:~# "))
		start := time.Now()
		r := waitResult(t, ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.m.Text != "# " || r.m.Start.Text != int64(len("Linux lab 6.1.0 #1 SMP\n$ [   12.3] late kernel line\nroot@lab:~")) {
			t.Fatalf("matched %q at %d", r.m.Text, r.m.Start.Text)
		}
		if !strings.HasPrefix(r.m.Before, "Linux lab") {
			t.Fatalf("before %q", r.m.Before)
		}
		if d := r.at.Sub(start); d < settle*2/3 {
			t.Fatalf("accepted after %s, before the settle time %s", d, settle)
		}
	})
	t.Run("growing-number", func(t *testing.T) {
		c := newConsole(t, Options{})
		ch := expectAsync(c, regex(`count: (\d+)$`), ExpectOptions{Timeout: 5 * time.Second, Settle: settle, From: &Mark{}})
		waitersPending(t, c, 1)
		c.Feed([]byte("count: 4"))
		time.Sleep(settle / 10)
		c.Feed([]byte("2"))
		r := waitResult(t, ch)
		if r.err != nil || r.m.Captures[0] != "42" {
			t.Fatalf("%+v %v", r.m, r.err)
		}
	})
	t.Run("literal-followed", func(t *testing.T) {
		c := newConsole(t, Options{})
		c.Feed([]byte("login: then more\n"))
		if _, err := c.Expect(context.Background(), text("login: "), ExpectOptions{Timeout: 300 * time.Millisecond, Settle: settle, From: &Mark{}}); !vmerr.Is(err, vmerr.Timeout) {
			t.Fatalf("a followed literal settled: %v", err)
		}
		c.Feed([]byte("lab login: "))
		if m, err := c.Expect(context.Background(), text("login: "), ExpectOptions{Timeout: 5 * time.Second, Settle: settle, From: &Mark{}}); err != nil || m.Start.Text != int64(len("login: then more\nlab ")) {
			t.Fatalf("%+v %v", m, err)
		}
	})
	t.Run("per-pattern", func(t *testing.T) {
		// Only the prompt settles; "Login incorrect", followed at once by a
		// fresh login prompt, still wins.
		c := newConsole(t, Options{})
		pats := []Pattern{{Text: "Login incorrect"}, {Regex: `[#$] ?$`, Settle: settle}}
		c.Feed([]byte("# \nLogin incorrect\nlab login: "))
		start := time.Now()
		m, err := c.Expect(context.Background(), pats, ExpectOptions{Timeout: 5 * time.Second, From: &Mark{}})
		if err != nil || m.Index != 0 || time.Since(start) > settle/2 {
			t.Fatalf("%+v %v after %s", m, err, time.Since(start))
		}
	})
	t.Run("close-keeps-candidate", func(t *testing.T) {
		c := newConsole(t, Options{})
		ch := expectAsync(c, text("Power down"), ExpectOptions{Timeout: 5 * time.Second, Settle: time.Hour, From: &Mark{}})
		waitersPending(t, c, 1)
		c.Feed([]byte("reboot: Power down"))
		time.Sleep(20 * time.Millisecond)
		c.Close(vmerr.New("exited", "gone"))
		if r := waitResult(t, ch); r.err != nil || r.m.Text != "Power down" {
			t.Fatalf("%+v %v", r.m, r.err)
		}
	})
}

// TestBystanderKeepsLastMatch: a Bystander wait matches without moving the
// console's last match, so the next ordinary wait still starts before it;
// an ordinary wait moves it.
func TestBystanderKeepsLastMatch(t *testing.T) {
	c := newConsole(t, Options{})
	c.Feed([]byte("firmware\nPress Ctrl-B now\nbooting\n"))
	opt := sec(1)
	opt.Bystander = true
	if _, err := c.Expect(context.Background(), text("Ctrl-B"), opt); err != nil {
		t.Fatal(err)
	}
	m, err := c.Expect(context.Background(), text("firmware"), sec(1))
	if err != nil {
		t.Fatalf("after a bystander's match, an earlier line: %v", err)
	}
	if m.Start.Text != 0 {
		t.Errorf("firmware matched at %d", m.Start.Text)
	}
	if _, err := c.Expect(context.Background(), text("Ctrl-B"), sec(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Expect(context.Background(), text("firmware"), sec(0.2)); !vmerr.Is(err, vmerr.Timeout) {
		t.Errorf("an ordinary match moved nothing: %v", err)
	}
}
