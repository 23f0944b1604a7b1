// Package notes is the investigator's notebook of a run: notes.md in the run
// directory, written for a colleague who was not there. Every entry (a step,
// an observation with its evidence, a command with its exit code and an
// excerpt of its output, a conclusion, a saved or attached artifact) is
// timestamped with the wall time and the seconds since the run started,
// appended with one write(2) and synced as it happens, so a crash or kill -9
// keeps every entry written before it. Every entry is also a timeline event
// (source "notes").
//
// Artifacts live in the artifacts/ subdirectory of the run directory and are
// linked with relative markdown links, so the run directory can be moved or
// archived and its notes still lead to their evidence.
package notes

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// FileName is the name of the notebook inside the run directory.
const FileName = "notes.md"

// ArtifactDir is the subdirectory of the run directory holding saved and
// attached artifacts.
const ArtifactDir = "artifacts"

// Source is the timeline source of every notes event.
const Source = "notes"

// Excerpt bounds: a command's output or inline evidence longer than this is
// shown as its first and last lines, with a link to the full text.
const (
	ExcerptHead = 10
	ExcerptTail = 10
	// InlineMax is the longest inline evidence (in bytes) written into
	// notes.md as is; longer text is saved as an artifact.
	InlineMax = 2048
	// CopyMax is the largest evidence file outside the run directory that
	// Observe copies in; bigger ones are linked by absolute path.
	CopyMax = 64 << 20
)

// Kinds of entries.
const (
	KindStep     = "step"
	KindObserve  = "observe"
	KindConclude = "conclude"
	KindCommand  = "command"
	KindSave     = "save"
	KindAttach   = "attach"
)

// Entry is one entry of the notebook, kept in memory for reports.
type Entry struct {
	// Kind is one of the Kind constants.
	Kind string `json:"kind"`
	// Wall is when the entry was made.
	Wall time.Time `json:"wall"`
	// Offset is the time since the run started.
	Offset time.Duration `json:"offset_ns"`
	// Step is the 1-based number of the step the entry belongs to (0 before
	// the first step).
	Step int `json:"step"`
	// Text is the step title, observation, conclusion or command line.
	Text string `json:"text,omitempty"`
	// Evidence are the run-relative paths (or, outside the run directory,
	// absolute paths) of an observation's evidence files.
	Evidence []string `json:"evidence,omitempty"`
	// Inline is evidence given as text rather than as a file.
	Inline []string `json:"inline,omitempty"`
	// Code is a command's exit code.
	Code int `json:"code,omitempty"`
	// Artifact is the run-relative path of a saved/attached file or of a
	// command's full output.
	Artifact string `json:"artifact,omitempty"`
}

// Step is a step with what was observed and concluded during it, for
// --json/--junit style reports.
type Step struct {
	// Number is the step's 1-based number (0 for entries before any step).
	Number int `json:"number"`
	// Title is the step's title.
	Title string `json:"title"`
	// Start and End are offsets from the run start; End is the start of the
	// next step, or the time of Close (or of the last entry while open).
	Start time.Duration `json:"start_ns"`
	End   time.Duration `json:"end_ns"`
	// Entries are the step's entries after the step entry itself.
	Entries []Entry `json:"entries"`
	// Conclusions are the texts of the step's conclusions (its verdicts).
	Conclusions []string `json:"conclusions,omitempty"`
}

// Duration is how long the step lasted.
func (s Step) Duration() time.Duration { return s.End - s.Start }

// Options configures a Notebook's header.
type Options struct {
	// Script is the script's path; default: the run's Info().Script.
	Script string
	// Host is the machine's name; default: os.Hostname().
	Host string
	// Title heads the notebook; default "Notes: <script base name>".
	Title string
}

// Notebook is notes.md of one run. It is safe for concurrent use.
type Notebook struct {
	run  *journal.Run
	path string

	mu      sync.Mutex
	f       *os.File
	closed  bool
	entries []Entry
	step    int
	ended   time.Duration
	cmdSeq  int
	evSeq   int
}

