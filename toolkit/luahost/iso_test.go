package luahost

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
)

// TestNotesISODiffLua drives notes, iso and diff.lines from one script.
func TestNotesISODiffLua(t *testing.T) {
	for _, tool := range []string{"xorriso", "mksquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "pre_nixos"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "etc/systemd/system"), 0o755))
	must(os.WriteFile(filepath.Join(src, "pre_nixos/root_key.pub"), []byte("ssh-ed25519 AAAA\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "etc/systemd/system/pre-nixos.service"), []byte("[Unit]\n"), 0o644))
	must(os.Symlink("/etc/systemd/system/pre-nixos.service", filepath.Join(src, "unit")))
	sqDir := t.TempDir()
	sq := filepath.Join(sqDir, "fs.squashfs")
	if out, err := exec.Command("mksquashfs", src, sq, "-comp", "zstd", "-quiet", "-no-progress").CombinedOutput(); err != nil {
		t.Fatalf("mksquashfs: %v %s", err, out)
	}
	isoDir := t.TempDir()
	must(os.MkdirAll(filepath.Join(isoDir, "live"), 0o755))
	data, _ := os.ReadFile(sq)
	must(os.WriteFile(filepath.Join(isoDir, "live/filesystem.squashfs"), data, 0o644))
	isoPath := filepath.Join(t.TempDir(), "x.iso")
	if out, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-J", "-o", isoPath, isoDir).CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v %s", err, out)
	}
	run, err := journal.New(filepath.Join(t.TempDir(), "run"), time.Now())
	must(err)
	defer run.Close()
	out, err := runLua(t, nil, `
		notes.step("Inspect the ISO before boot")
		local img = iso.open(args.iso)
		assert(img.kind == "iso9660")
		local fs = img:squashfs("/live/filesystem.squashfs")
		assert(fs.compression == "zstd", fs.compression)
		assert(fs:exists("/pre_nixos/root_key.pub"))
		assert(not fs:exists("/pre_nixos/missing"))
		local st = fs:stat("unit")
		assert(st.type == "link" and st.target == "/etc/systemd/system/pre-nixos.service", st.line)
		local data, truncated = fs:read("unit")
		assert(data == "[Unit]\n" and truncated == false)
		local n = 0
		fs:walk(function(e) n = n + 1 end)
		local ls = {}
		for _, e in ipairs(fs:list("/")) do ls[#ls+1] = e.line end
		local p = notes.save("ls-squashfs.txt", table.concat(ls, "\n"))
		notes.observe("the squashfs holds the key and the unit", {evidence = p})
		local ok, err = pcall(function() return fs:stat("/nope") end)
		assert(not ok and err.kind == "notfound", tostring(err))
		ok, err = pcall(function() return img:squashfs("/live") end)
		assert(not ok and err.kind == "usage", tostring(err))
		notes.command("unsquashfs -ll", {output = table.concat(ls, "\n"), code = 0})
		assert(#img:boot() == 0)
		local d = diff.lines("a\nb\nc\n", "a\nB\nc\n", {a_name = "poweroff", b_name = "systemctl"})
		assert(d:find("--- poweroff", 1, true) and d:find("-b\n+B", 1, true), d)
		assert(diff.lines("x\n", "x\n") == "")
		local changes = iso.diff(img, args.iso)
		assert(#changes == 0)
		notes.conclude("assets present: " .. n .. " entries")
		print(notes.path())
	`, nil, Options{Run: run, Args: map[string]string{"iso": isoPath}})
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(strings.TrimSpace(out))
	must(err)
	for _, want := range []string{"## 1. Inspect the ISO before boot", "[artifacts/ls-squashfs.txt](artifacts/ls-squashfs.txt)",
		"Ran** `unsquashfs -ll` **→ exit 0**", "Concluded:** assets present", "Notes closed at"} {
		if !strings.Contains(string(text), want) {
			t.Fatalf("notes.md lacks %q:\n%s", want, text)
		}
	}
}
