package checkpoint_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func needQEMU(t *testing.T) {
	t.Helper()
	testenv.RequireQEMU(t)
}

func newRun(t *testing.T) *journal.Run {
	t.Helper()
	run, err := journal.New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Close() })
	return run
}

// labConfig returns a configuration booting the named lab image.
func labConfig(t *testing.T, ctx context.Context, name string, run *journal.Run) qemu.Config {
	t.Helper()
	img, err := lab.Build(ctx, name, lab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return qemu.Config{Name: name, Memory: "512M", Run: run, Devices: []qemu.Device{img.DirectBoot()}}
}

func boot(t *testing.T, ctx context.Context, cfg qemu.Config) *machine.Machine {
	t.Helper()
	m, err := machine.Boot(ctx, machine.Spec{QEMU: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("console log of %s: %s", m.VM.Name(), m.ConsoleLog)
		}
	})
	return m
}

func run(t *testing.T, ctx context.Context, sh *shell.Shell, cmd string) string {
	t.Helper()
	r, err := sh.Run(ctx, cmd, shell.RunOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatalf("%s: %q: %v", sh, cmd, err)
	}
	if r.Code != 0 {
		t.Fatalf("%s: %q exited %d: %s", sh, cmd, r.Code, r.Output)
	}
	return r.Output
}

func uptime(t *testing.T, ctx context.Context, sh *shell.Shell) float64 {
	t.Helper()
	out := run(t, ctx, sh, "cat /proc/uptime")
	f, err := strconv.ParseFloat(strings.Fields(out)[0], 64)
	if err != nil {
		t.Fatalf("uptime %q: %v", out, err)
	}
	return f
}

func sha(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
}

