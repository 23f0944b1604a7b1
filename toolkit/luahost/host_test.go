package luahost

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// runLua writes src as main.lua (plus extra files) into a temp dir and runs it.
func runLua(t *testing.T, ctx context.Context, src string, files map[string]string, opt Options) (string, error) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := filepath.Join(dir, "main.lua")
	if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	opt.Script = script
	opt.Stdout = &out
	if opt.Library == nil {
		opt.Library = fstest.MapFS{
			"vmscript/libonly.lua": {Data: []byte(`return { from = "embedded" }`)},
			"vmscript/shadow.lua":  {Data: []byte(`return { from = "embedded" }`)},
			"vmscript/bad.lua":     {Data: []byte(`return {`)},
		}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	h, err := New(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	err = h.RunScript()
	return out.String(), err
}

func TestRequireOrder(t *testing.T) {
	extra := t.TempDir()
	if err := os.WriteFile(filepath.Join(extra, "viapath.lua"), []byte(`return { from = "lua-path" }`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runLua(t, nil, `
		print(require("vmscript.libonly").from)
		print(require("vmscript.shadow").from)
		print(require("helper").from)
		print(require("viapath").from)
	`, map[string]string{
		"vmscript/shadow.lua": `return { from = "script-dir" }`,
		"helper/init.lua":     `return { from = "script-dir-init" }`,
	}, Options{LuaPath: filepath.Join(extra, "?.lua")})
	if err != nil {
		t.Fatal(err)
	}
	want := "embedded\nscript-dir\nscript-dir-init\nlua-path\n"
	if out != want {
		t.Fatalf("require order: got %q, want %q", out, want)
	}
}

func TestLuaPathFromEnvironmentIgnored(t *testing.T) {
	leak := t.TempDir()
	if err := os.WriteFile(filepath.Join(leak, "leaked.lua"), []byte(`return 1`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LUA_PATH", filepath.Join(leak, "?.lua"))
	_, err := runLua(t, nil, `require "leaked"`, nil, Options{})
	var se *ScriptError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "module leaked not found") {
		t.Fatalf("LUA_PATH leaked in or odd error: %v", err)
	}
}

func TestEmbeddedSyntaxErrorNamesFile(t *testing.T) {
	_, err := runLua(t, nil, `require "vmscript.bad"`, nil, Options{})
	if err == nil || !strings.Contains(err.Error(), "embedded:vmscript/bad.lua:1") {
		t.Fatalf("got %v", err)
	}
}

func TestArgs(t *testing.T) {
	out, err := runLua(t, nil, `print(args.iface, args["x-y"], #arg, arg[1], arg[2], arg[0] ~= nil)`, nil,
		Options{Args: map[string]string{"iface": "lan", "x-y": "1"}, Positional: []string{"a", "b c"}})
	if err != nil {
		t.Fatal(err)
	}
	if out != "lan\t1\t2\ta\tb c\ttrue\n" {
		t.Fatalf("got %q", out)
	}
}

func TestStringErrorHasFileLineAndTraceback(t *testing.T) {
	_, err := runLua(t, nil, "local t = nil\nlocal function f()\n  return t.x\nend\nf()\n", nil, Options{})
	var se *ScriptError
	if !errors.As(err, &se) {
		t.Fatalf("got %T %v", err, err)
	}
	if !strings.Contains(se.Error(), "main.lua:3:") || !strings.Contains(se.Traceback, "main.lua:5") {
		t.Fatalf("error %q traceback %q", se.Error(), se.Traceback)
	}
}

func TestTableErrorShape(t *testing.T) {
	_, err := runLua(t, nil, "\n\nerror({kind = 'refused', message = 'sudo said no'})\n", nil, Options{})
	var se *ScriptError
	if !errors.As(err, &se) {
		t.Fatalf("got %T %v", err, err)
	}
	if se.Kind != "refused" || se.Message != "sudo said no" || !strings.HasSuffix(se.Where, "main.lua:3") {
		t.Fatalf("got kind=%q message=%q where=%q", se.Kind, se.Message, se.Where)
	}
	if got := se.Error(); !strings.Contains(got, "main.lua:3: sudo said no [kind=refused]") {
		t.Fatalf("Error() = %q", got)
	}
}

func TestHostErrorIsCatchableTable(t *testing.T) {
	out, err := runLua(t, nil, `
		local ok, e = pcall(time.sleep, "ten")
		print(ok, e.kind, type(e.message), e.where ~= nil)
		print(tostring(e):find("bad argument #1 to 'time.sleep'", 1, true) ~= nil)
	`, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if out != "false\tusage\tstring\ttrue\ntrue\n" {
		t.Fatalf("got %q", out)
	}
}

func TestExitPassesThroughPcall(t *testing.T) {
	out, err := runLua(t, nil, `
		print(pcall(function() return 1, 2 end))
		pcall(function() vmscript.exit(125) end)
		print("not reached")
	`, nil, Options{})
	var ex *ExitError
	if !errors.As(err, &ex) || ex.Code != 125 {
		t.Fatalf("got %v", err)
	}
	if out != "true\t1\t2\n" {
		t.Fatalf("output %q", out)
	}
	_, err = runLua(t, nil, `os.exit(false)`, nil, Options{})
	if !errors.As(err, &ex) || ex.Code != 1 {
		t.Fatalf("os.exit(false): %v", err)
	}
}

func TestBlockingCallInterrupted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause error
		kind  string
	}{
		{"timeout", TimedOut(200 * time.Millisecond), vmerr.Timeout},
		{"signal", Interrupted(os.Interrupt), vmerr.Cancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			time.AfterFunc(200*time.Millisecond, func() { cancel(tc.cause) })
			start := time.Now()
			// pcall must not swallow the cancellation either.
			out, err := runLua(t, ctx, `pcall(time.sleep, 60); print("after pcall"); time.sleep(60)`, nil, Options{})
			if el := time.Since(start); el > time.Second {
				t.Fatalf("took %v to interrupt", el)
			}
			if vmerr.KindOf(err) != tc.kind || out != "" {
				t.Fatalf("got %v (kind %q), output %q", err, vmerr.KindOf(err), out)
			}
		})
	}
}

func TestBusyLoopInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(200*time.Millisecond, func() { cancel(TimedOut(time.Second)) })
	start := time.Now()
	_, err := runLua(t, ctx, `while true do end`, nil, Options{})
	if time.Since(start) > time.Second || vmerr.KindOf(err) != vmerr.Timeout {
		t.Fatalf("busy loop: %v after %v", err, time.Since(start))
	}
}

func TestJournalAndPrintGoToTimeline(t *testing.T) {
	run, err := journal.New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	run.Subscribe(func(ev journal.Event) { kinds = append(kinds, ev.Source+"/"+ev.Kind) })
	out, err := runLua(t, nil, `journal.event("probe", {mac = "52:54:00:00:00:01", n = 3}); print(journal.dir() ~= nil)`, nil, Options{Run: run})
	if err != nil || out != "true\n" {
		t.Fatalf("%v %q", err, out)
	}
	if got := strings.Join(kinds, ","); got != "script/start,script/probe,script/print" {
		t.Fatalf("timeline kinds %s", got)
	}
}

func TestOptsRefuseUnknownKeys(t *testing.T) {
	probe := Module{Name: "optstest", Doc: "test", Funcs: []Func{{
		Name: "f", Doc: "test", Fn: func(h *Host, L *lua.LState) int {
			o := h.Opts(L, 1, "optstest.f")
			L.Push(lua.LNumber(o.Duration("timeout", time.Second).Seconds()))
			L.Push(lua.LString(o.OneOf("mode", "a", "a", "b")))
			o.Done()
			return 2
		}}}}
	out, err := runLua(t, nil, `
		print(optstest.f{timeout = "3m", mode = "b"})
		print(optstest.f())
		local ok, e = pcall(optstest.f, {timout = 3})
		print(e.kind, e.message)
		ok, e = pcall(optstest.f, {mode = "c"})
		print(e.message)
	`, nil, Options{Modules: []Module{probe}})
	if err != nil {
		t.Fatal(err)
	}
	want := "180\tb\n1\ta\nusage\toptstest.f: unknown option \"timout\" (known: mode, timeout)\n" +
		"optstest.f: option \"mode\" must be one of a, b, got \"c\"\n"
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
}

func TestCompileReportsLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.lua")
	if err := os.WriteFile(p, []byte("local a = 1\n\nif a then\n  print(a\nend\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Compile(p)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 5 || !strings.HasPrefix(se.Error(), p+":5: ") {
		t.Fatalf("got %v", err)
	}
	if err := os.WriteFile(p, []byte("function f()\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Compile(p); !errors.As(err, &se) || !strings.Contains(se.Error(), "end of file") {
		t.Fatalf("EOF error: %v", err)
	}
}

func TestRegistryDocsComplete(t *testing.T) {
	for _, m := range Modules() {
		if m.Doc == "" {
			t.Errorf("module %s has no doc", m.Name)
		}
		for _, f := range m.Funcs {
			if f.Doc == "" || strings.Contains(f.Doc, "\n") {
				t.Errorf("%s.%s: doc must be one line", m.Name, f.Name)
			}
		}
	}
}
