// Package hostmem keeps the host's memory from being overcommitted by VMs:
// every vmscript process reserves a VM's memory in one ledger shared by the
// host before it starts QEMU, and waits for its turn (or fails, saying who
// holds what) when the VMs already running leave no room.
//
// The ledger is a directory, os.TempDir()/vmscript-memory (sticky and
// world-writable, as /tmp), with one file per reservation named after the
// process and a counter, holding JSON: who, how many bytes, since when. A
// flock on its lock file makes "sum the live reservations, add mine"
// atomic across processes; reservations of processes that are gone do not
// count (a killed run cannot hold memory). The budget is the host's
// MemTotal less a reserve for the host (a tenth, at least 1 GiB), or
// VMSCRIPT_MEMORY_BUDGET ("16G", or "off" to reserve nothing).
package hostmem

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Environment knobs.
const (
	// BudgetVar sets the bytes all VMs on the host may reserve together
	// ("16G", "12000M", or "off").
	BudgetVar = "VMSCRIPT_MEMORY_BUDGET"
	// WaitVar bounds how long a VM waits for room ("10m", the default).
	WaitVar = "VMSCRIPT_MEMORY_WAIT"
)

// DefaultWait is how long Reserve waits for room without WaitVar.
const DefaultWait = 10 * time.Minute

// pollInterval is how often a waiting Reserve looks at the ledger again.
var pollInterval = 250 * time.Millisecond

// Holder is one live reservation.
type Holder struct {
	// Who says what holds it ("run 20261205-… vm subject").
	Who string `json:"who"`
	// Bytes is the memory reserved.
	Bytes int64 `json:"bytes"`
	// PID is the vmscript process.
	PID int `json:"pid"`
	// Since is when it was made.
	Since time.Time `json:"since"`
}

// Ledger is the host's ledger of reservations.
type Ledger struct {
	dir    string
	budget int64 // 0: reserve nothing
	wait   time.Duration
}

// Open returns the ledger in dir with a budget in bytes (0: no limit, every
// Reserve succeeds at once without a file) and the longest a Reserve waits.
func Open(dir string, budget int64, wait time.Duration) (*Ledger, error) {
	if budget > 0 {
		if err := os.MkdirAll(dir, 0o777|os.ModeSticky); err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "host memory ledger")
		}
		// MkdirAll applies the umask; a ledger every user can write is
		// the point (the sticky bit keeps each one's files their own).
		if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil && !os.IsPermission(err) {
			return nil, vmerr.Wrap(vmerr.IO, err, "host memory ledger")
		}
	}
	return &Ledger{dir: dir, budget: budget, wait: wait}, nil
}

var (
	hostOnce   sync.Once
	hostLedger *Ledger
	hostErr    error
)

// Host returns the host's ledger, its budget and wait from the environment
// (read once per process).
func Host() (*Ledger, error) {
	hostOnce.Do(func() {
		var budget int64
		var wait time.Duration
		budget, wait, hostErr = fromEnv()
		if hostErr == nil {
			hostLedger, hostErr = Open(filepath.Join(os.TempDir(), "vmscript-memory"), budget, wait)
		}
	})
	return hostLedger, hostErr
}

// fromEnv reads the budget and the wait from the environment.
func fromEnv() (int64, time.Duration, error) {
	wait := DefaultWait
	if s := os.Getenv(WaitVar); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, 0, vmerr.New(vmerr.Usage, "%s=%q: want a duration such as 10m", WaitVar, s)
		}
		wait = d
	}
	s := os.Getenv(BudgetVar)
	switch {
	case s == "off":
		return 0, wait, nil
	case s != "":
		b, err := ParseBytes(s)
		if err != nil {
			return 0, 0, vmerr.New(vmerr.Usage, "%s=%q: %v", BudgetVar, s, err)
		}
		return b, wait, nil
	}
	total, err := MemTotal()
	if err != nil {
		return 0, wait, nil // no /proc/meminfo: nothing to budget against
	}
	return total - max(total/10, 1<<30), wait, nil
}

// ParseBytes reads a size: a number of bytes, or one with K, M, G or T
// (powers of 1024).
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB")
	s = strings.TrimSuffix(s, "B")
	mult := int64(1)
	if n := len(s); n > 0 {
		if i := strings.IndexByte("KMGT", s[n-1]); i >= 0 {
			mult = 1 << (10 * (i + 1))
			s = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a size such as 16G or 12000M")
	}
	return n * mult, nil
}

// MemTotal reads the host's MemTotal from /proc/meminfo, in bytes.
func MemTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no MemTotal in /proc/meminfo")
}

// Reservation is memory held in the ledger until Release.
type Reservation struct {
	path string
	once sync.Once
}

