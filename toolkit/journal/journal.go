// Package journal owns a run's directory and its one clock: every event from
// every channel (console, QMP, DHCP, SSH, script steps, notes) is appended to
// timeline.jsonl with a monotonic offset from the run's start and a wall time,
// so a person can read what happened in order across channels.
//
// Appends are one write(2) each on an O_APPEND file with no user-space
// buffer, so a kill -9 of the process loses at most the event being written.
package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// TimelineFile is the name of the timeline inside a run directory.
const TimelineFile = "timeline.jsonl"

// InfoFile is the name of the run summary inside a run directory.
const InfoFile = "run.json"

// Event is one line of the timeline.
type Event struct {
	// Mono is nanoseconds since the run started, from the monotonic clock.
	Mono int64 `json:"mono_ns"`
	// Wall is the wall-clock time, RFC 3339 with milliseconds.
	Wall string `json:"wall"`
	// Source names the channel: "run", "script", "vm:NAME", "console:NAME", …
	Source string `json:"source"`
	// Kind says what happened: "start", "line", "event", "note", …
	Kind string `json:"kind"`
	// Fields carries the event's details.
	Fields map[string]any `json:"fields,omitempty"`
}

// WallFormat is the layout of Event.Wall.
const WallFormat = "2006-01-02T15:04:05.000Z07:00"

// Run is one run directory with its timeline. It is safe for concurrent use.
type Run struct {
	dir   string
	start time.Time

	mu         sync.Mutex
	timeline   *os.File
	closed     bool
	subs       []func(Event)
	notifySubs []func(Event) // of Notify
	info       Info
}

// Info is the content of run.json.
type Info struct {
	Script   string            `json:"script"`
	Args     map[string]string `json:"args,omitempty"`
	Extra    []string          `json:"extra_args,omitempty"`
	Version  string            `json:"vmscript_version"`
	Host     string            `json:"host"`
	GoOS     string            `json:"os"`
	QEMU     string            `json:"qemu_version,omitempty"`
	Start    string            `json:"start"`
	End      string            `json:"end,omitempty"`
	Duration float64           `json:"duration_s,omitempty"`
	ExitCode *int              `json:"exit_code,omitempty"`
	Error    string            `json:"error,omitempty"`
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// DirName returns the conventional run directory name for a script started
// at t: YYYYMMDD-HHMMSS-<script name without extension>.
func DirName(script string, t time.Time) string {
	base := filepath.Base(script)
	base = base[:len(base)-len(filepath.Ext(base))]
	base = unsafeName.ReplaceAllString(base, "_")
	if base == "" {
		base = "run"
	}
	return t.Format("20060102-150405") + "-" + base
}

// NewUnder creates a fresh run directory under parent, named by DirName. If
// that name is taken (two runs in one second), a numeric suffix is added.
func NewUnder(parent, script string, start time.Time) (*Run, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	name := DirName(script, start)
	for i := 1; ; i++ {
		dir := filepath.Join(parent, name)
		if i > 1 {
			dir = fmt.Sprintf("%s-%d", dir, i)
		}
		err := os.Mkdir(dir, 0o755)
		if err == nil {
			return open(dir, start)
		}
		if !errors.Is(err, os.ErrExist) || i > 100 {
			return nil, fmt.Errorf("run directory: %w", err)
		}
	}
}

// New uses dir as the run directory, creating it if needed. A directory that
// already holds a timeline belongs to another run and is refused.
func New(dir string, start time.Time) (*Run, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, TimelineFile)); err == nil {
		return nil, fmt.Errorf("run directory %s already holds a run (%s); choose another --out", dir, TimelineFile)
	}
	return open(dir, start)
}

