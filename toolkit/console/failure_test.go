package console

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Real lines each default failure pattern is for, and lines that look
// like them but are not failures.
var failureLines = map[string][]string{
	"kernel-panic":    {"[    2.101234] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"},
	"oops":            {"[   12.5] Oops: 0002 [#1] PREEMPT SMP NOPTI", "[   12.5] Oops: general protection fault, probably for non-canonical address"},
	"kernel-bug":      {"[    7.2] BUG: kernel NULL pointer dereference, address: 0000000000000000", "[ 3.1] BUG: scheduling while atomic: swapper/0/1/0x00000002", "BUG: sleeping function called from invalid context"},
	"soft-lockup":     {"[   60.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:35]"},
	"kernel-warning":  {"[    1.9] WARNING: CPU: 0 PID: 1 at drivers/base/core.c:123 device_add+0x1/0x2"},
	"emergency-shell": {"Give root password for maintenance", "You are in emergency mode. After logging in, type \"journalctl -xb\" to view", "Entering emergency mode. Exit the shell to continue."},
	"initramfs-fatal": {"[    5.0] dracut: FATAL: No or empty root= argument", "ALERT!  /dev/sda1 does not exist.  Dropping to a shell!", "An error occurred in stage 1 of the boot process, which must mount the", "vmscript-live: FATAL: no volume labelled X after 30s"},
	"oom-kill":        {"[  100.2] Out of memory: Killed process 412 (stress) total-vm:1048576kB", "[  100.2] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null)"},
}

var harmlessLines = []string{
	"mini# echo ok", "[    0.0] Linux version 6.1.0-18-amd64", "WARNING: no such file", "grep -c BUG: /var/log/x",
	"systemd[1]: Reached target emergency.target is not this", "DEBUG: kernel", "panic=0 on the command line",
}

func TestDefaultFailurePatterns(t *testing.T) {
	byName := map[string]Failure{}
	for _, f := range DefaultFailures {
		byName[f.Name] = f
		if len(failureLines[f.Name]) == 0 {
			t.Errorf("no sample line for %s", f.Name)
		}
	}
	for name, lines := range failureLines {
		for _, l := range lines {
			var hit []string
			for _, f := range DefaultFailures {
				if (&watcher{lit: f.Pattern.Text, re: mustRe(t, f.Pattern)}).match(l) {
					hit = append(hit, f.Name)
				}
			}
			if len(hit) != 1 || hit[0] != name {
				t.Errorf("%q matched %v, want [%s]", l, hit, name)
			}
		}
	}
	for _, l := range harmlessLines {
		for _, f := range DefaultFailures {
			if (&watcher{lit: f.Pattern.Text, re: mustRe(t, f.Pattern)}).match(l) {
				t.Errorf("harmless %q matched %s", l, f.Name)
			}
		}
	}
}

func mustRe(t *testing.T, p Pattern) *regexp.Regexp {
	t.Helper()
	cp, err := compilePatterns([]Pattern{p}, false)
	if err != nil {
		t.Fatal(err)
	}
	return cp[0].re
}

