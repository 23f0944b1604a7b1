package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// requireEnv is set in CI: missing tools fail the tests instead of
// skipping them.
func required() bool { return os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" }

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tl := range tools {
		if _, err := exec.LookPath(tl); err != nil {
			if required() {
				t.Fatalf("%s is missing and VMSCRIPT_REQUIRE_QEMU is set", tl)
			}
			t.Skipf("%s not installed", tl)
		}
	}
}

var buildTools = map[string][]string{
	"mini":    {"apt-get", "apt-cache", "dpkg-deb", "ssh-keygen", "dropbearkey"},
	"systemd": {"apt-get", "apt-cache", "dpkg-deb", "ssh-keygen", "mmdebstrap", "depmod", "grub-mkrescue", "xorriso", "tar2sqfs", "grub-mkstandalone", "mformat", "mcopy"},
}

// buildOnce builds each image once per test binary, into the default cache
// (so CI reuses it between runs).
var (
	buildMu   sync.Mutex
	buildDone = map[string]*Image{}
	buildErr  = map[string]error{}
)

func image(t *testing.T, name string) *Image {
	t.Helper()
	requireTools(t, buildTools[name]...)
	buildMu.Lock()
	defer buildMu.Unlock()
	if img, ok := buildDone[name]; ok {
		return img
	}
	if err, ok := buildErr[name]; ok {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	var log bytes.Buffer
	img, err := Build(ctx, name, Options{Log: &log})
	if err != nil {
		buildErr[name] = err
		t.Fatalf("Build(%s): %v\n--- log tail ---\n%s", name, err, tail(log.String(), 4000))
	}
	t.Logf("Build(%s): cached=%v in %v: %s", name, img.Cached, time.Since(start).Round(time.Millisecond), img.Dir)
	buildDone[name] = img
	return img
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func TestNames(t *testing.T) {
	if got := strings.Join(Names(), ","); got != "mini,systemd" {
		t.Fatalf("Names() = %s", got)
	}
	if _, err := Build(context.Background(), "nope", Options{CacheDir: t.TempDir()}); err == nil {
		t.Fatal("Build of an unknown image succeeded")
	}
}

func TestBuildMiniTwiceAndContents(t *testing.T) {
	requireTools(t, buildTools["mini"]...)
	cache := t.TempDir()
	var stages []string
	opt := Options{CacheDir: cache, Progress: func(s, d string) { stages = append(stages, s) }}
	start := time.Now()
	img, err := Build(context.Background(), "mini", opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first build %v, stages %v", time.Since(start).Round(time.Millisecond), stages)
	if img.Cached {
		t.Error("first build reported Cached")
	}
	if want := filepath.Join(cache, "mini-"+img.Manifest.Key[:16]); img.Dir != want {
		t.Errorf("Dir = %s, want %s", img.Dir, want)
	}
	for _, f := range []string{"vmlinuz", "initramfs", "ssh-key", "ssh-key.pub"} {
		if _, err := os.Stat(img.Files[f]); err != nil {
			t.Errorf("Files[%s]: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(img.Dir, "manifest.json")); err != nil {
		t.Error(err)
	}
	if img.Manifest.Kernel == "" || img.Manifest.Append != MiniAppend || img.Manifest.Packages["busybox-static"] == "" ||
		img.Manifest.Files["initramfs"] == "" {
		t.Errorf("manifest: %+v", img.Manifest)
	}
	if left, _ := filepath.Glob(filepath.Join(cache, ".tmp-*")); len(left) > 0 {
		t.Errorf("temporary dirs left: %v", left)
	}

	start = time.Now()
	img2, err := Build(context.Background(), "mini", opt)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); !img2.Cached || img2.Dir != img.Dir || d > 20*time.Second {
		t.Errorf("second build: cached=%v dir=%s in %v", img2.Cached, img2.Dir, d)
	}
	img3, err := Lookup("mini", opt)
	if err != nil || img3.Dir != img.Dir {
		t.Errorf("Lookup: %v %v", img3, err)
	}
	if _, err := Lookup("systemd", Options{CacheDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "vmscript lab build systemd") {
		t.Errorf("Lookup of an unbuilt image: %v", err)
	}

	// The initramfs: /init, busybox, dropbear and its libraries, modules in order.
	ents := readInitramfs(t, img.Files["initramfs"])
	for _, n := range []string{"init", "bin/busybox", "bin/sh", "usr/sbin/dropbear", "lib64/ld-linux-x86-64.so.2",
		"lib/x86_64-linux-gnu/libc.so.6", "etc/dropbear/dropbear_ed25519_host_key", "root/.ssh/authorized_keys",
		"sbin/poweroff", "etc/vmscript/modules"} {
		if ents[n] == nil {
			t.Errorf("initramfs lacks %s", n)
		}
	}
	if e := ents["init"]; e != nil && (e.Mode != modeRegular|0o755 || !bytes.Contains(e.data, []byte("vmscript-mini: ready"))) {
		t.Errorf("init: mode %o", e.Mode)
	}
	pub, _ := os.ReadFile(img.Files["ssh-key.pub"])
	if e := ents["root/.ssh/authorized_keys"]; e != nil && !bytes.Equal(e.data, pub) {
		t.Errorf("authorized_keys is not ssh-key.pub")
	}
	var order []string
	if e := ents["etc/vmscript/modules"]; e != nil {
		for _, l := range strings.Fields(string(e.data)) {
			order = append(order, modName(l))
			if ents[filepath.ToSlash(filepath.Join("lib/modules", img.Manifest.Kernel, l))] == nil {
				t.Errorf("module %s listed but not in the initramfs", l)
			}
		}
	}
	pos := map[string]int{}
	for i, m := range order {
		pos[m] = i
	}
	chain := []string{"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
		"failover", "net_failover", "virtio_net"}
	for _, m := range chain {
		if _, ok := pos[m]; !ok {
			t.Errorf("module %s missing from %v", m, order)
		}
	}
	for _, dep := range [][2]string{{"virtio_ring", "virtio"}, {"virtio", "virtio_pci"}, {"virtio_pci_modern_dev", "virtio_pci"},
		{"failover", "net_failover"}, {"net_failover", "virtio_net"}, {"virtio_ring", "virtio_net"}} {
		if pos[dep[0]] > pos[dep[1]] {
			t.Errorf("module %s loaded after %s: %v", dep[0], dep[1], order)
		}
	}
}

func TestSystemdImageISOAndNetboot(t *testing.T) {
	img := image(t, "systemd")
	for _, f := range []string{"vmlinuz", "initramfs", "iso", "good-iso", "netboot", "ssh-key", "ssh-key.pub"} {
		if _, err := os.Stat(img.Files[f]); err != nil {
			t.Errorf("Files[%s]: %v", f, err)
		}
	}
	for _, f := range []string{"pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default", "boot.ipxe", "vmlinuz", "initramfs"} {
		if _, err := os.Stat(filepath.Join(img.Files["netboot"], f)); err != nil {
			t.Errorf("netboot: %v", err)
		}
	}
	if img.Manifest.Packages["systemd"] == "" || img.Manifest.Packages["openssh-server"] == "" {
		t.Errorf("manifest packages lack systemd/openssh-server: %d packages", len(img.Manifest.Packages))
	}
	pub, _ := os.ReadFile(img.Files["ssh-key.pub"])
	for key, knobs := range map[string]string{"iso": RegressionKnobs, "good-iso": GoodKnobs} {
		iso := img.Files[key]
		out, err := exec.Command("xorriso", "-indev", iso, "-report_el_torito", "plain").CombinedOutput()
		if err != nil {
			t.Fatalf("xorriso: %v\n%s", err, out)
		}
		var bios, efi bool
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "El Torito boot img") {
				bios = bios || strings.Contains(l, " BIOS ")
				efi = efi || strings.Contains(l, " UEFI ")
			}
		}
		if !bios || !efi {
			t.Errorf("%s: El Torito BIOS=%v UEFI=%v\n%s", iso, bios, efi, out)
		}
		dir := t.TempDir()
		out, err = exec.Command("xorriso", "-osirrox", "on", "-indev", iso,
			"-extract", "/boot/grub/grub.cfg", filepath.Join(dir, "grub.cfg"),
			"-extract", "/pre_nixos/root_key.pub", filepath.Join(dir, "root_key.pub")).CombinedOutput()
		if err != nil {
			t.Fatalf("xorriso extract: %v\n%s", err, out)
		}
		cfg, _ := os.ReadFile(filepath.Join(dir, "grub.cfg"))
		for _, want := range []string{"serial --unit=0 --speed=115200", "terminal_input serial console", "console=ttyS0,115200 " + knobs} {
			if !bytes.Contains(cfg, []byte(want)) {
				t.Errorf("%s grub.cfg lacks %q:\n%s", key, want, cfg)
			}
		}
		if k, _ := os.ReadFile(filepath.Join(dir, "root_key.pub")); !bytes.Equal(k, pub) {
			t.Errorf("%s: /pre_nixos/root_key.pub is not the build's key", key)
		}
	}

	// The initramfs carries the stand-in and the users.
	ents := readInitramfs(t, img.Files["initramfs"])
	for _, n := range []string{"init", "usr/local/bin/pre-nixos", "usr/local/sbin/poweroff", "etc/pre_nixos/root_key.pub",
		"etc/systemd/system/pre-nixos.service", "etc/systemd/network/20-lan.network", "root/.ssh/authorized_keys",
		"home/nixos/.ssh/authorized_keys", "usr/lib/systemd/system-generators/lab-lan-generator",
		"lib/modules/" + img.Manifest.Kernel + "/modules.dep"} {
		if ents[n] == nil && ents[strings.Replace(n, "lib/", "usr/lib/", 1)] == nil {
			t.Errorf("initramfs lacks %s", n)
		}
	}
	if e := ents["init"]; e == nil || string(e.data) != "/lib/systemd/systemd" {
		t.Errorf("/init: %+v", e)
	}
	if e := ents["etc/hostname"]; e == nil || string(e.data) != "lab\n" {
		t.Errorf("/etc/hostname: %+v", e)
	}
}

// --- Smoke boots with bare QEMU ---------------------------------------------

// accel is TCG unless VMSCRIPT_QEMU_ACCEL says otherwise: on the project's
// machines /dev/kvm exists but a KVM guest hangs in early boot (nested PVM).
func accel() string {
	if a := os.Getenv("VMSCRIPT_QEMU_ACCEL"); a != "" {
		return a
	}
	return "tcg"
}

// qemuVM is a QEMU process with its serial console on a pipe.
type qemuVM struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	start time.Time
	mu    sync.Mutex
	buf   bytes.Buffer
	grow  chan struct{}
	done  chan struct{}
	err   error
}

func startQEMU(t *testing.T, args ...string) *qemuVM {
	t.Helper()
	requireTools(t, "qemu-system-x86_64")
	base := []string{"-accel", accel(), "-display", "none", "-vga", "none", "-monitor", "none",
		"-serial", "stdio", "-no-reboot", "-nodefaults"}
	cmd := exec.Command("qemu-system-x86_64", append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	vm := &qemuVM{cmd: cmd, grow: make(chan struct{}, 1), done: make(chan struct{})}
	var err error
	if vm.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	vm.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := out.Read(b)
			vm.mu.Lock()
			vm.buf.Write(b[:n])
			vm.mu.Unlock()
			select {
			case vm.grow <- struct{}{}:
			default:
			}
			if err != nil {
				break
			}
		}
		vm.err = cmd.Wait()
		close(vm.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
			wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", cmd.Process.Pid))
			t.Logf("qemu %v: stat %q wchan %q; %d console bytes after %v", cmd.Args, st, wchan,
				len(vm.console()), time.Since(vm.start).Round(time.Second))
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-vm.done
		if t.Failed() {
			t.Logf("console tail:\n%s", tail(vm.console(), 3000))
		}
	})
	return vm
}

func (vm *qemuVM) console() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.buf.String()
}

