package main

// End-to-end tests of attaching to a live run from a second process: the
// run is the real CLI in the background with a mini guest; vmscript ps,
// console (through a pty, as a person types) and ssh are run beside it.
// Every wait has a generous bound; nothing depends on timing.

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/vmscript/vmscript/internal/testenv"
	"github.com/vmscript/vmscript/toolkit/control"
)

// syncBuffer collects a process's output for polling.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitOutput polls what out collected until it contains want, failing t
// after bound.
func waitOutput(t *testing.T, what string, out *syncBuffer, want string, bound time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(bound)
	for {
		s := out.String()
		if strings.Contains(s, want) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q within %s:\n%s", what, want, bound, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bgProc is a vmscript process running in the background.
type bgProc struct {
	t        *testing.T
	name     string
	cmd      *exec.Cmd
	out, err syncBuffer
	stdin    io.WriteCloser
	done     chan struct{}
	code     int
}

// startVMS starts vmscript with args in dir; stdin is a pipe unless tty is
// given (the pty's slave side).
func startVMS(t *testing.T, name, dir string, tty *os.File, args ...string) *bgProc {
	t.Helper()
	p := &bgProc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Dir = dir
	if tty != nil {
		p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = tty, tty, tty
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	} else {
		p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
		var err error
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, p.out.String(), name, p.err.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *bgProc) wait(bound time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(bound):
		p.t.Fatalf("%s still running after %s\nstdout:\n%s\nstderr:\n%s", p.name, bound, p.out.String(), p.err.String())
		return -1
	}
}

// attachPTY runs `vmscript console args…` on a fresh pty and collects
// what it shows.
func attachPTY(t *testing.T, dir string, args ...string) (*bgProc, *os.File, *syncBuffer) {
	t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close() })
	_ = pty.Setsize(master, &pty.Winsize{Rows: 40, Cols: 120})
	p := startVMS(t, "console", dir, slave, append([]string{"console"}, args...)...)
	slave.Close()
	screen := &syncBuffer{}
	go func() { _, _ = io.Copy(screen, master) }()
	return p, master, screen
}

// psRun returns what vmscript ps --json says of the run in runDir.
func psRun(t *testing.T, dir, runDir string) *control.RunInfo {
	t.Helper()
	r := vms(t, dir, nil, "ps", "--json")
	var runs []*control.RunInfo
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &runs) != nil {
		t.Fatalf("ps --json: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, ri := range runs {
		if ri.RunDir == runDir {
			return ri
		}
	}
	return nil
}

