package bootmenu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/iso"
)

// Real boot media from Debian's packages and the lab.
const (
	netbootTree = "/usr/lib/debian-installer/images/12/amd64/text"
	rescueISO   = "/usr/lib/grub-rescue/grub-rescue-cdrom.iso"
)

// needPath skips when p is missing, unless VMSCRIPT_REQUIRE_QEMU is set.
func needPath(t *testing.T, p, pkg string) {
	t.Helper()
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("%s is missing (apt-get install %s) and VMSCRIPT_REQUIRE_QEMU is set", p, pkg)
		}
		t.Skipf("%s is missing (package %s)", p, pkg)
	}
}

func logResult(t *testing.T, r *Result) {
	t.Helper()
	for _, e := range r.Entries {
		t.Log(e)
	}
	for _, w := range r.Warnings {
		t.Log("warning: ", w)
	}
}

// summary counts entries per loader and finds each loader's default.
func summary(r *Result) (map[string]int, map[string]Entry) {
	n, def := map[string]int{}, map[string]Entry{}
	for _, e := range r.Entries {
		n[e.Loader]++
		if e.Default {
			def[e.Loader] = e
		}
	}
	return n, def
}

func TestDebianNetbootTree(t *testing.T) {
	needPath(t, netbootTree, "debian-installer-12-netboot-amd64")
	root, err := os.OpenRoot(netbootTree)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	r, err := Find(root.FS())
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	n, def := summary(r)
	if n[Pxelinux] != 10 || n[Grub] != 26 {
		t.Errorf("entries per loader: %v, want 10 pxelinux (8 kernels, 2 help configs) and 26 grub", n)
	}
	const kernel, initrd = "/debian-installer/amd64/linux", "/debian-installer/amd64/initrd.gz"
	for _, loader := range []string{Pxelinux, Grub} {
		d := def[loader]
		if d.Label != "Install" || d.Kernel != kernel || len(d.Initrd) != 1 || d.Initrd[0] != initrd || !strings.Contains(d.Append, "vga=788") {
			t.Errorf("%s default: %+v", loader, d)
		}
	}
	for _, e := range r.Entries {
		if e.Kind == KindLinux && (e.Kernel != kernel || len(e.Initrd) != 1 || e.Initrd[0] != initrd) {
			t.Errorf("entry with another kernel: %v", e)
		}
	}
	// The tree's menu.cfg includes gtk and speech menus this (text) tree
	// does not ship; pxelinux skips them.
	missing := 0
	for _, w := range r.Warnings {
		if strings.Contains(w.Message, "does not exist (pxelinux skips it)") {
			missing++
		} else {
			t.Errorf("unexpected warning %v", w)
		}
	}
	if missing != 10 {
		t.Errorf("%d missing includes, want 10", missing)
	}
	if c := r.Configs[0]; c.Path != "/pxelinux.cfg/default" || !strings.HasSuffix(c.UI, "vesamenu.c32") || *c.Timeout != Forever || len(c.Files) != 10 {
		t.Errorf("pxelinux config: %+v", c)
	}
	if c := r.Configs[1]; c.Path != "/debian-installer/amd64/grub/grub.cfg" || *c.Timeout != Forever {
		t.Errorf("grub config: %+v", c)
	}
}

func TestGrubRescueISO(t *testing.T) {
	needPath(t, rescueISO, "grub-rescue-pc")
	im, err := iso.Open(rescueISO)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	r, err := Find(im.FS())
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	var got []string
	for _, e := range r.Entries {
		got = append(got, e.Kind+" "+e.Kernel)
	}
	want := []string{"linux (hd0,msdos1)/vmlinuz", "multiboot (hd0,msdos1)/boot/gnumach.gz", "bsd (hd0,msdos1,bsd1)/boot/kernel/kernel",
		"bsd (hd0,msdos1,bsd1)/boot/loader", "bsd (hd0,netbsd1)/netbsd", "bsd (hd0,openbsd1)/bsd", "chain (hd0,msdos1)+1",
		"linux (hd0,1)/memtest86+.bin", "other "}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("entries:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := r.Entries[0]; !d.Default || d.Name != "gnulinux" || d.Append != "root=/dev/sda1" || d.Initrd[0] != "(hd0,msdos1)/initrd.img" {
		t.Errorf("default: %+v", d)
	}
	// Single quotes keep GRUB's own ${…} text literal: no warning.
	if len(r.Warnings) != 0 {
		t.Errorf("warnings: %v", r.Warnings)
	}
	if c := r.Configs[0]; c.Default != "gnulinux" || *c.Timeout != 30*time.Second {
		t.Errorf("config: %+v", c)
	}
}

func TestLabSystemdISO(t *testing.T) {
	img, err := lab.Lookup("systemd", lab.Options{})
	if err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatal(err)
		}
		t.Skipf("the systemd lab is not built (vmscript lab build systemd): %v", err)
	}
	for _, key := range []string{"iso", "good-iso"} {
		im, err := iso.Open(img.Files[key])
		if err != nil {
			t.Fatal(err)
		}
		r, err := Find(im.FS())
		im.Close()
		if err != nil {
			t.Fatal(err)
		}
		logResult(t, r)
		if len(r.Entries) != 1 || len(r.Warnings) != 0 {
			t.Fatalf("%s: %d entries, warnings %v", key, len(r.Entries), r.Warnings)
		}
		e := r.Entries[0]
		if e.Loader != Grub || !e.Default || e.Kernel != "/boot/vmlinuz" || len(e.Initrd) != 1 || e.Initrd[0] != "/boot/initramfs" ||
			!strings.Contains(e.Append, "console=ttyS0,115200") {
			t.Errorf("%s: %+v", key, e)
		}
	}
}

// TestIsolinuxOnISO reads the hand-written isolinux medium from a real ISO
// 9660 image, through iso.Image.FS.
func TestIsolinuxOnISO(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatal("xorriso is required")
		}
		t.Skip("xorriso not installed")
	}
	dir := t.TempDir()
	for name, f := range isolinuxMedium() {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "isolinux.iso")
	if b, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", out, dir).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, b)
	}
	im, err := iso.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	r, err := Find(im.FS())
	if err != nil {
		t.Fatal(err)
	}
	want := mustParse(t, isolinuxMedium(), "/isolinux/isolinux.cfg", Isolinux)
	if len(r.Entries) != len(want.Entries) || r.Configs[0].Loader != Isolinux {
		t.Fatalf("%d entries from the ISO, %d from the map", len(r.Entries), len(want.Entries))
	}
	for i := range r.Entries {
		if r.Entries[i].String() != want.Entries[i].String() {
			t.Errorf("ISO %v\nmap %v", r.Entries[i], want.Entries[i])
		}
	}
}