// TestE2EMiniForks boots the mini lab once with two disks (a raw image
// behind snapshot=on, a qcow2 image the guest writes directly), checkpoints
// it with the original continuing, and forks twice.
func TestE2EMiniForks(t *testing.T) {
	needQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rn := newRun(t)
	cfg := labConfig(t, ctx, "mini", rn)
	dir := t.TempDir()
	rawImg := filepath.Join(dir, "data.raw")
	qcowImg := filepath.Join(dir, "rw.qcow2")
	qemuImg(t, "create", "-q", "-f", "raw", rawImg, "16M")
	qemuImg(t, "create", "-q", "-f", "qcow2", qcowImg, "16M")
	off := false
	cfg.Disks = []qemu.Disk{{Path: rawImg}, {Path: qcowImg, Snapshot: &off}}
	cfg.Forwards = []qemu.Forward{{GuestPort: 22}}
	rawSHA := sha(t, rawImg)

	m := boot(t, ctx, cfg)
	sh, err := shell.Attach(ctx, m.Console, shell.Options{Run: rn})
	if err != nil {
		t.Fatal(err)
	}
	run(t, ctx, sh, "echo before > /tmp/x")
	run(t, ctx, sh, "printf disk-before | dd of=/dev/vda conv=notrunc 2>/dev/null && printf rw-before | dd of=/dev/vdb conv=notrunc 2>/dev/null && sync")
	u0 := uptime(t, ctx, sh)
	wall0 := time.Now()

	cp, err := m.Checkpoint(ctx, checkpoint.Options{Name: "cp", Continue: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	t.Logf("checkpoint: %s, state %d bytes, paused %s, layers %+v", cp.Path(), cp.StateSize(), cp.Took(), cp.Layers())
	if want := rn.Path("checkpoints/cp"); cp.Path() != want {
		t.Errorf("Path = %s, want %s", cp.Path(), want)
	}
	if len(cp.Layers()) != 2 || cp.Layers()[0].Sync != "top" || cp.Layers()[1].Sync != "full" {
		t.Fatalf("layers = %+v", cp.Layers())
	}
	layerSHA := map[string]string{}
	for _, l := range cp.Layers() {
		layerSHA[l.Path] = sha(t, l.Path)
	}
	// The original continues and writes after the checkpoint.
	if got := run(t, ctx, sh, "cat /tmp/x"); got != "before\n" {
		t.Fatalf("original after checkpoint: cat /tmp/x = %q", got)
	}
	run(t, ctx, sh, "echo original > /tmp/y && printf rw-after! | dd of=/dev/vdb conv=notrunc 2>/dev/null && sync")

	forks, err := cp.ForkMany(ctx, []string{"", ""}, machine.ForkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, f := range forks {
		t.Cleanup(func() { f.Stop(5 * time.Second) })
		if f.VM.Name() != fmt.Sprintf("cp-%d", i+1) {
			t.Errorf("fork %d named %s", i+1, f.VM.Name())
		}
		if fw := f.VM.Forwards(); len(fw) != 1 || fw[0].HostPort == 0 || fw[0].HostPort == m.VM.Forwards()[0].HostPort {
			t.Errorf("fork %s forwards %+v, original %+v", f.VM.Name(), fw, m.VM.Forwards())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fsh, err := f.ResumeShell(ctx, shell.Options{})
			if err != nil {
				t.Errorf("fork %s: %v", f.VM.Name(), err)
				return
			}
			u1 := uptime(t, ctx, fsh)
			bound := u0 + time.Since(wall0).Seconds() + 1
			if u1 < u0 || u1 > bound {
				t.Errorf("fork %s: uptime %.2f, checkpoint's %.2f: want within [%.2f, %.2f]", f.VM.Name(), u1, u0, u0, bound)
			}
			t.Logf("fork %s: uptime %.2f s (checkpoint's %.2f s)", f.VM.Name(), u1, u0)
			if got := run(t, ctx, fsh, "cat /tmp/x"); got != "before\n" {
				t.Errorf("fork %s: cat /tmp/x = %q", f.VM.Name(), got)
			}
			if got := run(t, ctx, fsh, "cat /tmp/y 2>&1 || true"); strings.Contains(got, "original") {
				t.Errorf("fork %s sees the original's later write: %q", f.VM.Name(), got)
			}
			run(t, ctx, fsh, "echo 3 > /proc/sys/vm/drop_caches")
			if got := run(t, ctx, fsh, "head -c 11 /dev/vda"); got != "disk-before" {
				t.Errorf("fork %s: vda starts %q", f.VM.Name(), got)
			}
			if got := run(t, ctx, fsh, "head -c 9 /dev/vdb"); got != "rw-before" {
				t.Errorf("fork %s: vdb starts %q", f.VM.Name(), got)
			}
			name := f.VM.Name()
			run(t, ctx, fsh, "echo "+name+" > /tmp/y && printf "+name+" | dd of=/dev/vda conv=notrunc 2>/dev/null && sync")
			run(t, ctx, fsh, "echo 3 > /proc/sys/vm/drop_caches")
			if got := run(t, ctx, fsh, "cat /tmp/y; head -c "+strconv.Itoa(len(name))+" /dev/vda"); got != name+"\n"+name {
				t.Errorf("fork %s: after its own writes: %q", name, got)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// The forks diverged from each other.
	for i, f := range forks {
		fsh, err := shell.Attach(ctx, f.Console, shell.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := run(t, ctx, fsh, "cat /tmp/y"); got != fmt.Sprintf("cp-%d\n", i+1) {
			t.Errorf("fork %d: /tmp/y = %q", i+1, got)
		}
	}
	for _, f := range forks {
		f.Stop(5 * time.Second)
	}
	m.Stop(5 * time.Second)
	if got := sha(t, rawImg); got != rawSHA {
		t.Errorf("the original raw image changed")
	}
	for p, want := range layerSHA {
		if got := sha(t, p); got != want {
			t.Errorf("frozen layer %s changed", p)
		}
	}
	if err := cp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cp.Path()); !os.IsNotExist(err) {
		t.Errorf("checkpoint directory still there after Close: %v", err)
	}
}

// TestE2EBlocker: a device with a migration blocker (ivshmem-plain in peer
// mode, QEMU's cheapest) is refused with QEMU's reason; the VM runs on.
func TestE2EBlocker(t *testing.T) {
	needQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rn := newRun(t)
	cfg := labConfig(t, ctx, "mini", rn)
	cfg.Name = "blocked"
	cfg.Net = "none"
	shm := filepath.Join(t.TempDir(), "shm")
	cfg.QEMUArgs = []string{
		"-object", "memory-backend-file,id=hm,share=on,mem-path=" + shm + ",size=1M",
		"-device", "ivshmem-plain,memdev=hm",
	}
	m := boot(t, ctx, cfg)
	_, err := m.Checkpoint(ctx, checkpoint.Options{Name: "cp"})
	if !vmerr.Is(err, vmerr.Refused) {
		t.Fatalf("Take = %v, want kind refused", err)
	}
	t.Logf("refused: %v", err)
	if !strings.Contains(err.Error(), "ivshmem") {
		t.Errorf("the error does not name the blocking device: %v", err)
	}
	if st, err := m.VM.Status(ctx); err != nil || st != "running" {
		t.Errorf("after the refusal: status %q, %v", st, err)
	}
	if _, err := os.Stat(rn.Path("checkpoints/cp")); !os.IsNotExist(err) {
		t.Errorf("a refused checkpoint left its directory: %v", err)
	}
}

// TestE2ESystemdShutdowns boots the systemd lab once, logs in, checkpoints
// (stopping the original) and forks twice; one fork runs
// `systemctl poweroff --no-wall`, the other `poweroff`; both end with
// reason guest-shutdown.
func TestE2ESystemdShutdowns(t *testing.T) {
	needQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rn := newRun(t)
	cfg := labConfig(t, ctx, "systemd", rn)
	cfg.Memory = "1G"
	cfg.Forwards = []qemu.Forward{{GuestPort: 22}}
	t0 := time.Now()
	m := boot(t, ctx, cfg)
	sh, err := shell.Login(ctx, m.Console, shell.LoginOptions{User: "root", Run: rn})
	if err != nil {
		t.Fatal(err)
	}
	cold := time.Since(t0)
	run(t, ctx, sh, "echo before > /tmp/x")

	cp, err := m.Checkpoint(ctx, checkpoint.Options{Name: "booted"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	select {
	case <-m.VM.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("the original still runs after a checkpoint without Continue")
	}
	t1 := time.Now()
	forks, err := cp.ForkMany(ctx, []string{"", ""}, machine.ForkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cmds := []string{"systemctl poweroff --no-wall", "poweroff"}
	var wg sync.WaitGroup
	for i, f := range forks {
		t.Cleanup(func() { f.Stop(5 * time.Second) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			fsh, err := f.ResumeShell(ctx, shell.Options{User: "root"})
			if err != nil {
				t.Errorf("fork %s: %v", f.VM.Name(), err)
				return
			}
			t.Logf("fork %s: usable shell %.1fs after ForkMany began (cold boot to shell: %.1fs)", f.VM.Name(), time.Since(t1).Seconds(), cold.Seconds())
			if got := run(t, ctx, fsh, "cat /tmp/x"); got != "before\n" {
				t.Errorf("fork %s: cat /tmp/x = %q", f.VM.Name(), got)
			}
			if err := f.Console.SendLine(ctx, cmds[i]); err != nil {
				t.Errorf("fork %s: %v", f.VM.Name(), err)
				return
			}
			wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
			defer wcancel()
			st, err := f.VM.Wait(wctx)
			if err != nil {
				t.Errorf("fork %s after %q: %v", f.VM.Name(), cmds[i], err)
				return
			}
			if st.Reason != "guest-shutdown" {
				t.Errorf("fork %s after %q: exit %s, want guest-shutdown", f.VM.Name(), cmds[i], st)
			}
			t.Logf("fork %s: %q → %s; teardown log %d bytes", f.VM.Name(), cmds[i], st, f.Console.Size())
		}()
	}
	wg.Wait()
}
