package notes

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func newRun(t *testing.T) *journal.Run {
	t.Helper()
	run, err := journal.New(filepath.Join(t.TempDir(), "run"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Close() })
	return run
}

func read(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestEntriesAppendedAsTheyHappen(t *testing.T) {
	run := newRun(t)
	nb, err := New(run, Options{Script: "scripts/01-baseline.lua", Host: "testhost"})
	if err != nil {
		t.Fatal(err)
	}
	head := read(t, nb.Path())
	for _, want := range []string{"# Notes: 01-baseline.lua", "Script: `scripts/01-baseline.lua`", "Host: testhost", "Started: "} {
		if !strings.Contains(head, want) {
			t.Fatalf("header lacks %q:\n%s", want, head)
		}
	}
	steps := []func() error{
		func() error { return nb.Step("Reproduce with maximum visibility") },
		func() error { return nb.Observe("pre-nixos is still activating", "status: activating (start)") },
		func() error {
			return nb.Command("systemctl status pre-nixos", 3, strings.Repeat("line\n", 100), "")
		},
		func() error { return nb.Conclude("storage detection never wrote the status") },
	}
	wants := []string{"## 1. Reproduce with maximum visibility", "Observed:** pre-nixos is still activating",
		"**→ exit 3**", "Concluded:** storage detection never wrote the status"}
	prev := len(head)
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
		now := read(t, nb.Path())
		if len(now) <= prev || !strings.Contains(now[prev:], wants[i]) {
			t.Fatalf("entry %d not in the file right after the call; new text:\n%s", i, now[prev:])
		}
		prev = len(now)
	}
	text := read(t, nb.Path())
	if !strings.Contains(text, "(80 lines omitted)") || !strings.Contains(text, "Full output: [artifacts/cmd-001-systemctl_status_pre-nixos.txt](artifacts/cmd-001-systemctl_status_pre-nixos.txt)") {
		t.Fatalf("command excerpt/link:\n%s", text)
	}
	if got := read(t, run.Path("artifacts/cmd-001-systemctl_status_pre-nixos.txt")); got != strings.Repeat("line\n", 100) {
		t.Fatalf("full output artifact: %q", got)
	}
	if err := nb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := nb.Observe("late"); !vmerr.Is(err, vmerr.Usage) {
		t.Fatalf("entry after close: %v", err)
	}
	// Timeline: every entry is an event from "notes".
	f, _ := os.Open(run.Path(journal.TimelineFile))
	defer f.Close()
	evs, _, err := journal.ReadTimeline(f)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, ev := range evs {
		if ev.Source == Source {
			kinds = append(kinds, ev.Kind)
		}
	}
	if got := strings.Join(kinds, ","); got != "open,step,observe,command,conclude,close" {
		t.Fatalf("timeline kinds %s", got)
	}
	st := nb.Steps()
	if len(st) != 1 || st[0].Title != "Reproduce with maximum visibility" || len(st[0].Entries) != 3 ||
		len(st[0].Conclusions) != 1 || st[0].Duration() <= 0 {
		t.Fatalf("steps: %+v", st)
	}
}

func TestSaveAttachEvidenceLinks(t *testing.T) {
	run := newRun(t)
	nb, err := New(run, Options{Script: "x.lua"})
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	var paths []string
	for _, name := range []string{"../../etc/passwd", "journal pre-nixos.txt", "journal pre-nixos.txt", ".hidden", "", "a/b\\c:d.log"} {
		p, err := nb.Save(name, []byte("data of "+name))
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Dir(p) != run.Path(ArtifactDir) {
			t.Fatalf("save %q escaped the artifact dir: %s", name, p)
		}
		paths = append(paths, filepath.Base(p))
	}
	want := "etc_passwd journal_pre-nixos.txt journal_pre-nixos-2.txt hidden artifact a_b_c_d.log"
	if got := strings.Join(paths, " "); got != want {
		t.Fatalf("names %q, want %q", got, want)
	}
	if got := read(t, run.Path("artifacts/journal_pre-nixos.txt")); got != "data of journal pre-nixos.txt" {
		t.Fatalf("overwritten: %q", got)
	}
	outside := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(outside, []byte("console\n"), 0o644)
	att, err := nb.Attach(outside)
	if err != nil || read(t, att) != "console\n" {
		t.Fatalf("attach: %v", err)
	}
	if _, err := nb.Attach(filepath.Join(t.TempDir(), "missing")); !vmerr.Is(err, vmerr.NotFound) {
		t.Fatalf("attach missing: %v", err)
	}
	inside := run.Path("console-vm.log")
	os.WriteFile(inside, []byte("boot\n"), 0o644)
	if err := nb.Observe("evidence files", inside, outside, "short inline text", strings.Repeat("long\n", 500)); err != nil {
		t.Fatal(err)
	}
	text := read(t, nb.Path())
	for _, want := range []string{"[console-vm.log](console-vm.log)", "[artifacts/serial-2.log](artifacts/serial-2.log)",
		"short inline text", "Full text: [artifacts/evidence-001.txt](artifacts/evidence-001.txt)"} {
		if !strings.Contains(text, want) {
			t.Fatalf("notes lack %q:\n%s", want, text)
		}
	}
	// Links are relative: no absolute path of the run directory appears.
	if strings.Contains(text, "]("+run.Dir()) || strings.Contains(text, "](/") {
		t.Fatalf("absolute link in notes:\n%s", text)
	}
	// Moving the run directory keeps every link valid.
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(run.Dir(), moved); err != nil {
		t.Fatal(err)
	}
	for _, e := range nb.Entries() {
		for _, rel := range append(e.Evidence, e.Artifact) {
			if rel == "" {
				continue
			}
			if _, err := os.Stat(filepath.Join(moved, rel)); err != nil {
				t.Fatalf("link %s broken after move: %v", rel, err)
			}
		}
	}
}

// TestCrashKeepsEntries kills a child writing notes with SIGKILL and checks
// every entry it reported as written is in notes.md.
func TestCrashKeepsEntries(t *testing.T) {
	if dir := os.Getenv("NOTES_CRASH_CHILD"); dir != "" {
		run, err := journal.New(dir, time.Now())
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		nb, err := New(run, Options{Script: "crash.lua"})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		for i := 1; ; i++ {
			if i%2 == 0 {
				nb.Observe(fmt.Sprintf("observation %d", i))
			} else {
				nb.Step(fmt.Sprintf("step %d", i))
			}
			fmt.Printf("written %d\n", i)
			time.Sleep(5 * time.Millisecond)
		}
	}
	dir := filepath.Join(t.TempDir(), "run")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKeepsEntries$")
	cmd.Env = append(os.Environ(), "NOTES_CRASH_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	last := 0
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "written %d", &last); err != nil {
			t.Fatalf("child: %s", sc.Text())
		}
		if last == 7 {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	text := read(t, filepath.Join(dir, FileName))
	for i := 1; i <= last; i++ {
		want := fmt.Sprintf("observation %d", i)
		if i%2 == 1 {
			want = fmt.Sprintf("## %d. step %d", (i+1)/2, i)
		}
		if !strings.Contains(text, want) {
			t.Fatalf("entry %d (%q) lost in the crash:\n%s", i, want, text)
		}
	}
}

func TestSafeName(t *testing.T) {
	for in, want := range map[string]string{"../x": "x", "a b": "a_b", "...": "artifact", "ok-1.txt": "ok-1.txt"} {
		if got := SafeName(in); got != want {
			t.Errorf("SafeName(%q) = %q, want %q", in, got, want)
		}
	}
}
