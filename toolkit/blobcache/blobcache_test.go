package blobcache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func content(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}

func sumOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// source serves data, counting opens; short cuts it to simulate a
// truncated medium.
func source(data []byte, opens *int32, short int) Source {
	return Source{Key: "key-" + sumOf(data), Name: "test:/vmlinuz", Size: int64(len(data)),
		Open: func() (io.ReadCloser, error) {
			atomic.AddInt32(opens, 1)
			return io.NopCloser(bytes.NewReader(data[:len(data)-short])), nil
		}}
}

func fetch(t *testing.T, c *Cache, src Source) Blob {
	t.Helper()
	b, err := c.Fetch(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFetchReuseRepair(t *testing.T) {
	c, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := content(3 << 20)
	var opens int32
	src := source(data, &opens, 0)
	b := fetch(t, c, src)
	if b.Reused || b.SHA256 != sumOf(data) || b.Size != int64(len(data)) || b.Path != c.Path(b.SHA256) {
		t.Fatalf("first: %+v", b)
	}
	if got, _ := os.ReadFile(b.Path); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if st, _ := os.Stat(b.Path); st.Mode().Perm() != 0o444 {
		t.Errorf("mode %v", st.Mode())
	}
	start := time.Now()
	if b2 := fetch(t, c, src); !b2.Reused || b2.Repaired != "" || opens != 1 {
		t.Fatalf("second: %+v, %d opens", b2, opens)
	}
	t.Logf("reuse of %d bytes (size and sha256 checked): %v", len(data), time.Since(start))

	damage := []struct {
		name, want string
		do         func()
	}{
		{"truncated", "was truncated or damaged (1000 bytes, want 3145728); replaced", func() { os.Chmod(b.Path, 0o644); os.Truncate(b.Path, 1000) }},
		{"corrupt", "was corrupt (its content hashes to", func() {
			os.Chmod(b.Path, 0o644)
			f, _ := os.OpenFile(b.Path, os.O_WRONLY, 0)
			f.WriteAt([]byte{0xff, 0xfe}, 12345)
			f.Close()
		}},
		{"missing", "was missing", func() { os.Remove(b.Path) }},
		{"bad ref", "record for test:/vmlinuz was unreadable", func() {
			os.WriteFile(filepath.Join(c.Dir(), "refs", digest(src.Key)), []byte("garbage"), 0o644)
		}},
	}
	for _, d := range damage {
		d.do()
		got := fetch(t, c, src)
		if got.Reused || !strings.Contains(got.Repaired, d.want) || got.SHA256 != sumOf(data) {
			t.Errorf("%s: %+v", d.name, got)
		}
		t.Logf("%s: %s", d.name, got.Repaired)
		if v, err := c.Verify(got.SHA256); err != nil || v.Size != int64(len(data)) {
			t.Errorf("%s: verify after repair: %v", d.name, err)
		}
	}
	os.Chmod(b.Path, 0o644)
	os.Truncate(b.Path, 10)
	_, err = c.Verify(b.SHA256)
	if vmerr.KindOf(err) != vmerr.IO || !strings.Contains(err.Error(), "was corrupt") {
		t.Errorf("verify refuses a damaged blob: %v", err)
	}
	if _, err := c.Verify("nope"); vmerr.KindOf(err) != vmerr.Usage {
		t.Errorf("verify of a bad digest: %v", err)
	}
}

func TestTruncatedSourceNotCached(t *testing.T) {
	c, _ := Open(t.TempDir())
	var opens int32
	src := source(content(100000), &opens, 10)
	_, err := c.Fetch(context.Background(), src)
	if vmerr.KindOf(err) != vmerr.IO || !strings.Contains(err.Error(), "gave 99990 bytes, want 100000") {
		t.Fatalf("%v", err)
	}
	for _, d := range []string{"sha256", "tmp"} {
		if list, _ := os.ReadDir(filepath.Join(c.Dir(), d)); len(list) != 0 {
			t.Errorf("%s holds %d files after a failed extraction", d, len(list))
		}
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), "refs", digest(src.Key))); err == nil {
		t.Error("a ref was written for a failed extraction")
	}
}

