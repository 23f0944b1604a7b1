// Package results gathers many runs into one report: every run directory
// under a root (run.json and its timeline, as vmscript run leaves them, for
// example RESULTS/<task>/ of a run matrix) becomes a row — task, verdict,
// exit code, duration, accelerator, first error, its notes — written as
// text, Markdown, one JUnit file, or one static HTML page with a verdict
// grid of scripts against parameter sets.
package results

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// The states of a run.
const (
	Passed    = "passed"    // ended with exit code 0
	Failed    = "failed"    // ended with another exit code
	Cancelled = "cancelled" // stopped by SIGINT or SIGTERM (Ctrl-C, scancel), evidence kept
	Running   = "running"   // no end yet, its process is alive
	Died      = "died"      // no end, and no process: killed, or its machine died
	NotRun    = "not run"   // a matrix task without a run directory
)

// Exit codes of a run stopped by a signal (vmscript's 130 and 143).
const (
	exitSIGINT  = 130
	exitSIGTERM = 143
)

// Run is one run directory's row.
type Run struct {
	// Task is the run directory relative to the root ("05-storage+iso=good").
	Task string `json:"task"`
	// Dir is the run directory.
	Dir string `json:"dir"`
	// Script and Args are what ran.
	Script string            `json:"script"`
	Args   map[string]string `json:"args,omitempty"`
	// State is Passed, Failed, Running or Died.
	State string `json:"state"`
	// ExitCode is the run's exit code (nil until it ends).
	ExitCode *int `json:"exit_code,omitempty"`
	// Start is its start (RFC 3339), DurationS how long it took.
	Start     string  `json:"start"`
	DurationS float64 `json:"duration_s,omitempty"`
	// Accel is the first VM's accelerator ("" without a VM).
	Accel string `json:"accel,omitempty"`
	// Error is the first line of its error.
	Error string `json:"error,omitempty"`
	// Notes is its notes.md relative to the root ("" without one).
	Notes string `json:"notes,omitempty"`
}

// maxDepth bounds how deep Gather looks for run directories.
const maxDepth = 4

// accelWindow is how much of a timeline Gather reads for the accelerator:
// the first VM's start comes early.
const accelWindow = 64 << 10

// Gather reads every run directory under root, ordered by task. live says
// whether a run without an end still has its process (nil: none has).
func Gather(root string, live func(dir string) bool) ([]Run, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.NotFound, err, "report")
	}
	if !st.IsDir() {
		return nil, vmerr.New(vmerr.Usage, "report: %s is not a directory", root)
	}
	var runs []Run
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // an unreadable corner: skip it, report the rest
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if rel != "." && strings.Count(rel, string(filepath.Separator)) >= maxDepth {
			return filepath.SkipDir
		}
		r, ok := readRun(root, p, live)
		if ok {
			runs = append(runs, r)
			return filepath.SkipDir // a run's own subdirectories are its artifacts
		}
		return nil
	})
	sort.Slice(runs, func(i, j int) bool { return runs[i].Task < runs[j].Task })
	return runs, err
}

// readRun reads the run directory dir, if it is one.
func readRun(root, dir string, live func(string) bool) (Run, bool) {
	data, err := os.ReadFile(filepath.Join(dir, journal.InfoFile))
	if err != nil {
		return Run{}, false
	}
	var info journal.Info
	r := Run{Dir: dir, State: Died}
	r.Task, _ = filepath.Rel(root, dir)
	if err := json.Unmarshal(data, &info); err != nil {
		r.Error = "run.json unreadable: " + err.Error()
		return r, true
	}
	r.Script, r.Args, r.Start, r.DurationS, r.ExitCode = info.Script, info.Args, info.Start, info.Duration, info.ExitCode
	r.Error, _, _ = strings.Cut(info.Error, "\n")
	switch {
	case info.End != "" && info.ExitCode != nil && *info.ExitCode == 0:
		r.State = Passed
	case info.End != "" && info.ExitCode != nil && (*info.ExitCode == exitSIGINT || *info.ExitCode == exitSIGTERM):
		r.State = Cancelled
	case info.End != "":
		r.State = Failed
	case live != nil && live(dir):
		r.State = Running
	}
	r.Accel = firstAccel(filepath.Join(dir, journal.TimelineFile))
	if _, err := os.Stat(filepath.Join(dir, "notes.md")); err == nil {
		r.Notes, _ = filepath.Rel(root, filepath.Join(dir, "notes.md"))
	}
	return r, true
}

// AddMissing adds the planned runs (a matrix's tasks: Task, Script,
// Args) that have no run among runs, as NotRun — still queued, or
// cancelled before they started —, keeping the order by task.
func AddMissing(runs []Run, planned []Run) []Run {
	have := map[string]bool{}
	for _, r := range runs {
		have[r.Task] = true
	}
	for _, p := range planned {
		if !have[p.Task] {
			p.State = NotRun
			runs = append(runs, p)
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].Task < runs[j].Task })
	return runs
}

// firstAccel finds the accelerator of the first VM's start in the
// timeline's first accelWindow bytes.
func firstAccel(timeline string) string {
	f, err := os.Open(timeline)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, accelWindow))
	sc.Buffer(make([]byte, 0, 64<<10), accelWindow)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"accel":`)) {
			continue
		}
		var ev journal.Event
		if json.Unmarshal(line, &ev) == nil && ev.Kind == "start" {
			if a, ok := ev.Fields["accel"].(string); ok {
				return a
			}
		}
	}
	return ""
}
