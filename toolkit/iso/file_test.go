package iso

import (
	"errors"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// plainTree is a tree without symlinks, for fstest.TestFS (which compares
// ReadDir with Stat, and Stat follows links).
func plainTree(t *testing.T) string {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "boot/grub/grub.cfg"), "set timeout=5\n")
	write(t, filepath.Join(dir, "deep/a/b/leaf.txt"), "leaf\n")
	big := make([]byte, 300000)
	for i := range big {
		big[i] = byte(i*31 + i>>8)
	}
	write(t, filepath.Join(dir, "big.bin"), string(big))
	return dir
}

func checkOpen(t *testing.T, im *Image) {
	t.Helper()
	f, err := im.Open("/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, _, err := im.Read("/big.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	if f.Size() != int64(len(want)) || f.Entry().Path != "/big.bin" {
		t.Fatalf("size %d entry %v", f.Size(), f.Entry())
	}
	part := make([]byte, 1000)
	if _, err := f.ReadAt(part, 123457); err != nil || string(part) != string(want[123457:124457]) {
		t.Fatalf("ReadAt: %v", err)
	}
	all, err := io.ReadAll(f)
	if err != nil || string(all) != string(want) {
		t.Fatalf("ReadAll: %d bytes, %v", len(all), err)
	}
	if _, err := im.Open("/boot"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("open dir: %v", err)
	}
	if err := fstest.TestFS(im.FS(), "boot/grub/grub.cfg", "deep/a/b/leaf.txt", "big.bin"); err != nil {
		t.Fatal(err)
	}
	_, err = iofs.Stat(im.FS(), "no/such")
	if !errors.Is(err, iofs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	data, err := iofs.ReadFile(im.FS(), "boot/grub/grub.cfg")
	if err != nil || string(data) != "set timeout=5\n" {
		t.Fatalf("ReadFile: %q %v", data, err)
	}
}

func TestOpenAndFS(t *testing.T) {
	src := plainTree(t)
	t.Run("iso", func(t *testing.T) {
		im, err := Open(mkiso(t, src, "-R", "-J"))
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		checkOpen(t, im)
	})
	t.Run("squashfs", func(t *testing.T) {
		im, err := OpenSquashfs(mksquash(t, src, "xz"))
		if err != nil {
			t.Fatal(err)
		}
		defer im.Close()
		checkOpen(t, im)
	})
}

func TestFSFollowsLinks(t *testing.T) {
	src := tree(t, t.TempDir())
	im, err := Open(mkiso(t, src, "-R", "-J"))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	data, err := iofs.ReadFile(im.FS(), "units/pre-nixos.service")
	if err != nil || !strings.HasPrefix(string(data), "[Service]") {
		t.Fatalf("through a symlinked directory: %q %v", data, err)
	}
	if _, err := iofs.ReadFile(im.FS(), "../etc/passwd"); !errors.Is(err, iofs.ErrInvalid) {
		t.Fatalf("invalid path: %v", err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Fatal(err)
	}
}
