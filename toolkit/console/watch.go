package console

import (
	"context"
	"regexp"
	"strings"
	"sync"

	"github.com/vmscript/vmscript/toolkit/eventlog"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// watcher is a background pattern matched against every completed line.
type watcher struct {
	lit string
	re  *regexp.Regexp
	// lits, when set, are the texts re matches (literalSet): a line
	// matches when it contains one. need is a text every match of re
	// contains (requiredLiteral; "" when none).
	lits []string
	need string
	fail bool
	fn   func(line string)
	desc string
	// failure names the failure pattern this watcher is ("" for one a
	// script set with Watch).
	failure string

	// Guarded by Console.mu.
	cancelled bool
	fired     bool

	// from is the first line (of Console.lineLog) fn sees; stop ends it.
	from int
	stop context.CancelFunc
}

// watchFail is a fired fail watcher: the line and where it ended.
type watchFail struct {
	w       *watcher
	line    string
	textEnd int64
	rawEnd  int64
}

func (f *watchFail) end(raw bool) int64 {
	if raw {
		return f.rawEnd
	}
	return f.textEnd
}

func (w *watcher) match(line string) bool {
	if w.lits != nil {
		for _, l := range w.lits {
			if strings.Contains(line, l) {
				return true
			}
		}
		return false
	}
	if w.re != nil {
		return strings.Contains(line, w.need) && w.re.MatchString(line)
	}
	return strings.Contains(line, w.lit)
}

// needles are texts one of which every line the watcher matches holds
// (nil: none known, any line may match).
func (w *watcher) needles() []string {
	switch {
	case w.fn != nil:
		return nil // it sees every line through the line log
	case w.lits != nil:
		return w.lits
	case w.re == nil:
		return []string{w.lit}
	case w.need != "":
		return []string{w.need}
	}
	return nil
}

// loop calls fn for every matching line of the console's line log, off the
// reader goroutine, in order, until the watcher is cancelled or the console
// closes. (The log keeps its newest lines only: a fn that falls thousands
// of lines behind skips the oldest.)
func (w *watcher) loop(ctx context.Context, lines *eventlog.Log[Line]) {
	next := w.from
	for {
		l, seq, err := lines.Wait(ctx, next, func(_ int, l Line) bool { return w.match(l.Text) })
		if err != nil {
			return
		}
		w.fn(l.Text)
		next = seq + 1
	}
}

// Watch starts a background watcher on every line completed from now on
// (including the line in progress), matched as stripped text. A Regex
// pattern is matched against the line alone.
//
// fn, if not nil, is called with each matching line, in order, on a
// goroutine of the watcher's own (never on the reader), so a slow fn delays
// only itself.
//
// With fail set, the first matching line ends every pending wait on this
// console at once with kind "watch" and the line, and every later wait too,
// until cancel is called. A wait whose match lies before the fail line
// still succeeds. cancel stops the watcher and clears its failure; it is
// idempotent.
func (c *Console) Watch(p Pattern, fail bool, fn func(line string)) (cancel func(), err error) {
	return c.watch(p, fail, fn, "")
}

// watch is Watch for a watcher that may be a named failure pattern.
func (c *Console) watch(p Pattern, fail bool, fn func(line string), failure string) (cancel func(), err error) {
	cp, err := compilePatterns([]Pattern{p}, false)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.Usage, err, "console %s: watch", c.name).With("vm", c.name)
	}
	ctx, stop := context.WithCancel(context.Background())
	w := &watcher{lit: string(cp[0].lit), re: cp[0].re, fail: fail, fn: fn, desc: p.String(), failure: failure, stop: stop}
	if p.Regex != "" {
		w.lits, _ = literalSet(p.Regex)
		w.need = requiredLiteral(p.Regex)
	}
	// Registering under feedMu makes the start exact: the next Feed sees it.
	c.feedMu.Lock()
	c.mu.Lock()
	ws := make([]*watcher, 0, len(c.watchers)+1)
	ws = append(ws, c.watchers...)
	c.watchers = append(ws, w)
	c.mu.Unlock()
	w.from = c.lineLog.Len()
	c.feedMu.Unlock()
	if fn != nil {
		go w.loop(ctx, c.lineLog)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			w.cancelled = true
			ws := make([]*watcher, 0, len(c.watchers))
			for _, o := range c.watchers {
				if o != w {
					ws = append(ws, o)
				}
			}
			c.watchers = ws
			fs := c.fails[:0:0]
			for _, f := range c.fails {
				if f.w != w {
					fs = append(fs, f)
				}
			}
			c.fails = fs
			c.mu.Unlock()
			w.stop()
		})
	}, nil
}
