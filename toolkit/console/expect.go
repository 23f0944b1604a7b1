package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Matching limits. See Pattern for what they mean.
const (
	// MaxLineWindow bounds how much of one very long line a line regex sees:
	// it is matched against at most the last MaxLineWindow bytes of the
	// current line plus what arrived since the last look.
	MaxLineWindow = 4 << 10
	// MultilineWindow is how far back a multi-line regex looks from the
	// first byte that arrived since the last look.
	MultilineWindow = 16 << 10
	// MaxBefore bounds Match.Before, so a wait across a flood does not
	// copy the flood.
	MaxBefore = 1 << 20
)

// Pattern is one thing to wait for. Exactly one of Text and Regex is set.
//
// Text is a plain substring. It is found anywhere in the stream, across
// read chunks and across lines ("\n" in Text matches a line break). When
// matching stripped text, "\r\n" and "\r" in Text are read as "\n", since
// stripped text has no '\r'.
//
// Regex is an RE2 regular expression (Go regexp syntax), compiled in
// multi-line mode, so ^ and $ match at line starts and ends (write (?-m) to
// turn that off). A regex that cannot match a newline — the usual case — is
// a line regex: it is matched within one line, and the incomplete last line
// is matched as it stands, so "login: $" matches a prompt that has no
// newline yet (and $ can match at the end of what has arrived so far). A
// regex that can match a newline ((?s) with ., \s, [^x], a literal \n) is a
// multi-line regex: it sees the new bytes plus MultilineWindow bytes before
// them, so a match longer than that window can be missed. A line regex in a
// line longer than MaxLineWindow sees only the last MaxLineWindow bytes of it.
//
// Settle, when > 0, makes the pattern count only when its match is the last
// thing on the console and stays so for Settle (see ExpectOptions.Settle,
// the default for patterns that leave it 0).
type Pattern struct {
	Text   string
	Regex  string
	Settle time.Duration
}

func (p Pattern) String() string {
	if p.Regex != "" {
		return "/" + p.Regex + "/"
	}
	return strconv.Quote(p.Text)
}

// ExpectOptions tune one wait.
type ExpectOptions struct {
	// Timeout bounds the wait (wall clock, never reset by output); 0 means
	// Options.DefaultTimeout. The context bounds it too.
	Timeout time.Duration
	// From is where the search starts. nil means the end of this console's
	// last successful match (the start for the first wait); StartMark()
	// searches the whole history.
	From *Mark
	// Raw matches the raw bytes instead of the ANSI-stripped text.
	Raw bool
	// Desc says in words what the wait is for ("the end of `uptime`"); the
	// timeline's wait events and progress displays show it instead of the
	// patterns, which for generated markers mean nothing to a person.
	Desc string
	// Settle, when > 0, accepts only a match that is the last thing on the
	// console and stays so for Settle (for patterns whose own Settle is 0):
	// a prompt, not a '#' or a "$" line end that more output is about to
	// follow ("Linux lab … #" then "1 SMP", or "4" of "42" for (\d+)$). A
	// match that output follows is dropped and the search goes on after it;
	// a regex is tried again from the same start when output extends a
	// match at the end. A console that closes while a match settles keeps
	// the match.
	Settle time.Duration
	// Quiet leaves the wait out of the timeline: for a program's own
	// bookkeeping waits (a shell prompt after a command's end marker), which
	// would only crowd the record of what the script waited for.
	Quiet bool
	// Bystander leaves the console's last match where it is: a wait that
	// runs beside the script's own (answering a firmware prompt) must not
	// move where the script's next wait starts.
	Bystander bool
}

// Match is a successful wait.
type Match struct {
	// Text is the matched text.
	Text string `json:"text"`
	// Index is the 0-based index of the pattern that matched.
	Index int `json:"index"`
	// Captures holds a regex's submatches (groups 1…n; "" for a group that
	// did not participate). nil for plain patterns.
	Captures []string `json:"captures"`
	// Before is the text between From and the match: its last MaxBefore
	// bytes when there is more (Console.Text reads any range whole).
	Before string `json:"before"`
	// BeforeCut is how many bytes of that text Before leaves out at its
	// front (0 unless the match came more than MaxBefore after From).
	BeforeCut int64 `json:"before_cut"`
	// Start and End are the positions of the match's first byte and of the
	// byte after it.
	Start Mark `json:"-"`
	End   Mark `json:"mark"`
}

