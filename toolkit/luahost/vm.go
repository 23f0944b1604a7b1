package luahost

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/ssh"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// Default bounds of the waits the vm object offers.
const (
	defaultWaitTimeout  = 2 * time.Minute
	defaultQMPTimeout   = 30 * time.Second
	defaultVMSSHTimeout = 2 * time.Minute
	defaultRenewTimeout = time.Minute
)

func vmClass() Class {
	return Class{
		Name: "vm",
		Doc:  "A running QEMU virtual machine.",
		Fields: []Field{
			{Name: "name", Type: "string", Doc: "The VM's name (file names in the run directory start with it)."},
			{Name: "pid", Type: "integer", Doc: "QEMU's process id."},
			{Name: "dir", Type: "string", Doc: "The run directory holding <name>.console.log, .cmdline and .stderr.log."},
			{Name: "mac", Type: "string", Doc: "The NIC's MAC address."},
			{Name: "accel", Type: "string", Doc: "\"kvm\" or \"tcg\"."},
			{Name: "console", Type: "vmscript.Console", Doc: "The serial console."},
			{Name: "screen", Type: "vmscript.Screen", Doc: "The display (VGA text read exactly, graphics by OCR)."},
			{Name: "forwards", Type: record.LuaType(qemu.Forward{}) + "[]", Doc: "Port forwards: host is the port on host_addr that reaches guest."},
			{Name: "entry", Type: "vmscript.BootedEntry?", Doc: "The ISO boot menu entry booted with qemu.start{entry=} (nil otherwise): {iso, entry, kernel, initrd, initramfs, append}."},
		},
		Get: (*Host).vmField,
		Methods: []Func{
			{Name: "qmp", Params: "command: string, args?: table", Returns: "table", Fn: (*Host).vmQMP,
				Doc: "Run a QMP command and return its \"return\" value (30 s bound)."},
			{Name: "wait_event", Params: "name: string, opts?: {match?: table, timeout?: duration, after?: integer}", Returns: record.LuaType(qemu.Event{}), Fn: (*Host).vmWaitEvent,
				Doc: "Wait for a QMP event (e.g. \"SHUTDOWN\") whose data has the fields in match; returns {event=, data=, seq=, time=}."},
			{Name: "status", Returns: "string", Fn: (*Host).vmStatus,
				Doc: "QEMU's run state: \"running\", \"paused\", \"shutdown\", …"},
			{Name: "powerdown", Fn: (*Host).vmPowerdown, Doc: "Press the ACPI power button (the guest decides what to do)."},
			{Name: "quit", Fn: (*Host).vmQuit, Doc: "Ask QEMU to quit now (QMP quit), like pulling the plug politely."},
			{Name: "kill", Fn: (*Host).vmKill, Doc: "SIGKILL QEMU's process group."},
			{Name: "wait", Params: "opts?: {timeout?: duration}", Returns: record.LuaType(qemu.ExitStatus{}), Fn: (*Host).vmWait,
				Doc: "Wait for QEMU to exit (default 2 min); reason is the QMP SHUTDOWN reason, \"killed\", \"crashed\" or \"error\"."},
			{Name: "screendump", Params: "file: string", Returns: "string", Fn: (*Host).vmScreendump,
				Doc: "Save the screen as PNG (relative names go to the run directory); returns the path."},
			{Name: "send_keys", Params: "combo: string", Fn: (*Host).vmSendKeys,
				Doc: "Press a key combination on the VM's keyboard, e.g. \"ctrl-alt-delete\"."},
			{Name: "type", Params: "text: string, opts?: {secret?: boolean}", Fn: (*Host).vmType,
				Doc: "Type text on the VM's keyboard (US layout; \"\\n\" is Enter, \"\\t\" Tab) at a pace boot menus keep up with; secret keeps it out of the timeline."},
			{Name: "key", Params: "...: string", Fn: (*Host).vmKey,
				Doc: "Press keys one after another: names (tab, ret, esc, up, down, left, right, f1–f12, pgup, home, …) and combinations (ctrl-x, ctrl-alt-delete); \"e\" edits a GRUB entry."},
			{Name: "forward", Params: "guest_port: integer, proto?: \"tcp\"|\"udp\"", Returns: "integer", Fn: (*Host).vmForward,
				Doc: "The host port (on 127.0.0.1) that forwards to guest_port."},
			{Name: "link", Params: "up: boolean, nic?: string|integer", Fn: (*Host).vmLink,
				Doc: "Plug (true) or pull (false) the virtual cable of every NIC, or of one (netdev id like \"n1\", or its 1-based index), via QMP set_link."},
			{Name: "login", Params: "opts: {user: string, password?: string, timeout?: duration}", Returns: "vmscript.Shell", Fn: (*Host).vmLogin,
				Doc: "Log in on the serial getty (waits for \"login: \" through boot messages); returns a shell channel; kind \"auth\" on Login incorrect."},
			{Name: "agent", Params: "opts?: {timeout?: duration}", Returns: "vmscript.Agent", Fn: (*Host).vmAgent,
				Doc: "Connect to the guest's qemu-guest-agent (the systemd lab's guests have its port; others need qemu.start{agent = true}); a VM without the port fails at once, a guest without the agent after timeout (default 5s), saying so."},
			{Name: "runner", Params: "opts?: {agent_timeout?: duration, ssh?: table, user?: string, shell_timeout?: duration}", Returns: "vmscript.Shell|vmscript.SSHClient|vmscript.Agent, \"agent\"|\"ssh\"|\"serial\", string[]", Fn: (*Host).vmRunner,
				Doc: "The first command channel that works: the guest agent, SSH (with ssh = {vm:ssh options}), the serial shell; returns it, its name, and why each one before it was passed over."},
			{Name: "shell", Params: "opts?: {timeout?: duration, user?: string}", Returns: "vmscript.Shell", Fn: (*Host).vmShell,
				Doc: "Take over a shell already at its prompt on the serial console (mini lab, emergency shell); returns a shell channel."},
			{Name: "ssh", Params: "opts?: {user?: string, password?: string, key?: string, keys?: string[], timeout?: duration, host_key?: string, sftp?: boolean, via?: \"forward\"|\"lan\", port?: integer}",
				Returns: "vmscript.SSHClient", Fn: (*Host).vmSSH,
				Doc: "SSH into the VM, waiting until the guest's server lets us in (default 2 min): through its forward to guest port 22 (user networking), or else (or with via = \"lan\") to the address its LAN NIC leased, through the LAN's stack (the lease is waited for within the same timeout)."},
			{Name: "checkpoint", Params: "opts?: {name?: string, keep?: boolean, continue?: boolean, dir?: string, timeout?: duration}", Returns: "vmscript.Checkpoint", Fn: (*Host).vmCheckpoint,
				Doc: "Save the VM's state (RAM, devices, disks as read-only layers); it then stops unless continue=true; refused (kind \"refused\") when QEMU cannot migrate it."},
			{Name: "renew_lease", Params: "opts?: {shell?: vmscript.Shell, iface?: string, timeout?: duration}", Returns: record.LuaType(machine.Lease{}), Fn: (*Host).vmRenewLease,
				Doc: "On a fork on a vmscript LAN: give the guest's interface the fork's own MAC (a restored guest keeps the checkpoint's) through shell (default: the shell at the console's prompt) and wait until the LAN leased it an address and the guest carries it (default 1 min)."},
		},
	}
}

