package luahost

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/dur"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// Opts reads an options table (`qemu.start{…}`, `{timeout=…}`) and refuses
// keys nobody asked for, so a typo like `memroy` is an error naming the option
// instead of a silently ignored setting.
//
//	o := h.Opts(L, 2, "vm.console:expect")
//	timeout := o.Duration("timeout", 30*time.Second)
//	o.Done() // raises for unknown keys
type Opts struct {
	h    *Host
	L    *lua.LState
	t    *lua.LTable
	fn   string
	seen map[string]bool
}

// Opts wraps the table at stack index n (nil or absent gives an empty set).
// fn names the function in error messages.
func (h *Host) Opts(L *lua.LState, n int, fn string) *Opts {
	o := &Opts{h: h, L: L, fn: fn, seen: map[string]bool{}}
	switch v := L.Get(n).(type) {
	case *lua.LNilType:
	case *lua.LTable:
		o.t = v
	default:
		h.Raise(L, vmerr.New(vmerr.Usage, "%s: options must be a table, got %s", fn, v.Type()))
	}
	return o
}

// OptsOf wraps an already fetched table (for nested option tables).
func (h *Host) OptsOf(L *lua.LState, t *lua.LTable, fn string) *Opts {
	return &Opts{h: h, L: L, t: t, fn: fn, seen: map[string]bool{}}
}

// Table returns the underlying table (nil when absent).
func (o *Opts) Table() *lua.LTable { return o.t }

func (o *Opts) fail(key, format string, a ...any) {
	o.h.Raise(o.L, vmerr.New(vmerr.Usage, "%s: option %q %s", o.fn, key, fmt.Sprintf(format, a...)))
}

// Get returns the raw value of key and marks it as known.
func (o *Opts) Get(key string) lua.LValue {
	o.seen[key] = true
	if o.t == nil {
		return lua.LNil
	}
	return o.t.RawGetString(key)
}

// Has reports whether key is set (and marks it as known).
func (o *Opts) Has(key string) bool { return o.Get(key) != lua.LNil }

// String returns a string option.
func (o *Opts) String(key, def string) string {
	switch v := o.Get(key).(type) {
	case *lua.LNilType:
		return def
	case lua.LString:
		return string(v)
	case lua.LNumber:
		return v.String()
	default:
		o.fail(key, "must be a string, got %s", v.Type())
	}
	return def
}

// OneOf returns a string option that must be one of choices.
func (o *Opts) OneOf(key, def string, choices ...string) string {
	s := o.String(key, def)
	for _, c := range choices {
		if s == c {
			return s
		}
	}
	o.fail(key, "must be one of %s, got %q", strings.Join(choices, ", "), s)
	return def
}

// Int returns an integer option.
func (o *Opts) Int(key string, def int) int {
	switch v := o.Get(key).(type) {
	case *lua.LNilType:
		return def
	case lua.LNumber:
		if float64(v) != float64(int(v)) {
			o.fail(key, "must be an integer, got %v", v)
		}
		return int(v)
	default:
		o.fail(key, "must be a number, got %s", v.Type())
	}
	return def
}

// Bool returns a boolean option.
func (o *Opts) Bool(key string, def bool) bool {
	switch v := o.Get(key).(type) {
	case *lua.LNilType:
		return def
	case lua.LBool:
		return bool(v)
	default:
		o.fail(key, "must be true or false, got %s", v.Type())
	}
	return def
}

// Duration returns a duration option: seconds or a string like "90s".
func (o *Opts) Duration(key string, def time.Duration) time.Duration {
	v := o.Get(key)
	if v == lua.LNil {
		return def
	}
	d, err := DurationOf(v)
	if err != nil {
		o.fail(key, "%v", err)
	}
	return d
}

// StringList returns a list of strings (a single string is a list of one).
func (o *Opts) StringList(key string) []string {
	switch v := o.Get(key).(type) {
	case *lua.LNilType:
		return nil
	case lua.LString:
		return []string{string(v)}
	case *lua.LTable:
		var out []string
		for i := 1; i <= v.Len(); i++ {
			s, ok := v.RawGetInt(i).(lua.LString)
			if !ok {
				o.fail(key, "item %d must be a string, got %s", i, v.RawGetInt(i).Type())
			}
			out = append(out, string(s))
		}
		return out
	default:
		o.fail(key, "must be a string or a list of strings, got %s", v.Type())
	}
	return nil
}

// Done raises a usage error if the table holds a key that no getter asked
// for, listing the known options.
func (o *Opts) Done() {
	if o.t == nil {
		return
	}
	var unknown []string
	o.t.ForEach(func(k, _ lua.LValue) {
		s, ok := k.(lua.LString)
		if !ok {
			unknown = append(unknown, fmt.Sprintf("[%s]", k.String()))
			return
		}
		if !o.seen[string(s)] {
			unknown = append(unknown, string(s))
		}
	})
	if len(unknown) == 0 {
		return
	}
	sort.Strings(unknown)
	known := make([]string, 0, len(o.seen))
	for k := range o.seen {
		known = append(known, k)
	}
	sort.Strings(known)
	o.h.Raise(o.L, vmerr.New(vmerr.Usage, "%s: unknown option %s (known: %s)", o.fn,
		quoteAll(unknown), strings.Join(known, ", ")))
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// DurationOf converts a Lua number of seconds or a duration string.
func DurationOf(v lua.LValue) (time.Duration, error) {
	switch x := v.(type) {
	case lua.LNumber:
		return dur.Seconds(float64(x))
	case lua.LString:
		return dur.Parse(string(x))
	default:
		return 0, fmt.Errorf("must be seconds or a string like \"90s\", got %s", v.Type())
	}
}

// TimeoutOpt reads an options table at stack index n that may hold only
// timeout (the common `{timeout = "2m"}`), with def when it is absent.
func (h *Host) TimeoutOpt(L *lua.LState, n int, fn string, def time.Duration) time.Duration {
	o := h.Opts(L, n, fn)
	d := o.Duration("timeout", def)
	o.Done()
	return d
}

// CheckDuration reads a required duration argument.
func (h *Host) CheckDuration(L *lua.LState, n int) time.Duration {
	d, err := DurationOf(L.Get(n))
	if err != nil {
		h.ArgError(L, n, "%v", err)
	}
	return d
}
