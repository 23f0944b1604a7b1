package qemu

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// KVMProbeTimeout bounds each probe guest. Under TCG the probe takes
// about 0.4 s; a host that needs longer is too loaded to judge, and the
// choice is TCG.
var KVMProbeTimeout = 10 * time.Second

// AccelChoice is the outcome of resolving accel "auto".
type AccelChoice struct {
	// Accel is "kvm" or "tcg".
	Accel string
	// Reason says why, in words for the timeline.
	Reason string
	// Probe is how long the probe guest took (0 if none ran).
	Probe time.Duration
}

var (
	probeMu    sync.Mutex
	probeCache = map[string]AccelChoice{}
)

// kvmGetAPIVersion is KVM_GET_API_VERSION, _IO(0xAE, 0x00).
const kvmGetAPIVersion = 0xAE00

// ResolveAccel decides what accel "auto" means on this host for binary (the
// QEMU program), once per process and binary (and once per boot across
// processes, see probeCacheFile):
//
//  1. /dev/kvm must open read-write and answer KVM_GET_API_VERSION with 12;
//  2. then the same probe guest, a boot sector that counts down from 2^27
//     and writes to an isa-debug-exit port (QEMU exits with status 33),
//     runs under TCG and then under KVM: KVM must finish it no later than
//     TCG did.
//
// The second step exists because a /dev/kvm that opens and answers the API
// ioctl is not proof that guests run at KVM's speed: on nested or emulated
// KVM (a sandbox that exposes /dev/kvm) SeaBIOS alone took 1.4-3 s, the
// countdown ran 200x slower than under TCG (512 Mi iterations: 234 s
// against 1.3 s) and a Linux kernel sat in its decompressor for minutes.
// A probe that only had to finish within a fixed time let such a host
// through once SeaBIOS happened to take 1.44 s; racing TCG on the same
// work does not depend on the machine's speed.
func ResolveAccel(ctx context.Context, binary string) AccelChoice {
	if binary == "" {
		binary = DefaultBinary
	}
	probeMu.Lock()
	defer probeMu.Unlock()
	if c, ok := probeCache[binary]; ok {
		return c
	}
	key := probeKey(binary)
	if c, ok := loadProbe(key); ok {
		probeCache[binary] = c
		return c
	}
	c := resolveAccel(ctx, binary)
	if ctx.Err() == nil {
		probeCache[binary] = c
		saveProbe(key, c)
	}
	return c
}

// probeCacheFile keeps the probe's verdict across processes: the probes
// cost about a second, which would otherwise be paid by every run.
// The verdict is keyed by the boot (boot_id), the kernel and the QEMU binary,
// so a reboot, a kernel or QEMU upgrade, or a changed /dev/kvm probes again.
func probeCacheFile() string {
	base, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(base, "vmscript", "accel-probe.json")
}

// probeVersion names how the probe judges: a verdict of an earlier probe
// (one that only timed KVM) is not reused.
const probeVersion = "race-tcg"

func probeKey(binary string) string {
	path, err := exec.LookPath(binary)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	release, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	kvm := "absent"
	if st, err := os.Stat("/dev/kvm"); err == nil {
		kvm = st.Mode().String()
	}
	return fmt.Sprintf("%s|%s|%d|%d|%s|%s|%s", probeVersion, path, fi.Size(), fi.ModTime().UnixNano(),
		strings.TrimSpace(string(bootID)), strings.TrimSpace(string(release)), kvm)
}

type savedProbe struct {
	Key    string      `json:"key"`
	Choice AccelChoice `json:"choice"`
	At     time.Time   `json:"at"`
}

func loadProbe(key string) (AccelChoice, bool) {
	file := probeCacheFile()
	if key == "" || file == "" {
		return AccelChoice{}, false
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return AccelChoice{}, false
	}
	var saved []savedProbe
	if json.Unmarshal(data, &saved) != nil {
		return AccelChoice{}, false
	}
	for _, s := range saved {
		if s.Key == key {
			c := s.Choice
			c.Reason += fmt.Sprintf(" (probe of %s, cached in %s)", s.At.Format(time.RFC3339), file)
			c.Probe = 0
			return c, true
		}
	}
	return AccelChoice{}, false
}

func saveProbe(key string, c AccelChoice) {
	file := probeCacheFile()
	if key == "" || file == "" {
		return
	}
	var saved []savedProbe
	if data, err := os.ReadFile(file); err == nil {
		_ = json.Unmarshal(data, &saved)
	}
	kept := saved[:0]
	for _, s := range saved {
		if s.Key != key && len(kept) < 15 {
			kept = append(kept, s)
		}
	}
	kept = append(kept, savedProbe{Key: key, Choice: c, At: time.Now()})
	data, err := json.Marshal(kept)
	if err != nil || os.MkdirAll(filepath.Dir(file), 0o755) != nil {
		return
	}
	tmp := file + fmt.Sprintf(".%d.tmp", os.Getpid())
	if os.WriteFile(tmp, data, 0o644) == nil {
		_ = os.Rename(tmp, file)
	}
}

