package screen

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// ExpectOptions tune one wait on the screen.
type ExpectOptions struct {
	// Timeout bounds the wait (wall clock); 0 means Options.DefaultTimeout.
	// It is checked between readings, so the wait can overrun it by the
	// reading in progress (~50 ms in a text mode, one OCR in a graphics
	// mode). The context bounds it too, and cuts a reading.
	Timeout time.Duration
	// Poll is how often the screen is read; 0 means Options.Poll. A poll
	// that finds the text buffer (or, in a graphics mode, the pixels)
	// unchanged costs two QMP commands and no pause; OCR runs only on
	// changed pixels.
	Poll time.Duration
	// Desc says in words what the wait is for, for the timeline.
	Desc string
	// Quiet leaves the wait out of the timeline (the match is still
	// recorded).
	Quiet bool
}

// Match is a successful wait.
type Match struct {
	// Text is the matched text (for a plain pattern: as the screen shows
	// it, runs of spaces as they are).
	Text string
	// Index is the 0-based index of the pattern that matched.
	Index int
	// Captures holds a regex's submatches (nil for plain patterns).
	Captures []string
	// Line is the index in Screen.Lines of the line the match starts on.
	Line int
	// Screen is the reading that matched.
	Screen *Snapshot
	// Shot is the screenshot taken at the match ("" without a run).
	Shot string
	// Waited is how long the wait took.
	Waited time.Duration
}

// matcher finds patterns in a screen's text, whose lines have no trailing
// blanks. Plain patterns are matched with every run of blanks (in the
// pattern and on the screen) read as one space and without blanks at their
// lines' ends, so "GNU GRUB version" finds "GNU GRUB  version", "grub> "
// finds the prompt, and OCR's spacing does not matter; regexes see the text
// as it is, lines joined by "\n" (multi-line mode: ^ and $ match at line
// starts and ends; write "grub>$", not "grub> $").
type matcher struct {
	pats []console.Pattern
	lit  []string
	res  []*regexp.Regexp
}

var blanks = regexp.MustCompile(`[ \t\x{a0}]+`)

func compile(pats []console.Pattern) (*matcher, error) {
	if len(pats) == 0 {
		return nil, errors.New("no pattern")
	}
	m := &matcher{pats: pats, lit: make([]string, len(pats)), res: make([]*regexp.Regexp, len(pats))}
	for i, p := range pats {
		switch {
		case p.Text != "" && p.Regex != "":
			return nil, fmt.Errorf("pattern %d: both text and regex set", i+1)
		case p.Text != "":
			// Screen lines have no trailing blanks: neither do the
			// pattern's ("grub> " finds the prompt "grub>").
			lines := strings.Split(blanks.ReplaceAllString(p.Text, " "), "\n")
			for j, l := range lines {
				lines[j] = strings.TrimRight(l, " ")
			}
			m.lit[i] = strings.Join(lines, "\n")
			if m.lit[i] == "" {
				return nil, fmt.Errorf("pattern %d: only blanks", i+1)
			}
		case p.Regex != "":
			re, err := regexp.Compile("(?m)" + p.Regex)
			if err != nil {
				return nil, fmt.Errorf("pattern %d: %v", i+1, err)
			}
			m.res[i] = re
		default:
			return nil, fmt.Errorf("pattern %d: empty", i+1)
		}
	}
	return m, nil
}

// find returns the first pattern (in pattern order) that matches lines.
func (m *matcher) find(lines []string) (*Match, bool) {
	text := strings.Join(lines, "\n")
	var squeezed string
	var origin []int // byte offset in text of each byte of squeezed
	for i := range m.pats {
		if m.res[i] != nil {
			loc := m.res[i].FindStringSubmatchIndex(text)
			if loc == nil {
				continue
			}
			mt := &Match{Text: text[loc[0]:loc[1]], Index: i, Line: strings.Count(text[:loc[0]], "\n")}
			for g := 1; g < len(loc)/2; g++ {
				c := ""
				if loc[2*g] >= 0 {
					c = text[loc[2*g]:loc[2*g+1]]
				}
				mt.Captures = append(mt.Captures, c)
			}
			return mt, true
		}
		if origin == nil {
			squeezed, origin = squeeze(text)
		}
		at := strings.Index(squeezed, m.lit[i])
		if at < 0 {
			continue
		}
		start, end := origin[at], len(text)
		if e := at + len(m.lit[i]); e < len(origin) {
			end = origin[e]
		}
		mt := &Match{Text: strings.TrimRight(text[start:end], " \t"), Index: i, Line: strings.Count(text[:start], "\n")}
		return mt, true
	}
	return nil, false
}