// expect waits until the console, from byte offset from, contains s. It
// returns the offset just after the match.
func (vm *qemuVM) expect(t *testing.T, from int, s string, d time.Duration) int {
	t.Helper()
	deadline := time.After(d)
	for {
		c := vm.console()
		if i := strings.Index(c[from:], s); i >= 0 {
			return from + i + len(s)
		}
		select {
		case <-vm.grow:
		case <-vm.done:
			c = vm.console()
			if i := strings.Index(c[from:], s); i >= 0 {
				return from + i + len(s)
			}
			t.Fatalf("QEMU exited (%v) before %q appeared", vm.err, s)
		case <-deadline:
			t.Fatalf("no %q on the console after %v", s, d)
		}
	}
}

func (vm *qemuVM) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(vm.stdin, s); err != nil {
		t.Fatal(err)
	}
}

func (vm *qemuVM) waitExit(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-vm.done:
	case <-time.After(d):
		t.Fatalf("QEMU still running %v after poweroff", d)
	}
}

func TestBootMini(t *testing.T) {
	requireTools(t, "qemu-system-x86_64")
	t.Parallel()
	img := image(t, "mini")
	vm := startQEMU(t, "-m", "512", "-kernel", img.Files["vmlinuz"], "-initrd", img.Files["initramfs"],
		"-append", img.Manifest.Append, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
	off := vm.expect(t, 0, "vmscript-mini: ready", 90*time.Second)
	off = vm.expect(t, off, "mini# ", 30*time.Second)
	t.Logf("mini: prompt after %v (accel %s)", time.Since(vm.start).Round(100*time.Millisecond), accel())
	vm.send(t, "lsmod | grep -c virtio_net; echo marker-$((6*7))\n")
	vm.expect(t, off, "marker-42", 30*time.Second)
	vm.send(t, "poweroff\n")
	vm.waitExit(t, 30*time.Second)
}

func TestBootSystemd(t *testing.T) {
	requireTools(t, "qemu-system-x86_64")
	t.Parallel()
	img := image(t, "systemd")
	vm := startQEMU(t, "-m", "1G", "-kernel", img.Files["vmlinuz"], "-initrd", img.Files["initramfs"],
		"-append", img.Manifest.Append, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
	off := vm.expect(t, 0, "login:", 240*time.Second)
	t.Logf("systemd: login prompt after %v (accel %s)", time.Since(vm.start).Round(100*time.Millisecond), accel())
	vm.send(t, "root\n")
	off = vm.expect(t, off, "root@lab:", 60*time.Second)
	// Good knobs: the NIC is "lan", pre-nixos wrote its status.
	vm.send(t, "ip -o link show lan | cut -d: -f2; for i in $(seq 30); do test -e /run/pre-nixos/storage-status && break; sleep 1; done; echo status=$(cat /run/pre-nixos/storage-status)\n")
	vm.expect(t, off, "status=ok", 60*time.Second)
	if c := vm.console(); !strings.Contains(c, " lan") {
		t.Errorf("no lan interface")
	}
	vm.send(t, "poweroff\n")
	vm.waitExit(t, 90*time.Second)
}

// TestBootLabISORegression boots lab.iso (BIOS, GRUB on serial) and checks
// that each regression knob shows its symptom.
func TestBootLabISORegression(t *testing.T) {
	requireTools(t, "qemu-system-x86_64")
	if testing.Short() {
		t.Skip("-short")
	}
	t.Parallel()
	img := image(t, "systemd")
	vm := startQEMU(t, "-m", "1G", "-cdrom", img.Files["iso"],
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
	off := vm.expect(t, 0, "lab.storage=hang lab.lan=mismatch lab.shutdown=confirm", 120*time.Second)
	off = vm.expect(t, off, "login:", 240*time.Second)
	t.Logf("lab.iso: login prompt after %v (accel %s)", time.Since(vm.start).Round(100*time.Millisecond), accel())
	vm.send(t, "root\n")
	off = vm.expect(t, off, "root@lab:", 60*time.Second)
	time.Sleep(time.Second)
	vm.send(t, "networkctl status lan --no-pager; ip -o link | grep -c ens; journalctl -b -u pre-nixos --no-pager | grep -c 'waiting for /run/pre-nixos/storage-status'; echo DONE$((1+1))\n")
	off = vm.expect(t, off, "DONE2", 60*time.Second)
	out := vm.console()[:off]
	if !strings.Contains(out, `Interface "lan" not found`) {
		t.Errorf("networkctl did not say lan is missing")
	}
	off = vm.expect(t, off, "root@lab:", 30*time.Second)
	time.Sleep(time.Second)
	vm.send(t, "poweroff\n")
	off = vm.expect(t, off, "Really power off? [y/N]", 30*time.Second)
	vm.send(t, "n\n")
	off = vm.expect(t, off, "aborted", 30*time.Second)
	off = vm.expect(t, off, "root@lab:", 30*time.Second)
	time.Sleep(time.Second)
	vm.send(t, "systemctl poweroff --no-wall\n")
	vm.waitExit(t, 90*time.Second)
	_ = off
}
