package journal

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestDirName(t *testing.T) {
	at := time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)
	for in, want := range map[string]string{
		"scripts/01-baseline.lua": "20261126-010203-01-baseline",
		"a b$c.lua":               "20261126-010203-a_b_c",
		".lua":                    "20261126-010203-run",
	} {
		if got := DirName(in, at); got != want {
			t.Errorf("DirName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewUnderTwiceInOneSecond(t *testing.T) {
	parent := t.TempDir()
	at := time.Now()
	a, err := NewUnder(parent, "x.lua", at)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewUnder(parent, "x.lua", at)
	if err != nil {
		t.Fatal(err)
	}
	if a.Dir() == b.Dir() {
		t.Fatalf("two runs share %s", a.Dir())
	}
	a.Close()
	b.Close()
}

func TestNewRefusesUsedDir(t *testing.T) {
	dir := t.TempDir()
	r, err := New(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := New(dir, time.Now()); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Fatalf("second New on one dir: %v", err)
	}
}

func TestConcurrentAppendsKeepWholeLines(t *testing.T) {
	r, err := New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 500
	var wg sync.WaitGroup
	big := strings.Repeat("x", 3000) // larger than a pipe's atomic write, to catch interleaving
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r.Event(fmt.Sprintf("w%d", w), "line", map[string]any{"i": i, "pad": big})
			}
		}(w)
	}
	wg.Wait()
	r.Close()
	f, err := os.Open(r.Path(TimelineFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	events, truncated, err := ReadTimeline(f)
	if err != nil || truncated {
		t.Fatalf("timeline: %v truncated=%v", err, truncated)
	}
	if len(events) != writers*each {
		t.Fatalf("got %d events, want %d", len(events), writers*each)
	}
	last := map[string]float64{}
	for _, ev := range events {
		i := ev.Fields["i"].(float64)
		if p, ok := last[ev.Source]; ok && i != p+1 {
			t.Fatalf("%s: event %v after %v", ev.Source, i, p)
		}
		last[ev.Source] = i
		if ev.Mono < 0 {
			t.Fatalf("negative mono %d", ev.Mono)
		}
		if _, err := time.Parse(WallFormat, ev.Wall); err != nil {
			t.Fatalf("wall %q: %v", ev.Wall, err)
		}
	}
}

func TestSubscribeAndInfo(t *testing.T) {
	r, err := New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	r.Subscribe(func(ev Event) { got = append(got, ev.Kind) })
	r.Event("run", "a", nil)
	r.Event("run", "b", nil)
	if strings.Join(got, ",") != "a,b" {
		t.Fatalf("subscriber saw %v", got)
	}
	code := 3
	if err := r.SetInfo(func(i *Info) { i.Script = "s.lua"; i.ExitCode = &code }); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(r.Path(InfoFile))
	if err != nil || !strings.Contains(string(data), `"exit_code": 3`) {
		t.Fatalf("run.json: %s %v", data, err)
	}
	r.Close()
	r.Event("run", "after-close", nil) // must not panic
}

// The child half of TestKill9LeavesParseableTimeline: append as fast as
// possible until killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("JOURNAL_TEST_CHILD_DIR"); dir != "" {
		r, err := New(dir, time.Now())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		pad := strings.Repeat("y", 1000)
		for i := 0; ; i++ {
			r.Event("child", "tick", map[string]any{"i": i, "pad": pad})
			if i == 100 {
				fmt.Println("ready")
			}
		}
	}
	os.Exit(m.Run())
}

func TestKill9LeavesParseableTimeline(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "JOURNAL_TEST_CHILD_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child: %q %v", line, err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	f, err := os.Open(filepath.Join(dir, TimelineFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	events, _, err := ReadTimeline(f)
	if err != nil {
		t.Fatalf("timeline after kill -9: %v", err)
	}
	if len(events) < 100 {
		t.Fatalf("only %d events survived", len(events))
	}
	for i, ev := range events {
		if int(ev.Fields["i"].(float64)) != i {
			t.Fatalf("event %d has i=%v", i, ev.Fields["i"])
		}
	}
}