// matchLine matches one line.
func (m *matcher) matchLine(line string) (*Match, bool) {
	return m.find([]string{line})
}

// squeeze collapses runs of blanks to one space and returns, for each byte
// of the result, its offset in s.
func squeeze(s string) (string, []int) {
	var b strings.Builder
	origin := make([]int, 0, len(s))
	blank := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		isBlank := c == ' ' || c == '\t'
		if isBlank && blank {
			continue
		}
		blank = isBlank
		if isBlank {
			c = ' '
		}
		b.WriteByte(c)
		origin = append(origin, i)
	}
	return b.String(), origin
}

// Expect waits until the screen shows one of pats (console.Pattern: Text
// plain, Regex an RE2 regex) and returns the match. The screen is a state,
// not a stream: a screen that already shows the text matches at once.
//
// It fails with kind "timeout" after the timeout (the error carries the
// last screen's text and a screenshot saved into the run directory), with
// "watch" at once when a fail watcher matches, with the QMP error's kind
// ("exited") when QEMU goes away, and with "cancelled" when ctx is
// cancelled. Every match is recorded on the timeline with its screenshot.
func (s *Screen) Expect(ctx context.Context, pats []console.Pattern, opt ExpectOptions) (_ *Match, err error) {
	start := time.Now()
	m, err := compile(pats)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.Usage, err, "screen %s: expect", s.name).With("vm", s.name)
	}
	timeout, poll := opt.Timeout, opt.Poll
	if timeout <= 0 {
		timeout = s.timeout
	}
	if poll <= 0 {
		poll = s.poll
	}
	desc := patternDesc(pats)
	if s.run != nil && !opt.Quiet {
		f := map[string]any{"patterns": patternList(pats), "timeout_s": timeout.Seconds()}
		if opt.Desc != "" {
			f["what"] = opt.Desc
		}
		s.event("wait-start", f)
		defer func() {
			f := map[string]any{"patterns": patternList(pats), "waited_s": time.Since(start).Seconds(), "ok": err == nil}
			if ve, ok := err.(*vmerr.Error); ok {
				f["kind"] = ve.Kind
			}
			s.event("wait-end", f)
		}()
	}
	// The wait's deadline is checked between readings: a reading in
	// progress is finished (bounded by ctx), since a QMP command cut by a
	// deadline half-written would garble the commands after it. A wait
	// overruns its timeout by at most one reading.
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var last *Snapshot
	for {
		t0 := time.Now()
		if f := s.failed(); f != nil {
			return nil, s.waitErr(vmerr.New(vmerr.Watch, "screen %s: watcher %s matched while waiting for %s: %s",
				s.name, f.w.desc, desc, f.line).With("line", f.line).With("watch", f.w.desc).With("shot", f.shot), pats, start, last)
		}
		snap, err := s.current(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, s.ended(ctx, pats, start, last)
			}
			return nil, s.waitErr(asVMErr(err), pats, start, last)
		}
		last = snap
		s.sawSnapshot(snap)
		if f := s.failed(); f != nil {
			continue // reported at the top
		}
		if mt, ok := m.find(snap.Lines); ok {
			mt.Screen, mt.Waited = snap, time.Since(start)
			mt.Shot, _ = s.shot(ctx, "match")
			s.event("match", map[string]any{
				"pattern": pats[mt.Index].String(), "index": mt.Index, "text": mt.Text,
				"line": mt.Line, "mode": string(snap.Mode), "shot": mt.Shot,
				"waited_s": mt.Waited.Seconds(),
			})
			return mt, nil
		}
		if time.Since(start) >= timeout {
			return nil, s.ended(ctx, pats, start, last)
		}
		select {
		case <-ctx.Done():
			return nil, s.ended(ctx, pats, start, last)
		case <-deadline.C:
			return nil, s.ended(ctx, pats, start, last)
		case <-time.After(poll - time.Since(t0)):
		}
	}
}

