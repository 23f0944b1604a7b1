// Package luahost is the gopher-lua runtime of vmscript: it loads a script,
// wires `require` to the script's directory and the embedded Lua library,
// exposes every registered module, bounds every blocking host call by the
// run's context, and turns Lua errors into file:line messages with a
// traceback.
//
// A Host and its LState belong to one goroutine: gopher-lua is not
// goroutine-safe. Host functions that block must select on Host.Context.
package luahost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/notes"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	"github.com/vmscript/vmscript/toolkit/warm"
	lua "github.com/yuin/gopher-lua"
)

// Options configures a Host.
type Options struct {
	// Script is the path of the script to run ("" for a REPL or tests).
	Script string
	// Args are the -a key=value pairs, visible as the global table `args`.
	Args map[string]string
	// Positional are the arguments after `--`, visible as arg[1..n].
	Positional []string
	// LuaPath is extra package.path templates ("dir/?.lua;…") searched after
	// the script's directory and before the embedded library. LUA_PATH from
	// the environment is never read.
	LuaPath string
	// Library is the embedded Lua library (lua/), searched last.
	Library fs.FS
	// Run is the run directory and timeline.
	Run *journal.Run
	// Stdout receives print(); Stderr receives warnings. Default os.Stdout/os.Stderr.
	Stdout, Stderr io.Writer
	// Modules are more modules for this host only, beside the Lua API's
	// (tests and programs that embed the host).
	Modules []Module
}

// Host is one Lua runtime bound to one run.
type Host struct {
	// L is the Lua state. Use it only from the goroutine that runs the script.
	L   *lua.LState
	opt Options
	ctx context.Context

	// started is when the host was made: time.now's clock without a run.
	started time.Time
	// pool holds the run's guests: unique names, forks, the list.
	pool *machine.Pool
	// lanNames are the LAN names taken in this run (their files would
	// collide).
	lanNames map[string]bool
	// notebook is notes.md, opened on the first use of notes.
	notebook *notes.Notebook
	// warm is the warm cache, opened on the first qemu.warm.
	warm *warm.Cache
	// objects gives each Go value one Lua object (see NewObject).
	objects map[objectKey]*lua.LUserData
	metas   map[string]*lua.LTable

	mu       sync.Mutex
	cleanups []cleanup
	exitCode *int
	// posted are callbacks from background goroutines (console watchers)
	// waiting to run on the Lua goroutine.
	posted []func()
	// current is the qualified name of the host function running now, for
	// error messages.
	current string
}

type cleanup struct {
	name string
	fn   func()
}

// exitSignal is raised by vmscript.exit to unwind the script; pcall lets it pass.
type exitSignal struct{ code int }

// registryMaxSize bounds the Lua registry's growth (16 bytes a slot);
// registryGrowStep is how many slots it grows by at a time: gopher-lua
// grows it by a fixed step (32 by default), copying it each time, which
// made a 100,000-line table.concat take 11 s (225 s under -race).
const (
	registryMaxSize  = 4 << 20
	registryGrowStep = 64 << 10
)

// New creates a Host whose blocking calls end when ctx is done. Cancel ctx
// with context.WithCancelCause to say why (see Interrupted and TimedOut).
func New(ctx context.Context, opt Options) (*Host, error) {
	if opt.Stdout == nil {
		opt.Stdout = os.Stdout
	}
	if opt.Stderr == nil {
		opt.Stderr = os.Stderr
	}
	// The registry (gopher-lua's value stack) grows on demand: its fixed
	// default (5120 slots) fails table.concat or unpack of a few thousand
	// lines, e.g. the listing of an initramfs, with "registry overflow".
	L := lua.NewState(lua.Options{SkipOpenLibs: true, RegistryMaxSize: registryMaxSize, RegistryGrowStep: registryGrowStep})
	h := &Host{L: L, opt: opt, ctx: ctx, started: time.Now(), pool: machine.NewPool(opt.Run),
		lanNames: map[string]bool{}, objects: map[objectKey]*lua.LUserData{}, metas: map[string]*lua.LTable{}}
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.IoLibName, lua.OpenIo},
		{lua.OsLibName, lua.OpenOs},
		{lua.StringLibName, lua.OpenString},
		{lua.MathLibName, lua.OpenMath},
		{lua.DebugLibName, lua.OpenDebug},
		{lua.CoroutineLibName, lua.OpenCoroutine},
	} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	h.setupRequire()
	h.setupBase()
	h.setupArgs()
	for _, m := range append(Modules(), opt.Modules...) {
		h.openModule(m)
	}
	L.SetContext(ctx)
	return h, nil
}

// Context is done when the run is cancelled (signal or global timeout).
func (h *Host) Context() context.Context { return h.ctx }

// Run returns the run directory and timeline (nil in some tests).
func (h *Host) Run() *journal.Run { return h.opt.Run }