// TestE2EAttachConsole: while a script waits on its console, a second
// process attaches with vmscript console through a pty and types a command
// whose output the script's expect is waiting for; the terminal shows the
// console's tail and the command's output, Ctrl-] detaches and leaves the
// script running; a second client stays attached until the run ends and
// is told the console closed. ps lists the run and its VM meanwhile.
func TestE2EAttachConsole(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	dir := t.TempDir()
	writeScript(t, dir, "wait.lua", `
vm = qemu.start{ name = "mini", lab = "mini", memory = "512M", forwards = {22} }
vm.console:expect("mini# ", { timeout = "4m" })
print("ready")
vm.console:expect("marker-from-attach\r\n", { timeout = "3m" })
print("got marker")
vm.console:expect("second-marker\r\n", { timeout = "3m" })
print("got second")
`)
	runDir := filepath.Join(dir, "run")
	run := startVMS(t, "run", dir, nil, "run", "wait.lua", "--out", runDir, "--timeout", "10m")
	waitOutput(t, "run", &run.out, "ready\n", 5*time.Minute)

	ri := psRun(t, dir, runDir)
	if ri == nil || ri.State != "script" || len(ri.VMs) != 1 || ri.VMs[0].Name != "mini" || !ri.VMs[0].Running ||
		len(ri.VMs[0].Forwards) != 1 || ri.VMs[0].Forwards[0].GuestPort != 22 || ri.VMs[0].Lab != "mini" ||
		ri.VMs[0].ConsoleLog != filepath.Join(runDir, "mini.console.log") {
		t.Fatalf("ps: %+v", ri)
	}
	table := vms(t, dir, nil, "ps").stdout
	for _, want := range []string{"run " + ri.ID + "  pid ", "  mini  ", "->22", "mini.console.log"} {
		if !strings.Contains(table, want) {
			t.Errorf("ps table lacks %q:\n%s", want, table)
		}
	}

	// By run directory, the VM left out: the run has one.
	con, master, screen := attachPTY(t, dir, runDir)
	waitOutput(t, "console", screen, "type Ctrl-] to detach", time.Minute)
	waitOutput(t, "console", screen, "mini# ", time.Minute) // the tail shows the prompt
	// The typed line does not contain the marker; its output does.
	_, _ = master.Write([]byte("echo marker-from-at''tach\r"))
	waitOutput(t, "run", &run.out, "got marker\n", 2*time.Minute)
	waitOutput(t, "console", screen, "marker-from-attach\r\n", time.Minute)
	_, _ = master.Write([]byte{control.Escape})
	if code := con.wait(time.Minute); code != 0 {
		t.Errorf("console after Ctrl-]: exit %d\n%s", code, screen.String())
	}
	waitOutput(t, "console", screen, "detached from the console of mini", time.Second)

	// A second client, from a pipe, by id prefix: stays until the run ends.
	pipe := startVMS(t, "console2", dir, nil, "console", ri.ID, "mini")
	waitOutput(t, "console2", &pipe.out, "type Ctrl-] to detach", time.Minute)
	_, _ = pipe.stdin.Write([]byte("echo second-mar''ker\r"))
	waitOutput(t, "run", &run.out, "got second\n", 2*time.Minute)
	if code := run.wait(2 * time.Minute); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	if code := pipe.wait(time.Minute); code != 1 {
		t.Errorf("console2 after the run ended: exit %d", code)
	}
	waitOutput(t, "console2", &pipe.out, "[vmscript: the console of mini closed", time.Second)
	if psRun(t, dir, runDir) != nil {
		t.Errorf("ps still lists the ended run")
	}

	// The typed keys are in the timeline, the attaches too.
	var sent strings.Builder
	attached := 0
	for _, ev := range timeline(t, runDir) {
		if ev.Source == "console:mini" && ev.Kind == "send" {
			sent.WriteString(ev.Fields["text"].(string))
		}
		if ev.Source == "control" && ev.Kind == "console-attach" {
			attached++
		}
	}
	if sent.String() != "echo marker-from-at''tach\recho second-mar''ker\r" || attached != 2 {
		t.Errorf("timeline: sent %q, %d attaches", sent.String(), attached)
	}
}

