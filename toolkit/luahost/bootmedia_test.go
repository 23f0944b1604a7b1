package luahost

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"
	"github.com/vmscript/vmscript/toolkit/blobcache"
)

// installerText is the Debian installer's netboot tree (text flavour).
const installerText = "/usr/lib/debian-installer/images/12/amd64/text"

// requireFile skips (or with VMSCRIPT_REQUIRE_QEMU fails) when a file of a
// host package is missing.
func requireFile(t *testing.T, p, pkg string) {
	t.Helper()
	if _, err := os.Stat(p); err != nil {
		if testenv.Required() {
			t.Fatalf("%s is missing (package %s): %v", p, pkg, err)
		}
		t.Skipf("%s missing (package %s)", p, pkg)
	}
}

// TestBootEntriesRealMedia reads the boot menus of media no one here made:
// the GRUB rescue ISO, the installer's netboot tree and its initrd.
func TestBootEntriesRealMedia(t *testing.T) {
	rescue := "/usr/lib/grub-rescue/grub-rescue-cdrom.iso"
	requireFile(t, rescue, "grub-rescue-pc")
	requireFile(t, installerText, "debian-installer-12-netboot-amd64")
	loop := t.TempDir()
	os.MkdirAll(filepath.Join(loop, "pxelinux.cfg"), 0o755)
	os.WriteFile(filepath.Join(loop, "pxelinux.cfg", "default"), []byte("default a\ninclude /b.cfg\n"), 0o644)
	os.WriteFile(filepath.Join(loop, "b.cfg"), []byte("label a\n  kernel /k\ninclude /pxelinux.cfg/default\n"), 0o644)
	out, err := runLua(t, context.Background(), `
		local function default(es)
			for _, e in ipairs(es) do if e.default then return e end end
		end
		local es, ws = iso.open(args.rescue):boot_entries()
		local d = default(es)
		print(#es, d.label, d.loader, d.kernel, d.source)
		local nes, nws, cfgs = iso.boot_entries(args.installer)
		local pxe
		for _, e in ipairs(nes) do if e.default and e.loader == "pxelinux" then pxe = e end end
		print(pxe.label, pxe.kernel, pxe.initrd[1], #cfgs >= 2)
		local rd = iso.initramfs(args.installer .. pxe.initrd[1])
		local init = rd:read("/init")
		print(rd.compression, rd.segments[1].members > 1000, init:sub(1, 9), rd:stat("/init").type)
		local ok, e = pcall(iso.boot_entries, args.loop)
		print(ok, e.kind, e.message:find("include loop", 1, true) ~= nil, e.source)
		ok, e = pcall(iso.boot_entries, args.loop, { config = "/x.cfg" })
		print(ok, e.kind)
	`, nil, Options{Args: map[string]string{"rescue": rescue, "installer": installerText, "loop": loop}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "9\tGNU/Linux\tgrub\t(hd0,msdos1)/vmlinuz\t/boot/grub/grub.cfg:"
	if !strings.HasPrefix(out, want) {
		t.Fatalf("rescue ISO: output\n%s\nwant a first line starting %q", out, want)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, w := range []string{
		"Install\t/debian-installer/amd64/linux\t/debian-installer/amd64/initrd.gz\ttrue",
		"gzip\ttrue\t#!/bin/sh\tfile",
		"false\tio\ttrue\t/b.cfg:3",
		"false\tusage",
	} {
		if lines[i+1] != w {
			t.Errorf("line %d: %q, want %q", i+2, lines[i+1], w)
		}
	}
}

// makeEntryISO writes an ISO whose isolinux menu boots the mini lab's
// kernel and initramfs: a default entry without a serial console and one
// "(serial console=ttyS0,115200n8)", as NixOS's ISO has.
func makeEntryISO(t *testing.T) string {
	t.Helper()
	testenv.RequireTool(t, "xorriso")
	img := testenv.Lab(t, "mini")
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"isolinux", "boot"} {
		os.MkdirAll(filepath.Join(tree, d), 0o755)
	}
	for name, src := range map[string]string{"vmlinuz": img.Files["vmlinuz"], "initramfs": img.Files["initramfs"]} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(tree, "boot", name), data, 0o644)
	}
	cfg := `DEFAULT plain
TIMEOUT 50
LABEL plain
  MENU LABEL mini live
  LINUX /boot/vmlinuz
  INITRD /boot/initramfs
  APPEND console=tty0 quiet
LABEL serial
  MENU LABEL mini live (serial console=ttyS0,115200n8)
  LINUX /boot/vmlinuz
  INITRD /boot/initramfs
  APPEND console=ttyS0,115200n8 quiet
`
	os.WriteFile(filepath.Join(tree, "isolinux", "isolinux.cfg"), []byte(cfg), 0o644)
	out := filepath.Join(dir, "entry.iso")
	if b, err := exec.Command("xorriso", "-as", "mkisofs", "-R", "-J", "-V", "VMSCRIPT_ENTRY", "-o", out, tree).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, b)
	}
	return out
}