// Event appends to the run's timeline if there is one.
func (h *Host) Event(source, kind string, fields map[string]any) {
	if h.opt.Run != nil {
		h.opt.Run.Event(source, kind, fields)
	}
}

// Stdout is where print() writes.
func (h *Host) Stdout() io.Writer { return h.opt.Stdout }

// OnClose registers fn to run when the host closes, in reverse order of
// registration: bindings use it to stop VMs and servers a script left running.
// It returns a function that unregisters fn (call it when the resource is
// released early).
func (h *Host) OnClose(name string, fn func()) (unregister func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := &cleanup{name: name, fn: fn}
	h.cleanups = append(h.cleanups, *c)
	idx := len(h.cleanups) - 1
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if idx < len(h.cleanups) {
			h.cleanups[idx].fn = nil
		}
	}
}

// Close runs the cleanups (newest first) and closes the Lua state.
func (h *Host) Close() {
	h.RunCleanups()
	h.L.Close()
}

// ExitError reports that the script called vmscript.exit(code).
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("script exited with code %d", e.Code) }

// ScriptError is a Lua error that ended the script.
type ScriptError struct {
	// Message is "file:line: message" for a string error, or the message of
	// a table error.
	Message string
	// Kind is the error table's kind ("" for a plain string error).
	Kind string
	// Where is file:line of the raise, when known.
	Where string
	// Traceback is the Lua stack traceback.
	Traceback string
	// Cause is the Go error behind a host function's failure, if any.
	Cause *vmerr.Error
}

func (e *ScriptError) Error() string {
	var b strings.Builder
	if e.Where != "" && !strings.HasPrefix(e.Message, e.Where) {
		b.WriteString(e.Where)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	if e.Kind != "" {
		fmt.Fprintf(&b, " [kind=%s]", e.Kind)
	}
	return b.String()
}

// Compile parses a script without running it.
func Compile(path string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	_, err = compileChunk(string(src), path)
	return err
}

// SyntaxError is a parse failure located at file:line.
type SyntaxError struct {
	File    string
	Line    int
	Message string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Message) }

// RunScript loads and runs opt.Script. It returns nil when the script ends
// normally, *ExitError for vmscript.exit, *SyntaxError, *ScriptError, or the
// context's cause when the run was cancelled.
func (h *Host) RunScript() error {
	src, err := os.ReadFile(h.opt.Script)
	if err != nil {
		return err
	}
	return h.RunString(string(src), h.opt.Script)
}

// RunString runs a chunk of Lua source named name (used for error positions).
func (h *Host) RunString(src, name string) error {
	fn, err := h.load(src, name)
	if err != nil {
		return err
	}
	h.L.Push(fn)
	h.Event("script", "start", map[string]any{"script": name})
	err = h.L.PCall(0, lua.MultRet, nil)
	return h.scriptResult(err)
}

func (h *Host) load(src, name string) (*lua.LFunction, error) {
	proto, err := compileChunk(src, name)
	if err != nil {
		return nil, err
	}
	return h.L.NewFunctionFromProto(proto), nil
}

// scriptResult classifies the error that ended a protected call.
func (h *Host) scriptResult(err error) error {
	if err == nil {
		return nil
	}
	if h.exitCode != nil {
		return &ExitError{Code: *h.exitCode}
	}
	if cause := context.Cause(h.ctx); cause != nil {
		return cause
	}
	var apiErr *lua.ApiError
	if !errors.As(err, &apiErr) {
		return &ScriptError{Message: err.Error()}
	}
	se := &ScriptError{Traceback: apiErr.StackTrace}
	switch v := apiErr.Object.(type) {
	case *lua.LTable:
		se.Message = lua.LVAsString(v.RawGetString("message"))
		if se.Message == "" {
			se.Message = h.tostring(v)
		}
		se.Kind = lua.LVAsString(v.RawGetString("kind"))
		se.Where = lua.LVAsString(v.RawGetString("where"))
		if ud, ok := v.RawGetString("cause").(*lua.LUserData); ok {
			se.Cause, _ = ud.Value.(*vmerr.Error)
		}
	case *lua.LUserData:
		if ex, ok := v.Value.(exitSignal); ok {
			return &ExitError{Code: ex.code}
		}
		se.Message = h.tostring(v)
	default:
		se.Message = h.tostring(v)
	}
	if se.Where == "" {
		se.Where = scriptFrame(se.Traceback)
	}
	return se
}

// embeddedPrefix names chunks of the embedded library in positions and
// tracebacks.
const embeddedPrefix = "embedded:"