func (h *Host) checkVM(L *lua.LState) *machine.Machine {
	return h.CheckObject(L, 1, "vm").(*machine.Machine)
}

// vmField resolves vm.name, vm.pid, ….
func (h *Host) vmField(L *lua.LState, self any, name string) lua.LValue {
	m := self.(*machine.Machine)
	switch name {
	case "name":
		return lua.LString(m.Name())
	case "pid":
		return lua.LNumber(m.VM.PID())
	case "dir":
		if h.opt.Run != nil {
			return lua.LString(h.opt.Run.Dir())
		}
		return lua.LString(m.VM.Dir())
	case "mac":
		return lua.LString(m.VM.MAC())
	case "accel":
		return lua.LString(m.VM.Accel())
	case "console":
		return h.NewObject(L, "console", m.Console)
	case "screen":
		scr, err := m.Screen()
		if err != nil {
			h.Raise(L, err)
		}
		return h.NewObject(L, "screen", scr)
	case "forwards":
		return ToLua(L, m.VM.Forwards())
	case "entry":
		if e := m.Entry(); e != nil {
			return ToLua(L, e)
		}
		return lua.LNil
	}
	return nil
}

// qmpCall runs a QMP-backed method under the default QMP bound.
func (h *Host) qmpCall(L *lua.LState, fn func(context.Context, *qemu.VM) error) {
	m := h.checkVM(L)
	ctx, cancel := h.withTimeout(defaultQMPTimeout)
	defer cancel()
	if err := fn(ctx, m.VM); err != nil {
		h.Raise(L, err)
	}
}

func (h *Host) vmQMP(L *lua.LState) int {
	cmd := L.CheckString(2)
	var args any
	if t, ok := L.Get(3).(*lua.LTable); ok {
		args = FromLua(t)
	}
	var ret json.RawMessage
	h.qmpCall(L, func(ctx context.Context, vm *qemu.VM) (err error) {
		ret, err = vm.QMP(ctx, cmd, args)
		return err
	})
	L.Push(ToLua(L, ret))
	return 1
}

