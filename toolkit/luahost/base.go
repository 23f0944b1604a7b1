package luahost

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// compileChunk parses and compiles Lua source, turning a parse failure into
// a *SyntaxError located at file:line.
func compileChunk(src, name string) (*lua.FunctionProto, error) {
	chunk, err := parse.Parse(strings.NewReader(src), name)
	if err != nil {
		var pe *parse.Error
		if errors.As(err, &pe) {
			line := pe.Pos.Line
			msg := pe.Message
			if line == parse.EOF {
				line = strings.Count(src, "\n") + 1
				msg += " at end of file"
			} else if pe.Token != "" {
				msg = fmt.Sprintf("%s near '%s'", msg, pe.Token)
			}
			return nil, &SyntaxError{File: name, Line: line, Message: msg}
		}
		return nil, &SyntaxError{File: name, Line: 1, Message: strings.TrimSpace(err.Error())}
	}
	proto, err := lua.Compile(chunk, name)
	if err != nil {
		return nil, &SyntaxError{File: name, Line: 1, Message: strings.TrimSpace(err.Error())}
	}
	return proto, nil
}

// setupBase replaces the base functions that would escape the host's
// control: pcall/xpcall must not swallow vmscript.exit or a cancelled run,
// print is recorded in the timeline, and os.exit becomes vmscript.exit so
// cleanups still run.
func (h *Host) setupBase() {
	L := h.L
	L.SetGlobal("pcall", L.NewFunction(h.pcall))
	L.SetGlobal("xpcall", L.NewFunction(h.xpcall))
	L.SetGlobal("print", L.NewFunction(h.print))
	if os, ok := L.GetGlobal("os").(*lua.LTable); ok {
		os.RawSetString("exit", L.NewFunction(h.exit))
	}
}

// mustPropagate says whether an error caught by pcall has to keep unwinding.
func (h *Host) mustPropagate(obj lua.LValue) bool {
	if h.exitCode != nil || h.ctx.Err() != nil {
		return true
	}
	if ud, ok := obj.(*lua.LUserData); ok {
		_, isExit := ud.Value.(exitSignal)
		return isExit
	}
	return false
}

func (h *Host) protectedCall(L *lua.LState, fnIndex, firstArg int) (ok bool, base int, err *lua.ApiError) {
	top := L.GetTop()
	L.Push(L.Get(fnIndex))
	for i := firstArg; i <= top; i++ {
		L.Push(L.Get(i))
	}
	nargs := 0
	if top >= firstArg {
		nargs = top - firstArg + 1
	}
	e := L.PCall(nargs, lua.MultRet, nil)
	if e == nil {
		return true, top, nil
	}
	var apiErr *lua.ApiError
	if !errors.As(e, &apiErr) {
		apiErr = &lua.ApiError{Object: lua.LString(e.Error())}
	}
	if h.mustPropagate(apiErr.Object) {
		L.Error(apiErr.Object, 0)
	}
	return false, top, apiErr
}

func (h *Host) pcall(L *lua.LState) int {
	L.CheckAny(1)
	ok, base, err := h.protectedCall(L, 1, 2)
	if !ok {
		L.Push(lua.LFalse)
		L.Push(err.Object)
		return 2
	}
	L.Insert(lua.LTrue, base+1)
	return L.GetTop() - base
}

func (h *Host) xpcall(L *lua.LState) int {
	L.CheckAny(1)
	handler := L.CheckFunction(2)
	top := L.GetTop()
	// xpcall(f, handler) takes no arguments for f in Lua 5.1.
	L.Push(L.Get(1))
	e := L.PCall(0, lua.MultRet, nil)
	if e == nil {
		L.Insert(lua.LTrue, top+1)
		return L.GetTop() - top
	}
	var apiErr *lua.ApiError
	if !errors.As(e, &apiErr) {
		apiErr = &lua.ApiError{Object: lua.LString(e.Error())}
	}
	if h.mustPropagate(apiErr.Object) {
		L.Error(apiErr.Object, 0)
	}
	L.Push(handler)
	L.Push(apiErr.Object)
	L.Call(1, 1)
	result := L.Get(-1)
	L.Pop(1)
	L.Push(lua.LFalse)
	L.Push(result)
	return 2
}

func (h *Host) print(L *lua.LState) int {
	n := L.GetTop()
	parts := make([]string, n)
	for i := 1; i <= n; i++ {
		parts[i-1] = h.tostring(L.Get(i))
	}
	line := strings.Join(parts, "\t")
	fmt.Fprintln(h.opt.Stdout, line)
	h.Event("script", "print", map[string]any{"text": line})
	return 0
}

