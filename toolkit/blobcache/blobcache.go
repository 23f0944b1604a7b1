// Package blobcache keeps files extracted from boot media — an ISO's own
// kernel and initrd, to boot them directly — in a content-addressed cache
// on the host: sha256/<hex digest> holds the bytes (read-only), and
// refs/<digest of a key> names the content a source had, so that the
// next extraction from an unchanged source is a lookup plus a check.
//
// Fetch streams the source into a temporary file in the cache, hashing
// while it copies, checks the byte count against the size the source
// announced (a truncated ISO is refused, not cached), syncs, and renames
// the file into place: a reader never sees a partial blob. A reused blob
// is checked again (size, then sha256; about 0.1 s for 40 MB); a missing,
// truncated or corrupt one is replaced and the reason reported in
// Blob.Repaired. Two processes fetching the same key serialise on a lock
// file (polled, so the context's deadline holds); two keys with the same
// content rename identical bytes onto one path, which is atomic.
package blobcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Cache is a content-addressed cache directory.
type Cache struct {
	dir string
}

// Blob is a file in the cache.
type Blob struct {
	// Path is the blob's file: <dir>/sha256/<SHA256>, read-only.
	Path string `json:"path"`
	// SHA256 is the hex digest of the content.
	SHA256 string `json:"sha256"`
	// Size is the content's length in bytes.
	Size int64 `json:"size"`
	// Reused is true when the content was already cached for the key.
	Reused bool `json:"reused"`
	// Repaired says why a cached copy was replaced ("" when it was not).
	Repaired string `json:"repaired,omitempty"`
}

// Source is content to cache.
type Source struct {
	// Key identifies the content without reading it: the same key must
	// mean the same bytes (see FileKey).
	Key string
	// Name names the source in messages ("/x.iso:/install.amd/vmlinuz").
	Name string
	// Size is the number of bytes Open yields; -1 when unknown.
	Size int64
	// Open returns the content.
	Open func() (io.ReadCloser, error)
}

// DirEnv names the environment variable that moves the default cache.
const DirEnv = "VMSCRIPT_BLOB_DIR"

// DefaultDir is $VMSCRIPT_BLOB_DIR, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/vmscript/blobs.
func DefaultDir() (string, error) {
	if d := os.Getenv(DirEnv); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", vmerr.Wrap(vmerr.IO, err, "blob cache: no cache directory")
	}
	return filepath.Join(base, "vmscript", "blobs"), nil
}

// Open opens (creating) the cache at dir.
func Open(dir string) (*Cache, error) {
	for _, d := range []string{"sha256", "refs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "blob cache %s", dir).With("path", dir)
		}
	}
	return &Cache{dir: dir}, nil
}

// Dir is the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// Path is where the blob with the given digest lives.
func (c *Cache) Path(sum string) string { return filepath.Join(c.dir, "sha256", sum) }

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func validSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Fetch returns the cached copy of src's content, extracting it when the
// key is new or its cached copy is damaged.
func (c *Cache) Fetch(ctx context.Context, src Source) (Blob, error) {
	ref := filepath.Join(c.dir, "refs", digest(src.Key))
	unlock, err := lock(ctx, ref+".lock")
	if err != nil {
		return Blob{}, err
	}
	defer unlock()
	repaired := ""
	if data, err := os.ReadFile(ref); err == nil {
		sum := strings.TrimSpace(string(data))
		if !validSum(sum) {
			repaired = fmt.Sprintf("the cache's record for %s was unreadable", src.Name)
		} else if b, why := c.check(sum, src.Size); why == "" {
			b.Reused = true
			return b, nil
		} else {
			repaired = why
		}
	}
	b, err := c.extract(ctx, src)
	if err != nil {
		return Blob{}, err
	}
	if err := writeAtomic(ref, []byte(b.SHA256+"\n"), filepath.Join(c.dir, "tmp")); err != nil {
		return Blob{}, vmerr.Wrap(vmerr.IO, err, "blob cache: record %s", src.Name)
	}
	b.Repaired = repaired
	return b, nil
}

