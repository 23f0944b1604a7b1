package luahost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// Default bounds of the waits the vm object offers.
const (
	defaultWaitTimeout = 2 * time.Minute
	defaultQMPTimeout  = 30 * time.Second
)

// luaVM is the Go side of a Lua `vm`.
type luaVM struct {
	m       *machine.Machine
	console *lua.LUserData
	forget  func()
}

func (v *luaVM) String() string {
	return fmt.Sprintf("vm %s (pid %d)", v.m.VM.Name(), v.m.VM.PID())
}

// luaConsole is the Go side of `vm.console`.
type luaConsole struct {
	c    *console.Console
	name string
	log  string
}

func (c *luaConsole) String() string { return "console of vm " + c.name }

// withTimeout derives a context bounded by the run and by d.
func (h *Host) withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(h.ctx, d)
}

func (h *Host) vmNames() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.names == nil {
		h.names = map[string]bool{}
	}
	return h.names
}

// qemuConfig reads qemu.start's options table.
func (h *Host) qemuConfig(L *lua.LState) qemu.Config {
	const fn = "qemu.start"
	L.CheckTable(1)
	o := h.Opts(L, 1, fn)
	cfg := qemu.Config{
		Name:         o.String("name", ""),
		Memory:       o.String("memory", ""),
		CPUs:         o.Int("cpus", 0),
		Machine:      o.String("machine", ""),
		Accel:        o.String("accel", ""),
		Firmware:     o.String("firmware", ""),
		ISO:          o.String("iso", ""),
		Kernel:       o.String("kernel", ""),
		Initrd:       o.String("initrd", ""),
		Append:       o.String("append", ""),
		Boot:         o.String("boot", ""),
		MAC:          o.String("mac", ""),
		SerialBIOS:   o.Bool("serial_bios", false),
		QEMUArgs:     o.StringList("qemu_args"),
		Binary:       o.String("binary", ""),
		NetUserExtra: o.String("net_user_extra", ""),
		SerialLog:    o.String("serial_log", ""),
		Run:          h.opt.Run,
	}
	h.netOpts(L, o, &cfg) // "net" (a string or a lan) and "nics": mod_lan.go
	if cfg.SerialLog != "" && !filepath.IsAbs(cfg.SerialLog) && h.opt.Run != nil {
		cfg.SerialLog = h.opt.Run.Path(cfg.SerialLog)
	}
	if name := o.String("lab", ""); name != "" {
		img, err := lab.Lookup(name, lab.Options{})
		if err != nil {
			h.Raise(L, vmerr.Wrap(vmerr.NotFound, err, "%s: option \"lab\"", fn))
		}
		if cfg.Kernel != "" || cfg.Initrd != "" || cfg.ISO != "" {
			h.Errorf(L, vmerr.Usage, "%s: option \"lab\" boots the lab's kernel and initramfs; do not also give kernel, initrd or iso", fn)
		}
		cfg.Kernel, cfg.Initrd = img.Files["vmlinuz"], img.Files["initramfs"]
		if cfg.Append == "" {
			cfg.Append = img.Manifest.Append
		}
		if extra := o.String("append_extra", ""); extra != "" {
			cfg.Append += " " + extra
		}
	} else if o.Has("append_extra") {
		h.Errorf(L, vmerr.Usage, "%s: option \"append_extra\" needs lab", fn)
	}
	if t, ok := o.Get("disks").(*lua.LTable); ok {
		for i := 1; i <= t.Len(); i++ {
			dt, ok := t.RawGetInt(i).(*lua.LTable)
			if !ok {
				if s, isStr := t.RawGetInt(i).(lua.LString); isStr {
					cfg.Disks = append(cfg.Disks, qemu.Disk{Path: string(s)})
					continue
				}
				h.Errorf(L, vmerr.Usage, "%s: disks[%d] must be a path or a table {path=, format=, snapshot=, interface=}", fn, i)
			}
			d := h.OptsOf(L, dt, fmt.Sprintf("%s: disks[%d]", fn, i))
			disk := qemu.Disk{Path: d.String("path", ""), Format: d.String("format", ""), Interface: d.String("interface", "")}
			if d.Has("snapshot") {
				s := d.Bool("snapshot", true)
				disk.Snapshot = &s
			}
			d.Done()
			cfg.Disks = append(cfg.Disks, disk)
		}
	} else if o.Has("disks") {
		h.Errorf(L, vmerr.Usage, "%s: option \"disks\" must be a list", fn)
	}
	if t, ok := o.Get("forwards").(*lua.LTable); ok {
		for i := 1; i <= t.Len(); i++ {
			switch v := t.RawGetInt(i).(type) {
			case lua.LNumber:
				cfg.Forwards = append(cfg.Forwards, qemu.Forward{GuestPort: int(v)})
			case *lua.LTable:
				f := h.OptsOf(L, v, fmt.Sprintf("%s: forwards[%d]", fn, i))
				cfg.Forwards = append(cfg.Forwards, qemu.Forward{
					GuestPort: f.Int("guest", 0), HostPort: f.Int("host", 0),
					Proto: f.OneOf("proto", "tcp", "tcp", "udp"), HostAddr: f.String("host_addr", ""),
				})
				f.Done()
			default:
				h.Errorf(L, vmerr.Usage, "%s: forwards[%d] must be a guest port or {guest=, host=, proto=}", fn, i)
			}
		}
	} else if o.Has("forwards") {
		h.Errorf(L, vmerr.Usage, "%s: option \"forwards\" must be a list", fn)
	}
	if nb := o.Get("netboot"); nb != lua.LNil {
		target, ok := nb.(*lua.LUserData)
		var src NetbootSource
		if ok {
			src, ok = target.Value.(NetbootSource)
		}
		if !ok {
			h.Errorf(L, vmerr.Usage, "%s: option \"netboot\" must be a server from netboot.serve, got %s", fn, nb.Type())
		}
		if err := src.ConfigureNetboot(&cfg, o.String("bootfile", "")); err != nil {
			h.Raise(L, err)
		}
	} else if o.Has("bootfile") {
		h.Errorf(L, vmerr.Usage, "%s: option \"bootfile\" needs netboot", fn)
	}
	o.Done()
	return cfg
}

