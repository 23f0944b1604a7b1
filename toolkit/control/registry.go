package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// File names in a control directory: ID.sock is a run's socket, ID.json
// its registry entry, lock serializes registrations and clean-ups.
const (
	socketExt = ".sock"
	entryExt  = ".json"
	lockName  = "lock"
)

// maxIDTries bounds the suffixes Register tries for a taken id.
const maxIDTries = 99

// lockTimeout bounds the wait for the registry lock (a variable for the
// tests).
var lockTimeout = 10 * time.Second

// probeTimeout bounds the connection that tells a live run from a stale
// entry.
const probeTimeout = 2 * time.Second

// Entry is a run's line in the registry: what `vmscript ps` and the attach
// commands know of a run before they ask its socket.
type Entry struct {
	// ID names the run: its run directory's name, with "-2", "-3", … when
	// a live run already has that id.
	ID string `json:"id"`
	// PID is the process serving the run.
	PID int `json:"pid"`
	// Script is the script's absolute path ("" for a bare REPL).
	Script string `json:"script"`
	// RunDir is the run directory's absolute path.
	RunDir string `json:"run_dir"`
	// Start is when the run started.
	Start time.Time `json:"start"`
	// Socket is the control socket's path (set by Register and on reading).
	Socket string `json:"socket"`
}

// Registration is a run's place in the registry: its entry, written last,
// and the socket listening under its id.
type Registration struct {
	// Entry is as registered, with ID and Socket set.
	Entry Entry

	dir  string
	ln   *net.UnixListener
	once sync.Once
	err  error
}

// Register gives e a free id in dir (e.ID, or the run directory's name,
// made safe and short enough for a socket path, with a suffix when a live
// run holds it), listens on dir/ID.sock (mode 0600; dir is made 0700 and
// must be the user's own), and then writes dir/ID.json (0600). Stale
// entries of dead runs that stand in the way are removed.
func Register(dir string, e Entry) (*Registration, error) {
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if e.ID == "" {
		e.ID = filepath.Base(e.RunDir)
	}
	base := idBase(e.ID, len(dir))
	for i := 1; i <= maxIDTries; i++ {
		id := base
		if i > 1 {
			id = base + "-" + strconv.Itoa(i)
		}
		if takenLocked(dir, id) || takenElsewhere(dir, id) {
			continue
		}
		return listen(dir, id, e)
	}
	return nil, fmt.Errorf("control: %d live runs already use the id %s in %s", maxIDTries, base, dir)
}

// listen binds dir/id.sock and writes the entry (the lock is held).
func listen(dir, id string, e Entry) (*Registration, error) {
	sock := filepath.Join(dir, id+socketExt)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control: listen: %w", err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: %w", err)
	}
	e.ID, e.Socket = id, sock
	if err := writeEntry(filepath.Join(dir, id+entryExt), e); err != nil {
		ln.Close()
		return nil, err
	}
	return &Registration{Entry: e, dir: dir, ln: ln}, nil
}

// Listener is the run's socket.
func (r *Registration) Listener() *net.UnixListener { return r.ln }

// Close removes the entry, then closes the socket (which removes its file).
// It may be called more than once.
func (r *Registration) Close() error {
	r.once.Do(func() {
		err := os.Remove(filepath.Join(r.dir, r.Entry.ID+entryExt))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.err = err
		}
		if err := r.ln.Close(); err != nil && r.err == nil {
			r.err = err
		}
	})
	return r.err
}

// idBase makes id safe for a file name (letters, digits, '.', '_', '-'; no
// leading dot or dash) and short enough that dir/ID-99.sock fits a socket
// path.
func idBase(id string, dirLen int) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	s := strings.TrimLeft(string(b), ".-")
	if s == "" {
		s = "run"
	}
	room := min(maxSocketPath-dirLen-1-3-len(socketExt), 48)
	if len(s) > room {
		s = s[:room]
	}
	return s
}

// takenLocked reports whether a live run holds id in dir; a stale entry or
// socket under that id is removed (the lock is held, so no registration is
// half done).
func takenLocked(dir, id string) bool {
	entryPath := filepath.Join(dir, id+entryExt)
	sock := filepath.Join(dir, id+socketExt)
	if e, err := readEntry(entryPath); err == nil && alive(e) {
		return true
	}
	_ = os.Remove(entryPath)
	_ = os.Remove(sock)
	return false
}

// takenElsewhere reports whether a live run holds id in another of Dirs()
// (when dir is one of them): an id names one run wherever it registered.
func takenElsewhere(dir, id string) bool {
	all := Dirs()
	if !slices.Contains(all, dir) {
		return false
	}
	for _, d := range all {
		if d == dir || !ownedDir(d) {
			continue
		}
		if e, err := readEntry(filepath.Join(d, id+entryExt)); err == nil && alive(e) {
			return true
		}
	}
	return false
}

