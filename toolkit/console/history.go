package console

import (
	"bytes"
	"path/filepath"
	"sort"
)

// initHistory sets up the four tapes. With a log, the raw tape's file is
// the log; the others spill beside it (or to the temporary directory).
func (c *Console) initHistory(logPath string) {
	dir := ""
	if logPath != "" {
		dir = filepath.Dir(logPath)
	}
	c.raw = tape[byte]{keep: keepBytes, limit: limitBytes, codec: byteCodec, dir: dir}
	c.text = tape[byte]{keep: keepBytes, limit: limitBytes, codec: byteCodec, dir: dir}
	c.pairs = tape[offsetPair]{keep: keepRecords, limit: limitRecords, codec: pairCodec, dir: dir}
	c.lines = tape[lineRec]{keep: keepRecords, limit: limitRecords, codec: lineCodec, dir: dir}
	if c.log != nil {
		c.raw.f, c.raw.shared = c.log, true
	}
	c.raw.fail, c.text.fail, c.pairs.fail, c.lines.fail = c.historyErr, c.historyErr, c.historyErr, c.historyErr
}

// Feed injects bytes as if they had been read from the serial port (tests,
// replays). Feed must not be mixed with an attached reader unless the
// caller accepts interleaving at chunk boundaries.
func (c *Console) Feed(p []byte) {
	if len(p) == 0 {
		return
	}
	c.feedMu.Lock()
	defer c.feedMu.Unlock()
	logged := c.writeLog(p)

	// Strip. The stripper owns its scratch slices; only Feed uses them.
	c.mu.Lock()
	rawBase, textBase := c.raw.len(), c.text.len()
	prev := c.text.view()
	watchers := c.watchers
	partStart := c.partText
	c.mu.Unlock()
	st := &c.st
	st.out, st.pairs, st.lines = st.out[:0], st.pairs[:0], st.lines[:0]
	st.strip(p, rawBase)

	// Watchers see each completed line before it is published, so a
	// waiter can never see data past a fail line without the failure.
	var lineTexts []string
	if c.run != nil && c.run.Notified() || len(watchers) > 0 && c.mayMatch(watchers, prev, partStart, textBase) {
		lineTexts = make([]string, len(st.lines))
		for i, l := range st.lines {
			lineTexts[i] = c.lineString(prev, st.out, textBase, l)
		}
	}
	newFails, failureLines := matchInline(watchers, st.lines, lineTexts)
	c.publish(p, logged, newFails)
	c.spillFull()
	c.noteOutput(st.lines)

	// The line log, outside mu: live displays and the fn watchers; then
	// the failure patterns' lines, after the lines themselves.
	if lineTexts != nil {
		for i, l := range st.lines {
			c.lineLog.Append(Line{Text: lineTexts[i], RawOffset: l.rawStart})
		}
	}
	c.recordFailures(failureLines)
}

// writeLog appends p to the log, before anything else looks at it, and
// says whether it is there.
func (c *Console) writeLog(p []byte) bool {
	if c.log == nil || c.logClosed || c.logErr != nil {
		return false
	}
	if _, err := c.log.Write(p); err != nil {
		c.logErr = err
		if c.run != nil {
			c.run.Event(c.source, "log_error", map[string]any{"error": err.Error()})
		}
		return false
	}
	return true
}

