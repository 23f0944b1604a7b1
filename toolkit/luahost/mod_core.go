package luahost

import (
	"os"
	"time"

	"github.com/vmscript/vmscript/internal/version"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// Interrupted is the cancel cause for a run stopped by a signal.
func Interrupted(sig os.Signal) error {
	return vmerr.New(vmerr.Cancelled, "interrupted by %v", sig)
}

// TimedOut is the cancel cause for a run that hit its global --timeout.
func TimedOut(d time.Duration) error {
	return vmerr.New(vmerr.Timeout, "run timed out after %v (--timeout)", d).With("timeout_s", d.Seconds())
}

// Sleep waits for d or until the run is cancelled, whichever comes first.
func (h *Host) Sleep(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-h.ctx.Done():
		return h.cancelCause()
	}
}

func init() {
	Register(Module{
		Name: "vmscript",
		Doc:  "The host itself: version and exit codes.",
		Funcs: []Func{{
			Name: "exit", Params: "code?: integer|boolean",
			Doc: "End the script now with this exit code (0-255; true=0, false=1); cleanups still run, pcall does not catch it.",
			Fn:  func(h *Host, L *lua.LState) int { return h.exit(L) },
		}},
		Fields: []Field{{Name: "version", Type: "string", Doc: "vmscript's version."}},
		Setup: func(h *Host, t *lua.LTable) {
			t.RawSetString("version", lua.LString(version.String()))
		},
	})
	Register(Module{
		Name: "time",
		Doc:  "Clock and sleeping. Durations are seconds or strings like \"90s\", \"3m\", \"1h\".",
		Funcs: []Func{
			{
				Name: "sleep", Params: "dur: duration",
				Doc: "Sleep for dur; ends early with kind=\"cancelled\"/\"timeout\" when the run is interrupted.",
				Fn: func(h *Host, L *lua.LState) int {
					if err := h.Sleep(h.CheckDuration(L, 1)); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "now", Returns: "number",
				Doc: "Seconds since the run started (monotonic; the timeline's clock).",
				Fn: func(h *Host, L *lua.LState) int {
					L.Push(lua.LNumber(h.elapsed().Seconds()))
					return 1
				},
			},
			{
				Name: "wall", Returns: "string",
				Doc: "The wall-clock time as RFC 3339 with milliseconds.",
				Fn: func(h *Host, L *lua.LState) int {
					L.Push(lua.LString(time.Now().Format("2006-01-02T15:04:05.000Z07:00")))
					return 1
				},
			},
			{
				Name: "seconds", Params: "dur: duration", Returns: "number",
				Doc: "Convert a duration (\"90s\", \"3m\", 12) to a number of seconds.",
				Fn: func(h *Host, L *lua.LState) int {
					L.Push(lua.LNumber(h.CheckDuration(L, 1).Seconds()))
					return 1
				},
			},
		},
	})
	Register(Module{
		Name: "journal",
		Doc:  "The run directory and its timeline (timeline.jsonl).",
		Funcs: []Func{
			{
				Name: "event", Params: "kind: string, fields?: table",
				Doc: "Append an event from the script to the timeline.",
				Fn: func(h *Host, L *lua.LState) int {
					kind := L.CheckString(1)
					var fields map[string]any
					switch v := L.Get(2).(type) {
					case *lua.LNilType:
					case *lua.LTable:
						if m, ok := FromLua(v).(map[string]any); ok {
							fields = m
						} else {
							fields = map[string]any{"values": FromLua(v)}
						}
					default:
						h.ArgError(L, 2, "fields must be a table, got %s", v.Type())
					}
					h.Event("script", kind, fields)
					return 0
				},
			},
			{
				Name: "dir", Returns: "string",
				Doc: "The run directory's absolute path.",
				Fn: func(h *Host, L *lua.LState) int {
					if h.opt.Run == nil {
						h.Errorf(L, vmerr.NotFound, "this run has no run directory")
					}
					L.Push(lua.LString(h.opt.Run.Dir()))
					return 1
				},
			},
		},
	})
}

var hostStart = time.Now()

func (h *Host) elapsed() time.Duration {
	if h.opt.Run != nil {
		return h.opt.Run.Since()
	}
	return time.Since(hostStart)
}
