package console

import (
	"fmt"
	"strings"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// FailureAction is what a failure pattern does when a console line matches.
type FailureAction string

// The actions of a failure pattern.
const (
	// Fail ends every pending and later wait on the console with kind
	// "watch" naming the pattern (as Watch with fail set).
	Fail FailureAction = "fail"
	// Warn records the line in the timeline (kind "failure") and lets the
	// waits go on.
	Warn FailureAction = "warn"
	// Off removes the pattern.
	Off FailureAction = "off"
)

// Failure is a named console pattern that means the guest is in trouble.
type Failure struct {
	// Name identifies it ("kernel-panic").
	Name string
	// Pattern is matched against every completed line, as Watch does.
	Pattern Pattern
	// Action is Fail or Warn (Off only in SetFailure).
	Action FailureAction
}

// DefaultFailures are on for every console from its first byte (as
// coreos-assembler's kola watches its consoles): a script drops or
// downgrades one with SetFailure, or the Options that make the console.
// A watchdog's soft lockup and a kernel WARNING only warn: under TCG on a
// loaded host the former comes without any fault in the guest. Each is a
// text, an alternation of texts, or a regex with a text every match holds,
// which a watcher looks for before it runs the regex: a console with all of them
// feeds within a few percent of one with none (BenchmarkFeedFailures).
var DefaultFailures = []Failure{
	{"kernel-panic", Pattern{Text: "Kernel panic - not syncing"}, Fail},
	{"oops", Pattern{Text: "Oops: "}, Fail},
	// "BUG: " and a word, but not "BUG: soft lockup" (RE2 has no
	// lookahead): "grep BUG: /var/log/…" echoed is not one.
	{"kernel-bug", Pattern{Regex: `\bBUG: (?:[A-Za-rt-z]|s[a-np-z])`}, Fail},
	{"soft-lockup", Pattern{Text: "BUG: soft lockup"}, Warn},
	{"kernel-warning", Pattern{Regex: `WARNING: CPU: \d+ PID: \d+`}, Warn},
	{"emergency-shell", Pattern{Regex: `Give root password for maintenance|You are in emergency mode|Entering emergency mode`}, Fail},
	{"initramfs-fatal", Pattern{Regex: `dracut: FATAL: |Dropping to a shell!|An error occurred in stage 1 of the boot process|vmscript-live: FATAL: `}, Fail},
	{"oom-kill", Pattern{Regex: `Out of memory: Killed process |oom-kill:`}, Fail},
}

// failureWatch is an installed failure pattern and the watcher behind it.
type failureWatch struct {
	f      Failure
	cancel func()
}

// err is the error of a wait that a fired fail watcher ended.
func (f *watchFail) err(vm, waitedFor string) *vmerr.Error {
	what := "watcher " + f.w.desc
	if f.w.failure != "" {
		what = "failure pattern " + f.w.failure + " (" + f.w.desc + ")"
	}
	e := vmerr.New(vmerr.Watch, "%s: %s matched while waiting for %s: %s", vm, what, waitedFor, f.line).
		With("line", f.line).With("watch", f.w.desc)
	if f.w.failure != "" {
		e.With("failure", f.w.failure)
	}
	return e
}

// SetFailure installs the failure pattern f, replacing the one of its
// name; Action Off removes it. An empty Pattern keeps the installed one's
// (to change only the action). Lines completed from now on are matched.
func (c *Console) SetFailure(f Failure) error {
	if f.Name == "" {
		return vmerr.New(vmerr.Usage, "console %s: a failure pattern needs a name", c.name)
	}
	c.failMu.Lock()
	defer c.failMu.Unlock()
	i := c.failureIndex(f.Name)
	if f.Pattern == (Pattern{}) {
		if i < 0 {
			return vmerr.New(vmerr.Usage, "console %s: no failure pattern %q to change (installed: %s); give a pattern to add one",
				c.name, f.Name, strings.Join(c.failureNames(), ", ")).With("vm", c.name)
		}
		f.Pattern = c.failures[i].f.Pattern
	}
	switch f.Action {
	case Off:
		if i >= 0 {
			c.failures[i].cancel()
			c.failures = append(c.failures[:i:i], c.failures[i+1:]...)
		}
		return nil
	case Fail, Warn:
	default:
		return vmerr.New(vmerr.Usage, "console %s: failure pattern %s: action %q: want fail, warn or off", c.name, f.Name, f.Action).With("vm", c.name)
	}
	cancel, err := c.watch(f.Pattern, f.Action == Fail, nil, f.Name)
	if err != nil {
		return err
	}
	fw := &failureWatch{f: f, cancel: cancel}
	if i < 0 {
		c.failures = append(c.failures, fw)
		return nil
	}
	c.failures[i].cancel()
	c.failures[i] = fw
	return nil
}

// Failures returns the installed failure patterns, in the order they were
// added.
func (c *Console) Failures() []Failure {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	out := make([]Failure, len(c.failures))
	for i, fw := range c.failures {
		out[i] = fw.f
	}
	return out
}

// failureLine is a line a failure pattern matched.
type failureLine struct {
	w    *watcher
	line string
}

// matchInline matches the completed lines against the watchers Feed
// matches itself: the fail watchers (their fired failures) and the failure
// patterns (their lines, for the timeline).
func matchInline(watchers []*watcher, lines []lineRec, texts []string) ([]*watchFail, []failureLine) {
	if texts == nil {
		return nil, nil // no watcher can match these lines (mayMatch)
	}
	var fails []*watchFail
	var hits []failureLine
	for _, w := range watchers {
		if !w.fail && w.failure == "" {
			continue
		}
		for i, l := range lines {
			if !w.match(texts[i]) {
				continue
			}
			if w.fail {
				fails = append(fails, &watchFail{w: w, line: texts[i], textEnd: l.end + 1, rawEnd: l.rawEnd})
			}
			if w.failure != "" {
				hits = append(hits, failureLine{w: w, line: texts[i]})
			}
		}
	}
	return fails, hits
}

// recordFailures puts the lines failure patterns matched into the
// timeline as "failure" events with the pattern's name and action.
func (c *Console) recordFailures(hits []failureLine) {
	if c.run == nil || len(hits) == 0 {
		return
	}
	c.flushOutputLocked() // the lines first
	for _, h := range hits {
		action := Warn
		if h.w.fail {
			action = Fail
		}
		c.run.Event(c.source, "failure", map[string]any{"name": h.w.failure, "action": string(action), "line": h.line})
	}
}

func (c *Console) failureIndex(name string) int {
	for i, fw := range c.failures {
		if fw.f.Name == name {
			return i
		}
	}
	return -1
}

func (c *Console) failureNames() []string {
	var names []string
	for _, fw := range c.failures {
		names = append(names, fw.f.Name)
	}
	if names == nil {
		return []string{"none"}
	}
	return names
}

// installFailures sets the console's failure patterns at New: the
// defaults (unless noDefaults), then each of extra in turn.
func (c *Console) installFailures(noDefaults bool, extra []Failure) error {
	if !noDefaults {
		for _, f := range DefaultFailures {
			if err := c.SetFailure(f); err != nil {
				return fmt.Errorf("default failure pattern %s: %w", f.Name, err)
			}
		}
	}
	for _, f := range extra {
		if err := c.SetFailure(f); err != nil {
			return err
		}
	}
	return nil
}

// CheckFailures checks changes to the default failure patterns as
// Options.Failures would apply them, without a console: each needs a
// name, an action, and a pattern that compiles unless it changes a pattern
// already there.
func CheckFailures(fs []Failure) error {
	known := map[string]bool{}
	for _, f := range DefaultFailures {
		known[f.Name] = true
	}
	for _, f := range fs {
		switch {
		case f.Name == "":
			return vmerr.New(vmerr.Usage, "a failure pattern needs a name")
		case f.Action != Fail && f.Action != Warn && f.Action != Off:
			return vmerr.New(vmerr.Usage, "failure pattern %s: action %q: want fail, warn or off", f.Name, f.Action)
		case f.Pattern == (Pattern{}) && !known[f.Name]:
			return vmerr.New(vmerr.Usage, "failure pattern %s: not a default one (%s); give a pattern to add it", f.Name, strings.Join(defaultNames(), ", "))
		}
		if f.Pattern != (Pattern{}) {
			if _, err := compilePatterns([]Pattern{f.Pattern}, false); err != nil {
				return vmerr.Wrap(vmerr.Usage, err, "failure pattern %s", f.Name)
			}
		}
		known[f.Name] = f.Action != Off
	}
	return nil
}

func defaultNames() []string {
	var names []string
	for _, f := range DefaultFailures {
		names = append(names, f.Name)
	}
	return names
}
