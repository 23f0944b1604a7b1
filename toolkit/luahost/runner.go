package luahost

import (
	"strings"

	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// runnerMethods are the methods every command channel (a serial shell, an
// SSH client) has, written once over command.Runner; the same result
// shape on each.
func runnerMethods(class, defaultTimeout string) []Func {
	return []Func{
		{Name: "run", Params: "cmd: string, opts?: {timeout?: duration, stdin?: string, env?: table<string, string>, exact?: boolean}",
			Returns: record.LuaType(command.Result{}), Fn: (*Host).runnerRun,
			Doc: "Run a command (default timeout " + defaultTimeout + "); output is what it printed (stdout then stderr over SSH; the console text on the serial shell, which refuses stdin and env); on timeout raises kind \"timeout\" with the partial output; a non-zero exit is not an error. exact=true on the serial shell: stdout and stderr byte for byte and apart, even while the kernel floods the console (the output goes to files in the guest and comes back checked; the command's stdout is then not the terminal)."},
		{Name: "test", Params: "cmd: string, opts?: {timeout?: duration}", Returns: "boolean", Fn: (*Host).runnerTest,
			Doc: "Run a command and return whether it exited 0 (a timeout or a dead VM raises)."},
	}
}

// checkRunner returns the command channel at argument 1.
func (h *Host) checkRunner(L *lua.LState) command.Runner {
	if r, ok := L.CheckUserData(1).Value.(command.Runner); ok {
		return r
	}
	h.ArgError(L, 1, "a shell or an SSH client expected (did you call with '.' instead of ':'?)")
	return nil
}

func (h *Host) runnerRun(L *lua.LState) int {
	r := h.checkRunner(L)
	cmd := L.CheckString(2)
	o := h.Opts(L, 3, h.current)
	opt := command.Options{Timeout: o.Duration("timeout", 0), Exact: o.Bool("exact", false)}
	if in := o.String("stdin", ""); o.Has("stdin") {
		opt.Stdin = strings.NewReader(in)
	}
	opt.Env = h.envOpt(o)
	o.Done()
	res, err := r.Run(h.ctx, cmd, opt)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, res))
	return 1
}

func (h *Host) runnerTest(L *lua.LState) int {
	r := h.checkRunner(L)
	cmd := L.CheckString(2)
	timeout := h.TimeoutOpt(L, 3, h.current, 0)
	ok, err := command.Test(h.ctx, r, cmd, command.Options{Timeout: timeout})
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LBool(ok))
	return 1
}

// envOpt reads "env": a table of names to strings (numbers and booleans as
// their text).
func (h *Host) envOpt(o *Opts) map[string]string {
	v := o.Get("env")
	if v == lua.LNil {
		return nil
	}
	t, ok := v.(*lua.LTable)
	if !ok {
		h.Errorf(o.L, vmerr.Usage, "%s: option \"env\" must be a table", o.fn)
	}
	env := map[string]string{}
	t.ForEach(func(k, v lua.LValue) {
		ks, okK := k.(lua.LString)
		if !okK {
			h.Errorf(o.L, vmerr.Usage, "%s: env keys must be strings, got %s", o.fn, k.Type())
		}
		switch v.(type) {
		case lua.LString, lua.LNumber, lua.LBool:
		default:
			h.Errorf(o.L, vmerr.Usage, "%s: env[%q] must be a string, got %s", o.fn, string(ks), v.Type())
		}
		env[string(ks)] = v.String()
	})
	return env
}
