package eventlog

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestWaitSeesEarlierAndLaterEvents(t *testing.T) {
	l := New[string]()
	l.Append("a")
	l.Append("b")
	if got, seq, err := l.Wait(context.Background(), 0, func(_ int, s string) bool { return s == "b" }); err != nil || got != "b" || seq != 1 {
		t.Fatalf("earlier event: %q %d %v", got, seq, err)
	}
	done := make(chan string, 1)
	go func() {
		got, _, _ := l.Wait(context.Background(), l.Len(), nil)
		done <- got
	}()
	time.Sleep(20 * time.Millisecond)
	l.Append("c")
	if got := <-done; got != "c" {
		t.Fatalf("later event: %q", got)
	}
	if all := l.All(); len(all) != 3 || l.Since(2)[0] != "c" || l.Since(9) != nil {
		t.Fatalf("All %v, Since(2) %v", all, l.Since(2))
	}
}

// TestManyWaiters: every waiter sees the event it waits for, whatever the
// interleaving of appends and waits (run with -race).
func TestManyWaiters(t *testing.T) {
	l := New[int]()
	var wg sync.WaitGroup
	const n = 50
	got := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _, err := l.Wait(context.Background(), 0, func(_ int, x int) bool { return x == i })
			if err != nil {
				t.Error(err)
			}
			got[i] = v
		}()
	}
	for i := range n {
		l.Append(i)
	}
	wg.Wait()
	for i, v := range got {
		if v != i {
			t.Fatalf("waiter %d got %d", i, v)
		}
	}
}

func TestCancelAndClose(t *testing.T) {
	l := New[int]()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, _, err := l.Wait(ctx, 0, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	reason := errors.New("QEMU exited")
	go func() { time.Sleep(20 * time.Millisecond); l.Close(reason) }()
	if _, _, err := l.Wait(context.Background(), 0, nil); err != reason {
		t.Fatalf("close: %v", err)
	}
	if seq := l.Append(1); seq != -1 || l.Len() != 0 || l.Err() != reason {
		t.Fatalf("append after close: %d, len %d, err %v", seq, l.Len(), l.Err())
	}
	l.Close(errors.New("again"))
	if l.Err() != reason {
		t.Fatal("a second Close replaced the reason")
	}
}

func TestCloseKeepsEventsBeforeIt(t *testing.T) {
	l := New[string]()
	l.Append("SHUTDOWN")
	l.Close(errors.New("gone"))
	if got, _, err := l.Wait(context.Background(), 0, nil); err != nil || got != "SHUTDOWN" {
		t.Fatalf("%q %v", got, err)
	}
}

func TestSubscribersInOrder(t *testing.T) {
	l := New[int]()
	var mu sync.Mutex
	var seen []int
	cancel := l.Subscribe(func(seq, x int) {
		mu.Lock()
		seen = append(seen, seq*100+x)
		mu.Unlock()
	})
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); l.Append(i) }()
	}
	wg.Wait()
	cancel()
	l.Append(99)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 20 {
		t.Fatalf("seen %d events", len(seen))
	}
	for i, v := range seen {
		if v/100 != i {
			t.Fatalf("subscriber saw seq %d at position %d", v/100, i)
		}
	}
}

func TestChangedWakes(t *testing.T) {
	l := New[int]()
	ch := l.Changed()
	l.Append(1)
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("Changed not closed by Append")
	}
}

func TestBoundedKeepsTheNewest(t *testing.T) {
	l := NewBounded[int](10)
	for i := range 100 {
		l.Append(i)
	}
	if l.Len() != 100 {
		t.Fatalf("Len %d", l.Len())
	}
	all := l.All()
	if len(all) < 10 || len(all) > 20 || all[len(all)-1] != 99 {
		t.Fatalf("kept %v", all)
	}
	got, seq, err := l.Wait(context.Background(), 0, nil)
	if err != nil || got != all[0] || seq != 100-len(all) {
		t.Fatalf("wait from 0: %d at %d (%v)", got, seq, err)
	}
	if s := l.Since(95); len(s) != 5 || s[0] != 95 {
		t.Fatalf("Since(95) %v", s)
	}
}