// publish appends a stripped chunk to the history and wakes the waiters.
func (c *Console) publish(p []byte, logged bool, newFails []*watchFail) {
	st := &c.st
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw.add(p)
	if c.raw.shared {
		if logged {
			c.raw.onDisk = c.raw.len()
		} else if c.raw.err == nil {
			c.raw.err = c.logErr // the log has a gap: memory keeps the rest
		}
	}
	c.text.add(st.out)
	c.pairs.add(st.pairs)
	c.lines.add(st.lines)
	c.partText = st.lineText
	for _, f := range newFails {
		if !f.w.cancelled && !f.w.fired {
			f.w.fired = true
			c.fails = append(c.fails, f)
		}
	}
	for w := range c.waiters {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// spillFull moves the older history of full tapes to their files and
// drops it from memory.
func (c *Console) spillFull() {
	raw, text := spillTape(c, &c.raw, "raw"), spillTape(c, &c.text, "text")
	pairs, lines := spillTape(c, &c.pairs, "offsets"), spillTape(c, &c.lines, "lines")
	if !raw && !text && !pairs && !lines {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if raw {
		c.raw.trim()
	}
	if text {
		c.text.trim()
	}
	if pairs {
		c.pairs.trim()
	}
	if lines {
		c.lines.trim()
	}
}

// spillTape spills t if it is full and says whether it did; a failure is
// recorded once (the tape then stays in memory).
func spillTape[T any](c *Console, t *tape[T], what string) bool {
	if !t.full() {
		return false
	}
	if err := t.spill(c.name + " " + what); err != nil {
		if c.run != nil {
			c.run.Event(c.source, "history_error", map[string]any{
				"history": what, "error": err.Error(), "effect": "kept in memory from now on"})
		}
		return false
	}
	return true
}

// lineString returns the text of l, which may start in prev (the published
// text, whose end is base) and end in cur (this feed's output).
func (c *Console) lineString(prev tapeView[byte], cur []byte, base int64, l lineRec) string {
	if l.start >= base {
		return string(cur[l.start-base : l.end-base])
	}
	head, _ := prev.slice(l.start, base) // a failure is recorded
	return string(head) + string(cur[:l.end-base])
}

// historyErr records, once, that history could not be read back.
func (c *Console) historyErr(err error) {
	c.histOnce.Do(func() {
		c.mu.Lock()
		c.histErr = err
		c.mu.Unlock()
		if c.run != nil {
			c.run.Event(c.source, "history_error", map[string]any{"error": err.Error()})
		}
	})
}

// Mark returns the position of the end of what has arrived.
func (c *Console) Mark() Mark {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Mark{Text: c.text.len(), Raw: c.raw.len()}
}

// StartMark returns the position of the first byte of the console.
func (c *Console) StartMark() Mark { return Mark{} }

// Size returns the number of raw bytes received.
func (c *Console) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.raw.len()
}

// Text returns the stripped text between two marks (nil from = start, nil
// to = end). Text older than what memory holds is read back from disk.
func (c *Console) Text(from, to *Mark) string {
	c.mu.Lock()
	v := c.text.view()
	c.mu.Unlock()
	lo, hi := between(v.end(), from, to, func(m *Mark) int64 { return m.Text })
	return string(c.readBytes(v, lo, hi))
}

// between clamps the marks' offsets (off picks the stream) to [0, end].
func between(end int64, from, to *Mark, off func(*Mark) int64) (lo, hi int64) {
	lo, hi = 0, end
	if from != nil {
		lo = min(max(off(from), 0), hi)
	}
	if to != nil {
		hi = min(max(off(to), lo), hi)
	}
	return lo, hi
}

// Raw returns the raw bytes between two marks (nil from = start, nil to =
// end).
func (c *Console) Raw(from, to *Mark) []byte {
	c.mu.Lock()
	v := c.raw.view()
	c.mu.Unlock()
	lo, hi := between(v.end(), from, to, func(m *Mark) int64 { return m.Raw })
	return append([]byte(nil), c.readBytes(v, lo, hi)...)
}

// readBytes is v.slice, or what memory still holds of the range when the
// rest cannot be read back (the failure is recorded).
func (c *Console) readBytes(v tapeView[byte], lo, hi int64) []byte {
	b, err := v.slice(lo, hi)
	if err != nil {
		b, _ = v.slice(max(lo, v.base), hi)
	}
	return b
}

// Lines returns the completed lines (stripped) that overlap [from, to): a
// line is included when any of its text lies at or after from and it starts
// before to. nil from means the start, nil to the end.
func (c *Console) Lines(from, to *Mark) []string {
	c.mu.Lock()
	lines, text := c.lines.view(), c.text.view()
	c.mu.Unlock()
	i := int64(0)
	if from != nil {
		f := from.Text
		i = int64(sort.Search(int(lines.end()), func(k int) bool {
			l := lines.at(int64(k))
			return l.end > f || l.start >= f
		}))
	}
	var out []string
	for ; i < lines.end(); i++ {
		l := lines.at(i)
		if to != nil && l.start >= to.Text {
			break
		}
		out = append(out, string(c.readBytes(text, l.start, l.end)))
	}
	return out
}

// Tail returns the last n lines (stripped), including the incomplete last
// line if it has any text.
func (c *Console) Tail(n int) []string { return c.tail(n, 0) }

// tail returns the last n lines; lines longer than maxLen (if > 0) are cut
// to their last maxLen bytes.
func (c *Console) tail(n, maxLen int) []string {
	if n <= 0 {
		return nil
	}
	c.mu.Lock()
	lines, text, part := c.lines.view(), c.text.view(), c.partText
	c.mu.Unlock()
	cut := func(start, end int64) string {
		if maxLen > 0 && end-start > int64(maxLen) {
			return "…" + string(c.readBytes(text, end-int64(maxLen), end))
		}
		return string(c.readBytes(text, start, end))
	}
	hasPart := text.end() > part
	if hasPart {
		n--
	}
	first := max(lines.end()-int64(n), 0)
	recs, _ := lines.slice(first, lines.end()) // a failure is recorded
	out := make([]string, 0, len(recs)+1)
	for _, l := range recs {
		out = append(out, cut(l.start, l.end))
	}
	if hasPart {
		out = append(out, cut(part, text.end()))
	}
	return out
}

// errTail is the tail put into errors.
func (c *Console) errTail() []string { return c.tail(TailLines, 500) }

// mayMatch says whether a completed line of this chunk may match one of
// the watchers: a needle of one is in the chunk, across the seam between
// the incomplete line before it and the chunk, or was already in that
// line. It also notes for the next chunk whether the new incomplete line
// holds one. It copies nothing: the chunk is searched where it is.
func (c *Console) mayMatch(watchers []*watcher, prev tapeView[byte], partStart, base int64) bool {
	st := &c.st
	var needles []string
	longest := 0
	for _, w := range watchers {
		ns := w.needles()
		if ns == nil {
			return true
		}
		for _, n := range ns {
			longest = max(longest, len(n))
		}
		needles = append(needles, ns...)
	}
	longest = max(longest, 1)
	seamLo := max(partStart, base-int64(longest-1))
	if !sameWatchers(c.needlesOf, watchers) {
		// partNeedle was not kept for these watchers: search the whole line.
		seamLo, c.partNeedle, c.needlesOf = partStart, false, watchers
	}
	head, _ := prev.slice(seamLo, base) // a failed read: the seam is not searched
	seam := append(append([]byte(nil), head...), st.out[:min(len(st.out), longest-1)]...)
	found := c.partNeedle || containsAny(seam, needles) || containsAny(st.out, needles)
	// The new incomplete line: after the last completed one, or all of it.
	if n := len(st.lines); n > 0 {
		c.partNeedle = containsAny(st.out[st.lines[n-1].end+1-base:], needles)
	} else {
		c.partNeedle = found
	}
	return found
}

// containsAny reports whether s holds one of needles.
func containsAny(s []byte, needles []string) bool {
	for _, n := range needles {
		if bytes.Contains(s, []byte(n)) {
			return true
		}
	}
	return false
}

// sameWatchers says whether a and b are the same copy-on-write list.
func sameWatchers(a, b []*watcher) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// Line is a completed console line (ANSI-stripped) and where it starts in
// the raw stream.
type Line struct {
	Text      string `json:"text"`
	RawOffset int64  `json:"raw_offset"`
}

// lineLogKeep is how many lines the line log keeps for watchers that lag.
const lineLogKeep = 4096

// appendDoubling is append with capacity doubling: append grows large
// slices by 1.25×, which for a history of N bytes allocates about 5N in
// total; doubling bounds it to 2N.
func appendDoubling[T any](s, add []T) []T {
	if need := len(s) + len(add); need > cap(s) {
		n := make([]T, len(s), max(2*cap(s), need, 1024))
		copy(n, s)
		s = n
	}
	return append(s, add...)
}
