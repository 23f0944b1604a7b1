package lab

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/bootmenu"
	"github.com/vmscript/vmscript/toolkit/iso"
)

// TestSystemdLiveISOs checks the live ISOs' shape, read with vmscript's own
// readers: El Torito for BIOS and UEFI, the root key at the top, the
// squashfs with the unit and the network files inside, and menus whose
// default entry has no serial console and whose second entry does.
func TestSystemdLiveISOs(t *testing.T) {
	img := image(t, "systemd")
	pub, _ := os.ReadFile(img.Files["ssh-key.pub"])
	for key, knobs := range map[string]string{"live-iso": RegressionKnobs, "live-good-iso": GoodKnobs} {
		im, err := iso.Open(img.Files[key])
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		if im.Label() != LiveLabel {
			t.Errorf("%s: label %q, want %q", key, im.Label(), LiveLabel)
		}
		checkLiveBoot(t, key, im)
		if k, _, err := im.Read("/pre_nixos/root_key.pub", 4096); err != nil || !bytes.Equal(k, pub) {
			t.Errorf("%s: /pre_nixos/root_key.pub is not the build's key (%v)", key, err)
		}
		sq, err := im.Squashfs(LiveSquashfs)
		if err != nil {
			t.Fatalf("%s: %s: %v", key, LiveSquashfs, err)
		}
		for _, p := range []string{"/etc/systemd/system/pre-nixos.service", "/etc/systemd/network/20-lan.network",
			"/usr/lib/systemd/system-generators/lab-lan-generator", "/sbin/init", "/root/.ssh/authorized_keys"} {
			if ok, err := sq.Exists(p); !ok {
				t.Errorf("%s: the squashfs lacks %s (%v)", key, p, err)
			}
		}
		checkLiveMenus(t, key, im, knobs)
	}
}

func checkLiveBoot(t *testing.T, key string, im *iso.Image) {
	t.Helper()
	boot, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, b := range boot {
		got[b.Platform] = b.Path
	}
	if got["BIOS"] != "/isolinux/isolinux.bin" || got["UEFI"] != "/boot/efi.img" {
		t.Errorf("%s: El Torito entries %v, want BIOS /isolinux/isolinux.bin and UEFI /boot/efi.img", key, boot)
	}
}

func checkLiveMenus(t *testing.T, key string, im *iso.Image, knobs string) {
	t.Helper()
	res, err := bootmenu.Find(im.FS())
	if err != nil {
		t.Fatal(err)
	}
	byLoader := map[string][]bootmenu.Entry{}
	for _, e := range res.Entries {
		byLoader[e.Loader] = append(byLoader[e.Loader], e)
	}
	for _, loader := range []string{bootmenu.Isolinux, bootmenu.Grub} {
		es := byLoader[loader]
		if len(es) != 2 {
			t.Errorf("%s: %d %s entries, want 2: %v", key, len(es), loader, es)
			continue
		}
		def, serial := es[0], es[1]
		if !def.Default || strings.Contains(def.Append, "console=") || !strings.Contains(def.Append, knobs) {
			t.Errorf("%s %s: default entry %v: want the default, no console=, the knobs %q", key, loader, def, knobs)
		}
		if !strings.HasSuffix(serial.Label, "(serial console=ttyS0,115200n8)") || !strings.Contains(serial.Append, "console=ttyS0,115200n8") {
			t.Errorf("%s %s: second entry %v: want the serial console", key, loader, serial)
		}
		if def.Kernel != "/boot/bzImage" || len(def.Initrd) != 1 || def.Initrd[0] != "/boot/initrd" {
			t.Errorf("%s %s: kernel %s initrd %v", key, loader, def.Kernel, def.Initrd)
		}
	}
	if len(res.Warnings) > 0 {
		t.Errorf("%s: menu warnings %v", key, res.Warnings)
	}
}