// writeEntry writes e to path through a temporary file renamed into place,
// so a reader never sees half an entry.
func writeEntry(path string, e Entry) error {
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("control: registry entry: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("control: registry entry: %w", err)
	}
	return nil
}

// readEntry reads a registry entry; its socket is the one beside it.
func readEntry(path string) (Entry, error) {
	var e Entry
	data, err := os.ReadFile(path)
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("%s: %w", path, err)
	}
	if e.ID != strings.TrimSuffix(filepath.Base(path), entryExt) {
		return e, fmt.Errorf("%s: entry names the id %q", path, e.ID)
	}
	e.Socket = filepath.Join(filepath.Dir(path), e.ID+socketExt)
	return e, nil
}

// alive reports whether the run of e is live: its process exists and its
// socket accepts a connection. A refused or missing socket is a dead run
// (killed, or its pid reused); any other failure to connect counts as
// alive, so a busy run is never cleaned up.
func alive(e Entry) bool {
	if e.PID <= 0 || !pidAlive(e.PID) {
		return false
	}
	c, err := net.DialTimeout("unix", e.Socket, probeTimeout)
	if err == nil {
		c.Close()
		return true
	}
	return !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, fs.ErrNotExist)
}

// pidAlive reports whether a process with pid exists.
func pidAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// lockDir takes dir's registry lock (flock on dir/lock) within
// lockTimeout and returns its release: a process stopped while holding it
// cannot hold up the start of every later run.
func lockDir(dir string) (func(), error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("control: registry lock: %w", err)
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("control: registry lock %s: %w (held for over %s by another vmscript)", path, err, lockTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// List returns the live runs registered in dirs (Dirs() when none are
// given), oldest first, and removes the entries and sockets of dead ones.
// A directory that is missing or not the user's own is skipped.
func List(dirs ...string) []Entry {
	if len(dirs) == 0 {
		dirs = Dirs()
	}
	var out []Entry
	for _, dir := range dirs {
		if !ownedDir(dir) {
			continue
		}
		names, _ := filepath.Glob(filepath.Join(dir, "*"+entryExt))
		var stale []string
		for _, n := range names {
			e, err := readEntry(n)
			if err != nil || !alive(e) {
				stale = append(stale, strings.TrimSuffix(filepath.Base(n), entryExt))
				continue
			}
			out = append(out, e)
		}
		socks, _ := filepath.Glob(filepath.Join(dir, "*"+socketExt))
		for _, s := range socks {
			id := strings.TrimSuffix(filepath.Base(s), socketExt)
			if _, err := os.Stat(filepath.Join(dir, id+entryExt)); errors.Is(err, fs.ErrNotExist) {
				stale = append(stale, id)
			}
		}
		cleanStale(dir, stale)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// cleanStale removes the entries and sockets of ids found stale, after
// checking again under the lock (a run may have registered the id since).
func cleanStale(dir string, ids []string) {
	if len(ids) == 0 {
		return
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return
	}
	defer unlock()
	for _, id := range ids {
		takenLocked(dir, id)
	}
}

// Find returns the live run that query names: its id, its run directory
// (a path, relative to the current directory or absolute), or a prefix of
// exactly one run's id. An exact id wins over a prefix.
func Find(query string, dirs ...string) (Entry, error) {
	runs := List(dirs...)
	if query == "" {
		return Entry{}, errors.New("no run given; `vmscript ps` lists the live runs")
	}
	for _, e := range runs {
		if e.ID == query {
			return e, nil
		}
	}
	if abs, err := filepath.Abs(query); err == nil {
		real, rerr := filepath.EvalSymlinks(abs)
		for _, e := range runs {
			if e.RunDir == abs || rerr == nil && sameDir(e.RunDir, real) {
				return e, nil
			}
		}
	}
	var hits []Entry
	var ids []string
	for _, e := range runs {
		if strings.HasPrefix(e.ID, query) {
			hits = append(hits, e)
			ids = append(ids, e.ID)
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		return Entry{}, fmt.Errorf("no live run is %q (an id, a run directory or an id's prefix); `vmscript ps` lists the live runs", query)
	}
	return Entry{}, fmt.Errorf("%q names %d runs (%s); give more of the id", query, len(hits), strings.Join(ids, ", "))
}

// sameDir reports whether dir resolves to real.
func sameDir(dir, real string) bool {
	r, err := filepath.EvalSymlinks(dir)
	return err == nil && r == real
}
