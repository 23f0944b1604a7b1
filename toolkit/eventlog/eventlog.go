// Package eventlog is the one "append, wake, wait" of vmscript: an
// append-only log of events — QMP events, DHCP messages, netboot requests —
// that any number of waiters watch from a sequence number of their choice,
// so nothing that happened before a wait began is missed, and that
// subscribers (the timeline, a log file) see in order.
//
//	log := eventlog.New[Event]()
//	seq := log.Append(ev)                       // wakes the waiters
//	ev, seq, err := log.Wait(ctx, from, func(seq int, e Event) bool { return e.Name == "SHUTDOWN" })
//	log.Close(reason)                           // ends every wait with reason
package eventlog

import (
	"context"
	"sync"
)

// Log is an append-only list of events of type T. Its methods are safe for
// concurrent use.
type Log[T any] struct {
	// deliver serialises Append's calls of the subscribers, so they see
	// the events in order, without holding mu.
	deliver sync.Mutex

	mu      sync.Mutex
	items   []T // the kept events: sequence numbers base, base+1, …
	base    int
	keep    int           // 0: all
	changed chan struct{} // closed and replaced by Append and Close
	closed  error
	subs    []*subscriber[T]
}

type subscriber[T any] struct{ fn func(seq int, item T) }

// New returns an empty log that keeps every event.
func New[T any]() *Log[T] {
	return &Log[T]{changed: make(chan struct{})}
}

// NewBounded returns an empty log that keeps the newest keep events only
// (a console's lines: its history is on disk): reads and waits from an
// older sequence number start at the oldest kept one. Subscribers see every
// event.
func NewBounded[T any](keep int) *Log[T] {
	return &Log[T]{changed: make(chan struct{}), keep: max(keep, 1)}
}

// Append adds item, wakes every waiter and calls the subscribers (in
// order, on the appending goroutine), and returns item's sequence number:
// 0 for the first. After Close it does nothing and returns -1.
func (l *Log[T]) Append(item T) int {
	l.deliver.Lock()
	defer l.deliver.Unlock()
	l.mu.Lock()
	if l.closed != nil {
		l.mu.Unlock()
		return -1
	}
	seq := l.base + len(l.items)
	l.items = append(l.items, item)
	if l.keep > 0 && len(l.items) >= 2*l.keep {
		drop := len(l.items) - l.keep
		l.items = append(l.items[:0:0], l.items[drop:]...)
		l.base += drop
	}
	close(l.changed)
	l.changed = make(chan struct{})
	subs := l.subs
	l.mu.Unlock()
	for _, s := range subs {
		s.fn(seq, item)
	}
	return seq
}

// Len is the number of events so far: the sequence number the next one
// gets (a mark to wait from).
func (l *Log[T]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.base + len(l.items)
}

// Since returns a copy of the events from sequence number from on.
func (l *Log[T]) Since(from int) []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := max(from-l.base, 0)
	if i >= len(l.items) {
		return nil
	}
	return append([]T(nil), l.items[i:]...)
}

// All returns a copy of every event.
func (l *Log[T]) All() []T { return l.Since(0) }

// Subscribe calls fn with every event appended from now on, in order, on
// the appending goroutine (keep it short); cancel stops it.
func (l *Log[T]) Subscribe(fn func(seq int, item T)) (cancel func()) {
	s := &subscriber[T]{fn: fn}
	l.mu.Lock()
	l.subs = append(append([]*subscriber[T](nil), l.subs...), s)
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		subs := make([]*subscriber[T], 0, len(l.subs))
		for _, o := range l.subs {
			if o != s {
				subs = append(subs, o)
			}
		}
		l.subs = subs
	}
}

// Changed returns a channel closed at the next Append or Close: for waits
// on a state that events change (a lease) rather than on one event.
func (l *Log[T]) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Wait returns the first event with a sequence number ≥ from for which
// match returns true (every event when match is nil), and its number;
// events appended before the call count. It ends with the reason given to
// Close when the log closes first, or ctx's error when ctx ends first.
func (l *Log[T]) Wait(ctx context.Context, from int, match func(seq int, item T) bool) (T, int, error) {
	next := max(from, 0)
	for {
		l.mu.Lock()
		items, base, changed, closed := l.items, l.base, l.changed, l.closed
		l.mu.Unlock()
		next = max(next, base)
		for ; next < base+len(items); next++ {
			if match == nil || match(next, items[next-base]) {
				return items[next-base], next, nil
			}
		}
		var zero T
		if closed != nil {
			return zero, -1, closed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return zero, -1, ctx.Err()
		}
	}
}

// Close ends the log: every wait, now and later, returns reason (which must
// not be nil) once the events it could match are exhausted; Append does
// nothing any more. Closing twice keeps the first reason.
func (l *Log[T]) Close(reason error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed != nil {
		return
	}
	l.closed = reason
	close(l.changed)
	l.changed = make(chan struct{})
}

// Err returns the reason the log was closed with, or nil while it is open.
func (l *Log[T]) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}