func (h *Host) vmWaitEvent(L *lua.LState) int {
	m := h.checkVM(L)
	name := L.CheckString(2)
	o := h.Opts(L, 3, "vm:wait_event")
	timeout := o.Duration("timeout", defaultWaitTimeout)
	var match func(json.RawMessage) bool
	if t, ok := o.Get("match").(*lua.LTable); ok {
		if want, ok := FromLua(t).(map[string]any); ok {
			match = matchData(want)
		}
	}
	from := o.Int("after", -1) + 1
	o.Done()
	ctx, cancel := h.withTimeout(timeout)
	defer cancel()
	ev, err := m.VM.WaitEvent(ctx, name, match, from)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, ev))
	return 1
}

// matchData reports whether every field of want equals the event's data.
func matchData(want map[string]any) func(json.RawMessage) bool {
	return func(data json.RawMessage) bool {
		var got map[string]any
		if err := json.Unmarshal(data, &got); err != nil {
			return false
		}
		for k, w := range want {
			if fmt.Sprint(got[k]) != fmt.Sprint(w) {
				return false
			}
		}
		return true
	}
}

func (h *Host) vmStatus(L *lua.LState) int {
	var st string
	h.qmpCall(L, func(ctx context.Context, vm *qemu.VM) (err error) {
		st, err = vm.Status(ctx)
		return err
	})
	L.Push(lua.LString(st))
	return 1
}

func (h *Host) vmPowerdown(L *lua.LState) int {
	h.qmpCall(L, func(ctx context.Context, vm *qemu.VM) error { return vm.Powerdown(ctx) })
	return 0
}

func (h *Host) vmQuit(L *lua.LState) int {
	h.qmpCall(L, func(ctx context.Context, vm *qemu.VM) error { return vm.Quit(ctx) })
	return 0
}

func (h *Host) vmKill(L *lua.LState) int {
	if err := h.checkVM(L).VM.Kill(); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) vmWait(L *lua.LState) int {
	m := h.checkVM(L)
	ctx, cancel := h.withTimeout(h.TimeoutOpt(L, 2, "vm:wait", defaultWaitTimeout))
	defer cancel()
	st, err := m.Wait(ctx)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, st))
	return 1
}

func (h *Host) vmScreendump(L *lua.LState) int {
	file := L.CheckString(2)
	if h.opt.Run != nil && !strings.HasPrefix(file, "/") {
		file = h.opt.Run.Path(file)
	}
	h.qmpCall(L, func(ctx context.Context, vm *qemu.VM) error { return vm.Screendump(ctx, file) })
	L.Push(lua.LString(file))
	return 1
}

func (h *Host) vmSendKeys(L *lua.LState) int {
	combo := L.CheckString(2)
	h.qmpCall(L, func(ctx context.Context, vm *qemu.VM) error { return vm.SendKeys(ctx, combo) })
	return 0
}

func (h *Host) vmType(L *lua.LState) int {
	m := h.checkVM(L)
	text := L.CheckString(2)
	o := h.Opts(L, 3, "vm:type")
	secret := o.Bool("secret", false)
	o.Done()
	scr, err := m.Screen()
	if err == nil {
		if secret {
			err = scr.TypeSecret(h.ctx, text)
		} else {
			err = scr.Type(h.ctx, text)
		}
	}
	if err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) vmKey(L *lua.LState) int {
	m := h.checkVM(L)
	var combos []string
	for i := 2; i <= L.GetTop(); i++ {
		combos = append(combos, L.CheckString(i))
	}
	if len(combos) == 0 {
		h.ArgError(L, 2, "name at least one key")
	}
	scr, err := m.Screen()
	if err == nil {
		err = scr.Key(h.ctx, combos...)
	}
	if err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) vmForward(L *lua.LState) int {
	m := h.checkVM(L)
	port := L.CheckInt(2)
	proto := L.OptString(3, "tcp")
	for _, f := range m.VM.Forwards() {
		if f.GuestPort == port && f.Proto == proto {
			L.Push(lua.LNumber(f.HostPort))
			return 1
		}
	}
	h.Errorf(L, vmerr.NotFound, "vm %s has no %s forward to guest port %d (add forwards = {%d} to qemu.start)", m.Name(), proto, port, port)
	return 0
}