// scriptFrame returns file:line of the innermost traceback frame that is in
// a script rather than the host or the embedded library.
func scriptFrame(traceback string) string {
	for _, line := range strings.Split(traceback, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "[G]") || strings.HasPrefix(line, embeddedPrefix) ||
			strings.HasPrefix(line, "stack traceback") {
			continue
		}
		if i := strings.Index(line, ": in "); i > 0 {
			return line[:i]
		}
	}
	return ""
}

func (h *Host) tostring(v lua.LValue) string {
	fn := h.L.GetGlobal("tostring")
	if err := h.L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, v); err != nil {
		return v.String()
	}
	s := h.L.Get(-1).String()
	h.L.Pop(1)
	return s
}

// setupArgs installs `args` (key=value pairs) and `arg` (positional, with
// arg[0] the script path).
func (h *Host) setupArgs() {
	L := h.L
	args := L.NewTable()
	keys := make([]string, 0, len(h.opt.Args))
	for k := range h.opt.Args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args.RawSetString(k, lua.LString(h.opt.Args[k]))
	}
	L.SetGlobal("args", args)
	arg := L.NewTable()
	arg.RawSetInt(0, lua.LString(h.opt.Script))
	for i, a := range h.opt.Positional {
		arg.RawSetInt(i+1, lua.LString(a))
	}
	L.SetGlobal("arg", arg)
}

// setupRequire makes require search, in order: the script's directory, the
// --lua-path templates, then the embedded library. LUA_PATH never leaks in.
func (h *Host) setupRequire() {
	L := h.L
	var paths []string
	if h.opt.Script != "" {
		dir, err := filepath.Abs(filepath.Dir(h.opt.Script))
		if err == nil {
			paths = append(paths, filepath.Join(dir, "?.lua"), filepath.Join(dir, "?", "init.lua"))
		}
	}
	if h.opt.LuaPath != "" {
		for _, p := range strings.Split(h.opt.LuaPath, ";") {
			if p = strings.TrimSpace(p); p != "" {
				paths = append(paths, p)
			}
		}
	}
	pkg := L.GetGlobal("package").(*lua.LTable)
	pkg.RawSetString("path", lua.LString(strings.Join(paths, ";")))
	pkg.RawSetString("cpath", lua.LString(""))
	loaders := pkg.RawGetString("loaders").(*lua.LTable)
	loaders.Append(L.NewFunction(h.embeddedLoader))
}

// embeddedLoader is the package.loaders entry for the embedded library:
// require "vmscript.split" reads vmscript/split.lua from it.
func (h *Host) embeddedLoader(L *lua.LState) int {
	name := L.CheckString(1)
	if h.opt.Library == nil {
		L.Push(lua.LString("\n\tno embedded library"))
		return 1
	}
	rel := strings.ReplaceAll(name, ".", "/")
	for _, cand := range []string{rel + ".lua", rel + "/init.lua"} {
		src, err := fs.ReadFile(h.opt.Library, cand)
		if err != nil {
			continue
		}
		fn, err := h.load(string(src), embeddedPrefix+cand)
		if err != nil {
			L.RaiseError("error loading embedded module %q: %v", name, err)
		}
		L.Push(fn)
		return 1
	}
	L.Push(lua.LString(fmt.Sprintf("\n\tno file '%s.lua' in the embedded library", rel)))
	return 1
}

// RunCleanups runs the registered cleanups without touching the Lua state;
// use it when the script goroutine is stuck and Close cannot be called.
func (h *Host) RunCleanups() {
	h.mu.Lock()
	cs := h.cleanups
	h.cleanups = nil
	h.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		if cs[i].fn != nil {
			h.Event("run", "cleanup", map[string]any{"what": cs[i].name})
			cs[i].fn()
		}
	}
}

// Eval runs a chunk of Lua source named name on the host's goroutine and
// returns the values it returns (for a REPL). Errors are classified as for
// RunString: *SyntaxError, *ScriptError, *ExitError or the run's cancel
// cause.
func (h *Host) Eval(src, name string) ([]lua.LValue, error) {
	fn, err := h.load(src, name)
	if err != nil {
		return nil, err
	}
	top := h.L.GetTop()
	h.L.Push(fn)
	if err := h.L.PCall(0, lua.MultRet, nil); err != nil {
		h.L.SetTop(top)
		return nil, h.scriptResult(err)
	}
	n := h.L.GetTop() - top
	out := make([]lua.LValue, n)
	for i := 0; i < n; i++ {
		out[i] = h.L.Get(top + 1 + i)
	}
	h.L.SetTop(top)
	return out, nil
}

// ToString is Lua's tostring(v), honouring __tostring.
func (h *Host) ToString(v lua.LValue) string { return h.tostring(v) }

// OpenNotebook returns the run's notebook if the script opened one (used
// notes.*), without creating notes.md otherwise.
func (h *Host) OpenNotebook() *notes.Notebook { return h.notebook }

// Pool returns the run's guests.
func (h *Host) Pool() *machine.Pool { return h.pool }
