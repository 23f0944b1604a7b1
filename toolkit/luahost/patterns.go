package luahost

import (
	"fmt"

	"github.com/vmscript/vmscript/toolkit/console"
	lua "github.com/yuin/gopher-lua"
)

// patternType documents the pattern table of console (and screen) waits.
func patternType() TypeDoc {
	return TypeDoc{
		Name: "vmscript.Pattern",
		Doc:  "A console pattern as a table: a regex or a plain text, optionally one that must settle (a prompt).",
		Fields: []Field{
			{Name: "re", Type: "string?", Doc: "An RE2 regex, multi-line mode ($ also matches at the end of what has arrived so far)."},
			{Name: "text", Type: "string?", Doc: "A plain text (instead of re)."},
			{Name: "settle", Type: "duration?", Doc: "Count the match only when it stays the console's last text this long (console:expect)."},
		},
	}
}

// patterns reads an expect/watch pattern argument: "text", {re="…"}, or a
// list of those.
func (h *Host) patterns(L *lua.LState, n int) []console.Pattern {
	v := L.Get(n)
	if t, ok := v.(*lua.LTable); ok && !isPatternTable(t) {
		if t.Len() == 0 {
			h.ArgError(L, n, "empty pattern list")
		}
		var out []console.Pattern
		for i := 1; i <= t.Len(); i++ {
			out = append(out, h.pattern(L, n, t.RawGetInt(i), fmt.Sprintf("item %d: ", i)))
		}
		return out
	}
	return []console.Pattern{h.pattern(L, n, v, "")}
}

// pattern reads one pattern of argument n; where prefixes its errors.
func (h *Host) pattern(L *lua.LState, n int, v lua.LValue, where string) console.Pattern {
	switch x := v.(type) {
	case lua.LString:
		if x == "" {
			h.ArgError(L, n, "%sempty pattern", where)
		}
		return console.Pattern{Text: string(x)}
	case *lua.LTable:
		if isPatternTable(x) {
			o := h.OptsOf(L, x, where+"pattern")
			p := console.Pattern{Regex: o.String("re", ""), Text: o.String("text", ""), Settle: o.Duration("settle", 0)}
			o.Done()
			if (p.Regex == "") == (p.Text == "") {
				h.ArgError(L, n, "%spattern table needs exactly one of re and text", where)
			}
			return p
		}
	}
	h.ArgError(L, n, "%spattern must be a string, {re = \"regex\"} or {text = \"text\"}, got %s", where, v.Type())
	return console.Pattern{}
}

// patternTable is p as the table a script would write: {re=} or {text=}.
func patternTable(L *lua.LState, p console.Pattern) *lua.LTable {
	t := L.NewTable()
	if p.Regex != "" {
		t.RawSetString("re", lua.LString(p.Regex))
	} else {
		t.RawSetString("text", lua.LString(p.Text))
	}
	return t
}

// isPatternTable tells a pattern table ({re=…} or {text=…}, with options)
// from a list of patterns.
func isPatternTable(t *lua.LTable) bool {
	return t.RawGetString("re") != lua.LNil || t.RawGetString("text") != lua.LNil
}

// markOpt reads a mark: "start", "now"/"end", or a table from
// console:mark().
func (h *Host) markOpt(o *Opts, c *console.Console, key string) *console.Mark {
	switch v := o.Get(key).(type) {
	case *lua.LNilType:
		return nil
	case lua.LString:
		switch v {
		case "start":
			m := c.StartMark()
			return &m
		case "now", "end":
			m := c.Mark()
			return &m
		}
	case *lua.LTable:
		t, okT := v.RawGetString("text").(lua.LNumber)
		r, okR := v.RawGetString("raw").(lua.LNumber)
		if okT && okR {
			return &console.Mark{Text: int64(t), Raw: int64(r)}
		}
	}
	o.fail(key, "must be \"start\", \"now\" or a mark from console:mark()")
	return nil
}
