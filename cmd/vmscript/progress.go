package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmscript/vmscript/toolkit/hostmem"
	"github.com/vmscript/vmscript/toolkit/journal"
	"golang.org/x/term"
)

// progressMode says how much vmscript tells about a run while it goes.
type progressMode int

const (
	progressNormal  progressMode = iota // waits: a status line on a TTY, start/end lines otherwise
	progressVerbose                     // and every console line, prefixed with the VM's name
	progressQuiet                       // only errors and results
)

// statusRedraw is how often the status line's clock is redrawn on a TTY.
const statusRedraw = 250 * time.Millisecond

// progress shows what a run is doing on stderr, from the timeline's events.
// On a terminal it keeps one status line (what is awaited, on which VM,
// elapsed vs timeout, the last console line) redrawn in place; elsewhere it
// writes plain timestamped lines with no escape sequences. Events arrive
// through a buffered queue so a slow terminal never blocks the console
// reader that produced them.
type progress struct {
	mode  progressMode
	tty   bool
	width func() int

	queue   chan journal.Event
	dropped atomic.Int64
	stop    chan struct{}
	stopped chan struct{}

	mu     sync.Mutex
	w      io.Writer // stderr
	sink   io.Writer // overrides w for console lines while the REPL reads a line
	shown  bool      // a status line is on screen
	waits  []*waitState
	stage  *stageState
	last   map[string]string // last console line per VM
	tcg    bool              // the run was told its VMs run under TCG
	colors map[string]int
	paused int // interact sessions in progress
	closed bool
}

type waitState struct {
	vm      string
	what    string
	timeout time.Duration
	start   time.Time
}

type stageState struct {
	name, stage, detail string
	start, stageStart   time.Time
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgress(stderr io.Writer, mode progressMode) *progress {
	p := &progress{
		mode:    mode,
		tty:     isTerminal(stderr),
		w:       stderr,
		queue:   make(chan journal.Event, 4096),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
		last:    map[string]string{},
		colors:  map[string]int{},
		width:   func() int { return 80 },
	}
	if f, ok := stderr.(*os.File); ok && p.tty {
		p.width = func() int {
			if w, _, err := term.GetSize(int(f.Fd())); err == nil && w > 10 {
				return w
			}
			return 80
		}
	}
	go p.loop()
	return p
}

// Subscribe feeds the run's events to the display. It never blocks: when
// the queue is full, events are counted and dropped (the timeline has them).
func (p *progress) Subscribe(run *journal.Run) {
	queue := func(ev journal.Event) {
		select {
		case p.queue <- ev:
		default:
			p.dropped.Add(1)
		}
	}
	run.Subscribe(queue)
	if p.mode == progressVerbose || p.tty && p.mode != progressQuiet {
		// Console lines: shown (-v) or on the status line (a TTY). Asked
		// for only then, so a console builds them only then.
		run.SubscribeNotify(queue)
	}
}

// Close drains the queue, clears the status line and stops the display.
func (p *progress) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	<-p.stopped
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
}

func (p *progress) loop() {
	defer close(p.stopped)
	tick := time.NewTicker(statusRedraw)
	defer tick.Stop()
	for {
		select {
		case ev := <-p.queue:
			p.handle(ev)
		case <-tick.C:
			p.mu.Lock()
			p.drawLocked()
			p.mu.Unlock()
		case <-p.stop:
			for {
				select {
				case ev := <-p.queue:
					p.handle(ev)
				default:
					return
				}
			}
		}
	}
}

// setSink routes console lines to w (the REPL's line editor) until called
// with nil.
func (p *progress) setSink(w io.Writer) {
	p.mu.Lock()
	p.sink = w
	p.mu.Unlock()
}