// exit implements vmscript.exit(code) and os.exit(code): remember the code
// and unwind through every pcall to the top, so cleanups still run.
func (h *Host) exit(L *lua.LState) int {
	code := 0
	switch v := L.Get(1).(type) {
	case lua.LNumber:
		code = int(v)
	case lua.LBool:
		if !bool(v) {
			code = 1
		}
	case *lua.LNilType:
	default:
		h.ArgError(L, 1, "exit code must be a number or boolean, got %s", v.Type())
	}
	if code < 0 || code > 255 {
		h.ArgError(L, 1, "exit code %d out of range 0-255", code)
	}
	h.exitCode = &code
	h.Event("script", "exit", map[string]any{"code": code})
	ud := L.NewUserData()
	ud.Value = exitSignal{code: code}
	L.Error(ud, 0)
	return 0
}

// Raise ends the current host function with err as a Lua error. A
// *vmerr.Error becomes a table {kind=, message=, where=, <context>…} whose
// tostring reads well; any other error becomes a string with file:line.
func (h *Host) Raise(L *lua.LState, err error) {
	var ve *vmerr.Error
	isVM := errors.As(err, &ve)
	if cause := h.cancelCause(); cause != nil && (!isVM || ve.Kind == vmerr.Cancelled) {
		// The run was interrupted: say why (signal or --timeout), not just
		// "context canceled".
		ve, isVM = cause, true
	}
	if !isVM {
		L.RaiseError("%s", err.Error())
		return
	}
	L.Error(h.ErrorTable(L, ve), 0)
}

// cancelCause maps a cancelled run to the error that explains it.
func (h *Host) cancelCause() *vmerr.Error {
	if h.ctx.Err() == nil {
		return nil
	}
	var ve *vmerr.Error
	if errors.As(context.Cause(h.ctx), &ve) {
		return ve
	}
	return vmerr.New(vmerr.Cancelled, "run cancelled: %v", context.Cause(h.ctx))
}

// Errorf raises a *vmerr.Error of the given kind.
func (h *Host) Errorf(L *lua.LState, kind, format string, a ...any) {
	h.Raise(L, vmerr.New(kind, format, a...))
}

// ArgError raises a usage error naming the calling function and argument.
func (h *Host) ArgError(L *lua.LState, n int, format string, a ...any) {
	fn := h.current
	if fn == "" {
		fn = "?"
	}
	h.Raise(L, vmerr.New(vmerr.Usage, "bad argument #%d to '%s': %s", n, fn, fmt.Sprintf(format, a...)))
}

// ErrorTable converts e to the Lua error shape: a table with kind, message,
// where (file:line of the script line that called the host) and e's context,
// with a __tostring that reads like the Go error.
func (h *Host) ErrorTable(L *lua.LState, e *vmerr.Error) *lua.LTable {
	t := L.NewTable()
	for _, k := range e.Keys() {
		t.RawSetString(k, ToLua(L, e.Context[k]))
	}
	t.RawSetString("kind", lua.LString(e.Kind))
	t.RawSetString("message", lua.LString(e.Message))
	if where := luaWhere(L); where != "" {
		t.RawSetString("where", lua.LString(where))
	}
	cause := L.NewUserData()
	cause.Value = e
	t.RawSetString("cause", cause)
	L.SetMetatable(t, h.errorMeta(L))
	return t
}

func (h *Host) errorMeta(L *lua.LState) *lua.LTable {
	if mt, ok := h.metas["$error"]; ok {
		return mt
	}
	mt := L.NewTable()
	mt.RawSetString("__tostring", L.NewFunction(func(L *lua.LState) int {
		t := L.CheckTable(1)
		var b strings.Builder
		if w := lua.LVAsString(t.RawGetString("where")); w != "" {
			b.WriteString(w + ": ")
		}
		if ud, ok := t.RawGetString("cause").(*lua.LUserData); ok {
			if ve, ok := ud.Value.(*vmerr.Error); ok {
				b.WriteString(ve.Error())
			}
		} else {
			b.WriteString(lua.LVAsString(t.RawGetString("message")))
		}
		fmt.Fprintf(&b, " [kind=%s]", lua.LVAsString(t.RawGetString("kind")))
		L.Push(lua.LString(b.String()))
		return 1
	}))
	mt.RawSetString("__name", lua.LString("vmscript.error"))
	h.metas["$error"] = mt
	return mt
}

// luaWhere returns file:line of the innermost Lua (not Go) frame.
func luaWhere(L *lua.LState) string {
	for level := 1; level < 32; level++ {
		w := L.Where(level)
		if w == "" {
			if _, ok := L.GetStack(level); !ok {
				return ""
			}
			continue
		}
		if !strings.HasPrefix(w, "[G]") {
			return strings.TrimSuffix(w, ":")
		}
	}
	return ""
}

// inCall names the Lua function running now at the start of an error's
// message: errors of the layers below (a machine's, a pool's) do not know
// which call of the script they answer.
func (h *Host) inCall(err error) error {
	var ve *vmerr.Error
	if h.current != "" && errors.As(err, &ve) && !strings.HasPrefix(ve.Message, h.current) {
		ve.Message = h.current + ": " + strings.TrimPrefix(ve.Message, "machine: ")
	}
	return err
}