type compiled struct {
	lit   []byte
	re    *regexp.Regexp
	multi bool
}

func compilePatterns(pats []Pattern, raw bool) ([]compiled, error) {
	if len(pats) == 0 {
		return nil, errors.New("no pattern")
	}
	out := make([]compiled, len(pats))
	for i, p := range pats {
		switch {
		case p.Text != "" && p.Regex != "":
			return nil, fmt.Errorf("pattern %d: both text and regex set", i+1)
		case p.Text != "":
			t := p.Text
			if !raw {
				t = strings.ReplaceAll(t, "\r\n", "\n")
				t = strings.ReplaceAll(t, "\r", "\n")
			}
			out[i].lit = []byte(t)
		case p.Regex != "":
			re, err := regexp.Compile("(?m)" + p.Regex)
			if err != nil {
				return nil, fmt.Errorf("pattern %d: %v", i+1, err)
			}
			out[i].re = re
			out[i].multi = canMatchNewline(p.Regex)
		default:
			return nil, fmt.Errorf("pattern %d: empty", i+1)
		}
	}
	return out, nil
}

// canMatchNewline reports whether the regex can consume a '\n'.
func canMatchNewline(expr string) bool {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return true
	}
	var walk func(*syntax.Regexp) bool
	walk = func(r *syntax.Regexp) bool {
		switch r.Op {
		case syntax.OpAnyChar:
			return true
		case syntax.OpLiteral:
			for _, c := range r.Rune {
				if c == '\n' {
					return true
				}
			}
		case syntax.OpCharClass:
			for i := 0; i+1 < len(r.Rune); i += 2 {
				if r.Rune[i] <= '\n' && '\n' <= r.Rune[i+1] {
					return true
				}
			}
		}
		for _, s := range r.Sub {
			if walk(s) {
				return true
			}
		}
		return false
	}
	return walk(re)
}

// matcher is the per-wait streaming state. Everything before pos has been
// looked at; it never looks at bytes before from.
type matcher struct {
	pats    []compiled
	from    int64
	pos     int64
	line    int64 // start of the current line (or from), for line regexes
	started bool
}

type hit struct {
	start, end int64
	idx        int
	caps       []string
}

// need is the first stream offset the next scan may look at.
func (m *matcher) need() int64 {
	n := m.line
	for _, p := range m.pats {
		switch {
		case p.lit != nil:
			n = min(n, m.pos-int64(len(p.lit)-1))
		case p.multi:
			n = min(n, m.pos-MultilineWindow)
		}
	}
	return max(n, m.from)
}

// scan looks at the stream so far, buf holding its bytes from base on
// (base <= need()), and returns the match that ends first (lowest pattern
// index on a tie), if any. The work is proportional to the bytes added
// since the last call, plus the bounded windows described on Pattern.
func (m *matcher) scan(buf []byte, base int64) (hit, bool) {
	end := base + int64(len(buf))
	if end < m.pos || (end == m.pos && m.started) {
		return hit{}, false
	}
	m.started = true
	best := hit{idx: -1}
	consider := func(h hit) {
		if best.idx < 0 || h.end < best.end || (h.end == best.end && h.idx < best.idx) {
			best = h
		}
	}
	for i, p := range m.pats {
		switch {
		case p.lit != nil:
			s := max(m.from, m.pos-int64(len(p.lit)-1))
			if j := bytes.Index(buf[s-base:], p.lit); j >= 0 {
				st := s + int64(j)
				consider(hit{start: st, end: st + int64(len(p.lit)), idx: i})
			}
		default:
			s := m.line
			if p.multi {
				s = max(m.from, min(m.line, m.pos-MultilineWindow))
			}
			if loc := p.re.FindSubmatchIndex(buf[s-base:]); loc != nil {
				h := hit{start: s + int64(loc[0]), end: s + int64(loc[1]), idx: i}
				if len(loc) > 2 {
					h.caps = make([]string, len(loc)/2-1)
					for g := 1; g < len(loc)/2; g++ {
						if loc[2*g] >= 0 {
							h.caps[g-1] = string(buf[s-base+int64(loc[2*g]) : s-base+int64(loc[2*g+1])])
						}
					}
				}
				consider(h)
			}
		}
	}
	if nl := bytes.LastIndexByte(buf[max(m.pos, m.line)-base:], '\n'); nl >= 0 {
		m.line = max(m.pos, m.line) + int64(nl) + 1
	}
	if end-m.line > MaxLineWindow {
		m.line = end - MaxLineWindow
	}
	m.pos = end
	return best, best.idx >= 0
}