// Release gives the memory back; it is idempotent (nil-safe).
func (r *Reservation) Release() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		if r.path != "" {
			os.Remove(r.path)
		}
	})
}

// seq numbers a process's reservation files.
var seq atomic.Int64

// Reserve holds bytes for who. When the live reservations leave no room it
// calls waiting once with them and looks again until there is room, ctx
// ends or the ledger's wait passes; a request larger than the whole budget
// fails at once. Every failure names the budget and the holders.
func (l *Ledger) Reserve(ctx context.Context, who string, bytes int64, waiting func(held []Holder, budget int64)) (*Reservation, error) {
	if l.budget <= 0 {
		return &Reservation{}, nil
	}
	if bytes > l.budget {
		return nil, vmerr.New(vmerr.Usage, "%s needs %s of memory, more than the host's budget for all VMs (%s; %s sets it)",
			who, Size(bytes), Size(l.budget), BudgetVar)
	}
	deadline := time.Now().Add(l.wait)
	told := false
	for {
		r, held, err := l.try(who, bytes)
		if r != nil || err != nil {
			return r, err
		}
		if !told && waiting != nil {
			waiting(held, l.budget)
			told = true
		}
		if time.Now().After(deadline) {
			return nil, l.full(vmerr.Timeout, who, bytes, held, fmt.Sprintf("gave up after %s (%s sets the wait)", l.wait, WaitVar))
		}
		select {
		case <-ctx.Done():
			return nil, l.full(vmerr.DoneKind(ctx), who, bytes, held, "the wait was cancelled")
		case <-time.After(pollInterval):
		}
	}
}

// try makes the reservation if it fits now, under the ledger's lock; else
// it returns the live holders.
func (l *Ledger) try(who string, bytes int64) (*Reservation, []Holder, error) {
	unlock, err := l.lock()
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	held, err := l.live()
	if err != nil {
		return nil, nil, err
	}
	var sum int64
	for _, h := range held {
		sum += h.Bytes
	}
	if sum+bytes > l.budget {
		return nil, held, nil
	}
	path := filepath.Join(l.dir, fmt.Sprintf("%d-%d.json", os.Getpid(), seq.Add(1)))
	data, _ := json.Marshal(Holder{Who: who, Bytes: bytes, PID: os.Getpid(), Since: time.Now()})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return nil, nil, vmerr.Wrap(vmerr.IO, err, "host memory ledger: reserving for %s", who)
	}
	return &Reservation{path: path}, nil, nil
}

// lock takes the ledger's exclusive lock (a read-only descriptor: the lock
// file may belong to another user).
func (l *Ledger) lock() (func(), error) {
	p := filepath.Join(l.dir, "lock")
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		f, err = os.Open(p)
	}
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "host memory ledger: lock")
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, vmerr.Wrap(vmerr.IO, err, "host memory ledger: lock")
	}
	return func() { f.Close() }, nil
}

// live reads the reservations whose process still runs, oldest first, and
// removes the files of dead processes it may remove.
func (l *Ledger) live() ([]Holder, error) {
	names, err := filepath.Glob(filepath.Join(l.dir, "*-*.json"))
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "host memory ledger")
	}
	var held []Holder
	for _, p := range names {
		pid, _ := strconv.Atoi(strings.SplitN(filepath.Base(p), "-", 2)[0])
		if !alive(pid) {
			os.Remove(p) // another user's stays; it does not count either
			continue
		}
		var h Holder
		if data, err := os.ReadFile(p); err == nil && json.Unmarshal(data, &h) == nil && h.Bytes > 0 {
			held = append(held, h)
		}
	}
	sort.Slice(held, func(i, j int) bool { return held[i].Since.Before(held[j].Since) })
	return held, nil
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// full is the error of a reservation that found no room.
func (l *Ledger) full(kind, who string, bytes int64, held []Holder, why string) *vmerr.Error {
	var sum int64
	var list []string
	for _, h := range held {
		sum += h.Bytes
		list = append(list, fmt.Sprintf("%s (pid %d): %s since %s", h.Who, h.PID, Size(h.Bytes), h.Since.Format("15:04:05")))
	}
	return vmerr.New(kind, "%s needs %s of memory; the host's VMs hold %s of its %s budget (%s): %s; held by: %s",
		who, Size(bytes), Size(sum), Size(l.budget), BudgetVar, why, strings.Join(list, "; ")).
		With("needed_bytes", bytes).With("held_bytes", sum).With("budget_bytes", l.budget)
}

// Size formats bytes for people ("1.5 GiB", "640 MiB").
func Size(b int64) string {
	if b >= 1<<30 {
		return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) + " GiB"
	}
	return strconv.FormatInt(b>>20, 10) + " MiB"
}