// check verifies the blob sum: it exists, has the expected size (when
// size >= 0) and hashes to sum. why says what is wrong.
func (c *Cache) check(sum string, size int64) (Blob, string) {
	p := c.Path(sum)
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return Blob{}, fmt.Sprintf("cache entry %s was missing; extracted again", p)
	}
	if err != nil {
		return Blob{}, fmt.Sprintf("cache entry %s: %v; extracted again", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Blob{}, fmt.Sprintf("cache entry %s: %v; extracted again", p, err)
	}
	if size >= 0 && st.Size() != size {
		return Blob{}, fmt.Sprintf("cache entry %s was truncated or damaged (%d bytes, want %d); replaced", p, st.Size(), size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return Blob{}, fmt.Sprintf("cache entry %s: read: %v; replaced", p, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return Blob{}, fmt.Sprintf("cache entry %s was corrupt (its content hashes to %s); replaced", p, got)
	}
	return Blob{Path: p, SHA256: sum, Size: st.Size()}, ""
}

// Verify checks the blob with the given digest, refusing a damaged one.
func (c *Cache) Verify(sum string) (Blob, error) {
	if !validSum(sum) {
		return Blob{}, vmerr.New(vmerr.Usage, "blob cache: %q is not a sha256 digest", sum)
	}
	b, why := c.check(sum, -1)
	if why != "" {
		kind := vmerr.IO
		if strings.Contains(why, "missing") {
			kind = vmerr.NotFound
		}
		return Blob{}, vmerr.New(kind, "blob cache: %s", strings.TrimSuffix(strings.TrimSuffix(why, "; replaced"), "; extracted again")).With("path", c.Path(sum))
	}
	return b, nil
}

// extract copies src into a temporary file, hashing it, and renames it to
// its digest.
func (c *Cache) extract(ctx context.Context, src Source) (Blob, error) {
	r, err := src.Open()
	if err != nil {
		return Blob{}, err
	}
	defer r.Close()
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "tmp"), "blob-*")
	if err != nil {
		return Blob{}, vmerr.Wrap(vmerr.IO, err, "blob cache: extract %s", src.Name)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := copyContext(ctx, io.MultiWriter(tmp, h), r)
	if err != nil {
		return Blob{}, err
	}
	if src.Size >= 0 && n != src.Size {
		return Blob{}, vmerr.New(vmerr.IO, "blob cache: %s gave %d bytes, want %d (a truncated or damaged medium?); not cached", src.Name, n, src.Size).
			With("path", src.Name)
	}
	err = tmp.Chmod(0o444)
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		err = tmp.Close()
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err == nil {
		err = os.Rename(tmp.Name(), c.Path(sum))
	}
	if err != nil {
		return Blob{}, vmerr.Wrap(vmerr.IO, err, "blob cache: store %s", src.Name)
	}
	done = true
	syncDir(filepath.Join(c.dir, "sha256"))
	return Blob{Path: c.Path(sum), SHA256: sum, Size: n}, nil
}

// copyContext copies, checking ctx between chunks.
func copyContext(ctx context.Context, w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, vmerr.New(vmerr.DoneKind(ctx), "blob cache: extraction stopped after %d bytes: %v", n, err)
		}
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return n, vmerr.Wrap(vmerr.IO, werr, "blob cache: write")
			}
			n += int64(k)
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			var ve *vmerr.Error
			if errors.As(err, &ve) {
				return n, ve
			}
			return n, vmerr.Wrap(vmerr.IO, err, "blob cache: read the source after %d bytes", n)
		}
	}
}

// writeAtomic writes a small file through a temporary one and a rename.
func writeAtomic(p string, data []byte, tmpDir string) error {
	f, err := os.CreateTemp(tmpDir, "ref-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	syncDir(filepath.Dir(p))
	return nil
}

func syncDir(d string) {
	if f, err := os.Open(d); err == nil {
		f.Sync()
		f.Close()
	}
}

// lock takes an exclusive flock on p, polling until ctx is done.
func lock(ctx context.Context, p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "blob cache: lock %s", p)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, vmerr.Wrap(vmerr.IO, err, "blob cache: lock %s", p)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, vmerr.New(vmerr.DoneKind(ctx), "blob cache: waited for another process extracting the same file (%s): %v", p, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// FileKey identifies content inside a host file by the file's identity
// (device, inode, size, modification time) and the given parts (a path
// inside it, its size): if the host file is replaced or modified, the key
// changes.
func FileKey(hostPath string, parts ...string) (string, error) {
	abs, err := filepath.Abs(hostPath)
	if err != nil {
		return "", vmerr.Wrap(vmerr.IO, err, "blob cache: %s", hostPath)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", vmerr.Wrap(vmerr.NotFound, err, "blob cache: %s", hostPath).With("path", hostPath)
	}
	id := fmt.Sprintf("%s size=%d mtime=%d", abs, st.Size(), st.ModTime().UnixNano())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id += fmt.Sprintf(" dev=%d ino=%d", sys.Dev, sys.Ino)
	}
	return strings.Join(append([]string{id}, parts...), "\x00"), nil
}
