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
	// Before is the text between From and the match.
	Before string `json:"before"`
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

// scan looks at buf (the whole stream so far) and returns the match that
// ends first (lowest pattern index on a tie), if any. The work is
// proportional to the bytes added since the last call, plus the bounded
// windows described on Pattern.
func (m *matcher) scan(buf []byte) (hit, bool) {
	end := int64(len(buf))
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
			if j := bytes.Index(buf[s:end], p.lit); j >= 0 {
				st := s + int64(j)
				consider(hit{start: st, end: st + int64(len(p.lit)), idx: i})
			}
		default:
			s := m.line
			if p.multi {
				s = max(m.from, min(m.line, m.pos-MultilineWindow))
			}
			if loc := p.re.FindSubmatchIndex(buf[s:end]); loc != nil {
				h := hit{start: s + int64(loc[0]), end: s + int64(loc[1]), idx: i}
				if len(loc) > 2 {
					h.caps = make([]string, len(loc)/2-1)
					for g := 1; g < len(loc)/2; g++ {
						if loc[2*g] >= 0 {
							h.caps[g-1] = string(buf[s+int64(loc[2*g]) : s+int64(loc[2*g+1])])
						}
					}
				}
				consider(h)
			}
		}
	}
	if nl := bytes.LastIndexByte(buf[max(m.pos, m.line):end], '\n'); nl >= 0 {
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
	w := &waiter{ch: make(chan struct{}, 1)}
	c.mu.Lock()
	from := c.last
	if opt.From != nil {
		from = *opt.From
	}
	c.waiters[w] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, w)
		c.mu.Unlock()
	}()

	if c.run != nil && !opt.Quiet {
		// wait-start and wait-end let a progress display show what is
		// awaited, where, and for how long.
		ev := map[string]any{"patterns": patternList(pats), "timeout_s": timeout.Seconds()}
		if opt.Desc != "" {
			ev["what"] = opt.Desc
		}
		c.run.Event(c.source, "wait-start", ev)
		defer func() {
			f := map[string]any{"patterns": patternList(pats), "waited_s": time.Since(start).Seconds(), "ok": err == nil}
			if opt.Desc != "" {
				f["what"] = opt.Desc
			}
			if ve, isVM := err.(*vmerr.Error); isVM {
				f["kind"] = ve.Kind
			}
			c.run.Event(c.source, "wait-end", f)
		}()
	}

	fromOff := from.Text
	if opt.Raw {
		fromOff = from.Raw
	}
	fromOff = max(fromOff, 0)
	m := &matcher{pats: cp, from: fromOff, pos: fromOff, line: fromOff}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	// With a settle time: cand is a match at the end of the text; it is
	// taken once settled has fired with no output after it.
	var (
		cand    *hit
		settled <-chan time.Time
		fired   bool
	)
	settleOf := func(idx int) time.Duration {
		if d := pats[idx].Settle; d > 0 {
			return d
		}
		return opt.Settle
	}
	for {
		c.mu.Lock()
		buf := c.text
		if opt.Raw {
			buf = c.raw
		}
		if m.pos > int64(len(buf)) { // a mark from the future: clamp
			m.from, m.pos, m.line = int64(len(buf)), int64(len(buf)), int64(len(buf))
			fromOff = min(fromOff, int64(len(buf)))
		}
		closeErr := c.closeErr
		var fail *watchFail
		for _, f := range c.fails {
			if fail == nil || f.textEnd < fail.textEnd {
				fail = f
			}
		}
		c.mu.Unlock()

		if cand != nil && int64(len(buf)) > cand.end {
			// Output came after the candidate: look again from its start,
			// where a regex may now match a longer text.
			m = &matcher{pats: cp, from: cand.start, pos: cand.start, line: cand.start}
			cand, settled, fired = nil, nil, false
		}
		if cand != nil && (fired || closeErr != nil) {
			// Still the last thing after the settle time, or the console
			// closed meanwhile.
			return c.matched(pats, *cand, buf, fromOff, opt.Raw), nil
		}
		if cand == nil {
			if h, ok := m.scan(buf); ok && (fail == nil || h.end <= fail.end(opt.Raw)) {
				switch {
				case settleOf(h.idx) <= 0:
					return c.matched(pats, h, buf, fromOff, opt.Raw), nil
				case h.end < int64(len(buf)):
					// Not the last thing: go on after it.
					next := max(h.end, h.start+1)
					m = &matcher{pats: cp, from: next, pos: next, line: next}
					continue
				case closeErr != nil:
					// At the end of a closed console: nothing more can come.
					return c.matched(pats, h, buf, fromOff, opt.Raw), nil
				default:
					cand = &h
					settled = time.After(settleOf(h.idx))
				}
			}
		}
		if fail != nil {
			return nil, c.waitErr(vmerr.New(vmerr.Watch, "%s: watcher %s matched while waiting for %s: %s",
				c.name, fail.w.desc, patternDesc(pats), fail.line).With("line", fail.line).With("watch", fail.w.desc), pats, start)
		}
		if closeErr != nil {
			return nil, c.waitErr(copyErr(closeErr), pats, start)
		}
		select {
		case <-w.ch:
		case <-settled:
			fired = true
		case <-timer.C:
			waited := time.Since(start)
			return nil, c.waitErr(vmerr.New(vmerr.Timeout, "%s: timed out after %s waiting for %s on the console",
				c.name, fmtSeconds(waited), patternDesc(pats)), pats, start)
		case <-ctx.Done():
			e := vmerr.Wrap(vmerr.Cancelled, context.Cause(ctx), "%s: cancelled while waiting for %s on the console", c.name, patternDesc(pats))
			return nil, c.waitErr(e, pats, start)
		}
	}
}

// ExpectText is Expect for one plain pattern.
func (c *Console) ExpectText(ctx context.Context, text string, opt ExpectOptions) (*Match, error) {
	return c.Expect(ctx, []Pattern{{Text: text}}, opt)
}

func (c *Console) matched(pats []Pattern, h hit, buf []byte, from int64, raw bool) *Match {
	mt := &Match{
		Text:     string(buf[h.start:h.end]),
		Index:    h.idx,
		Captures: h.caps,
		Before:   string(buf[from:h.start]),
	}
	c.mu.Lock()
	if raw {
		mt.Start = Mark{Raw: h.start, Text: textEndOf(c.cps, int64(len(c.text)), h.start)}
		mt.End = Mark{Raw: h.end, Text: textEndOf(c.cps, int64(len(c.text)), h.end)}
	} else {
		mt.Start = Mark{Text: h.start, Raw: rawStartOf(c.cps, h.start)}
		mt.End = Mark{Text: h.end, Raw: rawEndOf(c.cps, h.end)}
	}
	c.last = mt.End
	c.mu.Unlock()
	if c.run != nil {
		c.run.Event(c.source, "match", map[string]any{
			"pattern": pats[h.idx].String(), "index": h.idx, "text": mt.Text,
			"offset": mt.Start.Text, "raw_offset": mt.Start.Raw,
		})
	}
	return mt
}

// rawStartOf maps the stripped offset of a match's first byte to the raw
// offset of the byte that produced it.
func rawStartOf(cps []checkpoint, s int64) int64 { return rawEndOf(cps, s+1) - 1 }

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
