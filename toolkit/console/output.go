package console

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The timeline refers to console output instead of copying it: an "output"
// event names the lines that completed since the last one by their byte
// ranges in the console log (raw) and in the stripped text, and how many
// there are. A flood writes at most one such event per outputEvery; a
// console event (a match, a send, a failure, the close) first writes the
// output before it, so the timeline's order holds. ReadLog turns a range
// back into lines (`vmscript timeline` shows them in place).
const outputEvery = 50 * time.Millisecond

// outputRange is the output not yet in the timeline. Guarded by feedMu.
type outputRange struct {
	pending      bool
	lines        int
	raw0, raw1   int64
	text0, text1 int64
	last         time.Time // when the last output event was written
	timer        *time.Timer
}

// noteOutput adds a chunk's completed lines (under feedMu).
func (c *Console) noteOutput(lines []lineRec) {
	if c.run == nil || len(lines) == 0 {
		return
	}
	o := &c.output
	if !o.pending {
		o.pending, o.lines = true, 0
		o.raw0, o.text0 = lines[0].rawStart, lines[0].start
	}
	l := lines[len(lines)-1]
	o.raw1, o.text1 = l.rawEnd, l.end+1
	o.lines += len(lines)
	wait := outputEvery - time.Since(o.last)
	switch {
	case wait <= 0:
		c.flushOutputLocked()
	case o.timer == nil:
		o.timer = time.AfterFunc(wait, c.flushOutput)
	}
}

// flushOutput writes the pending output event.
func (c *Console) flushOutput() {
	c.feedMu.Lock()
	defer c.feedMu.Unlock()
	c.flushOutputLocked()
}

// flushOutputLocked is flushOutput under feedMu.
func (c *Console) flushOutputLocked() {
	o := &c.output
	if o.timer != nil {
		o.timer.Stop()
		o.timer = nil
	}
	if !o.pending || c.run == nil {
		return
	}
	o.pending, o.last = false, time.Now()
	ev := map[string]any{"lines": o.lines, "raw": []int64{o.raw0, o.raw1}, "text": []int64{o.text0, o.text1}}
	if c.logPath != "" {
		ev["log"] = filepath.Base(c.logPath)
	}
	c.run.Event(c.source, "output", ev)
}

// event writes to the run's timeline, if the console has a run, after the
// output that came before it. Not under feedMu.
func (c *Console) event(kind string, fields map[string]any) {
	if c.run != nil {
		c.flushOutput()
		c.run.Event(c.source, kind, fields)
	}
}

// ReadLog returns the lines of a console log's raw byte range [from, to),
// ANSI-stripped as the console strips them: the text of an "output" event.
// A range that starts inside an escape sequence or DEC line-drawing mode
// reads as if it started on a fresh line (output events start at line
// starts). An incomplete last line is returned as it stands.
func ReadLog(path string, from, to int64) ([]string, error) {
	if from < 0 || to < from {
		return nil, fmt.Errorf("console log %s: bad range [%d, %d)", path, from, to)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, to-from)
	n, err := f.ReadAt(buf, from)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if int64(n) < to-from {
		return nil, fmt.Errorf("console log %s: %d bytes, the range [%d, %d) is past its end", path, from+int64(n), from, to)
	}
	var st stripper
	st.strip(buf, from)
	text := string(st.out)
	lines := make([]string, 0, len(st.lines)+1)
	for _, l := range st.lines {
		lines = append(lines, text[l.start:l.end])
	}
	if last := text[st.lineText:]; last != "" {
		lines = append(lines, last)
	}
	return lines, nil
}
