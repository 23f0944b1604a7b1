package luahost

import (
	"sync"

	"github.com/vmscript/vmscript/toolkit/notes"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// notebooks holds each Host's notebook, created on first use of `notes`.
var notebooks sync.Map // *Host → *notes.Notebook

// Notebook returns the run's notebook (notes.md), creating it on first use;
// it is closed when the host closes.
func (h *Host) Notebook() (*notes.Notebook, error) {
	if nb, ok := notebooks.Load(h); ok {
		return nb.(*notes.Notebook), nil
	}
	if h.opt.Run == nil {
		return nil, vmerr.New(vmerr.NotFound, "notes: this run has no run directory")
	}
	nb, err := notes.New(h.opt.Run, notes.Options{Script: h.opt.Script})
	if err != nil {
		return nil, err
	}
	notebooks.Store(h, nb)
	h.OnClose("close notes", func() {
		notebooks.Delete(h)
		_ = nb.Close()
	})
	return nb, nil
}

func (h *Host) notebook(L *lua.LState) *notes.Notebook {
	nb, err := h.Notebook()
	if err != nil {
		h.Raise(L, err)
	}
	return nb
}

// evidenceOf reads {evidence = path | {paths…} | text}, or a bare string.
func (h *Host) evidenceOf(L *lua.LState, n int) []string {
	switch v := L.Get(n).(type) {
	case *lua.LNilType:
		return nil
	case lua.LString:
		return []string{string(v)}
	case *lua.LTable:
		o := h.OptsOf(L, v, "notes.observe")
		ev := o.StringList("evidence")
		o.Done()
		return ev
	default:
		h.ArgError(L, n, "options must be a table {evidence=…} or a string, got %s", v.Type())
	}
	return nil
}

func init() {
	Register(Module{
		Name: "notes",
		Doc:  "The investigator's notebook: notes.md in the run directory, timestamped, appended as it happens.",
		Funcs: []Func{
			{
				Name: "step", Params: "title: string",
				Doc: "Start a new step (a heading in notes.md); later entries belong to it.",
				Fn: func(h *Host, L *lua.LState) int {
					title := L.CheckString(1)
					if err := h.notebook(L).Step(title); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "observe", Params: "text: string, opts?: {evidence?: string|string[]}|string",
				Doc: "Record an observation; evidence is a file path (linked, copied in when outside the run directory) or text (quoted, saved when long).",
				Fn: func(h *Host, L *lua.LState) int {
					text := L.CheckString(1)
					ev := h.evidenceOf(L, 2)
					if err := h.notebook(L).Observe(text, ev...); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "conclude", Params: "text: string",
				Doc: "Record a conclusion (the verdict of the current step).",
				Fn: func(h *Host, L *lua.LState) int {
					text := L.CheckString(1)
					if err := h.notebook(L).Conclude(text); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "command", Params: "cmd: string, result: {output?: string, stdout?: string, stderr?: string, code?: integer, artifact?: string}",
				Doc: "Record a command with its exit code and an excerpt of its output (full output saved as an artifact when long).",
				Fn: func(h *Host, L *lua.LState) int {
					cmd := L.CheckString(1)
					t := L.CheckTable(2)
					o := h.OptsOf(L, t, "notes.command")
					output := o.String("output", "")
					if stdout := o.String("stdout", ""); stdout != "" {
						output += stdout
					}
					if stderr := o.String("stderr", ""); stderr != "" {
						if output != "" && output[len(output)-1] != '\n' {
							output += "\n"
						}
						output += "--- stderr ---\n" + stderr
					}
					code := o.Int("code", 0)
					artifact := o.String("artifact", "")
					o.Done()
					if err := h.notebook(L).Command(cmd, code, output, artifact); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "save", Params: "name: string, data: string", Returns: "string",
				Doc: "Save data as an artifact (safe name, never overwritten: a suffix is added) and return its absolute path.",
				Fn: func(h *Host, L *lua.LState) int {
					name, data := L.CheckString(1), L.CheckString(2)
					p, err := h.notebook(L).Save(name, []byte(data))
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LString(p))
					return 1
				},
			},
			{
				Name: "attach", Params: "path: string", Returns: "string",
				Doc: "Copy an existing file into the run's artifacts, link it, and return the copy's absolute path.",
				Fn: func(h *Host, L *lua.LState) int {
					src := L.CheckString(1)
					p, err := h.notebook(L).Attach(src)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LString(p))
					return 1
				},
			},
			{
				Name: "path", Returns: "string",
				Doc: "The absolute path of notes.md.",
				Fn: func(h *Host, L *lua.LState) int {
					L.Push(lua.LString(h.notebook(L).Path()))
					return 1
				},
			},
		},
	})
}