// TestFailuresOnByDefault: a console watches the default patterns from its
// first byte; a panic ends a wait naming the pattern; a warning only goes
// into the timeline; a script downgrades, drops and adds patterns.
func TestFailuresOnByDefault(t *testing.T) {
	dir := t.TempDir()
	run, err := journal.New(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := newConsole(t, Options{Run: run, Failures: []Failure{{Name: "mine", Pattern: Pattern{Text: "provisioning failed"}, Action: Fail}}})
	if got := len(c.Failures()); got != len(DefaultFailures)+1 {
		t.Fatalf("%d failure patterns, want the %d defaults and mine", got, len(DefaultFailures))
	}
	c.Feed([]byte("[ 1.0] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2\r\nlogin: "))
	if _, err := c.Expect(context.Background(), text("login: "), sec(5)); err != nil {
		t.Fatalf("a warning ended the wait: %v", err)
	}
	c.Feed([]byte("\r\n[ 2.0] Kernel panic - not syncing: Attempted to kill init!\r\n"))
	_, err = c.Expect(context.Background(), text("never"), sec(5))
	var e *vmerr.Error
	if !errors.As(err, &e) || e.Kind != vmerr.Watch || e.Context["failure"] != "kernel-panic" ||
		!strings.Contains(e.Message, "failure pattern kernel-panic") || !strings.Contains(e.Message, "Attempted to kill init") {
		t.Fatalf("err %v", err)
	}
	// Downgraded, the panic no longer ends waits; dropped, oom-kill neither.
	if err := c.SetFailure(Failure{Name: "kernel-panic", Action: Warn}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetFailure(Failure{Name: "oom-kill", Action: Off}); err != nil {
		t.Fatal(err)
	}
	c.Feed([]byte("Out of memory: Killed process 7 (x)\r\nKernel panic - not syncing: again\r\nok\r\n"))
	if _, err := c.Expect(context.Background(), text("ok"), sec(5)); err != nil {
		t.Fatalf("after downgrade: %v", err)
	}
	c.Feed([]byte("provisioning failed: no disk\r\n"))
	if _, err := c.Expect(context.Background(), text("never"), sec(5)); !vmerr.Is(err, vmerr.Watch) || !strings.Contains(err.Error(), "failure pattern mine") {
		t.Fatalf("mine: %v", err)
	}
	for _, f := range c.Failures() {
		if f.Name == "oom-kill" || f.Name == "kernel-panic" && f.Action != Warn {
			t.Errorf("after changes: %+v", f)
		}
	}
	// Bad input.
	for _, bad := range []Failure{{Name: "nope", Action: Fail}, {Name: "x", Pattern: Pattern{Text: "x"}, Action: "explode"},
		{Pattern: Pattern{Text: "x"}, Action: Fail}, {Name: "y", Pattern: Pattern{Regex: "("}, Action: Fail}} {
		if err := c.SetFailure(bad); !vmerr.Is(err, vmerr.Usage) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if err := c.SetFailure(Failure{Name: "nope", Action: Fail}); !strings.Contains(err.Error(), "kernel-panic, oops") {
		t.Errorf("an unknown name does not list the installed ones: %v", err)
	}
	c.Close(nil)
	run.Close()
	b, _ := os.ReadFile(filepath.Join(dir, journal.TimelineFile))
	var got []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"kind":"failure"`) {
			got = append(got, l)
		}
	}
	if len(got) != 4 || !strings.Contains(got[0], `"name":"kernel-warning"`) || !strings.Contains(got[0], `"action":"warn"`) ||
		!strings.Contains(got[1], `"action":"fail"`) || !strings.Contains(got[2], `"name":"kernel-panic"`) || !strings.Contains(got[2], `"action":"warn"`) ||
		!strings.Contains(got[3], `"name":"mine"`) {
		t.Errorf("failure events:\n%s", strings.Join(got, "\n"))
	}
}

func TestLiteralSetAndRequiredLiteral(t *testing.T) {
	for _, c := range []struct {
		re   string
		lits []string
		need string
	}{
		{`Kernel panic|Oops: `, []string{"Kernel panic", "Oops: "}, ""},
		{`(You are in|Entering) emergency mode`, []string{"You are in emergency mode", "Entering emergency mode"}, " emergency mode"},
		{`abc`, []string{"abc"}, "abc"},
		{`\bBUG: (?:[A-Z]|s[a-n])`, nil, "BUG: "},
		{`WARNING: CPU: \d+`, nil, "WARNING: CPU: "},
		{`(?i)panic`, nil, ""},
		{`^login: `, nil, "login: "},
		{`a|`, nil, ""},
		{`x\ny`, nil, ""},
	} {
		lits, ok := literalSet(c.re)
		if strings.Join(lits, "|") != strings.Join(c.lits, "|") || ok != (c.lits != nil) {
			t.Errorf("literalSet(%q) = %q, %v; want %q", c.re, lits, ok, c.lits)
		}
		if got := requiredLiteral(c.re); got != c.need {
			t.Errorf("requiredLiteral(%q) = %q, want %q", c.re, got, c.need)
		}
	}
}
