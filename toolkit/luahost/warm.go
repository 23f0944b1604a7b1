package luahost

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	"github.com/vmscript/vmscript/toolkit/warm"
	lua "github.com/yuin/gopher-lua"
)

// defaultWarmTimeout bounds qemu.warm: a cold boot, ready, and the save.
const defaultWarmTimeout = 15 * time.Minute

// warmInfoType documents qemu.warm's third result.
func warmInfoType() TypeDoc {
	return TypeDoc{
		Name: "vmscript.WarmInfo",
		Doc:  "Where qemu.warm's guest came from: the warm cache (hit) or a cold boot that saved its state.",
		Fields: []Field{
			{Name: "hit", Type: "boolean", Doc: "The state was restored from the cache."},
			{Name: "cold", Type: "boolean", Doc: "cold=true was asked for: no cache at all."},
			{Name: "key", Type: "string", Doc: "The state's key (`vmscript warm ls` shows it)."},
			{Name: "created", Type: "string?", Doc: "When the state was saved (RFC 3339)."},
			{Name: "made_by", Type: "string?", Doc: "The run directory whose cold boot saved it."},
			{Name: "boot_s", Type: "number?", Doc: "How long that cold boot and ready took."},
			{Name: "took_s", Type: "number", Doc: "How long qemu.warm took in this run."},
			{Name: "bytes", Type: "integer?", Doc: "The cache entry's size."},
			{Name: "why", Type: "string[]", Doc: "On a miss: why no saved state was used."},
		},
	}
}

// qemuWarm is qemu.warm.
func (h *Host) qemuWarm(L *lua.LState) int {
	o := h.Opts(L, 1, "qemu.warm")
	startT, ok := o.Get("start").(*lua.LTable)
	if !ok {
		o.fail("start", "must be a table of qemu.start's options")
	}
	ready, ok := o.Get("ready").(*lua.LFunction)
	if !ok {
		o.fail("ready", "must be a function(vm) that brings the guest to its state")
	}
	cold := o.Bool("cold", false)
	timeout := o.Duration("timeout", defaultWarmTimeout)
	o.Done()
	spec := h.specOf(L, startT, "qemu.warm: start")
	if cold {
		return h.coldStart(L, spec, ready)
	}
	cache, err := h.warmCache()
	if err != nil {
		h.Raise(L, err)
	}
	var luaErr lua.LValue
	req := warm.Request{Spec: spec, Ready: h.readyInputs(L, ready),
		Prepare: func(ctx context.Context, m *machine.Machine) (*shell.Shell, error) {
			sh, errv := h.callReady(L, ready, m)
			luaErr = errv
			if errv != nil {
				return nil, vmerr.New(vmerr.Failed, "qemu.warm: ready failed: %s", h.tostring(errv))
			}
			return sh, nil
		}}
	ctx, cancel := h.withTimeout(timeout)
	defer cancel()
	res, err := cache.Start(ctx, h.pool, req)
	if luaErr != nil {
		L.Error(luaErr, 0)
	}
	if err != nil {
		h.Raise(L, h.inCall(err))
	}
	return h.pushWarm(L, res)
}

// coldStart boots and readies without the cache (cold=true).
func (h *Host) coldStart(L *lua.LState, spec machine.Spec, ready *lua.LFunction) int {
	t0 := time.Now()
	m, err := h.pool.Boot(h.ctx, spec)
	if err != nil {
		h.Raise(L, h.inCall(err))
	}
	sh, errv := h.callReady(L, ready, m)
	if errv != nil {
		L.Error(errv, 0)
	}
	h.Event("warm:"+m.Name(), "warm-cold", map[string]any{"took_s": time.Since(t0).Seconds()})
	return h.pushWarm(L, &warm.Result{Machine: m, Shell: sh, Took: time.Since(t0), Why: []string{"cold=true"}})
}

// callReady calls ready(vm) and returns the shell it returned (or nil), or
// the Lua error it raised.
func (h *Host) callReady(L *lua.LState, ready *lua.LFunction, m *machine.Machine) (*shell.Shell, lua.LValue) {
	if err := L.CallByParam(lua.P{Fn: ready, NRet: 1, Protect: true}, h.vmObject(L, m)); err != nil {
		if apiErr, ok := err.(*lua.ApiError); ok {
			return nil, apiErr.Object
		}
		return nil, lua.LString(err.Error())
	}
	ret := L.Get(-1)
	L.Pop(1)
	if ret == lua.LNil {
		return nil, nil
	}
	sh, ok := h.objectOf(L, ret, "shell").(*shell.Shell)
	if !ok {
		return nil, lua.LString("qemu.warm: ready must return a shell (vm:login, vm:shell) or nothing, got " + ret.Type().String())
	}
	return sh, nil
}

// pushWarm returns vm, shell (or nil) and the info table.
func (h *Host) pushWarm(L *lua.LState, res *warm.Result) int {
	info := L.NewTable()
	info.RawSetString("hit", lua.LBool(res.Hit))
	info.RawSetString("cold", lua.LBool(res.Entry == nil && !res.Hit))
	info.RawSetString("took_s", lua.LNumber(res.Took.Seconds()))
	info.RawSetString("why", ToLua(L, res.Why))
	if e := res.Entry; e != nil {
		info.RawSetString("cold", lua.LFalse)
		info.RawSetString("key", lua.LString(e.Key.Hash))
		info.RawSetString("created", lua.LString(e.Created.Local().Format(time.RFC3339)))
		info.RawSetString("made_by", lua.LString(e.Run))
		info.RawSetString("boot_s", lua.LNumber(e.Took.Seconds()))
		info.RawSetString("bytes", lua.LNumber(e.Bytes()))
	}
	L.Push(h.vmObject(L, res.Machine))
	if res.Shell != nil {
		L.Push(h.NewObject(L, "shell", res.Shell))
	} else {
		L.Push(lua.LNil)
	}
	L.Push(info)
	return 3
}

// warmCache opens the run's warm cache: $VMSCRIPT_WARM_DIR, else the user
// cache directory's vmscript/warm, bounded by $VMSCRIPT_WARM_MAX bytes.
func (h *Host) warmCache() (*warm.Cache, error) {
	if h.warm != nil {
		return h.warm, nil
	}
	var max int64
	if s := os.Getenv("VMSCRIPT_WARM_MAX"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, vmerr.New(vmerr.Usage, "VMSCRIPT_WARM_MAX=%q: want a number of bytes", s)
		}
		max = n
	}
	c, err := warm.Open(os.Getenv("VMSCRIPT_WARM_DIR"), max)
	if err != nil {
		return nil, err
	}
	h.warm = c
	return c, nil
}
