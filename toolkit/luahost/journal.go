package luahost

import (
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func journalModule() Module {
	return Module{
		Name: "journal",
		Doc:  "The run directory and its timeline (timeline.jsonl).",
		Funcs: []Func{
			{Name: "event", Params: "kind: string, fields?: table", Fn: (*Host).journalEvent,
				Doc: "Append an event from the script to the timeline."},
			{Name: "dir", Returns: "string", Fn: (*Host).journalDir, Doc: "The run directory's absolute path."},
		},
	}
}

func (h *Host) journalEvent(L *lua.LState) int {
	kind := L.CheckString(1)
	var fields map[string]any
	switch v := L.Get(2).(type) {
	case *lua.LNilType:
	case *lua.LTable:
		if m, ok := FromLua(v).(map[string]any); ok {
			fields = m
		} else {
			fields = map[string]any{"values": FromLua(v)}
		}
	default:
		h.ArgError(L, 2, "fields must be a table, got %s", v.Type())
	}
	h.Event("script", kind, fields)
	return 0
}

func (h *Host) journalDir(L *lua.LState) int {
	if h.opt.Run == nil {
		h.Errorf(L, vmerr.NotFound, "this run has no run directory")
	}
	L.Push(lua.LString(h.opt.Run.Dir()))
	return 1
}
