package luahost

import (
	"time"

	lua "github.com/yuin/gopher-lua"
)

func timeModule() Module {
	return Module{
		Name: "time",
		Doc:  "Clock and sleeping. Durations are seconds or strings like \"90s\", \"3m\", \"1h\".",
		Funcs: []Func{
			{Name: "sleep", Params: "dur: duration", Fn: (*Host).timeSleep,
				Doc: "Sleep for dur; ends early with kind=\"cancelled\"/\"timeout\" when the run is interrupted."},
			{Name: "now", Returns: "number", Fn: (*Host).timeNow,
				Doc: "Seconds since the run started (monotonic; the timeline's clock)."},
			{Name: "wall", Returns: "string", Fn: (*Host).timeWall,
				Doc: "The wall-clock time as RFC 3339 with milliseconds."},
			{Name: "seconds", Params: "dur: duration", Returns: "number", Fn: (*Host).timeSeconds,
				Doc: "Convert a duration (\"90s\", \"3m\", 12) to a number of seconds."},
		},
	}
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

func (h *Host) timeSleep(L *lua.LState) int {
	if err := h.Sleep(h.CheckDuration(L, 1)); err != nil {
		h.Raise(L, err)
	}
	return 0
}

// elapsed is the run's clock: since the run started, or the host without
// a run.
func (h *Host) elapsed() time.Duration {
	if h.opt.Run != nil {
		return h.opt.Run.Since()
	}
	return time.Since(h.started)
}

func (h *Host) timeNow(L *lua.LState) int {
	L.Push(lua.LNumber(h.elapsed().Seconds()))
	return 1
}

func (h *Host) timeWall(L *lua.LState) int {
	L.Push(lua.LString(time.Now().Format("2006-01-02T15:04:05.000Z07:00")))
	return 1
}

func (h *Host) timeSeconds(L *lua.LState) int {
	L.Push(lua.LNumber(h.CheckDuration(L, 1).Seconds()))
	return 1
}
