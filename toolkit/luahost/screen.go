package luahost

import (
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/screen"
	lua "github.com/yuin/gopher-lua"
)

func screenClass() Class {
	return Class{
		Name: "screen",
		Doc:  "A VM's display as a console: VGA text modes read exactly, graphics modes (vesamenu, GRUB under UEFI) by OCR; waits with the console's patterns.",
		Methods: []Func{
			{Name: "text", Returns: record.LuaType(&screen.Snapshot{}), Fn: (*Host).screenText,
				Doc: "What the screen shows now: mode \"text\" (exact, with cursor and size in cells) or \"graphics\" (OCR), its text and lines."},
			{Name: "expect", Params: "pattern: string|vmscript.Pattern|(string|vmscript.Pattern)[], opts?: {timeout?: duration, poll?: duration}",
				Returns: record.LuaType(&screen.Match{}), Fn: (*Host).screenExpect,
				Doc: "Wait until the screen shows a pattern (already showing counts; plain text reads runs of blanks as one space); default timeout 5 min; a timeout error carries the screen's text and a screenshot; index and line are 1-based."},
			{Name: "watch", Params: "pattern: string|vmscript.Pattern, action: \"fail\"|fun(line: string)", Returns: "fun()", Fn: (*Host).screenWatch,
				Doc: "Watch the screen in the background (e.g. \"Kernel panic\" on VGA): \"fail\" ends any wait on this screen at once (kind \"watch\"); a function is called with each new matching line. Returns a function that stops watching."},
			{Name: "shot", Params: "name?: string", Returns: "string", Fn: (*Host).screenShot,
				Doc: "Save a screenshot (PNG) in the run directory and return its path."},
		},
	}
}

func (h *Host) checkScreen(L *lua.LState) *screen.Screen {
	return h.CheckObject(L, 1, "screen").(*screen.Screen)
}

func (h *Host) screenText(L *lua.LState) int {
	snap, err := h.checkScreen(L).Text(h.ctx)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, snap))
	return 1
}

func (h *Host) screenExpect(L *lua.LState) int {
	s := h.checkScreen(L)
	pats := h.patterns(L, 2)
	o := h.Opts(L, 3, "screen:expect")
	opt := screen.ExpectOptions{Timeout: o.Duration("timeout", 0), Poll: o.Duration("poll", 0)}
	o.Done()
	m, err := s.Expect(h.ctx, pats, opt)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, m))
	return 1
}

func (h *Host) screenWatch(L *lua.LState) int {
	s := h.checkScreen(L)
	pats := h.patterns(L, 2)
	if len(pats) != 1 {
		h.ArgError(L, 2, "watch takes one pattern")
	}
	var cancel func()
	var err error
	switch a := L.Get(3).(type) {
	case lua.LString:
		if a != "fail" {
			h.ArgError(L, 3, "action must be \"fail\" or a function, got %q", string(a))
		}
		cancel, err = s.Watch(pats[0], true, nil)
	case *lua.LFunction:
		cancel, err = s.Watch(pats[0], false, func(line string) { h.Post(func() { h.callWatcher(a, line) }) })
	default:
		h.ArgError(L, 3, "action must be \"fail\" or a function, got %s", a.Type())
	}
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(L.NewFunction(func(L *lua.LState) int { cancel(); return 0 }))
	return 1
}

func (h *Host) screenShot(L *lua.LState) int {
	p, err := h.checkScreen(L).Shot(h.ctx, L.OptString(2, ""))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LString(p))
	return 1
}
