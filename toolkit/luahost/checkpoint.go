package luahost

import (
	"fmt"
	"time"

	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func checkpointClass() Class {
	return Class{
		Name: "checkpoint",
		Doc:  "A saved VM state that forks start from; its files are removed at the end unless keep=true.",
		Fields: []Field{
			{Name: "name", Type: "string", Doc: "The checkpoint's name."},
			{Name: "path", Type: "string", Doc: "The directory holding the state file and the frozen disk layers."},
			{Name: "state_bytes", Type: "integer", Doc: "The size of the saved device state."},
			{Name: "layers", Type: "string[]", Doc: "The frozen disk layers (read-only qcow2 files), in disk order."},
		},
		Get: (*Host).checkpointField,
		Methods: []Func{
			{Name: "fork", Params: "opts?: {name?: string, net?: vmscript.LAN, nics?: table, timeout?: duration}", Returns: "vmscript.VM", Fn: (*Host).checkpointFork,
				Doc: "Start a new VM restored from the checkpoint, with its own disk overlay, console, QMP and forwards (net: a LAN port with a new MAC)."},
			{Name: "fork_many", Params: "n: integer, opts?: {name?: string, timeout?: duration}", Returns: "vmscript.VM[]", Fn: (*Host).checkpointForkMany,
				Doc: "Start n forks at once (named <name>-1 …, default <checkpoint>-1 …) and return them as a list; all or none."},
			{Name: "remove", Fn: (*Host).checkpointRemove, Doc: "Delete the checkpoint's files now (keep or not); running forks are not affected."},
		},
	}
}

func (h *Host) checkCheckpoint(L *lua.LState) *machine.Checkpoint {
	return h.CheckObject(L, 1, "checkpoint").(*machine.Checkpoint)
}

func (h *Host) checkpointField(L *lua.LState, self any, name string) lua.LValue {
	cp := self.(*machine.Checkpoint)
	switch name {
	case "name":
		return lua.LString(cp.Name())
	case "path":
		return lua.LString(cp.Path())
	case "state_bytes":
		return lua.LNumber(cp.StateSize())
	case "layers":
		t := L.NewTable()
		for _, l := range cp.Layers() {
			t.Append(lua.LString(l.Path))
		}
		return t
	}
	return nil
}

// forkOpts reads cp:fork's and cp:fork_many's options.
func (h *Host) forkOpts(L *lua.LState, n int, fn string) machine.ForkOptions {
	o := h.Opts(L, n, fn)
	opt := machine.ForkOptions{Name: o.String("name", ""), Timeout: o.Duration("timeout", checkpoint.DefaultRestoreTimeout)}
	opt.NICs = h.nicOpts(o, false)
	o.Done()
	return opt
}

func (h *Host) checkpointFork(L *lua.LState) int {
	cp := h.checkCheckpoint(L)
	opt := h.forkOpts(L, 2, "checkpoint:fork")
	ctx, cancel := h.withTimeout(opt.Timeout + restoreSlack)
	defer cancel()
	m, err := cp.Fork(ctx, opt)
	if err != nil {
		h.Raise(L, h.inCall(err))
	}
	L.Push(h.vmObject(L, m))
	return 1
}

func (h *Host) checkpointForkMany(L *lua.LState) int {
	cp := h.checkCheckpoint(L)
	n := L.CheckInt(2)
	if n < 1 || n > 64 {
		h.ArgError(L, 2, "want 1 to 64 forks, got %d", n)
	}
	opt := h.forkOpts(L, 3, "checkpoint:fork_many")
	if opt.NICs != nil {
		h.Errorf(L, vmerr.Usage, "checkpoint:fork_many: net/nics need one LAN port per fork; use cp:fork")
	}
	names := make([]string, n)
	if opt.Name != "" {
		for i := range names {
			names[i] = fmt.Sprintf("%s-%d", opt.Name, i+1)
		}
	}
	ctx, cancel := h.withTimeout(opt.Timeout + restoreSlack)
	defer cancel()
	ms, err := cp.ForkMany(ctx, names, opt)
	if err != nil {
		h.Raise(L, h.inCall(err))
	}
	t := L.NewTable()
	for _, m := range ms {
		t.Append(h.vmObject(L, m))
	}
	L.Push(t)
	return 1
}

// restoreSlack is the time a fork gets beyond its restore timeout, for
// QEMU's start and the overlays.
const restoreSlack = 30 * time.Second

func (h *Host) checkpointRemove(L *lua.LState) int {
	if err := h.checkCheckpoint(L).Remove(); err != nil {
		h.Raise(L, err)
	}
	return 0
}