// wrap returns a writer for the script's output that first takes the
// status line off the screen, so print() never lands in the middle of it.
func (p *progress) wrap(w io.Writer) io.Writer {
	if !p.tty {
		return w
	}
	return writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.clearLocked()
		return w.Write(b)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (p *progress) handle(ev journal.Event) {
	if ev.Source == syncSource {
		close(ev.Fields["done"].(chan struct{}))
		return
	}
	if vm, ok := strings.CutPrefix(ev.Source, "vm:"); ok {
		p.vmEvent(vm, ev)
		return
	}
	vm, isConsole := strings.CutPrefix(ev.Source, "console:")
	if !isConsole {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Kind {
	case "interact-start":
		p.clearLocked()
		p.paused++
	case "interact-end":
		if p.paused > 0 {
			p.paused--
		}
	case "line":
		text, _ := ev.Fields["text"].(string)
		p.last[vm] = text
		if p.mode == progressVerbose && p.paused == 0 {
			p.lineLocked(vm, text, ev.Wall)
		}
	case "failure":
		p.failureLocked(vm, ev)
	case "wait-start":
		ws := &waitState{vm: vm, what: patternsOf(ev.Fields), start: time.Now()}
		if t, ok := ev.Fields["timeout_s"].(float64); ok {
			ws.timeout = time.Duration(t * float64(time.Second))
		}
		p.waits = append(p.waits, ws)
		if p.mode != progressQuiet && !p.tty {
			p.plainLocked(ev.Wall, fmt.Sprintf("%s: waiting for %s (timeout %s)", vm, ws.what, ws.timeout))
		}
		p.drawLocked()
	case "wait-end":
		what := patternsOf(ev.Fields)
		for i, ws := range p.waits {
			if ws.vm == vm && ws.what == what {
				p.waits = append(p.waits[:i], p.waits[i+1:]...)
				break
			}
		}
		waited, _ := ev.Fields["waited_s"].(float64)
		if p.mode != progressQuiet && !p.tty {
			if ok, _ := ev.Fields["ok"].(bool); ok {
				p.plainLocked(ev.Wall, fmt.Sprintf("%s: got %s after %.1fs", vm, what, waited))
			} else {
				kind, _ := ev.Fields["kind"].(string)
				p.plainLocked(ev.Wall, fmt.Sprintf("%s: stopped waiting for %s after %.1fs (%s)", vm, what, waited, kind))
			}
		}
		if len(p.waits) == 0 {
			p.clearLocked()
		} else {
			p.drawLocked()
		}
	}
}

// vmEvent shows what a VM's QEMU events mean for the user: TCG for want
// of KVM, a wait for host memory.
func (p *progress) vmEvent(vm string, ev journal.Event) {
	switch ev.Kind {
	case "start":
		p.accel(ev)
	case "memory-wait":
		need, _ := ev.Fields["needed_bytes"].(int64)
		held, _ := ev.Fields["held_bytes"].(int64)
		budget, _ := ev.Fields["budget_bytes"].(int64)
		holders, _ := ev.Fields["holders"].(int)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.clearLocked()
		p.plainLocked(ev.Wall, fmt.Sprintf("%s: waiting for host memory: it needs %s; running VMs (%d) hold %s of the %s budget for all VMs (%s)",
			vm, hostmem.Size(need), holders, hostmem.Size(held), hostmem.Size(budget), hostmem.BudgetVar))
		p.drawLocked()
	}
}

// accel says once per run, in every mode, that VMs run under TCG because
// KVM is not usable (no slow mode is silent); accel="tcg" asked for by
// name is not news.
func (p *progress) accel(ev journal.Event) {
	accel, _ := ev.Fields["accel"].(string)
	reason, _ := ev.Fields["accel_reason"].(string)
	if accel != "tcg" || strings.HasSuffix(reason, "was asked for") {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tcg {
		return
	}
	p.tcg = true
	p.clearLocked()
	fmt.Fprintf(p.w, "vmscript: warning: no usable KVM, so VMs run under TCG (software emulation, 10-50x slower): %s\n", reason)
	p.drawLocked()
}

// failureLocked shows a line a failure pattern matched, in every mode
// (quiet included: a panic or an Oops is the news).
func (p *progress) failureLocked(vm string, ev journal.Event) {
	name, _ := ev.Fields["name"].(string)
	action, _ := ev.Fields["action"].(string)
	line, _ := ev.Fields["line"].(string)
	p.clearLocked()
	p.plainLocked(ev.Wall, fmt.Sprintf("%s: failure pattern %s (%s): %s", vm, name, action, line))
	p.drawLocked()
}

func patternsOf(f map[string]any) string {
	if what, ok := f["what"].(string); ok && what != "" {
		return what
	}
	switch ps := f["patterns"].(type) {
	case []string: // in-process events carry the Go value
		return strings.Join(ps, " or ")
	case []any: // events read back from JSON
		parts := make([]string, 0, len(ps))
		for _, x := range ps {
			parts = append(parts, fmt.Sprint(x))
		}
		return strings.Join(parts, " or ")
	}
	return ""
}

// syncSource marks Sync's barrier in the queue.
const syncSource = "$sync"

// Sync waits until every event queued so far is shown, then takes the
// status line off the screen: the REPL calls it before it prints.
func (p *progress) Sync() {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if !closed {
		ch := make(chan struct{})
		p.queue <- journal.Event{Source: syncSource, Fields: map[string]any{"done": ch}}
		<-ch
	}
	p.mu.Lock()
	p.clearLocked()
	p.mu.Unlock()
}

// wallClock turns an event's wall time into HH:MM:SS.mmm.
func wallClock(wall string) string {
	if t, err := time.Parse(journal.WallFormat, wall); err == nil {
		return t.Format("15:04:05.000")
	}
	return time.Now().Format("15:04:05.000")
}

// plainLocked writes one timestamped line (non-TTY).
func (p *progress) plainLocked(wall, msg string) {
	fmt.Fprintf(p.w, "%s %s\n", wallClock(wall), msg)
}

var vmColors = []int{36, 33, 35, 32, 34, 31}

// lineLocked mirrors one console line (-v).
func (p *progress) lineLocked(vm, text, wall string) {
	if !p.tty {
		fmt.Fprintf(p.w, "%s %s| %s\n", wallClock(wall), vm, text)
		return
	}
	c, ok := p.colors[vm]
	if !ok {
		c = vmColors[len(p.colors)%len(vmColors)]
		p.colors[vm] = c
	}
	if p.sink != nil {
		fmt.Fprintf(p.sink, "\x1b[%dm%s|\x1b[0m %s\n", c, vm, text)
		return
	}
	p.clearLocked()
	fmt.Fprintf(p.w, "\x1b[%dm%s|\x1b[0m %s\n", c, vm, text)
	p.drawLocked()
}

// clearLocked takes the status line off the screen.
func (p *progress) clearLocked() {
	if p.shown {
		_, _ = io.WriteString(p.w, "\r\x1b[K")
		p.shown = false
	}
}

// drawLocked (re)draws the status line on a TTY.
func (p *progress) drawLocked() {
	if !p.tty || p.mode == progressQuiet || p.paused > 0 || p.closed && len(p.waits) == 0 {
		return
	}
	var line string
	switch {
	case len(p.waits) > 0:
		ws := p.waits[len(p.waits)-1]
		el := time.Since(ws.start)
		line = fmt.Sprintf("⏳ %s: waiting for %s  %s / %s", ws.vm, ws.what, fmtElapsed(el), ws.timeout)
		if last := p.last[ws.vm]; last != "" {
			line += "  │ " + last
		}
	case p.stage != nil:
		s := p.stage
		line = fmt.Sprintf("⏳ %s: %s %s  %s (total %s)", s.name, s.stage, s.detail, fmtElapsed(time.Since(s.stageStart)), fmtElapsed(time.Since(s.start)))
	default:
		p.clearLocked()
		return
	}
	line = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, line)
	if w := p.width() - 1; len([]rune(line)) > w {
		line = string([]rune(line)[:w-1]) + "…"
	}
	fmt.Fprintf(p.w, "\r\x1b[K\x1b[2m%s\x1b[0m", line)
	p.shown = true
}

func fmtElapsed(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// Stage reports the start of a lab build stage: the status line on a TTY, a
// timestamped line otherwise.
func (p *progress) Stage(name, stage, detail string, buildStart time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.mode == progressVerbose && p.tty && p.stage != nil {
		p.clearLocked()
		fmt.Fprintf(p.w, "  %s: %s done in %s\n", p.stage.name, p.stage.stage, fmtElapsed(now.Sub(p.stage.stageStart)))
	}
	p.stage = &stageState{name: name, stage: stage, detail: detail, start: buildStart, stageStart: now}
	if p.mode == progressQuiet {
		return
	}
	if !p.tty {
		fmt.Fprintf(p.w, "%s %s: %-10s %s (%.1fs)\n", now.Format("15:04:05.000"), name, stage, detail, now.Sub(buildStart).Seconds())
		return
	}
	p.drawLocked()
}

// EndStages clears the lab build's status line.
func (p *progress) EndStages() {
	p.mu.Lock()
	p.stage = nil
	p.clearLocked()
	p.mu.Unlock()
}