func TestLockDeadline(t *testing.T) {
	c, _ := Open(t.TempDir())
	var opens int32
	src := source(content(10), &opens, 0)
	unlock, err := lock(context.Background(), filepath.Join(c.Dir(), "refs", digest(src.Key))+".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = c.Fetch(ctx, src)
	if vmerr.KindOf(err) != vmerr.Timeout || !strings.Contains(err.Error(), "another process extracting the same file") {
		t.Fatalf("%v", err)
	}
}

// TestHelperFetch is run by TestTwoProcesses in child processes.
func TestHelperFetch(t *testing.T) {
	dir := os.Getenv("BLOBCACHE_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := content(8 << 20)
	src := Source{Key: "shared", Name: "helper", Size: int64(len(data)), Open: func() (io.ReadCloser, error) {
		// A slow source, so that the processes overlap.
		time.Sleep(300 * time.Millisecond)
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
	b, err := c.Fetch(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(b)
	fmt.Printf("BLOB %s\n", out)
}

func TestTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 0; i < 2; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFetch$", "-test.v")
		cmd.Env = append(os.Environ(), "BLOBCACHE_HELPER_DIR="+dir)
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	reused := 0
	var sums []string
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v\n%s", i, err, outs[i])
		}
		line := outs[i].String()
		k := strings.Index(line, "BLOB ")
		if k < 0 {
			t.Fatalf("helper %d said:\n%s", i, line)
		}
		var b Blob
		json.Unmarshal([]byte(strings.SplitN(line[k+5:], "\n", 2)[0]), &b)
		if b.Reused {
			reused++
		}
		sums = append(sums, b.SHA256)
	}
	if reused != 1 || sums[0] != sums[1] || sums[0] != sumOf(content(8<<20)) {
		t.Fatalf("two processes: %d reused, sums %v", reused, sums)
	}
	if list, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(list) != 0 {
		t.Errorf("tmp holds %d files", len(list))
	}
}

func TestFromImage(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed")
	}
	src := t.TempDir()
	kernel := content(1 << 20)
	os.MkdirAll(filepath.Join(src, "boot"), 0o755)
	os.WriteFile(filepath.Join(src, "boot/vmlinuz-6.1"), kernel, 0o644)
	os.Symlink("vmlinuz-6.1", filepath.Join(src, "boot/vmlinuz"))
	isoPath := filepath.Join(t.TempDir(), "x.iso")
	if b, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-o", isoPath, src).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, b)
	}
	im, err := iso.Open(isoPath)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	c, _ := Open(t.TempDir())
	b, err := c.FromImage(context.Background(), im, "/boot/vmlinuz")
	if err != nil || b.Reused || b.SHA256 != sumOf(kernel) {
		t.Fatalf("%+v %v", b, err)
	}
	if b, err = c.FromImage(context.Background(), im, "boot/vmlinuz-6.1"); err != nil || !b.Reused {
		t.Fatalf("second: %+v %v", b, err)
	}
	// A changed ISO is a new key: extracted again, same blob.
	later := time.Now().Add(time.Hour)
	os.Chtimes(isoPath, later, later)
	if b2, err := c.FromImage(context.Background(), im, "/boot/vmlinuz"); err != nil || b2.Reused || b2.Path != b.Path {
		t.Fatalf("after touching the ISO: %+v %v", b2, err)
	}
	if _, err := c.FromImage(context.Background(), im, "/boot"); vmerr.KindOf(err) != vmerr.Usage {
		t.Errorf("directory: %v", err)
	}
	if _, err := c.FromImage(context.Background(), im, "/nope"); vmerr.KindOf(err) != vmerr.NotFound {
		t.Errorf("missing: %v", err)
	}
}
