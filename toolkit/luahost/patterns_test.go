package luahost

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	lua "github.com/yuin/gopher-lua"
)

// TestPatternTables: console patterns from Lua — strings, {re=}, {text=},
// per-pattern settle, lists — and the errors for malformed ones.
func TestPatternTables(t *testing.T) {
	h, err := New(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	L := h.L
	var got []console.Pattern
	L.SetGlobal("probe", L.NewFunction(func(L *lua.LState) int {
		got = h.patterns(L, 1)
		return 0
	}))
	for src, want := range map[string][]console.Pattern{
		`probe("login: ")`:                                  {{Text: "login: "}},
		`probe{re = "# $"}`:                                 {{Regex: "# $"}},
		`probe{text = "x", settle = "300ms"}`:               {{Text: "x", Settle: 300 * time.Millisecond}},
		`probe{"a", {re = "b$", settle = 1}, {text = "c"}}`: {{Text: "a"}, {Regex: "b$", Settle: time.Second}, {Text: "c"}},
	} {
		got = nil
		if err := L.DoString(src); err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: got %v, want %v", src, got, want)
		}
	}
	for src, msg := range map[string]string{
		`probe{re = "a", text = "b"}`:      "exactly one of re and text",
		`probe{re = "a", setle = "1s"}`:    `unknown option "setle"`,
		`probe{re = "a", settle = "soon"}`: "settle",
		`probe{}`:                          "empty pattern list",
		`probe{{}}`:                        "item 1: pattern must be",
		`probe("")`:                        "empty pattern",
	} {
		err := L.DoString(`local ok, e = pcall(function() ` + src + ` end); msg = type(e) == "table" and e.message or tostring(e)`)
		if err != nil {
			t.Fatal(err)
		}
		if m := L.GetGlobal("msg").String(); !strings.Contains(m, msg) {
			t.Errorf("%s: error %q lacks %q", src, m, msg)
		}
	}
}