// Expect waits until one of pats appears in the console, from opt.From on.
// It returns the earliest-ending match (the lowest pattern index on a tie),
// whatever the read chunking was. It fails with a *vmerr.Error of kind
//
//   - "timeout" when opt.Timeout (or the default) passes; context "vm",
//     "patterns", "waited_s", "tail" (the last TailLines stripped lines);
//   - "cancelled" when ctx is done (also for a ctx deadline: that is the
//     script's global bound, not this wait's);
//   - the Close reason (e.g. "exited") at once when the console is closed;
//   - "watch" at once when a fail watcher matches, with the line.
//
// A match already in the history before a close or a fail line still
// succeeds. A successful match moves the console's "last match" cursor,
// which is where a wait with a nil From starts.
func (c *Console) Expect(ctx context.Context, pats []Pattern, opt ExpectOptions) (_ *Match, err error) {
	start := time.Now()
	cp, err := compilePatterns(pats, opt.Raw)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.Usage, err, "console %s: expect", c.name).With("vm", c.name).With("patterns", patternList(pats))
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = c.defTimeout
	}
	w, from := c.addWaiter(opt.From)
	defer c.removeWaiter(w)
	if c.run != nil && !opt.Quiet {
		end := c.recordWait(pats, opt, timeout, start)
		defer func() { end(err) }()
	}
	x := newExpectation(c, pats, cp, opt, from)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if mt, err, done := x.step(c.waitState(opt.Raw)); done {
			if err != nil {
				return nil, c.waitErr(err, pats, start)
			}
			return mt, nil
		}
		select {
		case <-w.ch:
		case <-x.settled:
			x.fired = true
		case <-timer.C:
			return nil, c.waitErr(vmerr.New(vmerr.Timeout, "%s: timed out after %s waiting for %s on the console",
				c.name, fmtSeconds(time.Since(start)), patternDesc(pats)), pats, start)
		case <-ctx.Done():
			e := vmerr.Wrap(vmerr.Cancelled, context.Cause(ctx), "%s: cancelled while waiting for %s on the console", c.name, patternDesc(pats))
			return nil, c.waitErr(e, pats, start)
		}
	}
}

