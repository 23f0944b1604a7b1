package luahost

import (
	"fmt"

	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// NewObject wraps a Go value (a pointer) as a Lua object of a registered
// class: methods are found by name, other names go to the class's Get. The
// same value always gives the same object, so vm.console == vm.console.
func (h *Host) NewObject(L *lua.LState, class string, value any) *lua.LUserData {
	key := objectKey{class, value}
	if ud, ok := h.objects[key]; ok {
		return ud
	}
	ud := L.NewUserData()
	ud.Value = value
	L.SetMetatable(ud, h.classMeta(L, class))
	h.objects[key] = ud
	return ud
}

// objectKey identifies a Lua object: a Go pointer seen as a class.
type objectKey struct {
	class string
	value any
}

// CheckObject returns the Go value of the object at stack index n, raising a
// usage error when it is not an object of class.
func (h *Host) CheckObject(L *lua.LState, n int, class string) any {
	if v := h.objectOf(L, L.Get(n), class); v != nil {
		return v
	}
	h.ArgError(L, n, "%s expected, got %s (did you call with '.' instead of ':'?)", class, L.Get(n).Type())
	return nil
}

// objectOf returns the Go value of v when it is an object of class, else nil.
func (h *Host) objectOf(L *lua.LState, v lua.LValue, class string) any {
	if ud, ok := v.(*lua.LUserData); ok {
		if mt, ok := L.GetMetatable(ud).(*lua.LTable); ok && mt == h.metas[class] {
			return ud.Value
		}
	}
	return nil
}

func (h *Host) classMeta(L *lua.LState, name string) *lua.LTable {
	if mt, ok := h.metas[name]; ok {
		return mt
	}
	c, ok := classByName(name)
	if !ok {
		panic(fmt.Sprintf("luahost: class %q is not registered", name))
	}
	methods := L.NewTable()
	for _, f := range c.Methods {
		methods.RawSetString(f.Name, h.wrap(c.Name+":"+f.Name, f))
	}
	mt := L.NewTable()
	mt.RawSetString("__name", lua.LString(name))
	mt.RawSetString("__index", L.NewFunction(func(L *lua.LState) int { return h.index(L, c, methods) }))
	mt.RawSetString("__newindex", L.NewFunction(func(L *lua.LState) int {
		h.Raise(L, vmerr.New(vmerr.Usage, "%s fields are read-only (tried to set %q)", name, L.CheckString(2)))
		return 0
	}))
	mt.RawSetString("__tostring", L.NewFunction(objectString))
	h.metas[name] = mt
	return mt
}

// index resolves obj.key: a method, else a field of the class.
func (h *Host) index(L *lua.LState, c Class, methods *lua.LTable) int {
	ud := L.CheckUserData(1)
	key := L.CheckString(2)
	if m := methods.RawGetString(key); m != lua.LNil {
		L.Push(m)
		return 1
	}
	if c.Get != nil {
		if v := c.Get(h, L, ud.Value, key); v != nil {
			L.Push(v)
			return 1
		}
	}
	h.Raise(L, vmerr.New(vmerr.Usage, "%s has no field or method %q", c.Name, key))
	return 0
}

// objectString is tostring(obj): the Go value's String, else its class and
// address.
func objectString(L *lua.LState) int {
	ud := L.CheckUserData(1)
	if s, ok := ud.Value.(fmt.Stringer); ok {
		L.Push(lua.LString(s.String()))
	} else {
		name := "object"
		if mt, ok := L.GetMetatable(ud).(*lua.LTable); ok {
			name = lua.LVAsString(mt.RawGetString("__name"))
		}
		L.Push(lua.LString(fmt.Sprintf("%s: %p", name, ud)))
	}
	return 1
}

// wrap turns a registered Func into a Lua function that checks the run has
// not been cancelled before it starts.
func (h *Host) wrap(qualified string, f Func) *lua.LFunction {
	return h.L.NewFunction(func(L *lua.LState) int {
		if ve := h.cancelCause(); ve != nil {
			h.Raise(L, ve)
		}
		h.drainPosted()
		prev := h.current
		h.current = qualified
		defer func() { h.current = prev }()
		return f.Fn(h, L)
	})
}

func (h *Host) openModule(m Module) {
	L := h.L
	t := L.NewTable()
	for _, f := range m.Funcs {
		t.RawSetString(f.Name, h.wrap(m.Name+"."+f.Name, f))
	}
	if m.Setup != nil {
		m.Setup(h, t)
	}
	L.SetGlobal(m.Name, t)
}

// Post queues fn to run on the Lua goroutine at the next host call. Use it
// from background goroutines that need to call into Lua.
func (h *Host) Post(fn func()) {
	h.mu.Lock()
	h.posted = append(h.posted, fn)
	h.mu.Unlock()
}

func (h *Host) drainPosted() {
	for {
		h.mu.Lock()
		fns := h.posted
		h.posted = nil
		h.mu.Unlock()
		if len(fns) == 0 {
			return
		}
		for _, fn := range fns {
			fn()
		}
	}
}

// callWatcher calls a Lua watch callback; its errors are reported, not raised,
// since the script is somewhere else by now.
func (h *Host) callWatcher(fn *lua.LFunction, line string) {
	if err := h.L.CallByParam(lua.P{Fn: fn, NRet: 0, Protect: true}, lua.LString(line)); err != nil {
		fmt.Fprintf(h.opt.Stderr, "vmscript: watch callback failed: %v\n", err)
		h.Event("script", "watch-error", map[string]any{"error": err.Error(), "line": line})
	}
}
