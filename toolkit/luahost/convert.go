package luahost

import (
	"math"
	"sort"

	"github.com/vmscript/vmscript/toolkit/record"

	lua "github.com/yuin/gopher-lua"
)

// ToLua converts a Go value (nil, bool, numbers, string, []byte, []string,
// []any, map[string]any, time.Time, time.Duration, json.RawMessage, an
// LValue, or a record: a struct with json tags, see package record) to a Lua
// value. Durations become seconds; times become RFC 3339.
func ToLua(L *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case lua.LValue:
		return x
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case int:
		return lua.LNumber(x)
	case int64:
		return lua.LNumber(x)
	case uint64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case []any:
		t := L.CreateTable(len(x), 0)
		for _, e := range x {
			t.Append(ToLua(L, e))
		}
		return t
	case map[string]any:
		t := L.CreateTable(0, len(x))
		for k, e := range x {
			t.RawSetString(k, ToLua(L, e))
		}
		return t
	case error:
		return lua.LString(x.Error())
	default:
		// Everything else (other numbers, []string, maps, durations,
		// times, raw JSON, records) comes back as one of the above.
		return ToLua(L, record.Value(x))
	}
}

// FromLua converts a Lua value to plain Go: nil, bool, float64 (or int64
// when integral), string, []any for sequences and map[string]any for other
// tables. Functions and userdata become their type name. Cycles are cut.
func FromLua(v lua.LValue) any {
	return fromLua(v, map[*lua.LTable]bool{})
}

func fromLua(v lua.LValue, seen map[*lua.LTable]bool) any {
	switch x := v.(type) {
	case *lua.LNilType:
		return nil
	case lua.LBool:
		return bool(x)
	case lua.LNumber:
		f := float64(x)
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int64(f)
		}
		return f
	case lua.LString:
		return string(x)
	case *lua.LTable:
		if seen[x] {
			return "<cycle>"
		}
		seen[x] = true
		defer delete(seen, x)
		n := x.Len()
		count := 0
		x.ForEach(func(lua.LValue, lua.LValue) { count++ })
		if n > 0 && n == count {
			out := make([]any, 0, n)
			for i := 1; i <= n; i++ {
				out = append(out, fromLua(x.RawGetInt(i), seen))
			}
			return out
		}
		out := map[string]any{}
		x.ForEach(func(k, val lua.LValue) {
			out[lua.LVAsString(k)+keySuffix(k)] = fromLua(val, seen)
		})
		return out
	default:
		return v.Type().String()
	}
}

func keySuffix(k lua.LValue) string {
	switch k.(type) {
	case lua.LString, lua.LNumber:
		return ""
	}
	return "<" + k.Type().String() + ">"
}

// SortedKeys returns the string keys of a table, sorted.
func SortedKeys(t *lua.LTable) []string {
	var keys []string
	t.ForEach(func(k, _ lua.LValue) {
		if s, ok := k.(lua.LString); ok {
			keys = append(keys, string(s))
		}
	})
	sort.Strings(keys)
	return keys
}
