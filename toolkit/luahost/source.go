package luahost

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vmscript/vmscript/toolkit/warm"
	lua "github.com/yuin/gopher-lua"
)

// The source of Lua functions and modules, as inputs of a warm state's key:
// a change of what brings a guest to its state is another state.

// readyInputs are the inputs of fn: its source text, the values it closes
// over (its upvalues, functions by their source), and the source of every
// module loaded so far (what it can use).
func (h *Host) readyInputs(L *lua.LState, fn *lua.LFunction) []warm.Input {
	in := []warm.Input{warm.Text("ready", "source", h.functionSource(fn))}
	in = append(in, warm.Text("values", "upvalues", h.upvalueText(fn)))
	for _, name := range h.loadedModules(L) {
		if src, where := h.moduleSource(name); where != "" {
			in = append(in, warm.Text("module", name+" ("+where+")", src))
		}
	}
	return in
}

// functionSource is the text of fn's definition, from its script or the
// embedded library, or a description when the text cannot be read.
func (h *Host) functionSource(fn *lua.LFunction) string {
	if fn.Proto == nil {
		return "go function"
	}
	p := fn.Proto
	var src []byte
	var err error
	if rel, ok := strings.CutPrefix(p.SourceName, embeddedPrefix); ok && h.opt.Library != nil {
		src, err = fs.ReadFile(h.opt.Library, rel)
	} else {
		src, err = os.ReadFile(p.SourceName)
	}
	if err != nil || p.LineDefined < 1 {
		return fmt.Sprintf("%s:%d-%d", p.SourceName, p.LineDefined, p.LastLineDefined)
	}
	lines := strings.Split(string(src), "\n")
	last := min(p.LastLineDefined, len(lines))
	if p.LineDefined > last {
		return fmt.Sprintf("%s:%d-%d", p.SourceName, p.LineDefined, p.LastLineDefined)
	}
	return strings.Join(lines[p.LineDefined-1:last], "\n")
}

// upvalueText renders fn's upvalues by name: a loaded module by its name
// (its source is an input of its own; its tables change as it runs),
// functions by their source, plain values as JSON, objects by their type.
func (h *Host) upvalueText(fn *lua.LFunction) string {
	modules := map[lua.LValue]string{}
	if loaded, ok := h.L.GetField(h.L.GetGlobal("package"), "loaded").(*lua.LTable); ok {
		loaded.ForEach(func(k, v lua.LValue) { modules[v] = lua.LVAsString(k) })
	}
	vals := map[string]any{}
	for i, uv := range fn.Upvalues {
		name := fmt.Sprintf("#%d", i)
		if fn.Proto != nil && i < len(fn.Proto.DbgUpvalues) {
			name = fn.Proto.DbgUpvalues[i]
		}
		v := uv.Value()
		if mod, ok := modules[v]; ok {
			vals[name] = "module " + mod
		} else if f, ok := v.(*lua.LFunction); ok {
			vals[name] = h.functionSource(f)
		} else {
			vals[name] = FromLua(v)
		}
	}
	data, err := json.Marshal(vals)
	if err != nil {
		return fmt.Sprint(vals)
	}
	return string(data)
}

// loadedModules are the names in package.loaded that are not Lua's own
// libraries, sorted.
func (h *Host) loadedModules(L *lua.LState) []string {
	std := map[string]bool{"_G": true, "package": true, "string": true, "table": true, "math": true,
		"io": true, "os": true, "debug": true, "coroutine": true, "channel": true}
	var names []string
	if loaded, ok := L.GetField(L.GetGlobal("package"), "loaded").(*lua.LTable); ok {
		loaded.ForEach(func(k, _ lua.LValue) {
			if s, ok := k.(lua.LString); ok && !std[string(s)] {
				names = append(names, string(s))
			}
		})
	}
	sort.Strings(names)
	return names
}

// moduleSource finds a module's source the way require does — the
// package.path templates, then the embedded library — and says where.
func (h *Host) moduleSource(name string) (string, string) {
	rel := strings.ReplaceAll(name, ".", "/")
	pkgPath := lua.LVAsString(h.L.GetField(h.L.GetGlobal("package"), "path"))
	for _, tmpl := range strings.Split(pkgPath, ";") {
		if tmpl == "" {
			continue
		}
		p := strings.ReplaceAll(tmpl, "?", rel)
		if src, err := os.ReadFile(p); err == nil {
			return string(src), filepath.Clean(p)
		}
	}
	if h.opt.Library != nil {
		for _, cand := range []string{rel + ".lua", rel + "/init.lua"} {
			if src, err := fs.ReadFile(h.opt.Library, cand); err == nil {
				return string(src), embeddedPrefix + cand
			}
		}
	}
	return "", ""
}