func open(dir string, start time.Time) (*Run, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(abs, TimelineFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	return &Run{dir: abs, start: start, timeline: f}, nil
}

// Dir returns the run directory's absolute path.
func (r *Run) Dir() string { return r.dir }

// Path returns the absolute path of name inside the run directory.
func (r *Run) Path(name string) string { return filepath.Join(r.dir, name) }

// Start returns the time the run started.
func (r *Run) Start() time.Time { return r.start }

// Since returns the monotonic time elapsed since the run started.
func (r *Run) Since() time.Duration { return time.Since(r.start) }

// Subscribe registers fn to be called, in order and outside any lock of the
// caller, with every event appended after this call. fn must not block.
func (r *Run) Subscribe(fn func(Event)) {
	r.mu.Lock()
	r.subs = append(r.subs, fn)
	r.mu.Unlock()
}

// SubscribeNotify registers fn to be called with every Notify event after
// this call (in order, outside any lock of the caller). fn must not block.
func (r *Run) SubscribeNotify(fn func(Event)) {
	r.mu.Lock()
	r.notifySubs = append(r.notifySubs, fn)
	r.mu.Unlock()
}

// Notified says whether anyone subscribed to Notify events: their
// producers skip the work when no one will see them.
func (r *Run) Notified() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.notifySubs) > 0
}

// Notify hands an event to the SubscribeNotify subscribers only, not to
// the timeline: for what a live display shows but the timeline records
// another way (console lines, which it refers to by their byte ranges).
func (r *Run) Notify(source, kind string, fields map[string]any) {
	r.mu.Lock()
	subs := r.notifySubs
	r.mu.Unlock()
	if len(subs) == 0 {
		return
	}
	now := time.Now()
	ev := Event{Mono: now.Sub(r.start).Nanoseconds(), Wall: now.Format(WallFormat), Source: source, Kind: kind, Fields: fields}
	for _, fn := range subs {
		fn(ev)
	}
}

// Event appends one event to the timeline. It never fails the caller: an
// event that cannot be encoded is recorded with the encoding error instead.
func (r *Run) Event(source, kind string, fields map[string]any) {
	now := time.Now()
	ev := Event{
		Mono:   now.Sub(r.start).Nanoseconds(),
		Wall:   now.Format(WallFormat),
		Source: source,
		Kind:   kind,
		Fields: fields,
	}
	line, err := json.Marshal(ev)
	if err != nil {
		ev.Fields = map[string]any{"encode_error": err.Error()}
		line, _ = json.Marshal(ev)
	}
	line = append(line, '\n')
	r.mu.Lock()
	if !r.closed {
		// One write per event: O_APPEND keeps concurrent lines whole and a
		// crash can cut at most this one.
		_, _ = r.timeline.Write(line)
	}
	subs := r.subs
	r.mu.Unlock()
	for _, fn := range subs {
		fn(ev)
	}
}

// Create creates (or truncates) a file in the run directory for an artifact
// that is written as it is produced, such as a console log.
func (r *Run) Create(name string) (*os.File, error) {
	return os.OpenFile(r.Path(name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
}

// WriteFile writes an artifact atomically (temporary file, then rename) and
// returns its absolute path.
func (r *Run) WriteFile(name string, data []byte) (string, error) {
	return writeAtomic(r.Path(name), data)
}

// SetInfo replaces the run summary and writes run.json at once, so a crashed
// run still has its summary up to the last update.
func (r *Run) SetInfo(update func(*Info)) error {
	r.mu.Lock()
	update(&r.info)
	data, err := json.MarshalIndent(r.info, "", "  ")
	r.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = writeAtomic(r.Path(InfoFile), append(data, '\n'))
	return err
}

// Info returns a copy of the current run summary.
func (r *Run) Info() Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info
}

// Close flushes and closes the timeline. Later events are dropped.
func (r *Run) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.timeline.Sync()
	if cerr := r.timeline.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeAtomic(path string, data []byte) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return "", err
	}
	return path, nil
}

// ReadTimeline parses a timeline file. A final line cut short by a crash is
// reported through truncated rather than as an error.
func ReadTimeline(rd io.Reader) (events []Event, truncated bool, err error) {
	data, err := io.ReadAll(rd)
	if err != nil {
		return nil, false, err
	}
	for len(data) > 0 {
		i := 0
		for i < len(data) && data[i] != '\n' {
			i++
		}
		if i == len(data) {
			return events, true, nil
		}
		var ev Event
		if err := json.Unmarshal(data[:i], &ev); err != nil {
			return events, false, fmt.Errorf("timeline line %d: %w", len(events)+1, err)
		}
		events = append(events, ev)
		data = data[i+1:]
	}
	return events, false, nil
}
