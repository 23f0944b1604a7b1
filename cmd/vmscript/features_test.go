package main

// Tests of the investigator-facing features that need no VM: the generated
// API reference, the reports for machines, shell completion and the REPL
// on a pipe.

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmscript/vmscript/toolkit/luahost"
)

func TestGeneratedDocsAreCurrent(t *testing.T) {
	if bad := luahost.CheckDocs(); len(bad) > 0 {
		t.Errorf("the API reference is incomplete:\n%s", strings.Join(bad, "\n"))
	}
	for _, g := range []struct{ path, want string }{
		{"../../docs/api.md", luahost.Markdown()},
		{"../../lua/types/vmscript.lua", luahost.LuaCATS()},
	} {
		got, err := os.ReadFile(g.path)
		if err != nil {
			t.Errorf("%s: %v (run make docs)", g.path, err)
			continue
		}
		if string(got) != g.want {
			t.Errorf("%s is stale: run `make docs` (go generate ./cmd/vmscript)", g.path)
		}
	}
	// Every registered function has a one-line doc and appears in both.
	md, lc := luahost.Markdown(), luahost.LuaCATS()
	for _, m := range luahost.Modules() {
		for _, f := range m.Funcs {
			if strings.Contains(f.Doc, "\n") || f.Doc == "" {
				t.Errorf("%s.%s: doc must be one line", m.Name, f.Name)
			}
			if !strings.Contains(md, "`"+m.Name+"."+f.Name+"`") || !strings.Contains(lc, "function "+m.Name+"."+f.Name+"(") {
				t.Errorf("%s.%s missing from the generated reference", m.Name, f.Name)
			}
		}
	}
	for _, c := range luahost.Classes() {
		for _, f := range c.Methods {
			if strings.Contains(f.Doc, "\n") || f.Doc == "" {
				t.Errorf("%s:%s: doc must be one line", c.Name, f.Name)
			}
			if !strings.Contains(md, "`"+c.Name+":"+f.Name+"`") || !strings.Contains(lc, ":"+f.Name+"(") {
				t.Errorf("%s:%s missing from the generated reference", c.Name, f.Name)
			}
		}
	}
	for _, want := range []string{"---@meta", "---@class vmscript.QemuStartOpts", "---@field lab? (\"mini\"|\"systemd\")",
		"---@param opts vmscript.QemuStartOpts", "---@return vmscript.VM", "---@class vmscript.VM", "---@field console vmscript.Console",
		"function __Console:expect(pattern, opts) end", "function __Console:interact() end"} {
		if !strings.Contains(lc, want) {
			t.Errorf("annotations lack %q", want)
		}
	}
}

func TestDocCommand(t *testing.T) {
	dir := t.TempDir()
	r := vms(t, dir, nil, "doc", "qemu.start")
	if r.code != 0 || !strings.Contains(r.stdout, "qemu.start(opts: vmscript.QemuStartOpts) -> vmscript.VM") {
		t.Errorf("doc qemu.start: %+v", r)
	}
	r = vms(t, dir, nil, "doc", "console:interact")
	if r.code != 0 || !strings.Contains(r.stdout, "Ctrl-]") {
		t.Errorf("doc console:interact: %+v", r)
	}
	r = vms(t, dir, nil, "doc")
	if r.code != 0 || !strings.Contains(r.stdout, "notes (module)") || !strings.Contains(r.stdout, "vmscript.QemuStartOpts (table type)") {
		t.Errorf("doc: %+v", r)
	}
	if r := vms(t, dir, nil, "doc", "nosuch.thing"); r.code != 2 {
		t.Errorf("doc nosuch.thing: %+v", r)
	}
	r = vms(t, dir, nil, "doc", "--markdown")
	if r.code != 0 || r.stdout != luahost.Markdown() {
		t.Errorf("doc --markdown differs from luahost.Markdown()")
	}
}

func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_vmscript", "zsh": "#compdef vmscript", "fish": "complete -c vmscript"} {
		r := vms(t, t.TempDir(), nil, "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: code %d, lacks %q", shell, r.code, want)
		}
	}
	r := vms(t, t.TempDir(), nil, "__complete", "doc", "qemu")
	if !strings.Contains(r.stdout, "qemu.start") {
		t.Errorf("doc completion lacks qemu.start: %q", r.stdout)
	}
}

