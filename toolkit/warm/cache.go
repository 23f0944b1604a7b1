// Package warm keeps guests brought to a state — booted, logged in, at a
// shell prompt — as checkpoints in a cache that runs share, so that the
// next run asking for the same state restores it in about a second instead
// of booting again. A state is named by a key over everything that can
// change it (see KeyFor); any change is a miss, and `vmscript warm ls
// --explain` says which input changed. The cache lives under the user's
// cache directory, is safe for runs that miss together (one builds, the
// other waits and restores), is bounded in size (least recently used
// entries go first), and never restores an entry whose files do not match
// the sums it recorded.
//
//	cache, _ := warm.Open("", 0)
//	res, err := cache.Start(ctx, pool, warm.Request{Spec: spec, Ready: inputs, Prepare: login})
//	// res.Machine runs, res.Shell is at its prompt, res.Hit says how.
package warm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultMaxBytes bounds the cache when Open is given 0.
const DefaultMaxBytes = 8 << 30

// Layout of the cache directory.
const (
	entriesDir  = "entries"
	locksDir    = "locks"
	buildDir    = "building"
	requestsDir = "requests"
	entryFile   = "entry.json"
	usedFile    = "used"
)

// DefaultDir is ${XDG_CACHE_HOME:-$HOME/.cache}/vmscript/warm.
func DefaultDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "vmscript", "warm")
}

// Cache is a directory of warm states.
type Cache struct {
	dir  string
	max  int64
	sums *sumCache
}

// Open opens (creating) the cache in dir ("" means DefaultDir) bounded to
// max bytes (0 means DefaultMaxBytes).
func Open(dir string, max int64) (*Cache, error) {
	if dir == "" {
		dir = DefaultDir()
	}
	if max <= 0 {
		max = DefaultMaxBytes
	}
	for _, sub := range []string{entriesDir, locksDir, buildDir, requestsDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "warm: cache directory")
		}
	}
	return &Cache{dir: dir, max: max, sums: &sumCache{path: filepath.Join(dir, "sums.json")}}, nil
}

// Dir returns the cache's directory.
func (c *Cache) Dir() string { return c.dir }

// Entry is a warm state in the cache.
type Entry struct {
	// Key is what the state was made from.
	Key Key `json:"key"`
	// Created is when it was saved.
	Created time.Time `json:"created"`
	// Took is how long the cold boot and ready took when it was made.
	Took time.Duration `json:"took_ns"`
	// Files are the checkpoint's files with their sizes and sums.
	Files []FileSum `json:"files"`
	// Shell says a shell was at its prompt (as User) when the state was
	// saved: a restore resumes it.
	Shell bool   `json:"shell"`
	User  string `json:"user,omitempty"`
	// Leased are the MACs whose LAN leases the guest held when saved: a
	// restore renews those (a guest that had none, like one whose NIC never
	// came up, is left as it was).
	Leased []string `json:"leased,omitempty"`
	// Run is the run directory that made it.
	Run string `json:"run,omitempty"`

	dir  string
	used time.Time
}

// FileSum is one file of an entry.
type FileSum struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Dir returns the entry's directory (the checkpoint's files).
func (e *Entry) Dir() string { return e.dir }

// Bytes is the entry's size on disk.
func (e *Entry) Bytes() int64 {
	var n int64
	for _, f := range e.Files {
		n += f.Bytes
	}
	return n
}

// LastUsed is when the entry was last made or restored.
func (e *Entry) LastUsed() time.Time { return e.used }

func (c *Cache) entryDir(hash string) string { return filepath.Join(c.dir, entriesDir, hash) }

