package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// requireQEMU skips the test when QEMU is missing, unless
// VMSCRIPT_REQUIRE_QEMU is set (CI), in which case it fails.
func requireQEMU(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("VMSCRIPT_REQUIRE_QEMU is set but %s is missing: %v", DefaultBinary, err)
		}
		t.Skipf("%s missing", DefaultBinary)
	}
}

func newRun(t *testing.T) *journal.Run {
	t.Helper()
	r, err := journal.New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func timeline(t *testing.T, r *journal.Run) []journal.Event {
	t.Helper()
	f, err := os.Open(r.Path(journal.TimelineFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, _, err := journal.ReadTimeline(f)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func findEvent(evs []journal.Event, source, kind string) *journal.Event {
	for i := range evs {
		if evs[i].Source == source && evs[i].Kind == kind {
			return &evs[i]
		}
	}
	return nil
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// start starts a VM (no boot media: SeaBIOS looks for one and waits) and
// stops it at the end of the test.
func start(t *testing.T, cfg Config) *VM {
	t.Helper()
	requireQEMU(t)
	if cfg.Run == nil {
		cfg.Run = newRun(t)
	}
	t0 := time.Now()
	v, err := Start(ctxT(t, 60*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start took %s (accel %s: %s)", time.Since(t0).Round(time.Millisecond), v.Accel(), v.AccelReason())
	t.Cleanup(func() { v.Stop(5 * time.Second) })
	return v
}

// drain reads the serial port into a buffer, as a console would.
type drain struct {
	mu  sync.Mutex
	buf bytes.Buffer
	eof chan struct{}
}

func drainSerial(v *VM) *drain {
	d := &drain{eof: make(chan struct{})}
	go func() {
		defer close(d.eof)
		b := make([]byte, 4096)
		for {
			n, err := v.Serial().Read(b)
			d.mu.Lock()
			d.buf.Write(b[:n])
			d.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return d
}

func (d *drain) bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.buf.Bytes()...)
}

func TestE2EPausedThenRunning(t *testing.T) {
	run := newRun(t)
	v := start(t, Config{Name: "paused", Run: run, Forwards: []Forward{{GuestPort: 22}}})
	ctx := ctxT(t, 30*time.Second)
	st, err := v.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// -S leaves QEMU in "prelaunch" (never ran), which QEMU reports as
	// running=false; "paused" is what a stopped, once-running VM says.
	if st != "prelaunch" && st != "paused" {
		t.Errorf("status before cont = %q", st)
	}
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := v.Status(ctx); err != nil || st != "running" {
		t.Errorf("status after cont = %q, %v", st, err)
	}
	if _, err := v.WaitEvent(ctx, "RESUME", nil); err != nil {
		t.Errorf("RESUME: %v", err)
	}

	// The forward got a real port, and slirp accepts on it.
	fw := v.Forwards()
	if len(fw) != 1 || fw[0].HostPort == 0 {
		t.Fatalf("forwards %+v", fw)
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(fw[0].HostAddr, strconv.Itoa(fw[0].HostPort)), 5*time.Second)
	if err != nil {
		t.Errorf("dial forward: %v", err)
	} else {
		c.Close()
	}

	// The command line, rerunnable, and the timeline.
	line, err := os.ReadFile(run.Path("paused.cmdline"))
	if err != nil || !strings.HasPrefix(string(line), DefaultBinary+" -name paused ") {
		t.Errorf("cmdline file: %q %v", line, err)
	}
	if len(v.Dir())+len("/qmp.sock") > maxSocketPath {
		t.Errorf("dir %s too long", v.Dir())
	}
	evs := timeline(t, run)
	se := findEvent(evs, "vm:paused", "start")
	if se == nil || se.Fields["accel"] != v.Accel() || se.Fields["accel_reason"] == "" || se.Fields["argv"] == nil {
		t.Errorf("start event %+v", se)
	}
	if findEvent(evs, "vm:paused", "ready") == nil || findEvent(evs, "qmp:paused", "event") == nil {
		t.Errorf("no ready or qmp event in %+v", evs)
	}
	if v.MAC() != DeriveMAC("paused") || v.PID() <= 0 {
		t.Errorf("mac %s pid %d", v.MAC(), v.PID())
	}
}

func TestE2EQuitWait(t *testing.T) {
	run := newRun(t)
	v := start(t, Config{Name: "quit", Run: run, Net: "none"})
	ctx := ctxT(t, 30*time.Second)
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	// A guest without an OS ignores the power button: QEMU keeps running.
	if err := v.Powerdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := v.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reason != "host-qmp-quit" || st.Code != 0 || st.Signal != "" {
		t.Errorf("exit status %+v", st)
	}
	t0 := time.Now()
	if _, err := v.QMP(ctx, "query-status", nil); !vmerr.Is(err, vmerr.Exited) {
		t.Errorf("QMP after quit: %v", err)
	}
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Errorf("QMP after exit took %s", d)
	}
	v.Stop(time.Second)
	v.Stop(time.Second) // idempotent
	if ev := findEvent(timeline(t, run), "vm:quit", "stop"); ev == nil || ev.Fields["method"] != "none" {
		t.Errorf("stop event %+v", ev)
	}
	if ev := findEvent(timeline(t, run), "vm:quit", "exit"); ev == nil || ev.Fields["reason"] != "host-qmp-quit" {
		t.Errorf("exit event %+v", ev)
	}
	if _, err := os.Stat(v.Dir()); !os.IsNotExist(err) {
		t.Errorf("private dir %s left behind: %v", v.Dir(), err)
	}
}

func TestE2EExternalKill(t *testing.T) {
	v := start(t, Config{Name: "victim", Net: "none"})
	ctx := ctxT(t, 30*time.Second)
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := syscall.Kill(v.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Exited():
	case <-time.After(time.Second):
		t.Fatal("Exited not closed within 1 s of SIGKILL")
	}
	st, err := v.Wait(ctx)
	t.Logf("exit noticed after %s: %s", time.Since(t0), st)
	if err != nil || st.Reason != "killed" || st.Signal != "SIGKILL" || !strings.Contains(st.Detail, "outside") {
		t.Errorf("exit status %+v %v", st, err)
	}
	t0 = time.Now()
	if _, err := v.QMP(ctx, "query-status", nil); !vmerr.Is(err, vmerr.Exited) || time.Since(t0) > 100*time.Millisecond {
		t.Errorf("QMP after kill: %v after %s", err, time.Since(t0))
	}
	if _, err := v.WaitEvent(ctx, "RESET", nil); !vmerr.Is(err, vmerr.Exited) {
		t.Errorf("WaitEvent after kill: %v", err)
	}
}

func TestE2EBadOption(t *testing.T) {
	requireQEMU(t)
	run := newRun(t)
	t0 := time.Now()
	_, err := Start(ctxT(t, 30*time.Second), Config{Name: "bad", Run: run, Accel: "tcg", QEMUArgs: []string{"-machine", "nonsense"}})
	if err == nil {
		t.Fatal("no error")
	}
	t.Logf("failed after %s with: %v", time.Since(t0), err)
	if !vmerr.Is(err, vmerr.Exited) || !strings.Contains(err.Error(), "unsupported machine type") || strings.Contains(err.Error(), "waiting for connection") {
		t.Errorf("error %q (kind %q) does not quote QEMU's stderr", err, vmerr.KindOf(err))
	}
	if time.Since(t0) > 5*time.Second {
		t.Errorf("took %s", time.Since(t0))
	}
	if data, _ := os.ReadFile(run.Path("bad.stderr.log")); !bytes.Contains(data, []byte("unsupported machine type")) {
		t.Errorf("stderr log: %q", data)
	}
	// Without a run (stderr in the private dir, removed at exit) and with a
	// dir of our own (kept).
	dir := filepath.Join(t.TempDir(), "d")
	_, err = Start(ctxT(t, 30*time.Second), Config{Name: "bad2", Dir: dir, Accel: "tcg", Memory: "64M", QEMUArgs: []string{"-smp", "nonsense"}})
	if !vmerr.Is(err, vmerr.Exited) || !strings.Contains(err.Error(), "expects integer") {
		t.Errorf("without a run: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stderr.log")); err != nil {
		t.Errorf("given dir: %v", err)
	}
}

func TestE2EScreendumpAndKeys(t *testing.T) {
	run := newRun(t)
	v := start(t, Config{Name: "screen", Run: run, Net: "none"})
	ctx := ctxT(t, 30*time.Second)
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.SendKeys(ctx, "ctrl-alt-delete"); err != nil {
		t.Errorf("SendKeys: %v", err)
	}
	if err := v.SendKeys(ctx, "ctrl-nosuchkey"); !vmerr.Is(err, vmerr.Refused) {
		t.Errorf("unknown key: %v", err)
	}
	if err := v.Screendump(ctx, "screen.png"); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(run.Path("screen.png"))
	if err != nil || !bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screendump: %d bytes, %v", len(data), err)
	}
}

func TestE2EUEFI(t *testing.T) {
	if _, err := os.Stat(DefaultOVMFCode); err != nil {
		t.Skip("ovmf not installed")
	}
	v := start(t, Config{Name: "uefi", Firmware: "uefi", Net: "none"})
	ctx := ctxT(t, 30*time.Second)
	if _, err := os.Stat(filepath.Join(v.Dir(), varsFile)); err != nil {
		t.Errorf("private OVMF vars: %v", err)
	}
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if st, err := v.Status(ctx); err != nil || st != "running" {
		t.Errorf("status %q %v", st, err)
	}
	if err := v.Screendump(ctx, "uefi.png"); err != nil {
		t.Error(err)
	}
}

// TestE2ESerialByteZero proves the console gets byte 0: SeaBIOS mirrors its
// screen to the serial port (SerialBIOS), and its very first output is the
// terminal reset ESC c. The test waits a while before cont, as a slow
// console attach would.
func TestE2ESerialByteZero(t *testing.T) {
	v := start(t, Config{Name: "serial", Net: "none", SerialBIOS: true})
	time.Sleep(300 * time.Millisecond)
	d := drainSerial(v)
	ctx := ctxT(t, 30*time.Second)
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !bytes.Contains(d.bytes(), []byte("SeaBIOS (version")) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := d.bytes()
	if !bytes.HasPrefix(got, []byte("\x1bc")) || !bytes.Contains(got, []byte("SeaBIOS (version")) {
		t.Fatalf("serial starts %q", got[:min(len(got), 80)])
	}
	v.Stop(5 * time.Second)
	select {
	case <-d.eof:
	case <-time.After(time.Second):
		t.Error("serial reader got no EOF after Stop")
	}
}

// TestE2EStopKillsAStuckQEMU: a QEMU that cannot answer (SIGSTOP) is
// SIGKILLed after the grace, and the timeline says so.
func TestE2EStopKillsAStuckQEMU(t *testing.T) {
	run := newRun(t)
	v := start(t, Config{Name: "stuck", Run: run, Net: "none"})
	if err := syscall.Kill(v.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	v.Stop(300 * time.Millisecond)
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("Stop took %s", d)
	}
	st, _ := v.Wait(ctxT(t, time.Second))
	if st.Reason != "killed" || !strings.Contains(st.Detail, "vmscript") {
		t.Errorf("exit status %+v", st)
	}
	ev := findEvent(timeline(t, run), "vm:stuck", "stop")
	if ev == nil || ev.Fields["method"] != "sigkill" {
		t.Errorf("stop event %+v", ev)
	}
}

// TestE2EKernelSerial boots the host's Debian kernel (if readable) and finds
// its banner on the serial port: a real guest writing to the console.
func TestE2EKernelSerial(t *testing.T) {
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	var kernel string
	for _, k := range kernels {
		if f, err := os.Open(k); err == nil {
			f.Close()
			kernel = k
			break
		}
	}
	if kernel == "" {
		t.Skip("no readable /boot/vmlinuz-*")
	}
	v := start(t, Config{Name: "kernel", Net: "none", Kernel: kernel, Append: "console=ttyS0 panic=-1", QEMUArgs: []string{"-no-reboot"}})
	d := drainSerial(v)
	ctx := ctxT(t, 60*time.Second)
	t0 := time.Now()
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	for !bytes.Contains(d.bytes(), []byte("Linux version")) && time.Since(t0) < 45*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	if !bytes.Contains(d.bytes(), []byte("Linux version")) {
		t.Fatalf("no kernel banner in %q", d.bytes())
	}
	t.Logf("kernel banner on serial %s after cont", time.Since(t0).Round(time.Millisecond))
}

// TestE2ENoOrphan runs a child test process that starts a VM and prints its
// PID, SIGKILLs the child and checks that QEMU is gone within 2 s.
func TestE2ENoOrphan(t *testing.T) {
	if os.Getenv("VMSCRIPT_QEMU_ORPHAN_CHILD") != "" {
		orphanChild()
		return
	}
	requireQEMU(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestE2ENoOrphan$", "-test.v")
	cmd.Env = append(os.Environ(), "VMSCRIPT_QEMU_ORPHAN_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pidc := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var pid int
			if dir, ok := strings.CutPrefix(sc.Text(), "QEMU-DIR "); ok && strings.HasPrefix(dir, os.TempDir()) {
				// The child dies by SIGKILL and cannot clean up.
				t.Cleanup(func() { os.RemoveAll(dir) })
			}
			if _, err := fmt.Sscanf(sc.Text(), "QEMU-PID %d", &pid); err == nil {
				pidc <- pid
			}
		}
		io.Copy(io.Discard, out)
	}()
	var pid int
	select {
	case pid = <-pidc:
	case <-time.After(60 * time.Second):
		t.Fatal("child printed no QEMU PID")
	}
	if !alive(pid) {
		t.Fatalf("QEMU %d not running in the child", pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	t0 := time.Now()
	for alive(pid) {
		if time.Since(t0) > 2*time.Second {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("QEMU %d outlived its parent by 2 s", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("QEMU gone %s after its parent's SIGKILL", time.Since(t0).Round(time.Millisecond))
}

// alive reports whether pid runs (a zombie awaiting its reaper is dead).
func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func orphanChild() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Start from a goroutine locked to its thread that then ends, so that
	// its thread exits: Pdeathsig must not follow the caller's thread.
	vc := make(chan *VM)
	go func() {
		runtime.LockOSThread()
		v, err := Start(ctx, Config{Name: "orphan", Net: "none", Accel: "tcg"})
		if err != nil {
			fmt.Println("START-ERROR", err)
			os.Exit(1)
		}
		vc <- v
	}()
	v := <-vc
	v.Cont(ctx)
	// Thread churn: a goroutine that exits locked takes its thread with it.
	// Were QEMU forked from a pooled thread, one of these would end it.
	for i := 0; i < 200; i++ {
		done := make(chan bool)
		go func() {
			runtime.LockOSThread()
			done <- true
		}()
		<-done
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case <-v.Exited():
		fmt.Println("EXITED-EARLY", v.status)
		os.Exit(1)
	default:
	}
	fmt.Printf("QEMU-DIR %s\n", v.Dir())
	fmt.Printf("QEMU-PID %d\n", v.PID())
	select {}
}

// TestE2EEventsKept: an event that arrived before WaitEvent is returned;
// with a mark taken after it, only a later one is.
func TestE2EEventsKept(t *testing.T) {
	v := start(t, Config{Name: "events", Net: "none"})
	ctx := ctxT(t, 30*time.Second)
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := v.QMP(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	ev, err := v.WaitEvent(ctx, "STOP", nil)
	if err != nil {
		t.Fatal(err)
	}
	mark := v.EventMark()
	if mark <= ev.Seq {
		t.Errorf("mark %d, STOP seq %d", mark, ev.Seq)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := v.WaitEvent(short, "STOP", nil, mark); !vmerr.Is(err, vmerr.Timeout) {
		t.Errorf("STOP after mark: %v", err)
	}
	if _, err := v.QMP(ctx, "system_reset", nil); err != nil {
		t.Fatal(err)
	}
	ev, err = v.WaitEvent(ctx, "RESET", func(d json.RawMessage) bool { return bytes.Contains(d, []byte("host-qmp-system-reset")) }, mark)
	if err != nil {
		t.Errorf("RESET: %v", err)
	}
}

// TestAccelKVMWithoutKVM: accel="kvm" on a host whose KVM device is not
// usable fails at once with a usage error that says so and names the
// alternative, instead of falling back to TCG; nothing is started.
func TestAccelKVMWithoutKVM(t *testing.T) {
	saved := KVMDevice
	KVMDevice = filepath.Join(t.TempDir(), "no-kvm")
	defer func() { KVMDevice = saved }()
	if err := CheckKVM(); err == nil || !strings.Contains(err.Error(), "no-kvm unusable") {
		t.Fatalf("CheckKVM: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "d")
	_, err := Start(ctxT(t, 30*time.Second), Config{Name: "k", Dir: dir, Accel: "kvm", Memory: "64M"})
	if !vmerr.Is(err, vmerr.Usage) || !strings.Contains(err.Error(), `accel="kvm" was asked for, but KVM is not usable here`) ||
		!strings.Contains(err.Error(), `accel="auto"`) {
		t.Fatalf("err %v (kind %q)", err, vmerr.KindOf(err))
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("a directory was made for a VM that cannot start")
	}
}
