package luahost

import (
	"github.com/vmscript/vmscript/toolkit/agent"
	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/ssh"
	lua "github.com/yuin/gopher-lua"
)

func agentClass() Class {
	return Class{
		Name: "agent",
		Doc:  "A command channel through the guest's qemu-guest-agent (vm:agent): exec with exit code, stdout and stderr apart and exact, guest files, shutdown.",
		Methods: append(runnerMethods("agent", "5 min"),
			Func{Name: "read_file", Params: "path: string, opts?: {timeout?: duration}", Returns: "string", Fn: (*Host).agentReadFile,
				Doc: "A guest file's bytes (guest-file-open/read)."},
			Func{Name: "write_file", Params: "path: string, data: string, opts?: {timeout?: duration}", Fn: (*Host).agentWriteFile,
				Doc: "Write a guest file (created or truncated)."},
			Func{Name: "shutdown", Params: "mode?: \"powerdown\"|\"halt\"|\"reboot\"", Fn: (*Host).agentShutdown,
				Doc: "Ask the guest to power off (default), halt or reboot; returns once asked (vm:wait sees the end)."},
			Func{Name: "close", Fn: (*Host).agentClose, Doc: "Close the session (the VM's stop closes it too); the next vm:agent connects again."},
		),
	}
}

func (h *Host) checkAgent(L *lua.LState) *agent.Client {
	return h.CheckObject(L, 1, "agent").(*agent.Client)
}

// agentObject is a client as a Lua `agent` (the machine owns the session
// and closes it when it stops).
func (h *Host) agentObject(L *lua.LState, c *agent.Client) *lua.LUserData {
	return h.NewObject(L, "agent", c)
}

func (h *Host) agentReadFile(L *lua.LState) int {
	c, path := h.checkAgent(L), L.CheckString(2)
	ctx, cancel := h.withTimeout(h.TimeoutOpt(L, 3, "agent:read_file", agent.DefaultRunTimeout))
	defer cancel()
	data, err := c.ReadFile(ctx, path)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LString(data))
	return 1
}

func (h *Host) agentWriteFile(L *lua.LState) int {
	c, path, data := h.checkAgent(L), L.CheckString(2), L.CheckString(3)
	ctx, cancel := h.withTimeout(h.TimeoutOpt(L, 4, "agent:write_file", agent.DefaultRunTimeout))
	defer cancel()
	if err := c.WriteFile(ctx, path, []byte(data)); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) agentShutdown(L *lua.LState) int {
	if err := h.checkAgent(L).Shutdown(L.OptString(2, "")); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) agentClose(L *lua.LState) int {
	h.checkAgent(L).Close()
	return 0
}

func (h *Host) vmAgent(L *lua.LState) int {
	m := h.checkVM(L)
	o := h.Opts(L, 2, "vm:agent")
	timeout := o.Duration("timeout", agent.DefaultSyncTimeout)
	o.Done()
	c, err := m.Agent(h.ctx, timeout)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(h.agentObject(L, c))
	return 1
}

func (h *Host) vmRunner(L *lua.LState) int {
	m := h.checkVM(L)
	o := h.Opts(L, 2, "vm:runner")
	opt := machine.RunnerOptions{AgentTimeout: o.Duration("agent_timeout", agent.DefaultSyncTimeout),
		Shell: shell.Options{Timeout: o.Duration("shell_timeout", shell.DefaultAttachTimeout), User: o.String("user", "")}}
	if t, ok := o.Get("ssh").(*lua.LTable); ok {
		so := h.OptsOf(L, t, "vm:runner: ssh")
		opt.SSH = &machine.SSHOptions{Config: sshLogin(so), Via: so.OneOf("via", "", "", "forward", "lan")}
		opt.SSH.Config.WaitTimeout = so.Duration("timeout", defaultVMSSHTimeout)
		so.Done()
	} else if o.Has("ssh") {
		o.fail("ssh", "must be a table of vm:ssh's options")
	}
	o.Done()
	r, passed, err := m.Runner(h.ctx, opt)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(h.runnerObject(L, r))
	L.Push(lua.LString(r.Channel()))
	t := L.NewTable()
	for _, p := range passed {
		t.Append(lua.LString(p))
	}
	L.Push(t)
	return 3
}

// runnerObject wraps a command channel as the Lua object of its class.
func (h *Host) runnerObject(L *lua.LState, r command.Runner) *lua.LUserData {
	switch c := r.(type) {
	case *agent.Client:
		return h.agentObject(L, c)
	case *ssh.Client:
		return h.sshObject(L, c)
	}
	return h.NewObject(L, "shell", r)
}
