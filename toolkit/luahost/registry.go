package luahost

import (
	"fmt"
	"sort"

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
	// Fn implements the function, a Host method (`(*Host).qemuStart`).
	// For a method, argument 1 is the object.
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

// builtinModules are the modules of the Lua API, one file each.
func builtinModules() []Module {
	return []Module{diffModule(), isoModule(), journalModule(), labModule(), lanModule(), netbootModule(),
		notesModule(), qemuModule(), sshModule(), timeModule(), vmscriptModule()}
}

// builtinClasses are the object types of the Lua API, one file each.
func builtinClasses() []Class {
	return []Class{checkpointClass(), consoleClass(), isoImageClass(), initramfsClass(), lanClass(), lanDHCPClass(),
		netbootServerClass(), screenClass(), shellClass(), sshClientClass(), vmClass(), agentClass()}
}

// Modules returns the modules of the Lua API sorted by name.
func Modules() []Module {
	out := builtinModules()
	for _, m := range out {
		mustBeComplete(m.Name, m.Funcs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Classes returns the object types of the Lua API sorted by name.
func Classes() []Class {
	out := builtinClasses()
	for _, c := range out {
		mustBeComplete(c.Name, c.Methods)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func classByName(name string) (Class, bool) {
	for _, c := range builtinClasses() {
		if c.Name == name {
			return c, true
		}
	}
	return Class{}, false
}

// mustBeComplete panics on a function without name, doc or implementation,
// or a name given twice: a programming error the tests catch.
func mustBeComplete(owner string, fns []Func) {
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