// New creates notes.md in the run directory and writes its header. A run
// directory that already has notes.md is refused (it belongs to another
// notebook of the same run).
func New(run *journal.Run, opt Options) (*Notebook, error) {
	if run == nil {
		return nil, vmerr.New(vmerr.Usage, "notes: no run directory")
	}
	p := run.Path(FileName)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, vmerr.Wrap(vmerr.Usage, err, "notes: %s already exists", p)
		}
		return nil, vmerr.Wrap(vmerr.IO, err, "notes: create %s", p)
	}
	n := &Notebook{run: run, path: p, f: f}
	if opt.Script == "" {
		opt.Script = run.Info().Script
	}
	if opt.Host == "" {
		opt.Host, _ = os.Hostname()
	}
	if opt.Title == "" {
		base := filepath.Base(opt.Script)
		if opt.Script == "" {
			base = filepath.Base(run.Dir())
		}
		opt.Title = "Notes: " + base
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", oneLine(opt.Title))
	if opt.Script != "" {
		fmt.Fprintf(&b, "- Script: `%s`\n", opt.Script)
	}
	start := run.Start()
	fmt.Fprintf(&b, "- Started: %s\n", start.Format("2006-01-02 15:04:05 MST (Z07:00)"))
	fmt.Fprintf(&b, "- Host: %s (%s/%s)\n", opt.Host, runtime.GOOS, runtime.GOARCH)
	if v := run.Info().Version; v != "" {
		fmt.Fprintf(&b, "- vmscript: %s\n", v)
	}
	fmt.Fprintf(&b, "- Run directory: the directory of this file; `%s` holds every event of every channel, `%s/` the saved evidence.\n\n",
		journal.TimelineFile, ArtifactDir)
	b.WriteString("Each entry is stamped with the wall-clock time and, in brackets, the seconds since the run started.\n")
	if err := n.writeLocked(b.String()); err != nil {
		f.Close()
		return nil, err
	}
	run.Event(Source, "open", map[string]any{"file": FileName})
	return n, nil
}

// Path returns the absolute path of notes.md.
func (n *Notebook) Path() string { return n.path }

// Run returns the run the notebook belongs to.
func (n *Notebook) Run() *journal.Run { return n.run }

// writeLocked appends text with one write and syncs it; the caller holds mu
// (or owns n exclusively).
func (n *Notebook) writeLocked(text string) error {
	if n.closed {
		return vmerr.New(vmerr.Usage, "notes: %s is closed", n.path)
	}
	if _, err := n.f.Write([]byte(text)); err != nil {
		return vmerr.Wrap(vmerr.IO, err, "notes: write %s", n.path)
	}
	if err := n.f.Sync(); err != nil {
		return vmerr.Wrap(vmerr.IO, err, "notes: sync %s", n.path)
	}
	return nil
}

// stamp returns the entry's wall time and offset, and its header prefix.
func (n *Notebook) stamp() (time.Time, time.Duration, string) {
	now := time.Now()
	off := now.Sub(n.run.Start())
	return now, off, fmt.Sprintf("%s [+%.1fs]", now.Format("15:04:05.000"), off.Seconds())
}

// add records e in memory, writes text and emits the timeline event.
func (n *Notebook) add(e Entry, text string, fields map[string]any) error {
	if err := n.writeLocked(text); err != nil {
		return err
	}
	n.entries = append(n.entries, e)
	if e.Offset > n.ended {
		n.ended = e.Offset
	}
	if fields == nil {
		fields = map[string]any{}
	}
	fields["step"] = e.Step
	if e.Text != "" {
		fields["text"] = e.Text
	}
	if len(e.Evidence) > 0 {
		fields["evidence"] = e.Evidence
	}
	if e.Artifact != "" {
		fields["artifact"] = e.Artifact
	}
	fields["file"] = FileName
	n.run.Event(Source, e.Kind, fields)
	return nil
}

// Step starts a new step: a heading in notes.md. Entries until the next step
// belong to it.
func (n *Notebook) Step(title string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	now, off, st := n.stamp()
	n.step++
	e := Entry{Kind: KindStep, Wall: now, Offset: off, Step: n.step, Text: title}
	text := fmt.Sprintf("\n## %d. %s\n\n_%s_\n", n.step, oneLine(title), st)
	return n.add(e, text, nil)
}