// TestBootLiveISOSerialEntry boots live.iso's serial entry as vmscript's
// qemu.start{iso=, entry=} does — its kernel and stage 1 directly, the ISO
// as a CD-ROM — and reaches the systemd guest through the squashfs.
func TestBootLiveISOSerialEntry(t *testing.T) {
	requireTools(t, "qemu-system-x86_64")
	if testing.Short() {
		t.Skip("-short")
	}
	t.Parallel()
	img := image(t, "systemd")
	im, err := iso.Open(img.Files["live-iso"])
	if err != nil {
		t.Fatal(err)
	}
	f, err := im.Open("/boot/initrd")
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd")
	data, _ := io.ReadAll(f)
	f.Close()
	im.Close()
	if err := os.WriteFile(initrd, data, 0o644); err != nil {
		t.Fatal(err)
	}
	vm := startQEMU(t, "-m", "1G", "-cdrom", img.Files["live-iso"], "-kernel", img.Files["vmlinuz"], "-initrd", initrd,
		"-append", LiveAppend+" "+RegressionKnobs+" console=ttyS0,115200n8",
		"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
	off := vm.expect(t, 0, "vmscript-live: root: "+LiveSquashfs+" from /dev/sr0", 120*time.Second)
	off = vm.expect(t, off, "login:", 240*time.Second)
	t.Logf("live.iso serial entry: login prompt after %v (accel %s)", time.Since(vm.start).Round(100*time.Millisecond), accel())
	vm.send(t, "root\n")
	off = vm.expect(t, off, "root@lab:", 60*time.Second)
	time.Sleep(time.Second)
	vm.send(t, "findmnt -n -o FSTYPE /; findmnt -n -o SOURCE /iso; echo DONE$((1+1))\n")
	off = vm.expect(t, off, "DONE2", 60*time.Second)
	if out := vm.console()[:off]; !strings.Contains(out, "overlay") || !strings.Contains(out, "/dev/sr0") {
		t.Errorf("the root is not the overlay on the ISO's squashfs")
	}
	vm.send(t, "systemctl poweroff --no-wall\n")
	vm.waitExit(t, 90*time.Second)
}

// TestLiveStage1Failure boots stage 1 with a label no disk has: it says so
// on the console within its timeout and gives a shell, never hangs.
func TestLiveStage1Failure(t *testing.T) {
	requireTools(t, "qemu-system-x86_64")
	t.Parallel()
	img := image(t, "systemd")
	im, err := iso.Open(img.Files["live-iso"])
	if err != nil {
		t.Fatal(err)
	}
	data, _, err := im.Read("/boot/initrd", 64<<20)
	im.Close()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd")
	if err := os.WriteFile(initrd, data, 0o644); err != nil {
		t.Fatal(err)
	}
	vm := startQEMU(t, "-m", "512", "-kernel", img.Files["vmlinuz"], "-initrd", initrd,
		"-append", "root=live:LABEL=NO_SUCH_LABEL live.timeout=3 console=ttyS0,115200n8")
	off := vm.expect(t, 0, "vmscript-live: FATAL: no volume labelled NO_SUCH_LABEL after 3s", 120*time.Second)
	vm.expect(t, off, "starting a shell", 10*time.Second)
}

// TestKnobsDocumented: every knob a lab guest's files read is in Knobs, and
// every knob in Knobs is in the README's table and in the files that read it
// (so `vmscript lab --help`, `vmscript doc lab` and the README stay true).
func TestKnobsDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var files strings.Builder
	err = filepath.WalkDir(filepath.Join("files", "systemd"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, k := range Knobs {
		known[k.Name] = true
		if !bytes.Contains(readme, []byte("| `"+k.Name+"` |")) {
			t.Errorf("README.md's knob table lacks %s", k.Name)
		}
		if !strings.Contains(files.String(), k.Name+"=") {
			t.Errorf("no lab file reads %s=", k.Name)
		}
		if !strings.Contains(KnobsText(""), k.Name+"="+k.Values) {
			t.Errorf("KnobsText lacks %s", k.Name)
		}
	}
	for _, m := range regexp.MustCompile(`\b(lab|live)\.[a-z_]+=`).FindAllString(files.String(), -1) {
		if name := strings.TrimSuffix(m, "="); !known[name] {
			t.Errorf("the lab's files read %s, which Knobs does not document", name)
		}
	}
}
