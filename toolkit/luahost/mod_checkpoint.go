package luahost

import (
	"context"
	"fmt"
	"time"

	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// luaCheckpoint is the Go side of a Lua `checkpoint`.
type luaCheckpoint struct {
	cp     *checkpoint.Checkpoint
	forget func()
}

func (c *luaCheckpoint) String() string {
	return "checkpoint " + c.cp.Name() + " (" + c.cp.Path() + ")"
}

func (h *Host) checkCheckpoint(L *lua.LState) *luaCheckpoint {
	return h.CheckObject(L, 1, "checkpoint").(*luaCheckpoint)
}

// newLuaVM wraps a machine started by Go code (a fork) as a Lua `vm`, the
// way qemu.start does, and stops it when the host closes.
func (h *Host) newLuaVM(L *lua.LState, m *machine.Machine) *lua.LUserData {
	v := &luaVM{m: m}
	v.console = h.NewObject(L, "console", &luaConsole{c: m.Console, name: m.VM.Name(), log: m.ConsoleLog})
	v.forget = h.OnClose("stop vm "+m.VM.Name(), func() { m.Stop(machine.DefaultStopGrace) })
	return h.NewObject(L, "vm", v)
}

// takeCheckpoint implements vm:checkpoint{…}.
func (h *Host) takeCheckpoint(L *lua.LState) int {
	const fn = "vm:checkpoint"
	v := h.checkVM(L)
	o := h.Opts(L, 2, fn)
	opt := checkpoint.Options{
		Name:     o.String("name", ""),
		Dir:      o.String("dir", ""),
		Keep:     o.Bool("keep", false),
		Continue: o.Bool("continue", false),
		Timeout:  o.Duration("timeout", checkpoint.DefaultMigrateTimeout),
	}
	o.Done()
	ctx, cancel := context.WithTimeout(h.ctx, opt.Timeout+30*time.Second)
	defer cancel()
	cp, err := checkpoint.Take(ctx, v.m, opt)
	if err != nil {
		h.Raise(L, err)
	}
	lc := &luaCheckpoint{cp: cp}
	lc.forget = h.OnClose("close checkpoint "+cp.Name(), func() { cp.Close() })
	L.Push(h.NewObject(L, "checkpoint", lc))
	return 1
}

// forkOpts reads cp:fork's and cp:fork_many's options.
func (h *Host) forkOpts(L *lua.LState, n int, fn string) checkpoint.ForkOptions {
	o := h.Opts(L, n, fn)
	opt := checkpoint.ForkOptions{
		Name:    o.String("name", ""),
		Timeout: o.Duration("timeout", checkpoint.DefaultRestoreTimeout),
		Run:     h.opt.Run,
	}
	if o.Has("net") || o.Has("nics") {
		if _, isStr := o.Get("net").(lua.LString); isStr {
			h.Errorf(L, vmerr.Usage, "%s: option \"net\" must be a lan: a fork keeps the original's kind of network (its device model)", fn)
		}
		var tmp qemu.Config
		h.netOpts(L, o, &tmp)
		opt.NICs = tmp.NICs
	}
	o.Done()
	return opt
}

// takeForkName reserves a fork's VM name in the run, like qemu.start does.
func (h *Host) takeForkName(L *lua.LState, fn, name string) {
	names := h.vmNames()
	h.mu.Lock()
	defer h.mu.Unlock()
	if names[name] {
		h.Errorf(L, vmerr.Usage, "%s: a VM named %q already exists in this run (its logs would collide); pick another name", fn, name)
	}
	names[name] = true
}

// forkName is the name a fork will get: the given one, or the first
// "<checkpoint>-<n>" that no VM of the run has.
func (h *Host) forkName(cp *checkpoint.Checkpoint, name string) string {
	if name != "" {
		return name
	}
	names := h.vmNames()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 1; ; i++ {
		n := fmt.Sprintf("%s-%d", cp.Name(), i)
		if !names[n] {
			return n
		}
	}
}

func init() {
	ExtendClass("vm", Func{
		Name: "checkpoint", Params: "opts?: {name?: string, keep?: boolean, continue?: boolean, dir?: string, timeout?: duration}", Returns: "vmscript.Checkpoint",
		Doc: "Save the VM's state (RAM, devices, disks as read-only layers); it then stops unless continue=true; refused (kind \"refused\") when QEMU cannot migrate it.",
		Fn:  func(h *Host, L *lua.LState) int { return h.takeCheckpoint(L) },
	})
	RegisterClass(Class{
		Name: "checkpoint",
		Doc:  "A saved VM state that forks start from; its files are removed at the end unless keep=true.",
		Fields: []Field{
			{Name: "name", Type: "string", Doc: "The checkpoint's name."},
			{Name: "path", Type: "string", Doc: "The directory holding the state file and the frozen disk layers."},
			{Name: "state_bytes", Type: "integer", Doc: "The size of the saved device state."},
			{Name: "layers", Type: "string[]", Doc: "The frozen disk layers (read-only qcow2 files), in disk order."},
		},
		Get: func(h *Host, L *lua.LState, self any, name string) lua.LValue {
			cp := self.(*luaCheckpoint).cp
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
		},
		Methods: []Func{
			{
				Name: "fork", Params: "opts?: {name?: string, net?: vmscript.LAN, nics?: table, timeout?: duration}", Returns: "vmscript.VM",
				Doc: "Start a new VM restored from the checkpoint, with its own disk overlay, console, QMP and forwards (net: a LAN port with a new MAC).",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkCheckpoint(L)
					opt := h.forkOpts(L, 2, "checkpoint:fork")
					opt.Name = h.forkName(c.cp, opt.Name)
					h.takeForkName(L, "checkpoint:fork", opt.Name)
					ctx, cancel := context.WithTimeout(h.ctx, opt.Timeout+30*time.Second)
					defer cancel()
					m, err := c.cp.Fork(ctx, opt)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(h.newLuaVM(L, m))
					return 1
				},
			},
			{
				Name: "fork_many", Params: "n: integer, opts?: {name?: string, timeout?: duration}", Returns: "vmscript.VM[]",
				Doc: "Start n forks at once (named <name>-1 …, default <checkpoint>-1 …) and return them as a list; all or none.",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkCheckpoint(L)
					n := L.CheckInt(2)
					if n < 1 || n > 64 {
						h.ArgError(L, 2, "want 1 to 64 forks, got %d", n)
					}
					opt := h.forkOpts(L, 3, "checkpoint:fork_many")
					if opt.NICs != nil {
						h.Errorf(L, vmerr.Usage, "checkpoint:fork_many: net/nics need one LAN port per fork; use cp:fork")
					}
					names := make([]string, n)
					for i := range names {
						if opt.Name != "" {
							names[i] = fmt.Sprintf("%s-%d", opt.Name, i+1)
						} else {
							names[i] = h.forkName(c.cp, "")
						}
						h.takeForkName(L, "checkpoint:fork_many", names[i])
					}
					ctx, cancel := context.WithTimeout(h.ctx, opt.Timeout+30*time.Second)
					defer cancel()
					ms, err := c.cp.ForkNamed(ctx, names, opt)
					if err != nil {
						h.Raise(L, err)
					}
					t := L.NewTable()
					for _, m := range ms {
						t.Append(h.newLuaVM(L, m))
					}
					L.Push(t)
					return 1
				},
			},
			{
				Name: "remove", Doc: "Delete the checkpoint's files now (keep or not); running forks are not affected.",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkCheckpoint(L)
					if err := c.cp.Remove(); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
		},
	})
}
