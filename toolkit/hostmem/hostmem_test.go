package hostmem

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

const mib = 1 << 20

func open(t *testing.T, budget int64, wait time.Duration) *Ledger {
	t.Helper()
	l, err := Open(filepath.Join(t.TempDir(), "ledger"), budget, wait)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestReserveWaitsForItsTurn: what fits is held at once; what does not
// waits (told once) until a holder releases; more than the budget fails
// at once; a wait that outlasts the ledger's bound fails naming the holders.
func TestReserveWaitsForItsTurn(t *testing.T) {
	pollInterval = 10 * time.Millisecond
	l := open(t, 1000*mib, time.Minute)
	ctx := context.Background()
	a, err := l.Reserve(ctx, "vm a", 600*mib, nil)
	if err != nil {
		t.Fatal(err)
	}
	var told []Holder
	var mu sync.Mutex
	got := make(chan *Reservation)
	go func() {
		b, err := l.Reserve(ctx, "vm b", 600*mib, func(held []Holder, budget int64) {
			mu.Lock()
			told = append(told, held...)
			mu.Unlock()
		})
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	select {
	case <-got:
		t.Fatal("b was reserved while a held 600 of 1000 MiB")
	case <-time.After(300 * time.Millisecond):
	}
	a.Release()
	a.Release()
	b := <-got
	mu.Lock()
	if len(told) != 1 || told[0].Who != "vm a" || told[0].Bytes != 600*mib || told[0].PID != os.Getpid() {
		t.Errorf("waiting was told %+v", told)
	}
	mu.Unlock()

	_, err = l.Reserve(ctx, "vm huge", 2000*mib, nil)
	if !vmerr.Is(err, vmerr.Usage) || !strings.Contains(err.Error(), "more than the host's budget") || !strings.Contains(err.Error(), BudgetVar) {
		t.Errorf("over budget: %v", err)
	}
	short := &Ledger{dir: l.dir, budget: l.budget, wait: 50 * time.Millisecond}
	_, err = short.Reserve(ctx, "vm c", 600*mib, nil)
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "vm b (pid") || !strings.Contains(err.Error(), WaitVar) {
		t.Errorf("bounded wait: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Reserve(cctx, "vm d", 600*mib, nil); !vmerr.Is(err, vmerr.Cancelled) {
		t.Errorf("cancelled wait: %v", err)
	}
	b.Release()
	if names, _ := filepath.Glob(filepath.Join(l.dir, "*.json")); len(names) != 0 {
		t.Errorf("files left after every release: %v", names)
	}
}

// TestDeadHoldersDoNotCount: a reservation of a process that is gone (a
// killed run) neither counts nor stays.
func TestDeadHoldersDoNotCount(t *testing.T) {
	l := open(t, 1000*mib, 0)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(l.dir, itoa(cmd.Process.Pid)+"-1.json")
	os.WriteFile(dead, []byte(`{"who":"vm ghost","bytes":1048576000,"pid":1,"since":"2026-01-01T00:00:00Z"}`), 0o644)
	r, err := l.Reserve(context.Background(), "vm live", 900*mib, nil)
	if err != nil {
		t.Fatalf("a dead holder counted: %v", err)
	}
	defer r.Release()
	if _, err := os.Stat(dead); err == nil {
		t.Error("the dead holder's file stays")
	}
}

// TestConcurrentReservationsNeverOvercommit: many goroutines reserving and
// releasing at once (each through its own lock descriptor, as processes
// do) never hold more than the budget together.
func TestConcurrentReservationsNeverOvercommit(t *testing.T) {
	pollInterval = time.Millisecond
	l := open(t, 1000*mib, time.Minute)
	var mu sync.Mutex
	var held, peak int64
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			size := int64(200+100*(i%4)) * mib
			r, err := l.Reserve(context.Background(), "vm "+itoa(i), size, nil)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			held += size
			peak = max(peak, held)
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			mu.Lock()
			held -= size
			mu.Unlock()
			r.Release()
		}()
	}
	wg.Wait()
	if peak > 1000*mib || peak == 0 {
		t.Errorf("peak %s of a 1000 MiB budget", Size(peak))
	}
}

func TestBudgetFromEnvAndSizes(t *testing.T) {
	for in, want := range map[string]int64{"16G": 16 << 30, "12000M": 12000 * mib, "1GiB": 1 << 30, "2048": 2048, "512mb": 512 * mib} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "lots", "1.5G"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted", bad)
		}
	}
	t.Setenv(BudgetVar, "off")
	if b, _, err := fromEnv(); err != nil || b != 0 {
		t.Errorf("off: %d %v", b, err)
	}
	t.Setenv(BudgetVar, "")
	if b, w, err := fromEnv(); err != nil || b <= 0 || w != DefaultWait {
		t.Errorf("default: %d %v %v", b, w, err)
	}
	t.Setenv(BudgetVar, "plenty")
	if _, _, err := fromEnv(); !vmerr.Is(err, vmerr.Usage) || !strings.Contains(err.Error(), BudgetVar) {
		t.Errorf("bad budget: %v", err)
	}
	t.Setenv(BudgetVar, "")
	t.Setenv(WaitVar, "soon")
	if _, _, err := fromEnv(); !vmerr.Is(err, vmerr.Usage) || !strings.Contains(err.Error(), WaitVar) {
		t.Errorf("bad wait: %v", err)
	}
	// No budget: nothing is written, everything fits.
	l := open(t, 0, 0)
	if r, err := l.Reserve(context.Background(), "vm", 1<<50, nil); err != nil || r == nil {
		t.Errorf("no budget: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
