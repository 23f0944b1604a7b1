package luahost

import (
	"fmt"
	"os"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func consoleClass() Class {
	return Class{
		Name:   "console",
		Doc:    "A VM's serial console: every byte logged as it arrives, waits that never miss a byte.",
		Fields: []Field{{Name: "log", Type: "string", Doc: "Path of the raw console log."}},
		Get:    (*Host).consoleField,
		Methods: []Func{
			{Name: "expect", Params: "pattern: string|vmscript.Pattern|(string|vmscript.Pattern)[], opts?: {timeout?: duration, from?: \"start\"|\"now\"|table, raw?: boolean, settle?: duration}",
				Returns: record.LuaType(console.Match{}), Fn: (*Host).consoleExpect,
				Doc: "Wait until a pattern appears after from (default: the end of the last match); plain text unless {re=…}; default timeout 2 min; settle (per pattern or for all): only a match that stays the console's last text that long, as a prompt does; index is 1-based."},
			{Name: "send", Params: "text: string", Fn: (*Host).consoleSend, Doc: "Type text on the console as is."},
			{Name: "sendline", Params: "text: string", Fn: (*Host).consoleSendLine,
				Doc: "Type text and Enter (a carriage return, as a serial getty expects)."},
			{Name: "mark", Returns: record.LuaType(console.Mark{}), Fn: (*Host).consoleMark,
				Doc: "The current end of the console, to pass as from= or to lines{}."},
			{Name: "lines", Params: "opts?: {from?: table|\"start\", to?: table}", Returns: "string[]", Fn: (*Host).consoleLines,
				Doc: "Completed console lines (ANSI-stripped) between two marks; default the whole console."},
			{Name: "tail", Params: "n?: integer", Returns: "string[]", Fn: (*Host).consoleTail,
				Doc: "The last n console lines (default 20), including an unfinished last line."},
			{Name: "watch", Params: "pattern: string|vmscript.Pattern, action: \"fail\"|fun(line: string)", Returns: "fun()", Fn: (*Host).consoleWatch,
				Doc: "Watch every line in the background: \"fail\" ends any wait at once (kind=\"watch\"); a function is called with the line between host calls. Returns a function that stops watching."},
			{Name: "failures", Returns: "{name: string, pattern: vmscript.Pattern, action: \"fail\"|\"warn\"}[]", Fn: (*Host).consoleFailures,
				Doc: "The failure patterns watched on this console from its first byte: kernel-panic, oops, kernel-bug, emergency-shell, initramfs-fatal, oom-kill (fail: any wait ends with kind \"watch\" and the pattern's name as `failure`), soft-lockup, kernel-warning (warn: a `failure` event in the timeline), and what the script changed."},
			{Name: "on_failure", Params: "name: string, action: \"fail\"|\"warn\"|\"off\", pattern?: string|vmscript.Pattern", Fn: (*Host).consoleOnFailure,
				Doc: "Change a failure pattern from now on: downgrade it to \"warn\", drop it (\"off\"), or add one of your own (a new name needs a pattern). qemu.start's `failures` does the same from the first byte."},
			{Name: "interact", Fn: (*Host).consoleInteract,
				Doc: "Attach the terminal to this console (raw mode) until Ctrl-]; typed keys are sent and logged like console:send."},
			{Name: "dialog", Params: "cases: {[integer]: {[1]: string, send?: string, raw?: boolean, secret?: boolean, ok?: boolean, fail?: string, kind?: string, retries?: integer}, timeout?: duration, retries?: integer, from?: \"start\"|\"now\"|table}",
				Returns: "{index: integer, text: string, output: string}", Fn: (*Host).consoleDialog,
				Doc: "Answer prompts until an ok case matches (regex cases in list order, send adds Enter, one overall deadline); returns the ok case."},
		},
	}
}

func (h *Host) checkConsole(L *lua.LState) *console.Console {
	return h.CheckObject(L, 1, "console").(*console.Console)
}

func (h *Host) consoleField(L *lua.LState, self any, name string) lua.LValue {
	if name == "log" {
		return lua.LString(self.(*console.Console).LogPath())
	}
	return nil
}

func (h *Host) consoleExpect(L *lua.LState) int {
	c := h.checkConsole(L)
	pats := h.patterns(L, 2)
	o := h.Opts(L, 3, "console:expect")
	opt := console.ExpectOptions{Timeout: o.Duration("timeout", 0), From: h.markOpt(o, c, "from"),
		Raw: o.Bool("raw", false), Settle: o.Duration("settle", 0)}
	o.Done()
	m, err := c.Expect(h.ctx, pats, opt)
	if err != nil {
		h.Raise(L, err)
	}
	t := ToLua(L, m).(*lua.LTable)
	t.RawSetString("index", lua.LNumber(m.Index+1))
	L.Push(t)
	return 1
}

func (h *Host) consoleSend(L *lua.LState) int {
	if err := h.checkConsole(L).Send(h.ctx, L.CheckString(2)); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) consoleSendLine(L *lua.LState) int {
	if err := h.checkConsole(L).SendLine(h.ctx, L.CheckString(2)); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) consoleMark(L *lua.LState) int {
	L.Push(ToLua(L, h.checkConsole(L).Mark()))
	return 1
}

func (h *Host) consoleLines(L *lua.LState) int {
	c := h.checkConsole(L)
	o := h.Opts(L, 2, "console:lines")
	from, to := h.markOpt(o, c, "from"), h.markOpt(o, c, "to")
	o.Done()
	L.Push(ToLua(L, c.Lines(from, to)))
	return 1
}

func (h *Host) consoleTail(L *lua.LState) int {
	c := h.checkConsole(L)
	n := L.OptInt(2, 20)
	if n < 1 {
		h.ArgError(L, 2, "n must be at least 1")
	}
	L.Push(ToLua(L, c.Tail(n)))
	return 1
}

func (h *Host) consoleWatch(L *lua.LState) int {
	c := h.checkConsole(L)
	pats := h.patterns(L, 2)
	if len(pats) != 1 {
		h.ArgError(L, 2, "watch takes one pattern")
	}
	if pats[0].Settle > 0 {
		h.ArgError(L, 2, "settle is for console:expect; a watcher sees whole lines")
	}
	var cancel func()
	var err error
	switch a := L.Get(3).(type) {
	case lua.LString:
		if a != "fail" {
			h.ArgError(L, 3, "action must be \"fail\" or a function, got %q", string(a))
		}
		cancel, err = c.Watch(pats[0], true, nil)
	case *lua.LFunction:
		cancel, err = c.Watch(pats[0], false, func(line string) { h.Post(func() { h.callWatcher(a, line) }) })
	default:
		h.ArgError(L, 3, "action must be \"fail\" or a function, got %s", a.Type())
	}
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(L.NewFunction(func(L *lua.LState) int { cancel(); return 0 }))
	return 1
}

func (h *Host) consoleFailures(L *lua.LState) int {
	list := L.NewTable()
	for _, f := range h.checkConsole(L).Failures() {
		t := L.NewTable()
		t.RawSetString("name", lua.LString(f.Name))
		t.RawSetString("pattern", patternTable(L, f.Pattern))
		t.RawSetString("action", lua.LString(f.Action))
		list.Append(t)
	}
	L.Push(list)
	return 1
}

func (h *Host) consoleOnFailure(L *lua.LState) int {
	c := h.checkConsole(L)
	f := console.Failure{Name: L.CheckString(2), Action: console.FailureAction(L.CheckString(3))}
	if L.GetTop() >= 4 && L.Get(4) != lua.LNil {
		f.Pattern = h.pattern(L, 4, L.Get(4), "")
	}
	if err := c.SetFailure(f); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) consoleInteract(L *lua.LState) int {
	if err := h.checkConsole(L).Interact(h.ctx, os.Stdin, h.Stdout()); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) consoleDialog(L *lua.LState) int {
	c := h.checkConsole(L)
	t := L.CheckTable(2)
	o := h.OptsOf(L, namedKeys(L, t), "console:dialog")
	opt := shell.DialogOptions{Timeout: o.Duration("timeout", shell.DefaultDialogTimeout),
		Retries: o.Int("retries", shell.DefaultDialogRetries), From: h.markOpt(o, c, "from")}
	o.Done()
	res, err := shell.Dialog(h.ctx, c, h.dialogCases(L, t), opt)
	if err != nil {
		h.Raise(L, err)
	}
	rt := L.NewTable()
	rt.RawSetString("index", lua.LNumber(res.Index+1))
	rt.RawSetString("text", lua.LString(res.Text))
	rt.RawSetString("output", lua.LString(res.Output))
	L.Push(rt)
	return 1
}

// dialogCases reads the list part of console:dialog's table.
func (h *Host) dialogCases(L *lua.LState, t *lua.LTable) []shell.Case {
	n := t.Len()
	if n == 0 {
		h.Errorf(L, vmerr.Usage, "console:dialog: give at least one case: {\"pattern\", send=…} or {\"pattern\", ok=true}")
	}
	cases := make([]shell.Case, 0, n)
	for i := 1; i <= n; i++ {
		cases = append(cases, h.dialogCase(L, i, t.RawGetInt(i)))
	}
	return cases
}

// dialogCase reads case i: {"pattern", send=, raw=, secret=, ok=, fail=, kind=, retries=}.
func (h *Host) dialogCase(L *lua.LState, i int, v lua.LValue) shell.Case {
	ct, ok := v.(*lua.LTable)
	if !ok {
		h.Errorf(L, vmerr.Usage, "console:dialog: case %d must be a table {\"pattern\", send=, ok=, fail=}, got %s", i, v.Type())
	}
	where := fmt.Sprintf("console:dialog: case %d", i)
	pat, ok := ct.RawGetInt(1).(lua.LString)
	if !ok || pat == "" {
		h.Errorf(L, vmerr.Usage, "%s: the first item must be the pattern (a regex string)", where)
	}
	// The pattern is the list item; Opts checks the named keys.
	o := h.OptsOf(L, namedKeys(L, ct), where)
	c := shell.Case{Pattern: string(pat), Retries: o.Int("retries", -1)}
	if o.Has("send") {
		c.Send = o.String("send", "")
		c.Line = !o.Bool("raw", false)
	} else {
		o.Get("raw")
	}
	c.Secret, c.OK = o.Bool("secret", false), o.Bool("ok", false)
	c.Fail, c.FailKind = o.String("fail", ""), o.String("kind", "")
	o.Done()
	acts := 0
	for _, b := range []bool{o.Has("send"), c.OK, c.Fail != ""} {
		if b {
			acts++
		}
	}
	if acts > 1 {
		h.Errorf(L, vmerr.Usage, "%s: send, ok and fail exclude each other", where)
	}
	return c
}

// namedKeys returns a copy of t without its list part, for Opts (which
// refuses keys it was not asked about).
func namedKeys(L *lua.LState, t *lua.LTable) *lua.LTable {
	n := t.Len()
	out := L.NewTable()
	t.ForEach(func(k, v lua.LValue) {
		if num, ok := k.(lua.LNumber); ok && float64(num) == float64(int(num)) && int(num) >= 1 && int(num) <= n {
			return
		}
		out.RawSet(k, v)
	})
	return out
}
