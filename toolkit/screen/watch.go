package screen

import (
	"context"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// watcher is a pattern matched against every line of every new reading.
type watcher struct {
	m    *matcher
	desc string
	fail bool
	fn   func(line string)
	seen map[string]bool // lines that matched in the last reading
}

// watchFail is a fail watcher's match.
type watchFail struct {
	w    *watcher
	line string
	shot string
}

// Watch starts a background watcher: every reading of the screen (by a
// wait, Text, or, while no wait polls, the watcher's own poll every
// WatchPoll) is matched line by line against p. fn, if not nil, is called
// with each line that matches and did not match in the reading before, on
// a goroutine of the watcher's own. With fail set, the first match ends
// every pending wait at once with kind "watch" and the line, and every
// later wait too, until cancel is called. A match is recorded on the
// timeline with a screenshot.
func (s *Screen) Watch(p console.Pattern, fail bool, fn func(line string)) (cancel func(), err error) {
	m, err := compile([]console.Pattern{p})
	if err != nil {
		return nil, vmerr.Wrap(vmerr.Usage, err, "screen %s: watch", s.name)
	}
	w := &watcher{m: m, desc: p.String(), fail: fail, fn: fn, seen: map[string]bool{}}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, vmerr.New(vmerr.Usage, "screen %s is closed", s.name)
	}
	s.watchers = append(append([]*watcher(nil), s.watchers...), w)
	start := !s.watchOn
	s.watchOn = true
	s.mu.Unlock()
	if start {
		go s.watchLoop()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			var ws []*watcher
			for _, o := range s.watchers {
				if o != w {
					ws = append(ws, o)
				}
			}
			s.watchers = ws
			var fs []*watchFail
			for _, f := range s.fails {
				if f.w != w {
					fs = append(fs, f)
				}
			}
			s.fails = fs
		})
	}, nil
}

// watchLoop reads the screen every WatchPoll while there are watchers and
// no wait has read it more recently; it ends with the last watcher.
func (s *Screen) watchLoop() {
	t := time.NewTicker(s.wpoll)
	defer t.Stop()
	// The loop ends when the screen closes, QEMU exits or the last watcher
	// goes; watchOn is cleared under the same lock that saw why, so a Watch
	// that comes meanwhile starts a new loop.
	end := func(always bool) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if always || len(s.watchers) == 0 {
			s.watchOn = false
			return true
		}
		return false
	}
	for {
		select {
		case <-s.done:
			end(true)
			return
		case <-t.C:
		}
		if end(false) {
			return
		}
		s.readMu.Lock()
		fresh := !s.cache.full.IsZero() && s.cache.snap != nil && time.Since(s.cache.snap.At) < s.wpoll
		s.readMu.Unlock()
		if fresh {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.wpoll+DefaultOCRTimeout)
		snap, err := s.current(ctx)
		cancel()
		if err != nil {
			if vmerr.Is(err, vmerr.Exited) {
				end(true)
				return
			}
			continue
		}
		s.sawSnapshot(snap)
	}
}

// sawSnapshot runs the watchers over a reading.
func (s *Screen) sawSnapshot(snap *Snapshot) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	s.mu.Lock()
	ws := s.watchers
	s.mu.Unlock()
	for _, w := range ws {
		now := map[string]bool{}
		var fresh []string
		for _, l := range snap.Lines {
			if _, ok := w.m.matchLine(l); ok {
				now[l] = true
				if !w.seen[l] {
					fresh = append(fresh, l)
				}
			}
		}
		w.seen = now
		for _, l := range fresh {
			s.watchMatched(w, l)
		}
	}
}

// watchMatched records a watcher's match and acts on it.
func (s *Screen) watchMatched(w *watcher, line string) {
	shot, _ := s.shot(context.Background(), "watch")
	s.event("watch", map[string]any{"pattern": w.desc, "line": line, "fail": w.fail, "shot": shot})
	if w.fail {
		s.mu.Lock()
		s.fails = append(s.fails, &watchFail{w: w, line: line, shot: shot})
		s.mu.Unlock()
	}
	if w.fn != nil {
		go w.fn(line)
	}
}

// failed returns the first fail watcher's match, if any.
func (s *Screen) failed() *watchFail {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fails) == 0 {
		return nil
	}
	return s.fails[0]
}