// Observe records an observation with its evidence. Each piece of evidence
// is a file (a path that exists, absolute or relative to the run directory),
// linked relatively when it lies in the run directory and copied into
// artifacts/ otherwise (files over CopyMax are linked by absolute path), or
// else text, quoted inline when short and saved as an artifact when long.
func (n *Notebook) Observe(text string, evidence ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	now, off, st := n.stamp()
	e := Entry{Kind: KindObserve, Wall: now, Offset: off, Step: n.step, Text: text}
	var b strings.Builder
	fmt.Fprintf(&b, "\n**%s · Observed:**%s", st, block(text))
	var links []string
	var inline []string
	for _, ev := range evidence {
		if ev == "" {
			continue
		}
		if p, ok := n.evidenceFile(ev); ok {
			rel, err := n.linkable(p)
			if err != nil {
				return err
			}
			e.Evidence = append(e.Evidence, rel)
			links = append(links, n.link(rel))
			continue
		}
		if len(ev) > InlineMax || strings.Count(ev, "\n") > ExcerptHead+ExcerptTail {
			n.evSeq++
			rel, err := n.saveLocked(fmt.Sprintf("evidence-%03d.txt", n.evSeq), []byte(ev))
			if err != nil {
				return err
			}
			e.Evidence = append(e.Evidence, rel)
			inline = append(inline, excerpt(ev)+"\n"+"Full text: "+n.link(rel)+"\n")
			continue
		}
		e.Inline = append(e.Inline, ev)
		inline = append(inline, fence(ev))
	}
	if len(links) > 0 {
		fmt.Fprintf(&b, "Evidence: %s\n", strings.Join(links, ", "))
	}
	for _, in := range inline {
		b.WriteString("\n" + in)
	}
	return n.add(e, b.String(), map[string]any{"inline": len(e.Inline)})
}

// Conclude records a conclusion (a verdict) of the current step.
func (n *Notebook) Conclude(text string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	now, off, st := n.stamp()
	e := Entry{Kind: KindConclude, Wall: now, Offset: off, Step: n.step, Text: text}
	return n.add(e, fmt.Sprintf("\n**%s · Concluded:**%s", st, block(text)), nil)
}

// Command records a command that was run, its exit code and an excerpt of
// its output. artifact is the full output's file (absolute or run-relative);
// when it is empty and the output is longer than the excerpt, the output is
// saved as an artifact first.
func (n *Notebook) Command(cmd string, code int, output, artifact string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	now, off, st := n.stamp()
	e := Entry{Kind: KindCommand, Wall: now, Offset: off, Step: n.step, Text: cmd, Code: code}
	n.cmdSeq++
	if artifact == "" && output != excerpt(output) {
		rel, err := n.saveLocked(fmt.Sprintf("cmd-%03d-%s.txt", n.cmdSeq, slug(cmd)), []byte(output))
		if err != nil {
			return err
		}
		artifact = rel
	} else if artifact != "" {
		p, ok := n.evidenceFile(artifact)
		if !ok {
			return vmerr.New(vmerr.NotFound, "notes: artifact %s of command %q does not exist", artifact, cmd)
		}
		rel, err := n.linkable(p)
		if err != nil {
			return err
		}
		artifact = rel
	}
	e.Artifact = artifact
	var b strings.Builder
	fmt.Fprintf(&b, "\n**%s · Ran** `%s` **→ exit %d**\n", st, strings.ReplaceAll(oneLine(cmd), "`", "'"), code)
	if output != "" {
		b.WriteString("\n" + fence(excerpt(output)))
	} else {
		b.WriteString("\n_(no output)_\n")
	}
	if artifact != "" {
		fmt.Fprintf(&b, "Full output: %s\n", n.link(artifact))
	}
	return n.add(e, b.String(), map[string]any{"code": code})
}

// Save writes data as an artifact named after name (sanitised: no
// directories, no leading dots, only letters, digits, '.', '_' and '-'),
// never overwriting: a taken name gets a -2, -3, … suffix before its
// extension. It returns the artifact's absolute path.
func (n *Notebook) Save(name string, data []byte) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now, off, st := n.stamp()
	rel, err := n.saveLocked(name, data)
	if err != nil {
		return "", err
	}
	e := Entry{Kind: KindSave, Wall: now, Offset: off, Step: n.step, Text: name, Artifact: rel}
	text := fmt.Sprintf("\n**%s · Saved** %s (%s)\n", st, n.link(rel), humanSize(int64(len(data))))
	if err := n.add(e, text, map[string]any{"bytes": len(data)}); err != nil {
		return "", err
	}
	return n.run.Path(rel), nil
}