// TestE2EAttachSSH: vmscript ssh runs a command on a mini guest through
// its user-network forward (the VM left out: the run has one) and on a
// guest whose only NIC is on a vmscript LAN (dialled through the LAN's
// stack to its lease); each command writes to the guest's serial console,
// where the script's expect sees it. The remote exit code comes back, and
// ps shows the lease and the first VM's exit.
func TestE2EAttachSSH(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	testenv.RequireTool(t, "ssh")
	dir := t.TempDir()
	writeScript(t, dir, "ssh.lua", `
-- the test creates the file when its ssh sessions are over
local function await(path)
	for _ = 1, 3000 do
		local f = io.open(path)
		if f then f:close() return end
		time.sleep(0.1)
	end
	error("the test never created " .. path)
end
local key = lab.image("mini").ssh_key
local l = lan.new{}
fwd = qemu.start{ name = "fwd", lab = "mini", memory = "512M", forwards = {22} }
fwd:ssh{ user = "root", key = key, timeout = "4m" }:close()
print("fwd-ready")
fwd.console:expect("ssh-fwd-done", { timeout = "3m" })
await("fwd-over")
fwd:quit()
fwd:wait{ timeout = "1m" }
onlan = qemu.start{ name = "onlan", lab = "mini", memory = "512M", net = l }
onlan:ssh{ user = "root", key = key, timeout = "4m" }:close()
print("lan-ready " .. l:leases()[1].ip)
onlan.console:expect("ssh-lan-done", { timeout = "3m" })
await("lan-over")
`)
	runDir := filepath.Join(dir, "run")
	run := startVMS(t, "run", dir, nil, "run", "ssh.lua", "--out", runDir, "--timeout", "12m")
	waitOutput(t, "run", &run.out, "fwd-ready\n", 6*time.Minute)
	ri := psRun(t, dir, runDir)
	if ri == nil {
		t.Fatal("ps does not list the run")
	}
	r := vms(t, dir, nil, "ssh", ri.ID, "--", "uname -s; echo ssh-fwd-done > /dev/ttyS0")
	if r.code != 0 || r.stdout != "Linux\n" {
		t.Fatalf("ssh over the forward: exit %d\nstdout %q\nstderr %s", r.code, r.stdout, r.stderr)
	}
	if r := vms(t, dir, nil, "ssh", ri.ID, "fwd", "--", "-o", "ConnectTimeout=60", "exit 3"); r.code != 3 {
		t.Errorf("remote exit code: %d\n%s", r.code, r.stderr)
	}
	touch(t, filepath.Join(dir, "fwd-over"))

	out := waitOutput(t, "run", &run.out, "lan-ready ", 6*time.Minute)
	ip := strings.TrimSpace(out[strings.Index(out, "lan-ready ")+len("lan-ready "):])
	ri = psRun(t, dir, runDir)
	if ri == nil || len(ri.VMs) != 2 || ri.VMs[0].Running || !strings.Contains(ri.VMs[0].Exit, "host-qmp-quit") ||
		len(ri.VMs[1].LAN) != 1 || ri.VMs[1].LAN[0].IP != ip {
		t.Fatalf("ps on the LAN (lease %s): %+v", ip, ri)
	}
	// The exited VM does not count: the only running one is picked.
	r = vms(t, dir, nil, "ssh", runDir, "--", "cat /run/ipv4; echo ssh-lan-done > /dev/ttyS0")
	if r.code != 0 || strings.TrimSpace(r.stdout) != ip {
		t.Fatalf("ssh over the LAN: exit %d\nstdout %q\nstderr %s", r.code, r.stdout, r.stderr)
	}
	touch(t, filepath.Join(dir, "lan-over"))
	if code := run.wait(2 * time.Minute); code != 0 {
		t.Fatalf("run: exit %d", code)
	}
	dials := 0
	for _, ev := range timeline(t, runDir) {
		if ev.Source == "control" && ev.Kind == "dial" && ev.Fields["error"] == nil {
			dials++
		}
	}
	if dials != 3 {
		t.Errorf("timeline: %d dials, want 3", dials)
	}
}

// TestE2EAttachKeepOpen: after a failed script with --keep-open, the run
// is still attachable (its state is "repl"): a console from a pipe runs a
// command on the guest and detaches at the end of its input; leaving the
// REPL ends the run and its registration.
func TestE2EAttachKeepOpen(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	dir := t.TempDir()
	writeScript(t, dir, "fail.lua", `
vm = qemu.start{ name = "mini", lab = "mini", memory = "512M" }
vm.console:expect("mini# ", { timeout = "4m" })
vm.console:expect("never-appears", { timeout = "3s" })
`)
	runDir := filepath.Join(dir, "run")
	run := startVMS(t, "run", dir, nil, "run", "-k", "fail.lua", "--out", runDir)
	waitOutput(t, "run", &run.err, "the script failed; its VMs are still running", 5*time.Minute)
	ri := psRun(t, dir, runDir)
	if ri == nil || ri.State != "repl" || len(ri.VMs) != 1 || !ri.VMs[0].Running {
		t.Fatalf("ps after the failure: %+v", ri)
	}
	con := startVMS(t, "console", dir, nil, "console", ri.ID)
	_, _ = con.stdin.Write([]byte("echo keep-$((40+2))\r"))
	waitOutput(t, "console", &con.out, "keep-42\r\n", 2*time.Minute)
	con.stdin.Close()
	if code := con.wait(time.Minute); code != 0 {
		t.Errorf("console at the end of its input: exit %d", code)
	}
	run.stdin.Close() // leaves the REPL
	if code := run.wait(2 * time.Minute); code != 1 {
		t.Errorf("run -k: exit %d, want the script's 1", code)
	}
	if psRun(t, dir, runDir) != nil {
		t.Errorf("ps still lists the ended run")
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}
