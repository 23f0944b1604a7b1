package warm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeEntry saves a made-up checkpoint of size bytes as the state name.
func fakeEntry(t *testing.T, c *Cache, name string, size int) *Entry {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "state.bin"), []byte(strings.Repeat("x", size)), 0o444); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "checkpoint.json"), []byte(`{"state":"state.bin"}`), 0o444)
	key := NewKey(name, []Input{Text("ready", "source", name)})
	e := &Entry{Key: key, Created: time.Now()}
	if err := c.put(e, src); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestListVerifyRemove(t *testing.T) {
	c, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	a := fakeEntry(t, c, "a", 1000)
	time.Sleep(10 * time.Millisecond)
	b := fakeEntry(t, c, "b", 2000)
	list, err := c.List()
	if err != nil || len(list) != 2 || list[0].Key.Hash != b.Key.Hash || list[1].Bytes() != 1000+int64(len(`{"state":"state.bin"}`)) {
		t.Fatalf("list %v %v", list, err)
	}
	got, err := c.read(a.Key.Hash)
	if err != nil || got.verify() != nil {
		t.Fatalf("a whole entry does not verify: %v %v", err, got.verify())
	}
	// A truncated state and a changed one are both refused.
	p := filepath.Join(got.Dir(), "state.bin")
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte(strings.Repeat("x", 999)), 0o644)
	if err := got.verify(); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("truncated: %v", err)
	}
	os.WriteFile(p, []byte(strings.Repeat("y", 1000)), 0o644)
	if err := got.verify(); err == nil || !strings.Contains(err.Error(), "content changed") {
		t.Fatalf("changed: %v", err)
	}
	if _, err := c.Remove(context.Background(), "ab"); err == nil {
		t.Fatal("a 2-character prefix was taken")
	}
	gone, err := c.Remove(context.Background(), a.Key.Hash[:6])
	if err != nil || len(gone) != 1 {
		t.Fatalf("remove: %v %v", gone, err)
	}
	if _, err := os.Stat(got.Dir()); !os.IsNotExist(err) {
		t.Fatalf("the entry's directory is still there: %v", err)
	}
}

// TestPruneLeastRecentlyUsed: the bound keeps the most recently used.
func TestPruneLeastRecentlyUsed(t *testing.T) {
	c, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var es []*Entry
	for _, n := range []string{"old", "mid", "new"} {
		es = append(es, fakeEntry(t, c, n, 10000))
		time.Sleep(10 * time.Millisecond)
	}
	es[0].touch() // "old" was used last: it stays
	gone, err := c.Prune(context.Background(), 25000)
	if err != nil || len(gone) != 1 || gone[0].Key.Name != "mid" {
		t.Fatalf("pruned %v %v", names(gone), err)
	}
	left, _ := c.List()
	if len(left) != 2 || left[0].Key.Name != "old" {
		t.Fatalf("left %v", names(left))
	}
}

func names(es []*Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Key.Name)
	}
	return out
}

// TestLockExcludes: an exclusive lock waits for a shared one, and gives up
// with the context.
func TestLockExcludes(t *testing.T) {
	c, err := Open(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := c.lock(context.Background(), "k", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.lock(ctx, "k", true); err == nil {
		t.Fatal("an exclusive lock was taken beside a shared one")
	}
	var wg sync.WaitGroup
	wg.Add(1)
	got := make(chan time.Time, 1)
	go func() {
		defer wg.Done()
		u, err := c.lock(context.Background(), "k", true)
		if err == nil {
			got <- time.Now()
			u()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	released := time.Now()
	unlock()
	wg.Wait()
	if at := <-got; at.Before(released) {
		t.Fatal("the exclusive lock did not wait")
	}
}

func TestDiffAndExplain(t *testing.T) {
	old := NewKey("subject", []Input{Text("ready", "source", "a"), {Kind: "file", Name: "/x.iso", Hash: "1"}, {Kind: "module", Name: "gone", Hash: "2"}})
	now := NewKey("subject", []Input{Text("ready", "source", "b"), {Kind: "file", Name: "/x.iso", Hash: "1"}, {Kind: "file", Name: "/y.img", Hash: "3"}})
	d := strings.Join(Diff(now, old), "\n")
	for _, want := range []string{`ready source: changed ("b", was "a")`, "file /y.img: new", "module gone: gone"} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	if strings.Contains(d, "/x.iso") {
		t.Errorf("an unchanged input is listed:\n%s", d)
	}
	if old.Hash == now.Hash || NewKey("subject", old.Inputs).Hash != old.Hash {
		t.Error("keys do not follow their inputs")
	}
}

func TestFilesOf(t *testing.T) {
	d := t.TempDir()
	for _, n := range []string{"k", "i.gz", "a,b.iso"} {
		os.WriteFile(filepath.Join(d, n), []byte("x"), 0o644)
	}
	argv := []string{"qemu", "-kernel", d + "/k", "-initrd", d + "/i.gz",
		"-drive", "file=" + strings.ReplaceAll(d+"/a,b.iso", ",", ",,") + ",format=raw,media=cdrom",
		"-chardev", "socket,path=" + placeholderDir + "/serial.sock", "-append", "console=ttyS0 root=/dev/nope"}
	got := filesOf(argv)
	want := []string{d + "/a,b.iso", d + "/i.gz", d + "/k"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}