// ended is the error of a wait whose context is done: a timeout with the
// last screen and a screenshot, or a cancellation.
func (s *Screen) ended(ctx context.Context, pats []console.Pattern, start time.Time, last *Snapshot) error {
	desc := patternDesc(pats)
	if ctx.Err() != nil && vmerr.DoneKind(ctx) == vmerr.Cancelled {
		return s.waitErr(vmerr.Wrap(vmerr.Cancelled, context.Cause(ctx), "screen %s: cancelled while waiting for %s", s.name, desc), pats, start, last)
	}
	mode := "unread"
	if last != nil {
		mode = string(last.Mode)
	}
	e := vmerr.New(vmerr.Timeout, "screen %s: timed out after %.1fs waiting for %s on the screen (%s mode)",
		s.name, time.Since(start).Seconds(), desc, mode)
	// The wait's context is done: the screenshot gets its own bound.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if shot, err := s.shot(sctx, "timeout"); err != nil {
		e.With("shot_error", err.Error())
	} else if shot != "" {
		e.With("shot", shot)
	}
	return s.waitErr(e, pats, start, last)
}

// waitErr adds the wait's context to e: the patterns, how long it waited,
// and the last screen.
func (s *Screen) waitErr(e *vmerr.Error, pats []console.Pattern, start time.Time, last *Snapshot) *vmerr.Error {
	if _, ok := e.Context["vm"]; !ok {
		e.With("vm", s.name)
	}
	e.With("patterns", patternList(pats)).With("waited_s", float64(time.Since(start).Milliseconds())/1000)
	if last != nil {
		e.With("screen", last.Text()).With("mode", string(last.Mode))
	}
	return e
}

func asVMErr(err error) *vmerr.Error {
	var e *vmerr.Error
	if errors.As(err, &e) {
		return e
	}
	return vmerr.Wrap(vmerr.Internal, err, "screen")
}

func patternList(pats []console.Pattern) []string {
	out := make([]string, len(pats))
	for i, p := range pats {
		out[i] = p.String()
	}
	return out
}

func patternDesc(pats []console.Pattern) string {
	if len(pats) == 1 {
		return pats[0].String()
	}
	return "any of " + strings.Join(patternList(pats), ", ")
}

// Shot saves a screenshot (PNG) and returns its path: a relative name goes
// into the run directory (".png" is added when it has no extension). It is
// recorded on the timeline as an artifact.
func (s *Screen) Shot(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", vmerr.New(vmerr.Usage, "screen %s: shot needs a file name", s.name)
	}
	if filepath.Ext(name) == "" {
		name += ".png"
	}
	if !filepath.IsAbs(name) {
		if s.run == nil {
			return "", vmerr.New(vmerr.Usage, "screen %s: shot %q: a relative name needs a run directory", s.name, name)
		}
		name = s.run.Path(name)
	}
	return s.saveShot(ctx, name)
}

// shot saves a screenshot named after the screen and kind into the run
// directory; without a run it does nothing.
func (s *Screen) shot(ctx context.Context, kind string) (string, error) {
	if s.run == nil {
		return "", nil
	}
	s.mu.Lock()
	s.shots[kind]++
	n := s.shots[kind]
	s.mu.Unlock()
	return s.saveShot(ctx, s.run.Path(fmt.Sprintf("%s.screen-%s-%d.png", s.name, kind, n)))
}

func (s *Screen) saveShot(ctx context.Context, file string) (string, error) {
	if _, err := s.qmp(ctx, "screendump", map[string]any{"filename": file, "format": "png"}); err != nil {
		return "", err
	}
	s.event("artifact", map[string]any{"what": "screenshot", "file": file})
	return file, nil
}
