package screen_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"
	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/screen"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Real boot media from Debian's packages (lab/host-packages.txt).
const (
	grubRescueISO = "/usr/lib/grub-rescue/grub-rescue-cdrom.iso" // grub-rescue-pc
	ipxeISO       = "/usr/lib/ipxe/ipxe.iso"                     // ipxe
	debianNetboot = "/usr/lib/debian-installer/images/12/amd64/text"
)

// grubEntries are the menu entries of the sample grub.cfg on the rescue ISO.
var grubEntries = []string{
	"GNU/Linux", "GNU (aka GNU/Hurd)", "FreeBSD (or GNU/kFreeBSD), direct boot",
	"FreeBSD (or GNU/kFreeBSD), via /boot/loader", "NetBSD", "OpenBSD",
	"Microsoft Windows", "Memtest86+", "Change the colors",
}

// requireFile skips (or, with VMSCRIPT_REQUIRE_QEMU, fails) when a boot
// medium from a Debian package is missing.
func requireFile(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if testenv.Required() {
			t.Fatalf("%s is set but %s is missing (package %s): %v", testenv.RequireEnv, path, pkg, err)
		}
		t.Skipf("%s missing (package %s)", path, pkg)
	}
}

// boot starts QEMU paused, attaches a screen, lets the guest run and stops
// QEMU when the test ends.
func boot(t *testing.T, ctx context.Context, cfg qemu.Config) (*qemu.VM, *screen.Screen, *journal.Run) {
	t.Helper()
	testenv.RequireQEMU(t)
	if cfg.Run == nil {
		cfg.Run = testenv.Run(t)
	}
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Stop(5 * time.Second) })
	go func() { // the serial port, read as a console would
		b := make([]byte, 4096)
		for {
			if _, err := vm.Serial().Read(b); err != nil {
				return
			}
		}
	}()
	s, err := screen.New(vm, screen.Options{Name: cfg.Name, Run: cfg.Run})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := vm.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	return vm, s, cfg.Run
}