// NetbootSource is a Lua object that can serve a VM's network boot (the
// server from netboot.serve): it fills in the QEMU configuration, e.g.
// `bootfile=tftp://10.0.2.2:PORT/pxelinux.0` on user networking and boot
// order "n", for the given bootfile ("" means the source's default).
type NetbootSource interface {
	ConfigureNetboot(cfg *qemu.Config, bootfile string) error
}

func (h *Host) startVM(L *lua.LState) int {
	cfg := h.qemuConfig(L)
	names := h.vmNames()
	if cfg.Name == "" {
		cfg.Name = qemu.DefaultName
		for i := 2; names[cfg.Name]; i++ {
			cfg.Name = fmt.Sprintf("%s%d", qemu.DefaultName, i)
		}
	}
	if names[cfg.Name] {
		h.Errorf(L, vmerr.Usage, "qemu.start: a VM named %q already exists in this run (its logs would collide); pick another name", cfg.Name)
	}
	m, err := machine.Boot(h.ctx, cfg, machine.Options{})
	if err != nil {
		h.Raise(L, err)
	}
	h.mu.Lock()
	names[cfg.Name] = true
	h.mu.Unlock()
	v := &luaVM{m: m}
	v.console = h.NewObject(L, "console", &luaConsole{c: m.Console, name: m.VM.Name(), log: m.ConsoleLog})
	v.forget = h.OnClose("stop vm "+m.VM.Name(), func() { m.Stop(machine.DefaultStopGrace) })
	L.Push(h.NewObject(L, "vm", v))
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

func exitTable(L *lua.LState, st qemu.ExitStatus) *lua.LTable {
	t := L.NewTable()
	t.RawSetString("code", lua.LNumber(st.Code))
	if st.Signal != "" {
		t.RawSetString("signal", lua.LString(st.Signal))
	}
	t.RawSetString("reason", lua.LString(st.Reason))
	if st.Detail != "" {
		t.RawSetString("detail", lua.LString(st.Detail))
	}
	if st.Stderr != "" {
		t.RawSetString("stderr", lua.LString(st.Stderr))
	}
	return t
}

func eventTable(L *lua.LState, ev qemu.Event) *lua.LTable {
	t := L.NewTable()
	t.RawSetString("event", lua.LString(ev.Name))
	t.RawSetString("data", ToLua(L, ev.Data))
	t.RawSetString("seq", lua.LNumber(ev.Seq))
	t.RawSetString("time", lua.LString(ev.Time.Format(time.RFC3339Nano)))
	return t
}

func (h *Host) checkVM(L *lua.LState) *luaVM { return h.CheckObject(L, 1, "vm").(*luaVM) }

func (h *Host) checkConsole(L *lua.LState) *luaConsole {
	return h.CheckObject(L, 1, "console").(*luaConsole)
}

// simpleVMCall runs a QMP-backed method with the default QMP bound.
func (h *Host) simpleVMCall(L *lua.LState, fn func(context.Context, *qemu.VM) error) {
	v := h.checkVM(L)
	ctx, cancel := h.withTimeout(defaultQMPTimeout)
	defer cancel()
	if err := fn(ctx, v.m.VM); err != nil {
		h.Raise(L, err)
	}
}

// patterns reads an expect/watch pattern argument: "text", {re="…"}, or a
// list of those.
func (h *Host) patterns(L *lua.LState, n int) []console.Pattern {
	one := func(v lua.LValue, where string) console.Pattern {
		switch x := v.(type) {
		case lua.LString:
			if x == "" {
				h.ArgError(L, n, "%sempty pattern", where)
			}
			return console.Pattern{Text: string(x)}
		case *lua.LTable:
			if isPatternTable(x) {
				o := h.OptsOf(L, x, where+"pattern")
				p := console.Pattern{Regex: o.String("re", ""), Text: o.String("text", ""), Settle: o.Duration("settle", 0)}
				o.Done()
				if (p.Regex == "") == (p.Text == "") {
					h.ArgError(L, n, "%spattern table needs exactly one of re and text", where)
				}
				return p
			}
		}
		h.ArgError(L, n, "%spattern must be a string, {re = \"regex\"} or {text = \"text\"}, got %s", where, v.Type())
		return console.Pattern{}
	}
	v := L.Get(n)
	if t, ok := v.(*lua.LTable); ok && !isPatternTable(t) {
		if t.Len() == 0 {
			h.ArgError(L, n, "empty pattern list")
		}
		var out []console.Pattern
		for i := 1; i <= t.Len(); i++ {
			out = append(out, one(t.RawGetInt(i), fmt.Sprintf("item %d: ", i)))
		}
		return out
	}
	return []console.Pattern{one(v, "")}
}

// isPatternTable tells a pattern table ({re=…} or {text=…}, with options)
// from a list of patterns.
func isPatternTable(t *lua.LTable) bool {
	return t.RawGetString("re") != lua.LNil || t.RawGetString("text") != lua.LNil
}

func markTable(L *lua.LState, m console.Mark) *lua.LTable {
	t := L.NewTable()
	t.RawSetString("text", lua.LNumber(m.Text))
	t.RawSetString("raw", lua.LNumber(m.Raw))
	return t
}

// markOpt reads a mark: "start", or a table from console:mark().
func (h *Host) markOpt(L *lua.LState, o *Opts, c *console.Console, key string) *console.Mark {
	switch v := o.Get(key).(type) {
	case *lua.LNilType:
		return nil
	case lua.LString:
		switch v {
		case "start":
			m := c.StartMark()
			return &m
		case "now", "end":
			m := c.Mark()
			return &m
		}
	case *lua.LTable:
		t, okT := v.RawGetString("text").(lua.LNumber)
		r, okR := v.RawGetString("raw").(lua.LNumber)
		if okT && okR {
			return &console.Mark{Text: int64(t), Raw: int64(r)}
		}
	}
	o.fail(key, "must be \"start\", \"now\" or a mark from console:mark()")
	return nil
}

func init() {
	RegisterType(TypeDoc{
		Name: "vmscript.Pattern",
		Doc:  "A console pattern as a table: a regex or a plain text, optionally one that must settle (a prompt).",
		Fields: []Field{
			{Name: "re", Type: "string?", Doc: "An RE2 regex, multi-line mode ($ also matches at the end of what has arrived so far)."},
			{Name: "text", Type: "string?", Doc: "A plain text (instead of re)."},
			{Name: "settle", Type: "duration?", Doc: "Count the match only when it stays the console's last text this long (console:expect)."},
		},
	})
	Register(Module{
		Name: "qemu",
		Doc:  "Start QEMU virtual machines; each is recorded from byte 0 of its console.",
		Funcs: []Func{{
			Name: "start", Params: "opts: vmscript.QemuStartOpts", Returns: "vmscript.VM",
			Doc: "Start a VM (paused until its console is attached, then running) and return at once.",
			Fn:  func(h *Host, L *lua.LState) int { return h.startVM(L) },
		}},
	})
	RegisterClass(Class{
		Name: "vm",
		Doc:  "A running QEMU virtual machine.",
		Fields: []Field{
			{Name: "name", Type: "string", Doc: "The VM's name (file names in the run directory start with it)."},
			{Name: "pid", Type: "integer", Doc: "QEMU's process id."},
			{Name: "dir", Type: "string", Doc: "The run directory holding <name>.console.log, .cmdline and .stderr.log."},
			{Name: "mac", Type: "string", Doc: "The NIC's MAC address."},
			{Name: "accel", Type: "string", Doc: "\"kvm\" or \"tcg\"."},
			{Name: "console", Type: "vmscript.Console", Doc: "The serial console."},
			{Name: "forwards", Type: "table", Doc: "Port forwards: list of {proto=, host=, guest=}."},
		},
		Get: func(h *Host, L *lua.LState, self any, name string) lua.LValue {
			v := self.(*luaVM)
			vm := v.m.VM
			switch name {
			case "name":
				return lua.LString(vm.Name())
			case "pid":
				return lua.LNumber(vm.PID())
			case "dir":
				if h.opt.Run != nil {
					return lua.LString(h.opt.Run.Dir())
				}
				return lua.LString(vm.Dir())
			case "mac":
				return lua.LString(vm.MAC())
			case "accel":
				return lua.LString(vm.Accel())
			case "console":
				return v.console
			case "forwards":
				t := L.NewTable()
				for _, f := range vm.Forwards() {
					ft := L.NewTable()
					ft.RawSetString("proto", lua.LString(f.Proto))
					ft.RawSetString("host", lua.LNumber(f.HostPort))
					ft.RawSetString("host_addr", lua.LString(f.HostAddr))
					ft.RawSetString("guest", lua.LNumber(f.GuestPort))
					t.Append(ft)
				}
				return t
			}
			return nil
		},
		Methods: []Func{
			{
				Name: "qmp", Params: "command: string, args?: table", Returns: "table",
				Doc: "Run a QMP command and return its \"return\" value (30 s bound).",
				Fn: func(h *Host, L *lua.LState) int {
					v := h.checkVM(L)
					cmd := L.CheckString(2)
					var args any
					if t, ok := L.Get(3).(*lua.LTable); ok {
						args = FromLua(t)
					}
					ctx, cancel := h.withTimeout(defaultQMPTimeout)
					defer cancel()
					ret, err := v.m.VM.QMP(ctx, cmd, args)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(ToLua(L, ret))
					return 1
				},
			},
			{
				Name: "wait_event", Params: "name: string, opts?: {match?: table, timeout?: duration, after?: integer}", Returns: "table",
				Doc: "Wait for a QMP event (e.g. \"SHUTDOWN\") whose data has the fields in match; returns {event=, data=, seq=, time=}.",
				Fn: func(h *Host, L *lua.LState) int {
					v := h.checkVM(L)
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
					ev, err := v.m.VM.WaitEvent(ctx, name, match, from)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(eventTable(L, ev))
					return 1
				},
			},
			{
				Name: "status", Returns: "string",
				Doc: "QEMU's run state: \"running\", \"paused\", \"shutdown\", …",
				Fn: func(h *Host, L *lua.LState) int {
					v := h.checkVM(L)
					ctx, cancel := h.withTimeout(defaultQMPTimeout)
					defer cancel()
					s, err := v.m.VM.Status(ctx)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LString(s))
					return 1
				},
			},
			{
				Name: "powerdown", Doc: "Press the ACPI power button (the guest decides what to do).",
				Fn: func(h *Host, L *lua.LState) int {
					h.simpleVMCall(L, func(ctx context.Context, vm *qemu.VM) error { return vm.Powerdown(ctx) })
					return 0
				},
			},
			{
				Name: "quit", Doc: "Ask QEMU to quit now (QMP quit), like pulling the plug politely.",
				Fn: func(h *Host, L *lua.LState) int {
					h.simpleVMCall(L, func(ctx context.Context, vm *qemu.VM) error { return vm.Quit(ctx) })
					return 0
				},
			},
			{
				Name: "kill", Doc: "SIGKILL QEMU's process group.",
				Fn: func(h *Host, L *lua.LState) int {
					v := h.checkVM(L)
					if err := v.m.VM.Kill(); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "wait", Params: "opts?: {timeout?: duration}", Returns: "{code: integer, signal?: string, reason: string, detail?: string}",
				Doc: "Wait for QEMU to exit (default 2 min); reason is the QMP SHUTDOWN reason, \"killed\", \"crashed\" or \"error\".",
				Fn: func(h *Host, L *lua.LState) int {
					v := h.checkVM(L)
					timeout := h.TimeoutOpt(L, 2, "vm:wait", defaultWaitTimeout)
					ctx, cancel := h.withTimeout(timeout)
					defer cancel()
					st, err := v.m.VM.Wait(ctx)
					if err != nil {
						var ve *vmerr.Error
						if vmerr.Is(err, vmerr.Timeout) && errors.As(err, &ve) {
							ve.With("tail", v.m.Console.Tail(20)).With("waited_s", timeout.Seconds())
						}
						h.Raise(L, err)
					}
					<-v.m.Console.Done()
					L.Push(exitTable(L, st))
					return 1
				},
			},
			{
				Name: "screendump", Params: "file: string", Returns: "string",
				Doc: "Save the screen as PNG (relative names go to the run directory); returns the path.",
				Fn: func(h *Host, L *lua.LState) int {
					v := h.checkVM(L)
					file := L.CheckString(2)
					if h.opt.Run != nil && !strings.HasPrefix(file, "/") {
						file = h.opt.Run.Path(file)
					}
					ctx, cancel := h.withTimeout(defaultQMPTimeout)
					defer cancel()
					if err := v.m.VM.Screendump(ctx, file); err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LString(file))
					return 1
				},
			},
			{
				Name: "send_keys", Params: "combo: string",
				Doc: "Press a key combination on the VM's keyboard, e.g. \"ctrl-alt-delete\".",
				Fn: func(h *Host, L *lua.LState) int {
					combo := L.CheckString(2)
					h.simpleVMCall(L, func(ctx context.Context, vm *qemu.VM) error { return vm.SendKeys(ctx, combo) })
					return 0
				},
			},
			{
				Name: "forward", Params: "guest_port: integer, proto?: \"tcp\"|\"udp\"", Returns: "integer",
				Doc: "The host port (on 127.0.0.1) that forwards to guest_port.",
				Fn: func(h *Host, L *lua.LState) int {
					v := h.checkVM(L)
					port := L.CheckInt(2)
					proto := L.OptString(3, "tcp")
					for _, f := range v.m.VM.Forwards() {
						if f.GuestPort == port && f.Proto == proto {
							L.Push(lua.LNumber(f.HostPort))
							return 1
						}
					}
					h.Errorf(L, vmerr.NotFound, "vm %s has no %s forward to guest port %d (add forwards = {%d} to qemu.start)", v.m.VM.Name(), proto, port, port)
					return 0
				},
			},
		},
	})
	RegisterClass(Class{
		Name: "console",
		Doc:  "A VM's serial console: every byte logged as it arrives, waits that never miss a byte.",
		Fields: []Field{
			{Name: "log", Type: "string", Doc: "Path of the raw console log."},
		},
		Get: func(h *Host, L *lua.LState, self any, name string) lua.LValue {
			if name == "log" {
				return lua.LString(self.(*luaConsole).log)
			}
			return nil
		},
		Methods: []Func{
			{
				Name: "expect", Params: "pattern: string|vmscript.Pattern|(string|vmscript.Pattern)[], opts?: {timeout?: duration, from?: \"start\"|\"now\"|table, raw?: boolean, settle?: duration}",
				Returns: "{text: string, index: integer, captures: string[], before: string, mark: table}",
				Doc:     "Wait until a pattern appears after from (default: the end of the last match); plain text unless {re=…}; default timeout 2 min; settle (per pattern or for all): only a match that stays the console's last text that long, as a prompt does.",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkConsole(L)
					pats := h.patterns(L, 2)
					o := h.Opts(L, 3, "console:expect")
					opt := console.ExpectOptions{
						Timeout: o.Duration("timeout", 0),
						From:    h.markOpt(L, o, c.c, "from"),
						Raw:     o.Bool("raw", false),
						Settle:  o.Duration("settle", 0),
					}
					o.Done()
					m, err := c.c.Expect(h.ctx, pats, opt)
					if err != nil {
						h.Raise(L, err)
					}
					t := L.NewTable()
					t.RawSetString("text", lua.LString(m.Text))
					t.RawSetString("index", lua.LNumber(m.Index+1))
					t.RawSetString("captures", ToLua(L, m.Captures))
					t.RawSetString("before", lua.LString(m.Before))
					t.RawSetString("mark", markTable(L, m.End))
					L.Push(t)
					return 1
				},
			},
			{
				Name: "send", Params: "text: string",
				Doc: "Type text on the console as is.",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkConsole(L)
					if err := c.c.Send(h.ctx, L.CheckString(2)); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "sendline", Params: "text: string",
				Doc: "Type text and Enter (a carriage return, as a serial getty expects).",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkConsole(L)
					if err := c.c.SendLine(h.ctx, L.CheckString(2)); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "mark", Returns: "table",
				Doc: "The current end of the console, to pass as from= or to lines{}.",
				Fn: func(h *Host, L *lua.LState) int {
					L.Push(markTable(L, h.checkConsole(L).c.Mark()))
					return 1
				},
			},
			{
				Name: "lines", Params: "opts?: {from?: table|\"start\", to?: table}", Returns: "string[]",
				Doc: "Completed console lines (ANSI-stripped) between two marks; default the whole console.",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkConsole(L)
					o := h.Opts(L, 2, "console:lines")
					from := h.markOpt(L, o, c.c, "from")
					to := h.markOpt(L, o, c.c, "to")
					o.Done()
					L.Push(ToLua(L, c.c.Lines(from, to)))
					return 1
				},
			},
			{
				Name: "tail", Params: "n?: integer", Returns: "string[]",
				Doc: "The last n console lines (default 20), including an unfinished last line.",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkConsole(L)
					n := L.OptInt(2, 20)
					if n < 1 {
						h.ArgError(L, 2, "n must be at least 1")
					}
					L.Push(ToLua(L, c.c.Tail(n)))
					return 1
				},
			},
			{
				Name: "watch", Params: "pattern: string|vmscript.Pattern, action: \"fail\"|fun(line: string)", Returns: "fun()",
				Doc: "Watch every line in the background: \"fail\" ends any wait at once (kind=\"watch\"); a function is called with the line between host calls. Returns a function that stops watching.",
				Fn: func(h *Host, L *lua.LState) int {
					c := h.checkConsole(L)
					pats := h.patterns(L, 2)
					if len(pats) != 1 {
						h.ArgError(L, 2, "watch takes one pattern")
					}
					if pats[0].Settle > 0 {
						h.ArgError(L, 2, "settle is for console:expect; a watcher sees whole lines")
					}
					var cancel func()
					var err error
					switch a := L.Get(3).(type) {
					case lua.LString:
						if a != "fail" {
							h.ArgError(L, 3, "action must be \"fail\" or a function, got %q", string(a))
						}
						cancel, err = c.c.Watch(pats[0], true, nil)
					case *lua.LFunction:
						cancel, err = c.c.Watch(pats[0], false, func(line string) {
							h.Post(func() { h.callWatcher(a, line) })
						})
					default:
						h.ArgError(L, 3, "action must be \"fail\" or a function, got %s", a.Type())
					}
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(L.NewFunction(func(L *lua.LState) int { cancel(); return 0 }))
					return 1
				},
			},
		},
	})
}
