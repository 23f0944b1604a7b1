package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmscript-cli-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "vmscript")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("building vmscript: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// vms runs the built binary in dir with args.
func vms(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeScript(t *testing.T, dir, name, src string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHelp(t *testing.T) {
	r := vms(t, t.TempDir(), nil, "--help")
	for _, want := range []string{"run", "check", "lab", "version", "Usage:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--help lacks %q:\n%s", want, r.stdout)
		}
	}
	r = vms(t, t.TempDir(), nil, "run", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--timeout") || !strings.Contains(r.stdout, "Exit codes") {
		t.Errorf("run --help: %d\n%s", r.code, r.stdout)
	}
	r = vms(t, t.TempDir(), nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "vmscript ") {
		t.Errorf("version: %+v", r)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "good.lua", "print('hi')\n")
	writeScript(t, dir, "bad1.lua", "local x =\n")
	writeScript(t, dir, "bad2.lua", "print('a')\nif x then\n  y = = 2\nend\n")
	r := vms(t, dir, nil, "check", "good.lua", "bad1.lua", "bad2.lua")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: %+v", r.code, r)
	}
	if !strings.Contains(r.stdout, "good.lua: ok") {
		t.Errorf("stdout %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "bad1.lua:2: ") || !strings.Contains(r.stderr, "bad2.lua:3: ") {
		t.Errorf("every syntax error as file:line: message, got %q", r.stderr)
	}
	if r := vms(t, dir, nil, "check", "good.lua"); r.code != 0 {
		t.Errorf("good script: %+v", r)
	}
	if r := vms(t, dir, nil, "check", "missing.lua"); r.code != 2 || !strings.Contains(r.stderr, "missing.lua: no such script") {
		t.Errorf("missing script: %+v", r)
	}
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "ok.lua", "print('ran')\n")
	writeScript(t, dir, "syntax.lua", "x = = 1\n")
	if err := os.WriteFile(filepath.Join(dir, "afile"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"run", "nope.lua"}, 2, "nope.lua: no such script"},
		{[]string{"run", "."}, 2, "is a directory"},
		{[]string{"run", "ok.lua", "-a", "novalue"}, 2, `"novalue": want key=value`},
		{[]string{"run", "ok.lua", "-a", "=x"}, 2, "empty key"},
		{[]string{"run", "ok.lua", "--timeout", "soon"}, 2, "--timeout"},
		{[]string{"run", "ok.lua", "--out", "afile/run"}, 2, "run directory"},
		{[]string{"run"}, 2, "exactly one script"},
		{[]string{"run", "ok.lua", "--bogus"}, 2, "unknown flag: --bogus"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"lab", "build", "huge"}, 2, `unknown lab "huge"`},
		{[]string{"lab", "prune", "mini"}, 2, `unknown command "mini"`},
		{[]string{"run", "syntax.lua"}, 1, "syntax.lua:1: "},
		{[]string{"timeline", "nowhere"}, 2, "nowhere/timeline.jsonl: no such file"},
	} {
		r := vms(t, dir, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%v: exit %d stderr %q; want exit %d and %q", tc.args, r.code, r.stderr, tc.code, tc.msg)
		}
		if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); tc.code == 2 && lines > 2 {
			t.Errorf("%v: a usage error should be a line or two, got %q", tc.args, r.stderr)
		}
	}
	// None of the refused runs may leave a run directory behind.
	if _, err := os.Stat(filepath.Join(dir, DefaultWorkNotes)); !os.IsNotExist(err) {
		t.Errorf("refused runs left %s behind: %v", DefaultWorkNotes, err)
	}
}

