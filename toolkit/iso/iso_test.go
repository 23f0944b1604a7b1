package iso

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
				t.Fatalf("%s is required (apt-get install xorriso squashfs-tools)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func write(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

const longName = "a very long file name that is far beyond the eight dot three limits of plain ISO 9660.txt"

// tree builds a directory with nested dirs, symlinks and a long name.
func tree(t *testing.T, dir string) string {
	write(t, filepath.Join(dir, "boot/grub/grub.cfg"), "set timeout=5\n")
	write(t, filepath.Join(dir, "pre_nixos/root_key.pub"), "ssh-ed25519 AAAA test\n")
	write(t, filepath.Join(dir, "etc/systemd/system/pre-nixos.service"), "[Service]\nExecStart=/bin/pre-nixos\n")
	write(t, filepath.Join(dir, "deep/a/b/c/d/leaf.txt"), "leaf\n")
	write(t, filepath.Join(dir, longName), "long\n")
	if err := os.MkdirAll(filepath.Join(dir, "etc/systemd/system/multi-user.target.wants"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../pre-nixos.service", filepath.Join(dir, "etc/systemd/system/multi-user.target.wants/pre-nixos.service")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/systemd/system", filepath.Join(dir, "units")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "pre_nixos/root_key.pub"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mkiso(t *testing.T, src string, extra ...string) string {
	need(t, "xorriso")
	out := filepath.Join(t.TempDir(), "x.iso")
	args := append([]string{"-as", "mkisofs", "-quiet"}, extra...)
	run(t, "xorriso", append(args, "-o", out, src)...)
	return out
}

func mksquash(t *testing.T, src, comp string) string {
	need(t, "mksquashfs")
	out := filepath.Join(t.TempDir(), comp+".squashfs")
	run(t, "mksquashfs", src, out, "-comp", comp, "-quiet", "-no-progress", "-all-root")
	return out
}

func wantKind(t *testing.T, err error, kind, mention string) {
	t.Helper()
	var ve *vmerr.Error
	if !errors.As(err, &ve) {
		t.Fatalf("want *vmerr.Error kind %s, got %T %v", kind, err, err)
	}
	if ve.Kind != kind || !strings.Contains(ve.Error(), mention) {
		t.Fatalf("want kind %s mentioning %q, got kind %s: %v", kind, mention, ve.Kind, ve)
	}
}

func checkTree(t *testing.T, im *Image) {
	t.Helper()
	e, err := im.Stat("/pre_nixos/root_key.pub")
	if err != nil {
		t.Fatal(err)
	}
	if e.Size != int64(len("ssh-ed25519 AAAA test\n")) || !e.IsRegular() || e.Path != "/pre_nixos/root_key.pub" {
		t.Fatalf("stat: %+v", e)
	}
	link, err := im.Stat("etc/systemd/system/multi-user.target.wants/pre-nixos.service")
	if err != nil {
		t.Fatal(err)
	}
	if !link.IsLink() || link.Target != "../pre-nixos.service" || link.ModeString()[0] != 'l' {
		t.Fatalf("symlink: %+v %s", link, link)
	}
	// Read follows links, relative and absolute, in any path element.
	for _, p := range []string{"/etc/systemd/system/multi-user.target.wants/pre-nixos.service", "/units/pre-nixos.service"} {
		data, truncated, err := im.Read(p, 0)
		if err != nil || truncated || !strings.HasPrefix(string(data), "[Service]") {
			t.Fatalf("read %s: %q %v %v", p, data, truncated, err)
		}
	}
	data, truncated, err := im.Read("/etc/systemd/system/pre-nixos.service", 4)
	if err != nil || !truncated || string(data) != "[Ser" {
		t.Fatalf("read max: %q %v %v", data, truncated, err)
	}
	if ok, err := im.Exists("dangling"); !ok || err != nil {
		t.Fatalf("dangling link exists: %v %v", ok, err)
	}
	if ok, err := im.Exists("/nope/x"); ok || err != nil {
		t.Fatalf("missing: %v %v", ok, err)
	}
	_, _, err = im.Read("/dangling", 0)
	wantKind(t, err, vmerr.NotFound, "/dangling")
	_, err = im.Stat("/no/such/file")
	wantKind(t, err, vmerr.NotFound, "/no/such/file")
	_, err = im.List("/pre_nixos/root_key.pub")
	wantKind(t, err, vmerr.Usage, "not a directory")
	if _, err := im.Stat(longName); err != nil {
		t.Fatalf("long name: %v", err)
	}
	if data, _, err := im.Read("deep/a/b/c/d/leaf.txt", 0); err != nil || string(data) != "leaf\n" {
		t.Fatalf("deep read: %q %v", data, err)
	}
	var paths []string
	if err := im.Walk(func(e Entry) error { paths = append(paths, e.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(paths, "\n")
	for _, want := range []string{"/deep/a/b/c/d/leaf.txt", "/units", "/etc/systemd/system/multi-user.target.wants"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("walk misses %s:\n%s", want, joined)
		}
	}
}

func TestISORockRidgeJoliet(t *testing.T) {
	src := tree(t, t.TempDir())
	im, err := Open(mkiso(t, src, "-R", "-J"))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	checkTree(t, im)
	e, _ := im.Stat("/pre_nixos/root_key.pub")
	if e.ModeString() != "-rw-------" {
		t.Fatalf("Rock Ridge mode: %s", e)
	}
	list, err := im.List("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		t.Log(e)
	}
}

func TestISOJolietOnly(t *testing.T) {
	src := tree(t, t.TempDir())
	im, err := Open(mkiso(t, src, "--norock", "-J"))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	// go-diskfs alone cannot list this below the first level.
	data, _, err := im.Read("/deep/a/b/c/d/leaf.txt", 0)
	if err != nil || string(data) != "leaf\n" {
		t.Fatalf("deep Joliet read: %q %v", data, err)
	}
	if ok, _ := im.Exists("/etc/systemd/system/pre-nixos.service"); !ok {
		t.Fatal("Joliet: missing nested file")
	}
}

func TestSquashfs(t *testing.T) {
	src := tree(t, t.TempDir())
	for _, comp := range []string{"gzip", "xz", "zstd", "lzo"} {
		t.Run(comp, func(t *testing.T) {
			sq := mksquash(t, src, comp)
			im, err := OpenSquashfs(sq)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			if im.Compression() != comp {
				t.Fatalf("compression %q", im.Compression())
			}
			checkTree(t, im)
			// The same squashfs inside an ISO, read in place.
			isoDir := t.TempDir()
			write(t, filepath.Join(isoDir, "boot/grub/grub.cfg"), "x\n")
			data, _ := os.ReadFile(sq)
			write(t, filepath.Join(isoDir, "live/filesystem.squashfs"), string(data))
			outer, err := Open(mkiso(t, isoDir, "-R", "-J"))
			if err != nil {
				t.Fatal(err)
			}
			defer outer.Close()
			inner, err := outer.Squashfs("/live/filesystem.squashfs")
			if err != nil {
				t.Fatal(err)
			}
			checkTree(t, inner)
			if !strings.Contains(inner.Name(), ":/live/filesystem.squashfs") {
				t.Fatalf("inner name %q", inner.Name())
			}
			_, err = outer.Squashfs("/boot/grub/grub.cfg")
			wantKind(t, err, vmerr.Usage, "grub.cfg is not a squashfs")
			_, err = outer.Squashfs("/boot")
			wantKind(t, err, vmerr.Usage, "not a squashfs")
			_, err = outer.Squashfs("/missing.squashfs")
			wantKind(t, err, vmerr.NotFound, "missing.squashfs")
		})
	}
}

func TestSquashfsLz4(t *testing.T) {
	src := tree(t, t.TempDir())
	sq := mksquash(t, src, "lz4")
	_, err := OpenSquashfs(sq)
	wantKind(t, err, vmerr.Usage, "lz4")
	if !strings.Contains(err.Error(), sq) {
		t.Fatalf("error does not name the file: %v", err)
	}
}

func TestBrokenImages(t *testing.T) {
	src := tree(t, t.TempDir())
	isoPath := mkiso(t, src, "-R", "-J")
	data, err := os.ReadFile(isoPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	trunc := filepath.Join(dir, "truncated.iso")
	write(t, trunc, string(data[:len(data)/2]))
	_, err = Open(trunc)
	wantKind(t, err, vmerr.IO, trunc)
	t.Log(err)

	tiny := filepath.Join(dir, "tiny.iso")
	write(t, tiny, string(data[:40000]))
	_, err = Open(tiny)
	wantKind(t, err, vmerr.IO, tiny)

	notISO := filepath.Join(dir, "notes.txt")
	write(t, notISO, strings.Repeat("not an iso\n", 10000))
	_, err = Open(notISO)
	wantKind(t, err, vmerr.Usage, "not an ISO 9660 image")

	_, err = Open(filepath.Join(dir, "missing.iso"))
	wantKind(t, err, vmerr.NotFound, "missing.iso")

	// Corrupt the root directory's records: garbage after the descriptors.
	corrupt := append([]byte(nil), data...)
	for i := 21 * 2048; i < 40*2048 && i < len(corrupt); i++ {
		corrupt[i] = byte(i*7 + 3)
	}
	bad := filepath.Join(dir, "corrupt.iso")
	write(t, bad, string(corrupt))
	im, err := Open(bad)
	if err == nil {
		// go-diskfs may accept some garbage; walking it must then fail
		// cleanly or list nothing sensible, never panic.
		err = im.Walk(func(Entry) error { return nil })
		im.Close()
	}
	if err != nil {
		if k := vmerr.KindOf(err); k != vmerr.IO && k != vmerr.NotFound {
			t.Fatalf("corrupt: kind %q: %v", k, err)
		}
		if !strings.Contains(err.Error(), bad) {
			t.Fatalf("corrupt: error does not name the file: %v", err)
		}
		t.Log(err)
	}

	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i * i >> 3)
	}
	write(t, filepath.Join(src, "big.bin"), string(big))
	sq := mksquash(t, src, "gzip")
	sqData, _ := os.ReadFile(sq)
	sqTrunc := filepath.Join(dir, "trunc.squashfs")
	write(t, sqTrunc, string(sqData[:len(sqData)/2]))
	_, err = OpenSquashfs(sqTrunc)
	wantKind(t, err, vmerr.IO, "truncated")
	_, err = OpenSquashfs(notISO)
	wantKind(t, err, vmerr.Usage, "is not a squashfs")
	sqBad := append([]byte(nil), sqData...)
	for i := 96; i < len(sqBad); i++ {
		sqBad[i] ^= 0x5a
	}
	sqCorrupt := filepath.Join(dir, "corrupt.squashfs")
	write(t, sqCorrupt, string(sqBad))
	im, err = OpenSquashfs(sqCorrupt)
	if err == nil {
		err = im.Walk(func(Entry) error { return nil })
	}
	wantKind(t, err, vmerr.IO, sqCorrupt)
	t.Log(err)
}

func TestGrubMkrescueBoot(t *testing.T) {
	need(t, "grub-mkrescue", "xorriso")
	src := t.TempDir()
	write(t, filepath.Join(src, "boot/grub/grub.cfg"), "menuentry x { true }\n")
	out := filepath.Join(t.TempDir(), "rescue.iso")
	run(t, "grub-mkrescue", "-o", out, src)
	im, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	boot, err := im.Boot()
	if err != nil {
		t.Fatal(err)
	}
	var bios, uefi bool
	for _, b := range boot {
		t.Log(b)
		switch b.Platform {
		case "BIOS":
			bios = b.Path == "/boot/grub/i386-pc/eltorito.img" && b.Size > 0
		case "UEFI":
			uefi = b.Size > 0
		}
	}
	if !bios || !uefi {
		t.Fatalf("want BIOS and UEFI entries: %v", boot)
	}
}

func TestDebianImages(t *testing.T) {
	for _, c := range []struct{ path, pkg string }{
		{"/usr/lib/ipxe/ipxe.iso", "ipxe"},
		{"/usr/lib/grub-rescue/grub-rescue-cdrom.iso", "grub-rescue-pc"},
	} {
		t.Run(c.pkg, func(t *testing.T) {
			if _, err := os.Stat(c.path); err != nil {
				if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
					t.Fatalf("%s missing: apt-get install %s", c.path, c.pkg)
				}
				t.Skipf("%s missing (package %s)", c.path, c.pkg)
			}
			im, err := Open(c.path)
			if err != nil {
				t.Fatal(err)
			}
			defer im.Close()
			boot, err := im.Boot()
			if err != nil {
				t.Fatal(err)
			}
			if len(boot) == 0 {
				t.Fatal("no boot entries")
			}
			for _, b := range boot {
				t.Log(b)
				if b.Platform == "BIOS" && b.Path == "" {
					t.Fatalf("BIOS boot image not mapped to a file: %v", b)
				}
			}
			list, err := im.List("/")
			if err != nil || len(list) == 0 {
				t.Fatalf("list: %v %v", list, err)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	a := tree(t, t.TempDir())
	b := tree(t, t.TempDir())
	write(t, filepath.Join(b, "boot/grub/grub.cfg"), "set timeout=9\n") // same size, new content
	write(t, filepath.Join(b, "pre_nixos/extra"), "x")                  // added
	os.Remove(filepath.Join(b, "deep/a/b/c/d/leaf.txt"))                // removed
	os.Remove(filepath.Join(b, "units"))
	os.Symlink("/elsewhere", filepath.Join(b, "units")) // target changed
	os.Chmod(filepath.Join(b, "etc/systemd/system/pre-nixos.service"), 0o755)
	ia, err := Open(mkiso(t, a, "-R", "-J"))
	if err != nil {
		t.Fatal(err)
	}
	defer ia.Close()
	ib, err := Open(mkiso(t, b, "-R", "-J"))
	if err != nil {
		t.Fatal(err)
	}
	defer ib.Close()
	changes, err := Diff(ia, ib)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range changes {
		lines = append(lines, c.String())
	}
	got := strings.Join(lines, "\n")
	want := "~ /boot/grub/grub.cfg (content)\n- /deep/a/b/c/d/leaf.txt\n~ /etc/systemd/system/pre-nixos.service (mode)\n+ /pre_nixos/extra\n~ /units (target)"
	if got != want {
		t.Fatalf("diff:\n%s\nwant:\n%s", got, want)
	}
	same, err := Diff(ia, ia)
	if err != nil || len(same) != 0 {
		t.Fatalf("self diff: %v %v", same, err)
	}
}

func TestLabISO(t *testing.T) {
	img, err := lab.Lookup("systemd", lab.Options{})
	if err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatal(err)
		}
		t.Skipf("systemd lab not built: %v", err)
	}
	p := img.Files["iso"]
	im, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if ok, err := im.Exists("/pre_nixos/root_key.pub"); !ok || err != nil {
		list, _ := im.List("/")
		t.Fatalf("lab.iso has no /pre_nixos/root_key.pub (%v); root: %v", err, list)
	}
	boot, err := im.Boot()
	if err != nil || len(boot) == 0 {
		t.Fatalf("lab.iso boot entries: %v %v", boot, err)
	}
}

// TestStatThroughLinkedDirectory: Stat is lstat(2) — the directories on
// the way are followed (a merged /usr's /sbin -> usr/sbin), the last
// element is not.
func TestStatThroughLinkedDirectory(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "usr/sbin/init"), "#!/bin/sh\n")
	if err := os.Symlink("usr/sbin", filepath.Join(dir, "sbin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("init", filepath.Join(dir, "usr/sbin/init-link")); err != nil {
		t.Fatal(err)
	}
	im, err := OpenSquashfs(mksquash(t, dir, "gzip"))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	e, err := im.Stat("/sbin/init")
	if err != nil || !e.IsRegular() || e.Path != "/usr/sbin/init" {
		t.Errorf("Stat(/sbin/init) = %+v, %v; want the regular file /usr/sbin/init", e, err)
	}
	if e, err := im.Stat("/sbin/init-link"); err != nil || !e.IsLink() {
		t.Errorf("Stat(/sbin/init-link) = %+v, %v; want the link itself", e, err)
	}
	if e, err := im.Stat("/sbin"); err != nil || !e.IsLink() {
		t.Errorf("Stat(/sbin) = %+v, %v; want the link itself", e, err)
	}
	if ok, err := im.Exists("/sbin/missing"); ok || err != nil {
		t.Errorf("Exists(/sbin/missing) = %v, %v", ok, err)
	}
}