// addWaiter registers a wait to be woken by new bytes and returns where it
// starts: from, or the end of the last match.
func (c *Console) addWaiter(from *Mark) (*waiter, Mark) {
	w := &waiter{ch: make(chan struct{}, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.last
	if from != nil {
		m = *from
	}
	c.waiters[w] = struct{}{}
	return w, m
}

func (c *Console) removeWaiter(w *waiter) {
	c.mu.Lock()
	delete(c.waiters, w)
	c.mu.Unlock()
}

// recordWait writes wait-start now, and returns what writes wait-end: they
// let a progress display show what is awaited, where, and for how long.
func (c *Console) recordWait(pats []Pattern, opt ExpectOptions, timeout time.Duration, start time.Time) func(error) {
	ev := map[string]any{"patterns": patternList(pats), "timeout_s": timeout.Seconds()}
	if opt.Desc != "" {
		ev["what"] = opt.Desc
	}
	c.event("wait-start", ev)
	return func(err error) {
		f := map[string]any{"patterns": patternList(pats), "waited_s": time.Since(start).Seconds(), "ok": err == nil}
		if opt.Desc != "" {
			f["what"] = opt.Desc
		}
		if ve, isVM := err.(*vmerr.Error); isVM {
			f["kind"] = ve.Kind
		}
		c.event("wait-end", f)
	}
}

// waitState is what a wait looks at: the stream so far, the close reason,
// the earliest fired fail watcher.
type waitState struct {
	view     tapeView[byte]
	closeErr *vmerr.Error
	fail     *watchFail
}

func (st waitState) end() int64 { return st.view.end() }

func (c *Console) waitState(raw bool) waitState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := waitState{view: c.text.view(), closeErr: c.closeErr}
	if raw {
		st.view = c.raw.view()
	}
	for _, f := range c.fails {
		if st.fail == nil || f.textEnd < st.fail.textEnd {
			st.fail = f
		}
	}
	return st
}

// expectation is one Expect's scan: its patterns, its matcher, and a
// candidate match waiting to settle (taken once settled has fired with no
// output after it).
type expectation struct {
	c       *Console
	pats    []Pattern
	cp      []compiled
	opt     ExpectOptions
	fromOff int64
	m       *matcher
	cand    *hit
	settled <-chan time.Time
	fired   bool
}

func newExpectation(c *Console, pats []Pattern, cp []compiled, opt ExpectOptions, from Mark) *expectation {
	off := from.Text
	if opt.Raw {
		off = from.Raw
	}
	off = max(off, 0)
	return &expectation{c: c, pats: pats, cp: cp, opt: opt, fromOff: off, m: &matcher{pats: cp, from: off, pos: off, line: off}}
}

// restart scans again from off.
func (x *expectation) restart(off int64) { x.m = &matcher{pats: x.cp, from: off, pos: off, line: off} }

func (x *expectation) settleOf(idx int) time.Duration {
	if d := x.pats[idx].Settle; d > 0 {
		return d
	}
	return x.opt.Settle
}

// step looks at the stream once: done with a match, or with the error that
// ends the wait (a fail watcher, the console's close), or not done.
func (x *expectation) step(st waitState) (*Match, *vmerr.Error, bool) {
	if x.m.pos > st.end() { // a mark from the future: clamp
		x.restart(st.end())
		x.fromOff = min(x.fromOff, st.end())
	}
	if x.cand != nil && st.end() > x.cand.end {
		// Output came after the candidate: look again from its start,
		// where a regex may now match a longer text.
		x.restart(x.cand.start)
		x.cand, x.settled, x.fired = nil, nil, false
	}
	if x.cand != nil && (x.fired || st.closeErr != nil) {
		// Still the last thing after the settle time, or the console
		// closed meanwhile.
		return x.c.matched(x.pats, *x.cand, st.view, x.fromOff, x.opt), nil, true
	}
	for again := x.cand == nil; again; {
		var mt *Match
		var done bool
		if mt, again, done = x.scan(st); done {
			return mt, nil, true
		}
	}
	if st.fail != nil {
		return nil, st.fail.err(x.c.name, patternDesc(x.pats)), true
	}
	if st.closeErr != nil {
		return nil, copyErr(st.closeErr), true
	}
	return nil, nil, false
}

// scan looks for a new match: one without a settle time is taken, one
// that is not the last thing is passed over (again: scan on after it), one
// at the end becomes the candidate that must settle.
func (x *expectation) scan(st waitState) (mt *Match, again, done bool) {
	h, ok := x.scanView(st.view)
	if !ok || (st.fail != nil && h.end > st.fail.end(x.opt.Raw)) {
		return nil, false, false
	}
	switch {
	case x.settleOf(h.idx) <= 0:
		return x.c.matched(x.pats, h, st.view, x.fromOff, x.opt), false, true
	case h.end < st.end():
		x.restart(max(h.end, h.start+1))
		return nil, true, false
	case st.closeErr != nil:
		// At the end of a closed console: nothing more can come.
		return x.c.matched(x.pats, h, st.view, x.fromOff, x.opt), false, true
	}
	x.cand = &h
	x.settled = time.After(x.settleOf(h.idx))
	return nil, false, false
}

// catchUpChunk is how much history a wait that fell behind what memory
// holds reads back from disk per look.
const catchUpChunk = 1 << 20

// scanView runs the matcher over what arrived since its last look: from
// memory, or, for a wait that fell behind what memory holds (a mark from
// long ago, a flood), from disk in catchUpChunk pieces cut after a line
// end, so a line regex never sees a line cut short.
func (x *expectation) scanView(v tapeView[byte]) (hit, bool) {
	for x.m.need() < v.base {
		lo := x.m.need()
		hi := min(v.end(), x.m.pos+catchUpChunk)
		b, err := v.slice(lo, hi)
		if err != nil {
			// Unreadable (recorded): go on from what memory holds.
			x.m = &matcher{pats: x.cp, from: v.base, pos: v.base, line: v.base}
			break
		}
		if hi < v.end() {
			if nl := bytes.LastIndexByte(b[x.m.pos-lo:], '\n'); nl >= 0 {
				b = b[:x.m.pos-lo+int64(nl)+1]
			}
		}
		if h, ok := x.m.scan(b, lo); ok {
			return h, true
		}
	}
	n := x.m.need()
	return x.m.scan(v.mem[n-v.base:], n)
}

// ExpectText is Expect for one plain pattern.
func (c *Console) ExpectText(ctx context.Context, text string, opt ExpectOptions) (*Match, error) {
	return c.Expect(ctx, []Pattern{{Text: text}}, opt)
}

func (c *Console) matched(pats []Pattern, h hit, v tapeView[byte], from int64, opt ExpectOptions) *Match {
	raw := opt.Raw
	beforeLo := max(from, h.start-MaxBefore)
	mt := &Match{
		Text:      string(c.readBytes(v, h.start, h.end)),
		Index:     h.idx,
		Captures:  h.caps,
		Before:    string(c.readBytes(v, beforeLo, h.start)),
		BeforeCut: beforeLo - from,
	}
	c.mu.Lock()
	pairs, textLen := c.pairs.view(), c.text.len()
	if raw {
		mt.Start = Mark{Raw: h.start, Text: textEndOf(pairs, textLen, h.start)}
		mt.End = Mark{Raw: h.end, Text: textEndOf(pairs, textLen, h.end)}
	} else {
		mt.Start = Mark{Text: h.start, Raw: rawStartOf(pairs, h.start)}
		mt.End = Mark{Text: h.end, Raw: rawEndOf(pairs, h.end)}
	}
	if !opt.Bystander {
		c.last = mt.End
	}
	c.mu.Unlock()
	if c.run != nil {
		c.event("match", map[string]any{
			"pattern": pats[h.idx].String(), "index": h.idx, "text": mt.Text,
			"offset": mt.Start.Text, "raw_offset": mt.Start.Raw,
		})
	}
	return mt
}

// rawStartOf maps the stripped offset of a match's first byte to the raw
// offset of the byte that produced it.
func rawStartOf(pairs tapeView[offsetPair], s int64) int64 { return rawEndOf(pairs, s+1) - 1 }

// waitErr adds the wait's context to e.
func (c *Console) waitErr(e *vmerr.Error, pats []Pattern, start time.Time) *vmerr.Error {
	if _, ok := e.Context["vm"]; !ok {
		e.With("vm", c.name)
	}
	return e.With("patterns", patternList(pats)).
		With("waited_s", float64(time.Since(start).Milliseconds())/1000).
		With("tail", c.errTail())
}

func patternList(pats []Pattern) []string {
	out := make([]string, len(pats))
	for i, p := range pats {
		out[i] = p.String()
	}
	return out
}

func patternDesc(pats []Pattern) string {
	if len(pats) == 1 {
		return pats[0].String()
	}
	return "any of " + strings.Join(patternList(pats), ", ")
}