func TestReportsJSONAndJUnit(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "steps.lua", `
notes.step("host vs guest")
notes.observe("upstream boots")
notes.conclude("harness cleared")
notes.step("storage")
notes.conclude("FAIL: status file never written")
notes.step("network")
notes.observe("lan missing")
error({kind = "timeout", message = "waited too long for lease"})
`)
	r := vms(t, dir, nil, "run", "steps.lua", "--out", "run", "--json", "r.json", "--junit", "r.xml", "-a", "k=v")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (unchanged by reports): %+v", r.code, r)
	}
	var rep report
	data, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, data)
	}
	if rep.ExitCode != 1 || rep.Passed || rep.Error == nil || rep.Error.Kind != "timeout" || rep.Args["k"] != "v" ||
		!strings.HasSuffix(rep.Notes, "notes.md") || !strings.HasSuffix(rep.Script, "steps.lua") || rep.DurationS <= 0 {
		t.Errorf("report: %+v", rep)
	}
	if len(rep.Steps) != 3 {
		t.Fatalf("steps: %+v", rep.Steps)
	}
	if rep.Steps[0].Failed || !rep.Steps[1].Failed || !rep.Steps[2].Failed || rep.Steps[0].Verdicts[0] != "harness cleared" {
		t.Errorf("step verdicts: %+v", rep.Steps)
	}
	if len(rep.Verdicts) != 2 {
		t.Errorf("verdicts: %v", rep.Verdicts)
	}
	var suites junitSuites
	data, err = os.ReadFile(filepath.Join(dir, "r.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(data, &suites); err != nil {
		t.Fatalf("junit: %v\n%s", err, data)
	}
	s := suites.Suites[0]
	if s.Tests != 3 || s.Failures != 2 || len(s.Cases) != 3 || s.Cases[0].Failure != nil ||
		s.Cases[2].Failure == nil || s.Cases[2].Failure.Type != "timeout" || s.Cases[1].Name != "2. storage" {
		t.Errorf("junit: %s", data)
	}

	// A passing run: exit 0, every case green.
	writeScript(t, dir, "ok.lua", `notes.step("one") notes.conclude("fine")`)
	r = vms(t, dir, nil, "run", "ok.lua", "--out", "run2", "--json", "ok.json", "--junit", "ok.xml")
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	data, _ = os.ReadFile(filepath.Join(dir, "ok.xml"))
	suites = junitSuites{}
	if err := xml.Unmarshal(data, &suites); err != nil || suites.Suites[0].Failures != 0 || suites.Suites[0].Tests != 1 {
		t.Errorf("passing junit: %v %s", err, data)
	}
}

func TestREPLOnAPipe(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "pre.lua", "greeting = 'hello'\n")
	in := strings.Join([]string{
		"greeting",
		"t = {1, 2, {a = 1}, name = 'n'}",
		"t.self = t",
		"t",
		"=1+1",
		"function f()",
		"  return 'multi'",
		"end",
		"f()",
		"error({kind = 'refused', message = 'nope'})",
		"x = = 1",
		"print('still here')",
	}, "\n") + "\n"
	r := vmsStdin(t, dir, in, "repl", "pre.lua", "--out", "run")
	if r.code != 0 {
		t.Fatalf("repl: %+v", r)
	}
	for _, want := range []string{`"hello"`, `{ 1, 2, { a = 1 }, name = "n", self = <cycle> }`, "\n2\n", `"multi"`, "still here"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, want := range []string{"nope [kind=refused]", "stdin:1:"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.ContainsAny(r.stderr+r.stdout, "\x1b\r") {
		t.Errorf("escape sequences on a pipe:\n%q", r.stderr)
	}
	// vmscript.exit in the REPL sets the exit code.
	if r := vmsStdin(t, dir, "vmscript.exit(3)\n", "repl", "--out", "run2"); r.code != 3 {
		t.Errorf("exit(3) in the REPL: %+v", r)
	}
	// --keep-open without a terminal: the REPL reads EOF at once; the code
	// stays the script's.
	writeScript(t, dir, "fail.lua", "error('boom')\n")
	r = vmsStdin(t, dir, "", "run", "-k", "fail.lua", "--out", "run3")
	if r.code != 1 || !strings.Contains(r.stderr, "the script failed; its VMs are still running") || !strings.Contains(r.stderr, "boom") {
		t.Errorf("-k: %+v", r)
	}
	if r := vmsStdin(t, dir, "", "run", "--keep-open=sometimes", "fail.lua"); r.code != 2 {
		t.Errorf("bad --keep-open: %+v", r)
	}
}

// vmsStdin runs the built binary in dir with stdin fed from in.
func vmsStdin(t *testing.T, dir, in string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(in)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}