// Attach copies an existing file into artifacts/ (same naming rules as
// Save) and links it. It returns the copy's absolute path.
func (n *Notebook) Attach(path string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now, off, st := n.stamp()
	rel, size, err := n.copyIn(path)
	if err != nil {
		return "", err
	}
	e := Entry{Kind: KindAttach, Wall: now, Offset: off, Step: n.step, Text: path, Artifact: rel}
	text := fmt.Sprintf("\n**%s · Attached** `%s` as %s (%s)\n", st, oneLine(path), n.link(rel), humanSize(size))
	if err := n.add(e, text, map[string]any{"source": path, "bytes": size}); err != nil {
		return "", err
	}
	return n.run.Path(rel), nil
}

// Entries returns a copy of the entries so far.
func (n *Notebook) Entries() []Entry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Entry(nil), n.entries...)
}

// Steps groups the entries by step. Entries before the first step form a
// step numbered 0 with an empty title, present only when there are some.
func (n *Notebook) Steps() []Step {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Step
	cur := -1
	for _, e := range n.entries {
		if e.Kind == KindStep {
			if cur >= 0 {
				out[cur].End = e.Offset
			}
			out = append(out, Step{Number: e.Step, Title: e.Text, Start: e.Offset})
			cur = len(out) - 1
			continue
		}
		if cur < 0 {
			out = append(out, Step{Number: 0, Start: 0})
			cur = 0
		}
		out[cur].Entries = append(out[cur].Entries, e)
		if e.Kind == KindConclude {
			out[cur].Conclusions = append(out[cur].Conclusions, e.Text)
		}
	}
	if cur >= 0 {
		out[cur].End = n.ended
	}
	return out
}

// Close writes a closing line and closes notes.md. Later entries fail.
func (n *Notebook) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	_, off, st := n.stamp()
	n.ended = off
	kept := 0
	for _, e := range n.entries {
		if e.Kind == KindStep {
			kept++
		}
	}
	err := n.writeLocked(fmt.Sprintf("\n---\n_Notes closed at %s after %d step(s) and %d entries._\n", st, kept, len(n.entries)))
	n.closed = true
	if cerr := n.f.Close(); err == nil && cerr != nil {
		err = vmerr.Wrap(vmerr.IO, cerr, "notes: close %s", n.path)
	}
	n.run.Event(Source, "close", map[string]any{"entries": len(n.entries)})
	return err
}

// evidenceFile reports whether ev names an existing regular file (absolute,
// or relative to the run directory) and returns its absolute path.
func (n *Notebook) evidenceFile(ev string) (string, bool) {
	if strings.ContainsAny(ev, "\n\x00") || len(ev) > 4096 {
		return "", false
	}
	p := ev
	if !filepath.IsAbs(p) {
		p = n.run.Path(p)
	}
	st, err := os.Stat(p)
	if err != nil || !st.Mode().IsRegular() {
		return "", false
	}
	return filepath.Clean(p), true
}

// linkable returns the run-relative path of p, copying p into artifacts/
// when it lies outside the run directory (or its absolute path when it is
// too big to copy).
func (n *Notebook) linkable(p string) (string, error) {
	if rel, ok := n.inRun(p); ok {
		return rel, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", vmerr.Wrap(vmerr.NotFound, err, "notes: evidence %s", p)
	}
	if st.Size() > CopyMax {
		return p, nil
	}
	rel, _, err := n.copyIn(p)
	return rel, err
}

func (n *Notebook) inRun(p string) (string, bool) {
	rel, err := filepath.Rel(n.run.Dir(), p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", false
	}
	return filepath.ToSlash(rel), true
}

// link is a markdown link to a run-relative (or absolute) path.
func (n *Notebook) link(rel string) string {
	u := (&url.URL{Path: rel}).EscapedPath()
	if filepath.IsAbs(rel) {
		u = (&url.URL{Scheme: "file", Path: rel}).String()
	}
	label := strings.NewReplacer("[", "\\[", "]", "\\]").Replace(rel)
	return fmt.Sprintf("[%s](%s)", label, u)
}

