package warm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

// TestKeyForMissesOnEachInput: the same spec and ready give the same key;
// a change of the options, ready's source, a module, the kernel's or the
// initrd's or the ISO's content, or QEMU's binary gives another, and Diff
// names that input alone.
func TestKeyForMissesOnEachInput(t *testing.T) {
	d := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(d, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kernel, initrd, isoPath := write("vmlinuz", "kernel 1", 0o644), write("initrd.gz", "initrd 1", 0o644), write("a.iso", "iso 1", 0o644)
	bin := write("qemu-system-x86_64", "#!/bin/sh\necho 'QEMU emulator version 9.9.9'\n", 0o755)
	c, err := Open(filepath.Join(d, "cache"), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	spec := func(memory string) machine.Spec {
		return machine.Spec{QEMU: qemu.Config{Name: "w", Binary: bin, Memory: memory, Accel: "tcg", ISO: isoPath,
			Devices: []qemu.Device{qemu.DirectBoot{Kernel: kernel, Initrd: initrd, Append: "console=ttyS0"}}}}
	}
	ready := []Input{Text("ready", "source", "return vm:shell()"), Text("module", "vmscript.x", "return {}")}
	key := func(s machine.Spec, r []Input) Key {
		t.Helper()
		k, err := c.KeyFor(context.Background(), s, r)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key(spec("256M"), ready)
	if again := key(spec("256M"), ready); again.Hash != base.Hash {
		t.Fatalf("the same inputs give two keys:\n%s", strings.Join(Diff(again, base), "\n"))
	}
	// touch rewrites a file with new content and a later time (the sums
	// are cached by path, size and time).
	touch := func(p, content string) {
		write(filepath.Base(p), content, 0o755)
		later := time.Now().Add(time.Minute)
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name   string
		change func() Key
		want   string
	}{
		{"options", func() Key { return key(spec("512M"), ready) }, "options argv: changed"},
		{"ready", func() Key {
			return key(spec("256M"), []Input{Text("ready", "source", "return vm:shell{}"), ready[1]})
		}, "ready source: changed"},
		{"module", func() Key {
			return key(spec("256M"), []Input{ready[0], Text("module", "vmscript.x", "return {1}")})
		}, "module vmscript.x: changed"},
		{"kernel", func() Key { touch(kernel, "kernel 2"); return key(spec("256M"), ready) }, "file " + kernel + ": changed"},
		{"initrd", func() Key { touch(initrd, "initrd 2"); return key(spec("256M"), ready) }, "file " + initrd + ": changed"},
		{"iso", func() Key { touch(isoPath, "iso 2"); return key(spec("256M"), ready) }, "file " + isoPath + ": changed"},
		{"qemu", func() Key {
			touch(bin, "#!/bin/sh\necho 'QEMU emulator version 9.9.10'\n")
			return key(spec("256M"), ready)
		}, "qemu " + bin + ": changed"},
	} {
		before := key(spec("256M"), ready)
		now := c.change()
		diff := Diff(now, before)
		if now.Hash == before.Hash || len(diff) != 1 || !strings.HasPrefix(diff[0], c.want) {
			t.Errorf("%s: key %s (before %s), diff %q, want one line %q…", c.name, now.Hash[:12], before.Hash[:12], diff, c.want)
		}
	}
}
