package main

// End-to-end tests of the terminal features, driven through tmux the way a
// person at a terminal drives them: the REPL, console:interact(), the
// --keep-open REPL after a failure, and the progress line. Every wait polls
// the pane with a generous bound; nothing depends on timing.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tmuxPane is one tmux server (private socket) running one command.
type tmuxPane struct {
	t      *testing.T
	socket string
}

func newTmux(t *testing.T, dir string, command string) *tmuxPane {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux not installed")
	}
	p := &tmuxPane{t: t, socket: filepath.Join(dir, "tmux.sock")}
	p.run("-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "50", "-c", dir, "env VMSCRIPT_HISTORY="+filepath.Join(dir, "history")+" TERM=xterm "+command+"; echo EXIT=$?; sleep 600")
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", p.socket, "kill-server").Run() })
	return p
}

func (p *tmuxPane) run(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", p.socket}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (p *tmuxPane) keys(keys ...string) { p.run(append([]string{"send-keys", "-t", "0"}, keys...)...) }

func (p *tmuxPane) capture() string {
	return p.run("capture-pane", "-p", "-J", "-S", "-200", "-t", "0")
}

// waitFor polls the pane until it contains want (after skipping the first
// `after` occurrences), failing after bound.
func (p *tmuxPane) waitFor(want string, after int, bound time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		s := p.capture()
		if strings.Count(s, want) > after {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("pane never showed %q within %s:\n%s", want, bound, s)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestE2ETTYReplAndInteract(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	dir := t.TempDir()
	writeScript(t, dir, "boot.lua", `
vm = qemu.start{ name = "mini", lab = "mini", memory = "512M" }
vm.console:expect("mini# ", { timeout = "4m" })
`)
	p := newTmux(t, dir, binary+" repl boot.lua --out run")
	p.waitFor("vmscript> ", 0, 5*time.Minute)
	p.keys("vm.console:interact()", "Enter")
	p.waitFor("type Ctrl-] to return", 0, time.Minute)
	p.keys("echo typed-$((6*7))", "Enter")
	p.waitFor("typed-42", 0, 2*time.Minute)
	p.keys("C-]")
	p.waitFor("detached from the console of mini", 0, time.Minute)
	p.keys("vm.name", "Enter")
	p.waitFor(`"mini"`, 0, time.Minute)
	p.keys("vm.console:tail(3)", "Enter")
	p.waitFor("typed-42", 1, time.Minute)
	p.keys("C-d")
	s := p.waitFor("EXIT=", 0, time.Minute)
	if !strings.Contains(s, "EXIT=0") {
		t.Errorf("repl exit:\n%s", s)
	}
	// What was typed and printed is in the console log and the timeline.
	log, err := os.ReadFile(filepath.Join(dir, "run", "mini.console.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "typed-42") {
		t.Errorf("console log lacks the interactive exchange")
	}
	sent := false
	for _, ev := range timeline(t, filepath.Join(dir, "run")) {
		if ev.Source == "console:mini" && ev.Kind == "send" && strings.Contains(ev.Fields["text"].(string), "e") {
			sent = true
		}
	}
	if !sent {
		t.Errorf("typed keys are not in the timeline")
	}
	// The VM was stopped when the REPL ended: no QEMU of this run remains.
	if out, _ := exec.Command("pgrep", "-f", filepath.Join(dir, "run")).Output(); len(out) > 0 {
		t.Errorf("QEMU still running after the REPL: %s", out)
	}
}

func TestE2EKeepOpenAndProgress(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	dir := t.TempDir()
	src := `
vm = qemu.start{ name = "mini", lab = "mini", memory = "512M" }
vm.console:expect("mini# ", { timeout = "4m" })
vm.console:sendline("echo marker-$((3*5))")
vm.console:expect("marker-15")
notes.step("wait for the impossible")
vm.console:expect("never-appears", { timeout = "20s" })
`
	writeScript(t, dir, "fail.lua", src)

	// On a terminal: the status line while waiting, then the REPL.
	p := newTmux(t, dir, binary+" run -k fail.lua --out run")
	s := p.waitFor(`waiting for "never-appears"`, 0, 5*time.Minute)
	if !strings.Contains(s, "/ 20s") {
		t.Errorf("status line lacks elapsed vs timeout:\n%s", s)
	}
	s = p.waitFor("vmscript> ", 0, 2*time.Minute)
	for _, want := range []string{"the script failed; its VMs are still running", "kind=timeout", "never-appears", ".quit"} {
		if !strings.Contains(s, want) {
			t.Errorf("keep-open banner lacks %q:\n%s", want, s)
		}
	}
	p.keys("vm.console:tail(5)", "Enter")
	p.waitFor("\"marker-15\",", 0, time.Minute)
	p.keys(".quit", "Enter")
	s = p.waitFor("EXIT=", 0, time.Minute)
	if !strings.Contains(s, "EXIT=1") {
		t.Errorf("exit code after -k must stay the script's (1):\n%s", s)
	}

	// On a pipe: plain timestamped lines, no escapes, and -v mirrors lines.
	r, run := runE2E(t, strings.Replace(src, `"20s"`, `"3s"`, 1), "-v", "--json", filepath.Join(dir, "r.json"))
	if r.code != 1 {
		t.Fatalf("exit %d", r.code)
	}
	if strings.ContainsAny(r.stderr, "\x1b\r") || strings.Contains(r.stderr, "⏳") {
		t.Errorf("escape sequences or a status line on a pipe:\n%q", r.stderr)
	}
	for _, want := range []string{`mini: waiting for "mini# " (timeout 4m0s)`, `mini: got "mini# " after`, `mini: stopped waiting for "never-appears" after`, "(timeout)", "mini| marker-15"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	_ = run
	data, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil || !strings.Contains(string(data), `"failed": true`) || !strings.Contains(string(data), `"kind": "timeout"`) {
		t.Errorf("json report: %v\n%s", err, data)
	}
}