// saveLocked writes data to a fresh artifact and returns its run-relative path.
func (n *Notebook) saveLocked(name string, data []byte) (string, error) {
	f, rel, err := n.createArtifact(name)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", vmerr.Wrap(vmerr.IO, err, "notes: write artifact %s", n.run.Path(rel))
	}
	return rel, nil
}

// copyIn copies the file at src into a fresh artifact.
func (n *Notebook) copyIn(src string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", 0, vmerr.Wrap(vmerr.NotFound, err, "notes: attach %s", src)
		}
		return "", 0, vmerr.Wrap(vmerr.IO, err, "notes: attach %s", src)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", 0, vmerr.Wrap(vmerr.IO, err, "notes: attach %s", src)
	}
	if !st.Mode().IsRegular() {
		return "", 0, vmerr.New(vmerr.Usage, "notes: attach %s: not a regular file (%s)", src, st.Mode().Type())
	}
	f, rel, err := n.createArtifact(filepath.Base(src))
	if err != nil {
		return "", 0, err
	}
	size, err := io.Copy(f, in)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(n.run.Path(rel))
		return "", 0, vmerr.Wrap(vmerr.IO, err, "notes: copy %s into the run directory", src)
	}
	return rel, size, nil
}

// createArtifact creates artifacts/<safe name>, adding a suffix when the
// name is taken.
func (n *Notebook) createArtifact(name string) (*os.File, string, error) {
	dir := n.run.Path(ArtifactDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", vmerr.Wrap(vmerr.IO, err, "notes: artifact directory")
	}
	safe := SafeName(name)
	ext := filepath.Ext(safe)
	stem := strings.TrimSuffix(safe, ext)
	if stem == "" {
		stem, ext = safe, ""
	}
	for i := 1; i < 10000; i++ {
		cand := safe
		if i > 1 {
			cand = fmt.Sprintf("%s-%d%s", stem, i, ext)
		}
		f, err := os.OpenFile(filepath.Join(dir, cand), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			return f, ArtifactDir + "/" + cand, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, "", vmerr.Wrap(vmerr.IO, err, "notes: create artifact %s", cand)
		}
	}
	return nil, "", vmerr.New(vmerr.IO, "notes: no free name for artifact %s", safe)
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// SafeName turns name into a file name that stays inside the artifact
// directory: directory separators and other unsafe characters become '_',
// leading dots are dropped, the length is bounded; "" becomes "artifact".
func SafeName(name string) string {
	s := unsafeChars.ReplaceAllString(name, "_")
	s = strings.TrimLeft(s, "._")
	if len(s) > 120 {
		ext := filepath.Ext(s)
		if len(ext) > 16 {
			ext = ""
		}
		s = s[:120-len(ext)] + ext
	}
	if s == "" {
		s = "artifact"
	}
	return s
}

func slug(cmd string) string {
	s := SafeName(cmd)
	if len(s) > 40 {
		s = s[:40]
	}
	return strings.Trim(s, "._-")
}

// excerpt returns text, or its first and last lines when it is long.
func excerpt(text string) string {
	lines := strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) <= ExcerptHead+ExcerptTail && len(text) <= InlineMax {
		return text
	}
	if len(lines) <= ExcerptHead+ExcerptTail {
		return text[:InlineMax] + fmt.Sprintf("\n… (%d more bytes)\n", len(text)-InlineMax)
	}
	head := strings.Join(lines[:ExcerptHead], "")
	tail := strings.Join(lines[len(lines)-ExcerptTail:], "")
	out := head + fmt.Sprintf("… (%d lines omitted)\n", len(lines)-ExcerptHead-ExcerptTail) + tail
	if len(out) > 2*InlineMax {
		out = out[:2*InlineMax] + "\n… (cut)\n"
	}
	return out
}

// fence puts text in a fenced code block that its content cannot close.
func fence(text string) string {
	f := "```"
	for strings.Contains(text, f) {
		f += "`"
	}
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	return f + "text\n" + text + f + "\n"
}

// block renders entry text: on the header line when it is one line, as a
// quote below it otherwise.
func block(text string) string {
	text = strings.TrimRight(text, "\n")
	if !strings.Contains(text, "\n") {
		return " " + text + "\n"
	}
	var b strings.Builder
	b.WriteString("\n\n")
	for _, l := range strings.Split(text, "\n") {
		b.WriteString("> " + l + "\n")
	}
	return b.String()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}