func resolveAccel(ctx context.Context, binary string) AccelChoice {
	if err := CheckKVM(); err != nil {
		return AccelChoice{Accel: "tcg", Reason: err.Error()}
	}
	return raceProbes(ctx, binary)
}

// raceProbes runs the probe guest under TCG, then under KVM with TCG's time
// as its limit.
func raceProbes(ctx context.Context, binary string) AccelChoice {
	tcg, err := runProbe(ctx, binary, "tcg", KVMProbeTimeout)
	if err != nil {
		return AccelChoice{Accel: "tcg", Reason: fmt.Sprintf("/dev/kvm opens (API 12), but the probe guest could not run under TCG to compare: %v", err), Probe: tcg}
	}
	kvm, err := runProbe(ctx, binary, "kvm", tcg)
	switch {
	case errors.Is(err, errProbeSlow):
		return AccelChoice{Accel: "tcg", Reason: fmt.Sprintf("/dev/kvm opens (API 12), but the probe guest was slower under KVM than under TCG "+
			"(not done after %s; TCG took %s): KVM here is nested or emulated", kvm.Round(time.Millisecond), tcg.Round(time.Millisecond)), Probe: kvm}
	case err != nil:
		return AccelChoice{Accel: "tcg", Reason: fmt.Sprintf("/dev/kvm opens (API 12), but %v", err), Probe: kvm}
	}
	return AccelChoice{Accel: "kvm", Reason: fmt.Sprintf("/dev/kvm usable: the probe guest ran under KVM in %s, under TCG in %s",
		kvm.Round(time.Millisecond), tcg.Round(time.Millisecond)), Probe: kvm}
}

// KVMDevice is the KVM device CheckKVM opens.
var KVMDevice = "/dev/kvm"

// CheckKVM is the first step of ResolveAccel: the KVM device opens
// read-write and speaks API version 12. (It does not prove guests run
// at KVM's speed; ResolveAccel's probe guest does.)
func CheckKVM() error {
	f, err := os.OpenFile(KVMDevice, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s unusable (%v)", KVMDevice, err)
	}
	v, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	f.Close()
	if errno != 0 {
		return fmt.Errorf("%s: KVM_GET_API_VERSION failed (%v)", KVMDevice, errno)
	}
	if v != 12 {
		return fmt.Errorf("%s: KVM API version %d, want 12", KVMDevice, v)
	}
	return nil
}

// probeCountdown is where the probe guest counts down from: 2^27 takes
// about 0.25 s under TCG and 0.05 s under KVM.
var probeCountdown uint32 = 1 << 27

// probeSector is a boot sector that counts down from probeCountdown, then
// writes 0x10 to isa-debug-exit, which turns it into exit status
// (0x10<<1)|1 = 33:
//
//	mov ecx, count      ; 66 b9 <count, 4 bytes little-endian>
//	dec ecx             ; 66 49
//	jnz -4              ; 75 fc
//	mov al, 0x10        ; b0 10
//	out 0xf4, al        ; e6 f4
//	hlt                 ; f4
//	jmp $               ; eb fe
func probeSector() []byte {
	b := make([]byte, 512)
	copy(b, []byte{0x66, 0xB9, 0, 0, 0, 0, 0x66, 0x49, 0x75, 0xFC, 0xB0, 0x10, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE})
	binary.LittleEndian.PutUint32(b[2:], probeCountdown)
	b[510], b[511] = 0x55, 0xAA
	return b
}

// errProbeSlow: the probe guest had not finished within its limit.
var errProbeSlow = errors.New("the probe guest did not finish in time")

// runProbe runs the probe sector under accel and reports how long it took;
// errProbeSlow when it had not finished within limit.
func runProbe(ctx context.Context, binary, accel string, limit time.Duration) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "vms-probe-")
	if err != nil {
		return 0, fmt.Errorf("probe: %v", err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "boot.img")
	if err := os.WriteFile(img, probeSector(), 0o644); err != nil {
		return 0, fmt.Errorf("probe: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(pctx, binary,
		"-accel", accel, "-machine", "pc", "-nodefaults", "-no-user-config",
		"-display", "none", "-m", "16", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
		"-drive", "file="+qemuEscape(img)+",format=raw,if=ide,snapshot=on")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr limitedBuffer
	stderr.max = 4096
	cmd.Stderr = &stderr
	// Pdeathsig follows the forking thread: keep it alive for the run.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == 33:
		return d, nil
	case ctx.Err() != nil:
		return d, ctx.Err()
	case pctx.Err() != nil:
		return d, errProbeSlow
	case err == nil:
		return d, fmt.Errorf("the probe QEMU (accel %s) exited 0 without running the boot sector", accel)
	default:
		return d, fmt.Errorf("the probe QEMU failed under %s: %v: %s", strings.ToUpper(accel), err, strings.TrimSpace(stderr.String()))
	}
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - len(l.b); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		l.b = append(l.b, p[:room]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