func text(s string) []console.Pattern { return []console.Pattern{{Text: s}} }

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestE2EGrubBIOSText: the rescue ISO's GRUB menu, read exactly from the
// VGA text buffer (its serial console stays silent); then its command line,
// typed into and read back; a timeout that carries the screen and a
// screenshot; a fail watcher that ends a wait.
func TestE2EGrubBIOSText(t *testing.T) {
	requireFile(t, grubRescueISO, "grub-rescue-pc")
	ctx := ctxFor(t, 4*time.Minute)
	t0 := time.Now()
	_, s, run := boot(t, ctx, qemu.Config{Name: "grub-bios", ISO: grubRescueISO, Net: "none", Memory: "256M"})
	// The countdown line comes last: the whole menu is drawn by then.
	m, err := s.Expect(ctx, []console.Pattern{{Regex: `executed automatically in \d+s`}}, screen.ExpectOptions{Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("menu after %.1fs", time.Since(t0).Seconds())
	snap := m.Screen
	if snap.Mode != screen.ModeText || snap.Cols != 80 || snap.Rows != 25 || snap.Start != 0 {
		t.Fatalf("mode %s %dx%d start %d", snap.Mode, snap.Cols, snap.Rows, snap.Start)
	}
	if !regexp.MustCompile(`^ {23}GNU GRUB  version \S+$`).MatchString(snap.Lines[1]) {
		t.Errorf("title line %q", snap.Lines[1])
	}
	if want := " ┌" + strings.Repeat("─", 76) + "┐"; snap.Lines[3] != want {
		t.Errorf("box top %q, want %q", snap.Lines[3], want)
	}
	for i, e := range grubEntries {
		mark := " "
		if i == 0 {
			mark = "*"
		}
		want := " │" + mark + e + strings.Repeat(" ", 75-len(e)) + "│"
		if got := snap.Lines[4+i]; got != want {
			t.Errorf("entry %d: %q, want %q", i, got, want)
		}
	}
	if !strings.Contains(snap.Text(), "Use the ↑ and ↓ keys to select which entry is highlighted.") {
		t.Errorf("help line missing:\n%s", snap.Text())
	}
	// The highlighted entry is drawn in other colours.
	if hi, lo := snap.Cell(4, 3).Attr, snap.Cell(5, 3).Attr; hi == lo {
		t.Errorf("highlighted entry attribute %#x, next %#x", hi, lo)
	}

	// A wait that times out says what the screen showed and saves it.
	_, err = s.Expect(ctx, text("no such entry"), screen.ExpectOptions{Timeout: time.Second})
	var ve *vmerr.Error
	if !vmerrAs(err, &ve) || ve.Kind != vmerr.Timeout || !strings.Contains(ve.Error(), "GNU GRUB") {
		t.Fatalf("timeout error %v", err)
	}
	if shot, _ := ve.Context["shot"].(string); !fileNonEmpty(shot) {
		t.Errorf("timeout screenshot %q missing (%v)", shot, ve.Context["shot_error"])
	}

	// The command line: what is typed is read back.
	if err := s.Type(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expect(ctx, text("grub> "), screen.ExpectOptions{Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	if err := s.Type(ctx, "echo hello\n"); err != nil {
		t.Fatal(err)
	}
	m, err = s.Expect(ctx, []console.Pattern{{Regex: `(?m)^grub> echo hello\nhello\ngrub>$`}}, screen.ExpectOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("echo hello typed and read back in %.2fs", time.Since(t1).Seconds())
	if c := m.Screen.Cursor; !c.Visible || c.Col != len("grub> ") || m.Screen.Lines[c.Row] != "grub>" {
		t.Errorf("cursor %+v, row %q", c, m.Screen.Lines[c.Row])
	}
	if !fileNonEmpty(m.Shot) {
		t.Errorf("match screenshot %q missing", m.Shot)
	}

	// A fail watcher ends the next wait at once.
	cancel, err := s.Watch(console.Pattern{Text: "hello"}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t2 := time.Now()
	_, err = s.Expect(ctx, text("never shown"), screen.ExpectOptions{Timeout: time.Minute})
	if !vmerr.Is(err, vmerr.Watch) || time.Since(t2) > 10*time.Second {
		t.Errorf("wait with a fail watcher: %v after %s", err, time.Since(t2))
	}
	cancel()
	if _, err := s.Expect(ctx, text("grub>"), screen.ExpectOptions{Timeout: time.Minute}); err != nil {
		t.Errorf("after cancelling the watcher: %v", err)
	}
	assertTimeline(t, run, "screen:grub-bios", "match", "watch", "artifact")
}

// TestE2EGrubUEFIOCR: GRUB under OVMF draws its menu in a graphics mode;
// OCR finds its title and an entry.
func TestE2EGrubUEFIOCR(t *testing.T) {
	requireFile(t, grubRescueISO, "grub-rescue-pc")
	requireFile(t, qemu.DefaultOVMFCode, "ovmf")
	testenv.RequireTool(t, "tesseract")
	iso := grubUEFIISO(t)
	ctx := ctxFor(t, 5*time.Minute)
	t0 := time.Now()
	_, s, _ := boot(t, ctx, qemu.Config{Name: "grub-uefi", ISO: iso, Firmware: "uefi", Net: "none"})
	m, err := s.Expect(ctx, text("GNU GRUB"), screen.ExpectOptions{Timeout: 4 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GNU GRUB by OCR after %.1fs (OCR of one screen %s)", time.Since(t0).Seconds(), m.Screen.Took.Round(time.Millisecond))
	if m.Screen.Mode != screen.ModeGraphics {
		t.Errorf("mode %s, want graphics", m.Screen.Mode)
	}
	if _, err := s.Expect(ctx, text("Microsoft Windows"), screen.ExpectOptions{Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
}

// grubUEFIISO makes a UEFI-bootable ISO whose GRUB has the rescue ISO's
// own grub.cfg.
func grubUEFIISO(t *testing.T) string {
	t.Helper()
	testenv.RequireTool(t, "grub-mkrescue")
	testenv.RequireTool(t, "xorriso")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tree", "boot", "grub", "grub.cfg")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("xorriso", "-osirrox", "on", "-indev", grubRescueISO, "-extract", "/boot/grub/grub.cfg", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("extracting grub.cfg: %v\n%s", err, out)
	}
	iso := filepath.Join(dir, "grub-uefi.iso")
	if out, err := exec.Command("grub-mkrescue", "-o", iso, filepath.Join(dir, "tree")).CombinedOutput(); err != nil {
		t.Fatalf("grub-mkrescue: %v\n%s", err, out)
	}
	return iso
}

// TestE2EIPXEBanner: iPXE prints its banner on the screen (text mode under
// SeaBIOS), read exactly.
func TestE2EIPXEBanner(t *testing.T) {
	requireFile(t, ipxeISO, "ipxe")
	ctx := ctxFor(t, 3*time.Minute)
	_, s, _ := boot(t, ctx, qemu.Config{Name: "ipxe", ISO: ipxeISO, Memory: "256M"})
	m, err := s.Expect(ctx, []console.Pattern{{Regex: `^iPXE (\S+) -- Open Source Network Boot Firmware -- http`}}, screen.ExpectOptions{Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if m.Screen.Mode != screen.ModeText || m.Captures[0] == "" {
		t.Errorf("mode %s, version %q", m.Screen.Mode, m.Captures)
	}
	t.Logf("iPXE %s after %s", m.Captures[0], m.Waited.Round(time.Millisecond))
}

// TestE2EDebianInstallerPXEMenu: the installer's PXE menu (syslinux
// vesamenu, a graphics mode) read by OCR; Enter on its "Install" entry
// makes pxelinux fetch the installer's kernel.
func TestE2EDebianInstallerPXEMenu(t *testing.T) {
	requireFile(t, debianNetboot, "debian-installer-12-netboot-amd64")
	testenv.RequireTool(t, "tesseract")
	ctx := ctxFor(t, 5*time.Minute)
	run := testenv.Run(t)
	srv, err := netboot.Serve(netboot.Options{Root: debianNetboot, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := qemu.Config{Name: "di-menu", Run: run}
	cfg.Devices = append(cfg.Devices, srv.BootDevice("pxelinux.0"))
	t0 := time.Now()
	_, s, _ := boot(t, ctx, cfg)
	m, err := s.Expect(ctx, text("Advanced options"), screen.ExpectOptions{Timeout: 4 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("menu by OCR after %.1fs:\n%s", time.Since(t0).Seconds(), m.Screen.Text())
	if m.Screen.Mode != screen.ModeGraphics || !strings.Contains(m.Screen.Text(), "Install") {
		t.Fatalf("mode %s, no Install entry:\n%s", m.Screen.Mode, m.Screen.Text())
	}
	if n := len(srv.Requests(netboot.Filter{File: "debian-installer/amd64/linux"})); n != 0 {
		t.Fatalf("the kernel was fetched %d times before Enter", n)
	}
	// Down and back up to the first entry, Install, and Enter.
	if err := s.Key(ctx, "down", "up", "ret"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := srv.WaitFile(wctx, "debian-installer/amd64/linux"); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel requested %.1fs after start", time.Since(t0).Seconds())
}

func vmerrAs(err error, e **vmerr.Error) bool {
	if err == nil {
		return false
	}
	v, ok := err.(*vmerr.Error)
	*e = v
	return ok
}

func fileNonEmpty(p string) bool {
	st, err := os.Stat(p)
	return p != "" && err == nil && st.Size() > 0
}

// assertTimeline checks that the timeline has events of these kinds from
// source.
func assertTimeline(t *testing.T, run *journal.Run, source string, kinds ...string) {
	t.Helper()
	f, err := os.Open(run.Path(journal.TimelineFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, _, err := journal.ReadTimeline(f)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]int{}
	for _, e := range evs {
		if e.Source == source {
			have[e.Kind]++
		}
	}
	for _, k := range kinds {
		if have[k] == 0 {
			t.Errorf("no %s event from %s (have %v)", k, source, have)
		}
	}
}
