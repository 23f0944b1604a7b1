package luahost

import (
	"fmt"
	"sort"
	"sync"

	lua "github.com/yuin/gopher-lua"
)

// Func describes one function a module or class exposes to Lua. The same
// description feeds the Lua binding, `vmscript doc` and the LuaCATS
// annotations, so the documentation cannot drift from the code.
type Func struct {
	// Name is the Lua name, e.g. "sleep".
	Name string
	// Params is the parameter list in LuaCATS style: "dur: duration, opts?: table".
	Params string
	// Returns is the LuaCATS return type, "" for none.
	Returns string
	// Doc is one line saying what the function does.
	Doc string
	// Fn implements the function. For a method, argument 1 is the object.
	Fn func(h *Host, L *lua.LState) int
}

// Field describes a value a module or object carries (e.g. vm.name).
type Field struct {
	Name string
	Type string
	Doc  string
}

// Module is one global table of the Lua API, such as `time` or `qemu`.
type Module struct {
	// Name is the global's name.
	Name string
	// Doc is one line about the module.
	Doc string
	// Funcs are the module's functions, called with a dot: time.sleep(…).
	Funcs []Func
	// Fields are values set on the module table.
	Fields []Field
	// Setup, if set, runs after the functions are installed, to add fields.
	Setup func(h *Host, t *lua.LTable)
}

// Class is an object type handed to Lua as userdata with methods, such as
// the `vm` that qemu.start returns.
type Class struct {
	// Name is the type's name in docs and error messages ("vm").
	Name string
	// Doc is one line about the type.
	Doc string
	// Methods are called with a colon: vm:wait{…}.
	Methods []Func
	// Fields are read with a dot (vm.name); Get resolves them.
	Fields []Field
	// Get returns the value of a field, or nil when the name is not a field.
	Get func(h *Host, L *lua.LState, self any, name string) lua.LValue
}

var registry struct {
	sync.Mutex
	modules map[string]Module
	classes map[string]Class
	// extensions are methods added to a class by ExtendClass.
	extensions map[string][]Func
}

// Register adds a module to every Host created afterwards. Bindings call it
// from init. Registering a name twice panics: it is a programming error.
func Register(m Module) {
	registry.Lock()
	defer registry.Unlock()
	if registry.modules == nil {
		registry.modules = map[string]Module{}
	}
	if _, dup := registry.modules[m.Name]; dup {
		panic(fmt.Sprintf("luahost: module %q registered twice", m.Name))
	}
	checkFuncs(m.Name, m.Funcs)
	registry.modules[m.Name] = m
}

// RegisterClass adds an object type. Bindings call it from init.
func RegisterClass(c Class) {
	registry.Lock()
	defer registry.Unlock()
	if registry.classes == nil {
		registry.classes = map[string]Class{}
	}
	if _, dup := registry.classes[c.Name]; dup {
		panic(fmt.Sprintf("luahost: class %q registered twice", c.Name))
	}
	checkFuncs(c.Name, c.Methods)
	registry.classes[c.Name] = c
}

func checkFuncs(owner string, fns []Func) {
	seen := map[string]bool{}
	for _, f := range fns {
		if f.Name == "" || f.Doc == "" || f.Fn == nil {
			panic(fmt.Sprintf("luahost: %s.%s needs a name, a doc line and a function", owner, f.Name))
		}
		if seen[f.Name] {
			panic(fmt.Sprintf("luahost: %s.%s registered twice", owner, f.Name))
		}
		seen[f.Name] = true
	}
}

// ExtendClass adds methods to a class registered elsewhere (or later), so a
// binding file can give `vm` its own methods (vm:ssh in the ssh binding,
// vm:login in the shell binding) without editing the file that registered
// `vm`. Bindings call it from init.
func ExtendClass(name string, methods ...Func) {
	registry.Lock()
	defer registry.Unlock()
	if registry.extensions == nil {
		registry.extensions = map[string][]Func{}
	}
	registry.extensions[name] = append(registry.extensions[name], methods...)
}

// Modules returns the registered modules sorted by name.
func Modules() []Module {
	registry.Lock()
	defer registry.Unlock()
	out := make([]Module, 0, len(registry.modules))
	for _, m := range registry.modules {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Classes returns the registered object types sorted by name.
func Classes() []Class {
	registry.Lock()
	defer registry.Unlock()
	out := make([]Class, 0, len(registry.classes))
	for _, c := range registry.classes {
		out = append(out, withExtensions(c))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func classByName(name string) (Class, bool) {
	registry.Lock()
	defer registry.Unlock()
	c, ok := registry.classes[name]
	return withExtensions(c), ok
}

// withExtensions returns c with the methods added by ExtendClass; the caller
// holds the registry lock.
func withExtensions(c Class) Class {
	ext := registry.extensions[c.Name]
	if len(ext) == 0 {
		return c
	}
	c.Methods = append(append([]Func(nil), c.Methods...), ext...)
	checkFuncs(c.Name, c.Methods)
	return c
}