// read loads the entry of hash (nil when there is none).
func (c *Cache) read(hash string) (*Entry, error) {
	dir := c.entryDir(hash)
	data, err := os.ReadFile(filepath.Join(dir, entryFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e Entry
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("%s: %v", entryFile, err)
	}
	e.dir = dir
	if st, err := os.Stat(filepath.Join(dir, usedFile)); err == nil {
		e.used = st.ModTime()
	} else {
		e.used = e.Created
	}
	return &e, nil
}

// verify checks every file of the entry against its recorded size and sum.
func (e *Entry) verify() error {
	for _, f := range e.Files {
		p := filepath.Join(e.dir, f.Name)
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s: %v", f.Name, err)
		}
		if st.Size() != f.Bytes {
			return fmt.Errorf("%s is %d bytes, %d were saved (truncated?)", f.Name, st.Size(), f.Bytes)
		}
		sum, err := hashFile(p)
		if err != nil {
			return fmt.Errorf("%s: %v", f.Name, err)
		}
		if sum != f.SHA256 {
			return fmt.Errorf("%s: its content changed since it was saved (sha256 %s, saved %s)", f.Name, sum[:12], f.SHA256[:12])
		}
	}
	return nil
}

// touch records a use of the entry, for least-recently-used pruning.
func (e *Entry) touch() {
	p := filepath.Join(e.dir, usedFile)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		os.WriteFile(p, nil, 0o644)
	}
	e.used = now
}

// lock takes the lock of hash, shared or exclusive, waiting for it until
// ctx ends.
func (c *Cache) lock(ctx context.Context, hash string, exclusive bool) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(c.dir, locksDir, hash+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "warm: lock")
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, vmerr.Wrap(vmerr.IO, err, "warm: lock")
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, vmerr.Wrap(vmerr.DoneKind(ctx), ctx.Err(), "warm: waiting for another run that builds the same state")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// List returns the entries, most recently used first; entries that cannot
// be read are skipped.
func (c *Cache) List() ([]*Entry, error) {
	des, err := os.ReadDir(filepath.Join(c.dir, entriesDir))
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "warm: listing the cache")
	}
	var out []*Entry
	for _, de := range des {
		if e, err := c.read(de.Name()); err == nil && e != nil {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].used.After(out[j].used) })
	return out, nil
}

// Remove deletes the entries whose hash starts with prefix (at least 4
// characters) and returns them.
func (c *Cache) Remove(ctx context.Context, prefix string) ([]*Entry, error) {
	if len(prefix) < 4 {
		return nil, vmerr.New(vmerr.Usage, "warm: give at least 4 characters of an entry's hash, got %q", prefix)
	}
	all, err := c.List()
	if err != nil {
		return nil, err
	}
	var gone []*Entry
	for _, e := range all {
		if strings.HasPrefix(e.Key.Hash, prefix) {
			if err := c.remove(ctx, e.Key.Hash); err != nil {
				return gone, err
			}
			gone = append(gone, e)
		}
	}
	if len(gone) == 0 {
		return nil, vmerr.New(vmerr.NotFound, "warm: no entry's hash starts with %q", prefix)
	}
	return gone, nil
}

// remove deletes one entry under its exclusive lock (a run restoring it
// holds the shared lock).
func (c *Cache) remove(ctx context.Context, hash string) error {
	unlock, err := c.lock(ctx, hash, true)
	if err != nil {
		return err
	}
	defer unlock()
	return removeDir(c.entryDir(hash))
}

// removeDir removes a directory of read-only files.
func removeDir(dir string) error {
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		return vmerr.Wrap(vmerr.IO, err, "warm: removing %s", dir)
	}
	return nil
}

// Prune removes least recently used entries until the cache holds at most
// max bytes (0: the cache's bound), and entries that cannot be read, and
// half-built states of runs that are gone; it returns what it removed.
func (c *Cache) Prune(ctx context.Context, max int64) ([]*Entry, error) {
	if max <= 0 {
		max = c.max
	}
	c.pruneBuilds()
	all, err := c.List()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, e := range all {
		total += e.Bytes()
	}
	var gone []*Entry
	for i := len(all) - 1; i >= 0 && total > max; i-- {
		if err := c.remove(ctx, all[i].Key.Hash); err != nil {
			return gone, err
		}
		total -= all[i].Bytes()
		gone = append(gone, all[i])
	}
	return gone, nil
}

// pruneBuilds removes building/<pid>-… directories of processes that are
// gone.
func (c *Cache) pruneBuilds() {
	des, _ := os.ReadDir(filepath.Join(c.dir, buildDir))
	for _, de := range des {
		pid, err := strconv.Atoi(strings.SplitN(de.Name(), "-", 2)[0])
		if err == nil && !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		removeDir(filepath.Join(c.dir, buildDir, de.Name()))
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
