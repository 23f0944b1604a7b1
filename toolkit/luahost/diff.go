package luahost

import (
	"github.com/aymanbagabas/go-udiff"
	lua "github.com/yuin/gopher-lua"
)

func diffModule() Module {
	return Module{
		Name: "diff",
		Doc:  "Text diffs (github.com/aymanbagabas/go-udiff).",
		Funcs: []Func{{
			Name:    "lines",
			Params:  "a: string, b: string, opts?: {context?: integer, a_name?: string, b_name?: string}",
			Returns: "string", Fn: (*Host).diffLines,
			Doc: "Unified diff of two texts, line by line (\"\" when equal); context lines default 3, names default \"a\" and \"b\".",
		}},
	}
}

func (h *Host) diffLines(L *lua.LState) int {
	a, b := L.CheckString(1), L.CheckString(2)
	o := h.Opts(L, 3, "diff.lines")
	ctx := o.Int("context", udiff.DefaultContextLines)
	an, bn := o.String("a_name", "a"), o.String("b_name", "b")
	o.Done()
	if ctx < 0 {
		h.ArgError(L, 3, "context must be >= 0, got %d", ctx)
	}
	out, err := udiff.ToUnified(an, bn, a, udiff.Lines(a, b), ctx)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LString(out))
	return 1
}
