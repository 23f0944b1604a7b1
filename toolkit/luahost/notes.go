package luahost

import (
	"github.com/vmscript/vmscript/toolkit/notes"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func notesModule() Module {
	return Module{
		Name: "notes",
		Doc:  "The investigator's notebook: notes.md in the run directory, timestamped, appended as it happens.",
		Funcs: []Func{
			{Name: "step", Params: "title: string", Fn: (*Host).notesStep,
				Doc: "Start a new step (a heading in notes.md); later entries belong to it."},
			{Name: "observe", Params: "text: string, opts?: {evidence?: string|string[]}|string", Fn: (*Host).notesObserve,
				Doc: "Record an observation; evidence is a file path (linked, copied in when outside the run directory) or text (quoted, saved when long)."},
			{Name: "conclude", Params: "text: string", Fn: (*Host).notesConclude,
				Doc: "Record a conclusion (the verdict of the current step)."},
			{Name: "command", Params: "cmd: string, result: {output?: string, stdout?: string, stderr?: string, code?: integer, artifact?: string, duration?: number, signal?: string}", Fn: (*Host).notesCommand,
				Doc: "Record a command with its exit code and an excerpt of its output (full output saved as an artifact when long); a run's result can be passed as it is."},
			{Name: "save", Params: "name: string, data: string", Returns: "string", Fn: (*Host).notesSave,
				Doc: "Save data as an artifact (safe name, never overwritten: a suffix is added) and return its absolute path."},
			{Name: "attach", Params: "path: string", Returns: "string", Fn: (*Host).notesAttach,
				Doc: "Copy an existing file into the run's artifacts, link it, and return the copy's absolute path."},
			{Name: "path", Returns: "string", Fn: (*Host).notesPath, Doc: "The absolute path of notes.md."},
		},
	}
}

// Notebook returns the run's notebook (notes.md), creating it on first use;
// it is closed when the host closes.
func (h *Host) Notebook() (*notes.Notebook, error) {
	if h.notebook != nil {
		return h.notebook, nil
	}
	if h.opt.Run == nil {
		return nil, vmerr.New(vmerr.NotFound, "notes: this run has no run directory")
	}
	nb, err := notes.New(h.opt.Run, notes.Options{Script: h.opt.Script})
	if err != nil {
		return nil, err
	}
	h.notebook = nb
	h.OnClose("close notes", func() { _ = nb.Close() })
	return nb, nil
}

func (h *Host) checkNotebook(L *lua.LState) *notes.Notebook {
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

func (h *Host) notesStep(L *lua.LState) int {
	if err := h.checkNotebook(L).Step(L.CheckString(1)); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) notesObserve(L *lua.LState) int {
	text := L.CheckString(1)
	ev := h.evidenceOf(L, 2)
	if err := h.checkNotebook(L).Observe(text, ev...); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) notesConclude(L *lua.LState) int {
	if err := h.checkNotebook(L).Conclude(L.CheckString(1)); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) notesCommand(L *lua.LState) int {
	cmd := L.CheckString(1)
	o := h.OptsOf(L, L.CheckTable(2), "notes.command")
	output := o.String("output", "")
	// A run's result carries stdout and stderr too: the streams, when there
	// are two, show which is which.
	if stdout, stderr := o.String("stdout", ""), o.String("stderr", ""); stdout != "" || stderr != "" {
		output = stdout
		if stderr != "" {
			if output != "" && output[len(output)-1] != '\n' {
				output += "\n"
			}
			output += "--- stderr ---\n" + stderr
		}
	}
	code := o.Int("code", 0)
	artifact := o.String("artifact", "")
	o.Get("duration")
	o.Get("signal")
	o.Done()
	if err := h.checkNotebook(L).Command(cmd, code, output, artifact); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) notesSave(L *lua.LState) int {
	name, data := L.CheckString(1), L.CheckString(2)
	p, err := h.checkNotebook(L).Save(name, []byte(data))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LString(p))
	return 1
}

func (h *Host) notesAttach(L *lua.LState) int {
	p, err := h.checkNotebook(L).Attach(L.CheckString(1))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LString(p))
	return 1
}

func (h *Host) notesPath(L *lua.LState) int {
	L.Push(lua.LString(h.checkNotebook(L).Path()))
	return 1
}
