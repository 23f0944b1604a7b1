package luahost

import (
	"os"
	"time"

	"github.com/vmscript/vmscript/internal/version"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func vmscriptModule() Module {
	return Module{
		Name: "vmscript",
		Doc:  "The host itself: version and exit codes.",
		Funcs: []Func{{
			Name: "exit", Params: "code?: integer|boolean", Fn: (*Host).exit,
			Doc: "End the script now with this exit code (0-255; true=0, false=1); cleanups still run, pcall does not catch it.",
		}},
		Fields: []Field{{Name: "version", Type: "string", Doc: "vmscript's version."}},
		Setup: func(h *Host, t *lua.LTable) {
			t.RawSetString("version", lua.LString(version.String()))
		},
	}
}

// Interrupted is the cancel cause for a run stopped by a signal.
func Interrupted(sig os.Signal) error {
	return vmerr.New(vmerr.Cancelled, "interrupted by %v", sig)
}

// TimedOut is the cancel cause for a run that hit its global --timeout.
func TimedOut(d time.Duration) error {
	return vmerr.New(vmerr.Timeout, "run timed out after %v (--timeout)", d).With("timeout_s", d.Seconds())
}