// TestE2EISOEntry boots an ISO's own menu entry directly: the entry is
// chosen by part of its label, its kernel and initrd come out of the ISO
// into the blob cache, the ISO stays attached, append_extra reaches the
// kernel, and an unknown entry lists the entries.
func TestE2EISOEntry(t *testing.T) {
	testenv.RequireQEMU(t)
	isoPath := makeEntryISO(t)
	t.Setenv(blobcache.DirEnv, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := runLua(t, ctx, `
		local img = iso.open(args.iso)
		local es = img:boot_entries()
		print(#es, es[1].default, es[1].append, es[2].label)
		print(img:initramfs(es[2].initrd[1]):exists("/init"), img:extract("/boot/vmlinuz").size > 0)
		local ok, e = pcall(qemu.start, { iso = args.iso, entry = "nothing like it", net = "none" })
		print(ok, e.kind, e.message:find("2. \"mini live (serial", 1, true) ~= nil)
		ok, e = pcall(qemu.start, { iso = args.iso, entry = "mini", net = "none" })
		print(ok, e.kind, e.message:find("matches 2 entries", 1, true) ~= nil)
		local vm = qemu.start{ name = "entry", iso = args.iso, entry = "serial", append_extra = "no_timer_check vmscript.extra=42",
			memory = "512M", net = "none" }
		vm.console:expect("vmscript-mini: ready", { timeout = "150s" })
		vm.console:sendline("cat /proc/cmdline; ls /sys/block")
		vm.console:expect("vmscript.extra=42")
		local b = vm.entry
		print(b.entry.label, b.append, b.kernel.reused, b.entry.source)
		vm:quit()
		local again = qemu.start{ name = "again", iso = args.iso, entry = 2, net = "none" }
		print(again.entry.kernel.reused, again.entry.entry.label)
		again:quit()
	`, nil, Options{Run: testenv.Run(t), Args: map[string]string{"iso": isoPath}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := strings.Join([]string{
		"2\ttrue\tconsole=tty0 quiet initrd=/boot/initramfs\tmini live (serial console=ttyS0,115200n8)",
		"true\ttrue",
		"false\tnotfound\ttrue",
		"false\tusage\ttrue",
		"mini live (serial console=ttyS0,115200n8)\tconsole=ttyS0,115200n8 quiet initrd=/boot/initramfs no_timer_check vmscript.extra=42\ttrue\t/isolinux/isolinux.cfg:8",
		"true\tmini live (serial console=ttyS0,115200n8)",
	}, "\n") + "\n"
	if out != want {
		t.Fatalf("output\n%s\nwant\n%s", out, want)
	}
}

// TestLargeConcat joins more lines than gopher-lua's fixed registry holds.
func TestLargeConcat(t *testing.T) {
	out, err := runLua(t, context.Background(), `
		local t = {}
		for i = 1, 100000 do t[i] = "line " .. i end
		print(#table.concat(t, "\n"), select("#", unpack(t, 1, 50000)))
	`, nil, Options{})
	if err != nil || out != "1088894\t50000\n" {
		t.Fatalf("%v: %q", err, out)
	}
}