func (h *Host) vmLink(L *lua.LState) int {
	m := h.checkVM(L)
	up := L.CheckBool(2)
	netdev := ""
	switch n := L.Get(3).(type) {
	case *lua.LNilType:
	case lua.LString:
		netdev = string(n)
	case lua.LNumber:
		ids := m.VM.Netdevs()
		if int(n) < 1 || int(n) > len(ids) {
			h.ArgError(L, 3, "NIC %d: the VM has %d (%s)", int(n), len(ids), strings.Join(ids, ", "))
		}
		netdev = ids[int(n)-1]
	default:
		h.ArgError(L, 3, "nic must be a netdev id or an index, got %s", n.Type())
	}
	h.qmpCall(L, func(ctx context.Context, vm *qemu.VM) error { return vm.SetLink(ctx, netdev, up) })
	return 0
}

func (h *Host) vmLogin(L *lua.LState) int {
	m := h.checkVM(L)
	o := h.Opts(L, 2, "vm:login")
	opt := shell.LoginOptions{User: o.String("user", ""), Password: o.String("password", ""),
		Timeout: o.Duration("timeout", shell.DefaultLoginTimeout)}
	o.Done()
	if opt.User == "" {
		h.Errorf(L, vmerr.Usage, "vm:login: option \"user\" is required")
	}
	s, err := m.Login(h.ctx, opt)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(h.NewObject(L, "shell", s))
	return 1
}

func (h *Host) vmShell(L *lua.LState) int {
	m := h.checkVM(L)
	o := h.Opts(L, 2, "vm:shell")
	opt := shell.Options{Timeout: o.Duration("timeout", shell.DefaultAttachTimeout), User: o.String("user", "")}
	o.Done()
	s, err := m.Shell(h.ctx, opt)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(h.NewObject(L, "shell", s))
	return 1
}

func (h *Host) vmSSH(L *lua.LState) int {
	m := h.checkVM(L)
	o := h.Opts(L, 2, "vm:ssh")
	opt := machine.SSHOptions{Config: sshLogin(o), Via: o.OneOf("via", "", "", "forward", "lan"), Port: o.Int("port", 22)}
	timeout := o.Duration("timeout", defaultVMSSHTimeout)
	o.Done()
	opt.Config.WaitTimeout = timeout
	ctx, cancel := h.withTimeout(timeout)
	defer cancel()
	c, err := m.SSH(ctx, opt)
	if err != nil {
		h.Raise(L, h.inCall(err))
	}
	L.Push(h.sshObject(L, c))
	return 1
}

func (h *Host) vmCheckpoint(L *lua.LState) int {
	m := h.checkVM(L)
	o := h.Opts(L, 2, "vm:checkpoint")
	opt := checkpoint.Options{Name: o.String("name", ""), Dir: o.String("dir", ""), Keep: o.Bool("keep", false),
		Continue: o.Bool("continue", false), Timeout: o.Duration("timeout", checkpoint.DefaultMigrateTimeout)}
	o.Done()
	ctx, cancel := h.withTimeout(opt.Timeout + 30*time.Second)
	defer cancel()
	cp, err := m.Checkpoint(ctx, opt)
	if err != nil {
		h.Raise(L, err)
	}
	h.OnClose("close checkpoint "+cp.Name(), func() { cp.Close() })
	L.Push(h.NewObject(L, "checkpoint", cp))
	return 1
}

func (h *Host) vmRenewLease(L *lua.LState) int {
	m := h.checkVM(L)
	o := h.Opts(L, 2, "vm:renew_lease")
	var opt machine.RenewOptions
	if given := o.Get("shell"); given != lua.LNil {
		s, ok := h.objectOf(L, given, "shell").(*shell.Shell)
		if !ok {
			o.fail("shell", "must be a shell (from vm:login or vm:shell), got %s", given.Type())
		}
		opt.Runner = command.Runner(s)
	}
	opt.Iface = o.String("iface", "")
	timeout := o.Duration("timeout", defaultRenewTimeout)
	o.Done()
	ctx, cancel := h.withTimeout(timeout)
	defer cancel()
	lease, err := m.RenewLease(ctx, opt)
	if err != nil {
		h.Raise(L, h.inCall(err))
	}
	L.Push(ToLua(L, lease))
	return 1
}

// sshLogin reads the login options of ssh.connect and vm:ssh.
func sshLogin(o *Opts) ssh.Config {
	cfg := ssh.Config{User: o.String("user", "root"), Password: o.String("password", ""), HostKey: o.String("host_key", "")}
	if k := o.String("key", ""); k != "" {
		cfg.KeyFiles = append(cfg.KeyFiles, k)
	}
	cfg.KeyFiles = append(cfg.KeyFiles, o.StringList("keys")...)
	cfg.NoSFTP = !o.Bool("sftp", true)
	return cfg
}

// withTimeout derives a context bounded by the run and by d.
func (h *Host) withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(h.ctx, d)
}