// TestLabPruneCLI: the command lists a stale image on a dry run, removes it
// otherwise, and keeps what is not an image.
func TestLabPruneCLI(t *testing.T) {
	if _, err := os.Stat("/usr/bin/apt-cache"); err != nil {
		t.Skip("needs apt-cache to resolve the current image keys")
	}
	cache := t.TempDir()
	for _, d := range []string{"mini-0123456789abcdef", "debs"} {
		if err := os.MkdirAll(filepath.Join(cache, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	r := vms(t, dir, nil, "lab", "prune", "--dry-run", "--cache", cache)
	if r.code != 0 || !strings.Contains(r.stdout, "would remove "+filepath.Join(cache, "mini-0123456789abcdef")+" (stale image") || !strings.Contains(r.stdout, "would remove 1 entries") {
		t.Fatalf("dry run: %+v", r)
	}
	r = vms(t, dir, nil, "lab", "prune", "--cache", cache)
	if r.code != 0 || !strings.Contains(r.stdout, "removed 1 entries") {
		t.Fatalf("prune: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(cache, "mini-0123456789abcdef")); !os.IsNotExist(err) {
		t.Fatalf("stale image still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, "debs")); err != nil {
		t.Fatalf("debs removed: %v", err)
	}
}

func readRun(t *testing.T, dir string) (journal.Info, []journal.Event) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, journal.InfoFile))
	if err != nil {
		t.Fatal(err)
	}
	var info journal.Info
	if err := json.Unmarshal(data, &info); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, journal.TimelineFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, truncated, err := journal.ReadTimeline(f)
	if err != nil || truncated {
		t.Fatalf("timeline: %v truncated=%v", err, truncated)
	}
	return info, evs
}

func TestRunWritesRunDirectory(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "probe.lua", `
		print(args.iface, arg[1], arg[2])
		journal.event("decision", { branch = "network" })
	`)
	r := vms(t, dir, nil, "run", "probe.lua", "-a", "iface=lan", "--", "x", "y z")
	if r.code != 0 || r.stdout != "lan\tx\ty z\n" {
		t.Fatalf("%+v", r)
	}
	runs, _ := filepath.Glob(filepath.Join(dir, DefaultWorkNotes, "*-probe"))
	if len(runs) != 1 {
		t.Fatalf("run directories: %v", runs)
	}
	info, evs := readRun(t, runs[0])
	if info.ExitCode == nil || *info.ExitCode != 0 || info.Args["iface"] != "lan" || info.Version == "" || info.End == "" {
		t.Errorf("run.json: %+v", info)
	}
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Source+"/"+ev.Kind)
	}
	if got := strings.Join(kinds, " "); got != "run/start control/listen script/start script/print script/decision run/end" {
		t.Errorf("timeline: %s", got)
	}

	out := filepath.Join(dir, "explicit")
	if r := vms(t, dir, nil, "run", "probe.lua", "--out", out); r.code != 0 {
		t.Fatalf("--out: %+v", r)
	}
	if r := vms(t, dir, nil, "run", "probe.lua", "--out", out); r.code != 2 || !strings.Contains(r.stderr, "already holds a run") {
		t.Fatalf("reusing --out: %+v", r)
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "exit125.lua", "pcall(vmscript.exit, 125)\n")
	writeScript(t, dir, "raise.lua", "\nerror({kind='refused', message='no sudo'})\n")
	writeScript(t, dir, "boom.lua", "local t\nprint(t.x)\n")
	if r := vms(t, dir, nil, "run", "exit125.lua"); r.code != 125 {
		t.Errorf("vmscript.exit(125): %+v", r)
	}
	r := vms(t, dir, nil, "run", "raise.lua")
	if r.code != 1 || !strings.Contains(r.stderr, "raise.lua:2: no sudo [kind=refused]") {
		t.Errorf("table error: %+v", r)
	}
	r = vms(t, dir, nil, "run", "boom.lua")
	if r.code != 1 || !strings.Contains(r.stderr, "boom.lua:2: attempt to index") || !strings.Contains(r.stderr, "stack traceback") {
		t.Errorf("string error: %+v", r)
	}
}

