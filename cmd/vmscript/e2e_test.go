package main

// End-to-end tests of the QEMU lifecycle and the console, driven the way a
// user drives them: a Lua script run by the vmscript binary against the real
// lab guests under QEMU. They skip only when QEMU is missing and
// VMSCRIPT_REQUIRE_QEMU is unset.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

func requireQEMU(t *testing.T) {
	t.Helper()
	testenv.RequireQEMU(t)
	if testing.Short() {
		t.Skip("boots a VM; skipped with -short")
	}
}

// labImage builds (or finds in the cache) a lab guest.
func labImage(t *testing.T, name string) *lab.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	img, err := lab.Build(ctx, name, lab.Options{})
	if err != nil {
		t.Fatalf("lab %s: %v", name, err)
	}
	return img
}

// runE2E runs a script with vmscript and returns the result and run dir.
func runE2E(t *testing.T, src string, args ...string) (result, string) {
	t.Helper()
	dir := t.TempDir()
	writeScript(t, dir, "e2e.lua", src)
	out := filepath.Join(dir, "run")
	r := vms(t, dir, nil, append([]string{"run", "e2e.lua", "--out", out, "--timeout", "8m"}, args...)...)
	if r.code != 0 {
		t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	return r, out
}

func timeline(t *testing.T, runDir string) []journal.Event {
	t.Helper()
	_, evs := readRun(t, runDir)
	return evs
}

func TestE2EMiniExpectAndLosslessLog(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	r, run := runE2E(t, `
		local vm = qemu.start{ name = "mini", lab = "mini", memory = "512M", serial_log = "qemu-serial.log" }
		vm.console:expect("mini# ", { timeout = "2m" })
		vm.console:sendline("echo $((6*7))")
		vm.console:expect("42")
		vm:quit()
		local st = vm:wait{ timeout = "30s" }
		print(st.reason, st.code)
	`)
	if r.code != 0 || r.stdout != "host-qmp-quit\t0\n" {
		t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
	}
	ours, err := os.ReadFile(filepath.Join(run, "mini.console.log"))
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := os.ReadFile(filepath.Join(run, "qemu-serial.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(ours, []byte("mini# ")) || !bytes.Equal(ours, theirs) {
		t.Fatalf("console log (%d bytes) differs from QEMU's own serial log (%d bytes):\nours   %q\ntheirs %q", len(ours), len(theirs), ours, theirs)
	}
	for _, want := range []string{"mini.cmdline", "mini.stderr.log"} {
		if _, err := os.Stat(filepath.Join(run, want)); err != nil {
			t.Errorf("run dir lacks %s", want)
		}
	}
}

func TestE2ESystemdISOPowerdown(t *testing.T) {
	requireQEMU(t)
	img := labImage(t, "systemd")
	for _, fw := range []string{"bios", "uefi"} {
		t.Run(fw, func(t *testing.T) {
			t.Parallel()
			r, _ := runE2E(t, `
				local vm = qemu.start{ name = "good-`+fw+`", iso = args.iso, firmware = args.fw, memory = "1536M" }
				vm.console:watch("Kernel panic", "fail")
				vm.console:expect("login: ", { timeout = "5m" })
				vm.console:sendline("root")
				vm.console:expect({ re = "root@[^ ]+:~# $" }, { timeout = "2m" })
				vm:powerdown()
				local st = vm:wait{ timeout = "3m" }
				print(st.reason, st.code)
			`, "-a", "iso="+img.Files["good-iso"], "-a", "fw="+fw)
			if r.code != 0 || r.stdout != "guest-shutdown\t0\n" {
				t.Fatalf("exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

func TestE2EDebianInstallerANSI(t *testing.T) {
	requireQEMU(t)
	dir := "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"
	if _, err := os.Stat(dir + "/linux"); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("package debian-installer-12-netboot-amd64 missing: %v", err)
		}
		t.Skip("debian-installer-12-netboot-amd64 not installed")
	}
	t.Parallel()
	r, _ := runE2E(t, `
		local vm = qemu.start{ name = "d-i", kernel = args.dir .. "/linux", initrd = args.dir .. "/initrd.gz",
			append = "console=ttyS0,115200", memory = "1G" }
		local m = vm.console:expect("Select a language", { timeout = "4m" })
		print(m.text)
	`, "-a", "dir="+dir)
	if r.code != 0 || r.stdout != "Select a language\n" {
		t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestE2EPanicWatcherEndsWait(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	r, run := runE2E(t, `
		local img = lab.image("mini")
		local vm = qemu.start{ name = "panic", kernel = img.vmlinuz, initrd = img.initramfs,
			append = "console=ttyS0,115200 rdinit=/nonexistent panic=0", memory = "512M" }
		vm.console:watch("Kernel panic", "fail")
		local ok, e = pcall(vm.console.expect, vm.console, "mini# ", { timeout = "5m" })
		journal.event("caught", { kind = e.kind })
		print(ok, e.kind, e.line ~= nil)
	`)
	if r.code != 0 || r.stdout != "false\twatch\ttrue\n" {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	var panicAt, caughtAt int64 = -1, -1
	for _, ev := range timeline(t, run) {
		if ev.Kind == "output" && panicAt < 0 && strings.Contains(strings.Join(outputLines(run, ev.Fields), "\n"), "Kernel panic") {
			panicAt = ev.Mono
		}
		if ev.Kind == "caught" {
			caughtAt = ev.Mono
		}
	}
	if panicAt < 0 || caughtAt < 0 {
		t.Fatalf("timeline lacks the panic line (%d) or the catch (%d)", panicAt, caughtAt)
	}
	if d := time.Duration(caughtAt - panicAt); d > 2*time.Second {
		t.Fatalf("the wait ended %v after the panic line; want < 2s", d)
	}
}

// TestE2EFailurePatternsByDefault: with no watcher set, a kernel panic
// ends the wait naming the pattern, and, uncaught, the run with exit code 3;
// a guest whose start downgraded the pattern lets the script read its own
// panic; bad failure options are usage errors before anything boots.
func TestE2EFailurePatternsByDefault(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	r, run := runE2E(t, `
		local img = lab.image("mini")
		local function panicking(name, failures)
			return qemu.start{ name = name, kernel = img.vmlinuz, initrd = img.initramfs, failures = failures,
				append = "console=ttyS0,115200 rdinit=/nonexistent panic=0", memory = "512M" }
		end
		for _, bad in ipairs({ { nope = "fail" }, { ["kernel-panic"] = "explode" }, { mine = { re = "(" } }, { "warn" } }) do
			local ok, e = pcall(panicking, "bad", bad)
			print("bad", ok, e.kind)
		end
		local vm = panicking("panic")
		local relaxed = panicking("relaxed", { ["kernel-panic"] = "warn", mine = { text = "Kernel panic" } })
		local ok, e = pcall(vm.console.expect, vm.console, "mini# ", { timeout = "5m" })
		print(ok, e.kind, e.failure, #vm.console:failures())
		-- "mine" (fail, by the script) ends the wait there instead.
		ok, e = pcall(relaxed.console.expect, relaxed.console, "mini# ", { timeout = "5m" })
		print(ok, e.failure)
		vm.console:expect("mini# ", { timeout = "5s" })
	`)
	want := "bad\tfalse\tusage\nbad\tfalse\tusage\nbad\tfalse\tusage\nbad\tfalse\tusage\nfalse\twatch\tkernel-panic\t8\nfalse\tmine\n"
	if r.code != exitPanic || r.stdout != want {
		t.Fatalf("exit %d (want %d), stdout %q, want %q\nstderr:\n%s", r.code, exitPanic, r.stdout, want, r.stderr)
	}
	if !strings.Contains(r.stderr, "failure pattern kernel-panic") || !strings.Contains(r.stderr, "Kernel panic - not syncing") {
		t.Errorf("stderr does not name the pattern and the line:\n%s", r.stderr)
	}
	// Two VMs under TCG for want of KVM: said once, loudly.
	if qemu.ResolveAccel(context.Background(), "").Accel == "tcg" && strings.Count(r.stderr, "warning: no usable KVM, so VMs run under TCG") != 1 {
		t.Errorf("stderr does not say once that the VMs run under TCG:\n%s", r.stderr)
	}
	events := map[string]int{}
	for _, ev := range timeline(t, run) {
		if ev.Kind == "failure" {
			events[ev.Source+" "+ev.Fields["name"].(string)+" "+ev.Fields["action"].(string)]++
		}
	}
	for _, want := range []string{"console:panic kernel-panic fail", "console:relaxed kernel-panic warn", "console:relaxed mine fail"} {
		if events[want] == 0 {
			t.Errorf("no failure event %q in %v", want, events)
		}
	}
}

// startScript starts vmscript on src in the background and returns the
// command and a reader of its stdout.
func startScript(t *testing.T, src string) (*exec.Cmd, *bufio.Reader, string) {
	t.Helper()
	dir := t.TempDir()
	writeScript(t, dir, "bg.lua", src)
	run := filepath.Join(dir, "run")
	cmd := exec.Command(binary, "run", "bg.lua", "--out", run, "--timeout", "5m")
	cmd.Dir = dir
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("vmscript stderr:\n%s", errb.String())
		}
	})
	return cmd, bufio.NewReader(out), run
}

func readPID(t *testing.T, rd *bufio.Reader) int {
	t.Helper()
	line, err := rd.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the VM's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("pid line %q", line)
	}
	return pid
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestE2EQEMUKilledMidWait(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	cmd, out, run := startScript(t, `
		local vm = qemu.start{ name = "victim", lab = "mini", memory = "512M" }
		print(vm.pid)
		vm.console:expect("mini# ", { timeout = "2m" })
		print("ready")
		local ok, e = pcall(vm.console.expect, vm.console, "never printed", { timeout = "4m" })
		journal.event("caught", { kind = e.kind, reason = e.reason })
		print(e.kind, e.reason)
	`)
	pid := readPID(t, out)
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("waiting for the prompt: %q %v", line, err)
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(killed); took > time.Second {
		t.Errorf("the wait ended %v after QEMU was killed; want < 1s", took)
	}
	if line != "exited\tkilled\n" {
		t.Fatalf("got %q, want kind exited, reason killed", line)
	}
	_ = cmd.Wait()
	_ = run
}

func TestE2EKill9LeavesNoQEMU(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	cmd, out, _ := startScript(t, `
		local a = qemu.start{ name = "orphan-a", lab = "mini", memory = "256M" }
		local b = qemu.start{ name = "orphan-b", lab = "mini", memory = "256M" }
		print(a.pid)
		print(b.pid)
		time.sleep("5m")
	`)
	pids := []int{readPID(t, out), readPID(t, out)}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("QEMU %d not running before the kill", pid)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) {
			// A zombie reaped by nobody still answers kill(0): check its state.
			if data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); !strings.Contains(string(data), ") Z") {
				t.Errorf("QEMU %d survived kill -9 of vmscript", pid)
			}
		}
	}
}

func TestE2ETwoVMsWaitedInTurn(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	r, run := runE2E(t, `
		local a = qemu.start{ name = "first", lab = "mini", memory = "256M" }
		local b = qemu.start{ name = "second", lab = "mini", memory = "256M" }
		-- b boots while we wait on a: nothing of b's console may be lost.
		a.console:expect("vmscript-mini: ready", { timeout = "3m" })
		b.console:expect("vmscript-mini: ready", { timeout = "3m", from = "start" })
		a.console:expect("mini# ")
		b.console:expect("mini# ")
		a:quit(); b:quit()
		print(a:wait().reason, b:wait().reason)
	`)
	if r.code != 0 || r.stdout != "host-qmp-quit\thost-qmp-quit\n" {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	for _, name := range []string{"first", "second"} {
		data, err := os.ReadFile(filepath.Join(run, name+".console.log"))
		if err != nil {
			t.Fatal(err)
		}
		// The mini kernel is quiet: byte 0 of the console is init's marker.
		if !bytes.HasPrefix(data, []byte("vmscript-mini: ready")) || !bytes.Contains(data, []byte("mini# ")) {
			t.Errorf("%s console incomplete (%d bytes): starts %q", name, len(data), data[:min(len(data), 80)])
		}
	}
}

func TestE2EDiskImageUnchanged(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, bytes.Repeat([]byte("original"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	before := sha256File(t, disk)
	r, _ := runE2E(t, `
		local vm = qemu.start{ name = "writer", lab = "mini", memory = "256M", disks = { args.disk } }
		vm.console:expect("mini# ", { timeout = "2m" })
		vm.console:sendline("echo overwritten | dd of=/dev/vda conv=fsync 2>/dev/null; head -c 11 /dev/vda; echo ' <-read'")
		vm.console:expect("overwritten <-read")
		vm:quit()
		print(vm:wait().reason)
	`, "-a", "disk="+disk)
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	if after := sha256File(t, disk); after != before {
		t.Fatal("the guest's write reached the disk image; snapshot=on by default must protect it")
	}
}

func sha256File(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

// TestE2EMemoryBudgetQueuesRuns: three runs at once on a host whose budget
// fits one mini VM wait for their turn, one after another, and say so; a
// VM larger than the whole budget fails at once, naming the knob.
func TestE2EMemoryBudgetQueuesRuns(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	dir := t.TempDir()
	writeScript(t, dir, "one.lua", `
		local vm = qemu.start{ name = "mini", lab = "mini", memory = args.memory or "512M" }
		vm.console:expect("mini# ", { timeout = "4m" })
		vm.console:sendline("sleep 1; echo done-$((6*7))")
		vm.console:expect("done-42")
		vm:quit()
		vm:wait{ timeout = "30s" }
	`)
	// A private ledger: the other tests' VMs are not in it.
	env := []string{"TMPDIR=" + t.TempDir(), "VMSCRIPT_MEMORY_BUDGET=1000M"}
	results := make([]result, 3)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = vms(t, dir, env, "run", "one.lua", "--out", filepath.Join(dir, "run"+strconv.Itoa(i)), "--timeout", "10m")
		}()
	}
	wg.Wait()
	type span struct{ start, end time.Time }
	var spans []span
	waited := 0
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, r.code, r.stderr)
		}
		if strings.Contains(r.stderr, "mini: waiting for host memory: it needs 640 MiB; running VMs (1) hold 640 MiB of the 1000 MiB budget") {
			waited++
		}
		var s span
		for _, ev := range timeline(t, filepath.Join(dir, "run"+strconv.Itoa(i))) {
			wall, _ := time.Parse(time.RFC3339Nano, ev.Wall)
			switch {
			case ev.Source == "vm:mini" && ev.Kind == "start":
				s.start = wall
			case ev.Source == "vm:mini" && ev.Kind == "exit":
				s.end = wall
			}
		}
		spans = append(spans, s)
	}
	if waited < 2 {
		t.Errorf("%d runs said they waited for memory, want 2", waited)
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start.Before(spans[j].start) })
	for i := 1; i < len(spans); i++ {
		if spans[i].start.IsZero() || spans[i].start.Before(spans[i-1].end) {
			t.Errorf("VMs overlap: %v", spans)
		}
	}
	r := vms(t, dir, env, "run", "one.lua", "--out", filepath.Join(dir, "huge"), "-a", "memory=2G")
	if r.code != 1 || !strings.Contains(r.stderr, "more than the host's budget for all VMs (1000 MiB; VMSCRIPT_MEMORY_BUDGET sets it)") {
		t.Errorf("a VM larger than the budget: exit %d\n%s", r.code, r.stderr)
	}
}