func TestTimeoutInterruptsBlockingCall(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "sleep.lua", "pcall(time.sleep, 120)\ntime.sleep(120)\n")
	r := vms(t, dir, nil, "run", "sleep.lua", "--timeout", "0.5s")
	if r.code != 1 || !strings.Contains(r.stderr, "timed out after 500ms") {
		t.Fatalf("%+v", r)
	}
	if r.took > 1500*time.Millisecond {
		t.Fatalf("timeout of 0.5s took %v", r.took)
	}
}

func TestSIGINTInterruptsBlockingCall(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		dir := t.TempDir()
		writeScript(t, dir, "sleep.lua", "print('sleeping')\ntime.sleep(120)\n")
		cmd := exec.Command(binary, "run", "sleep.lua", "--out", "run")
		cmd.Dir = dir
		var errb bytes.Buffer
		cmd.Stderr = &errb
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 9)
		if _, err := stdout.Read(buf); err != nil {
			t.Fatal(err)
		}
		sent := time.Now()
		_ = cmd.Process.Signal(sig)
		err = cmd.Wait()
		took := time.Since(sent)
		want := 130
		if sig == syscall.SIGTERM {
			want = 143
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != want {
			t.Fatalf("%v: exit %v, want %d; stderr %s", sig, err, want, errb.String())
		}
		if took > time.Second {
			t.Fatalf("%v: took %v to stop", sig, took)
		}
		info, _ := readRun(t, filepath.Join(dir, "run"))
		if info.ExitCode == nil || *info.ExitCode != want {
			t.Fatalf("run.json exit code %v", info.ExitCode)
		}
	}
}

func TestLuaPath(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "lib")
	if err := os.Mkdir(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	writeScript(t, lib, "extra.lua", "return 'extra'\n")
	writeScript(t, dir, "use.lua", "print(require 'extra')\n")
	env := []string{"LUA_PATH=" + filepath.Join(lib, "?.lua")}
	if r := vms(t, dir, env, "run", "use.lua"); r.code != 1 || !strings.Contains(r.stderr, "module extra not found") {
		t.Errorf("LUA_PATH leaked: %+v", r)
	}
	if r := vms(t, dir, env, "run", "use.lua", "--lua-path", filepath.Join(lib, "?.lua")); r.code != 0 || r.stdout != "extra\n" {
		t.Errorf("--lua-path: %+v", r)
	}
	// The embedded library works from any directory.
	writeScript(t, dir, "lib.lua", "local c = require 'vmscript.check'; c.equal(1, 1); print('ok')\n")
	if r := vms(t, dir, nil, "run", "lib.lua"); r.code != 0 || r.stdout != "ok\n" {
		t.Errorf("embedded library: %+v", r)
	}
}

// TestTimelineCLI: the console's output events are printed with their
// lines read back from the console log, in order with the other events.
func TestTimelineCLI(t *testing.T) {
	dir := t.TempDir()
	run, err := journal.New(dir, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	con, err := console.New(console.Options{Name: "vm1", Run: run, LogPath: run.Path("vm1.console.log")})
	if err != nil {
		t.Fatal(err)
	}
	con.Feed([]byte("\x1b[1mfirst line\x1b[0m\r\nsecond\r\n"))
	if _, err := con.ExpectText(context.Background(), "second", console.ExpectOptions{Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	run.Event("script", "note", map[string]any{"text": "after the lines"})
	con.Close(nil)
	<-con.Done()
	run.Close()
	r := vms(t, dir, nil, "timeline", dir)
	out := r.stdout
	first, second := strings.Index(out, "| first line\n"), strings.Index(out, "| second\n")
	match, note := strings.Index(out, "console:vm1 match"), strings.Index(out, "script note")
	if r.code != 0 || first < 0 || first > second || second > match || match > note {
		t.Fatalf("exit %d, output:\n%s%s", r.code, out, r.stderr)
	}
	r = vms(t, dir, nil, "timeline", dir, "--source", "script")
	if strings.Contains(r.stdout, "console:") || !strings.Contains(r.stdout, `text="after the lines"`) {
		t.Fatalf("--source script:\n%s", r.stdout)
	}
}
