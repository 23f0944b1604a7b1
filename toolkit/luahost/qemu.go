package luahost

import (
	"fmt"
	"path/filepath"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func qemuModule() Module {
	return Module{
		Name: "qemu",
		Doc:  "Start QEMU virtual machines; each is recorded from byte 0 of its console.",
		Funcs: []Func{{
			Name: "start", Params: "opts: vmscript.QemuStartOpts", Returns: "vmscript.VM",
			Doc: "Start a VM (paused until its console is attached, then running) and return at once.",
			Fn:  (*Host).qemuStart,
		}, {
			Name: "warm", Params: "opts: {start: vmscript.QemuStartOpts, ready: fun(vm: vmscript.VM): vmscript.Shell?, cold?: boolean, timeout?: duration}",
			Returns: "vmscript.VM, vmscript.Shell?, vmscript.WarmInfo", Fn: (*Host).qemuWarm,
			Doc: "A VM brought to a state by ready (e.g. booted and logged in; return the shell to keep it at its prompt): restored from the warm cache (clock set, LAN leases renewed) when this state (the files, options, QEMU, ready's source, the values it closes over, the loaded modules) was saved before, else booted, readied and saved; cold=true boots without the cache.",
		}},
	}
}

// qemuStart is qemu.start.
func (h *Host) qemuStart(L *lua.LState) int {
	spec := h.qemuSpec(L)
	m, err := h.pool.Boot(h.ctx, spec)
	if err != nil {
		h.Raise(L, h.inCall(err))
	}
	L.Push(h.vmObject(L, m))
	return 1
}

// vmObject is a machine as a Lua `vm`, stopped when the host closes.
func (h *Host) vmObject(L *lua.LState, m *machine.Machine) *lua.LUserData {
	if _, known := h.objects[objectKey{"vm", m}]; !known {
		h.OnClose("stop vm "+m.Name(), func() { m.Stop(machine.DefaultStopGrace) })
	}
	return h.NewObject(L, "vm", m)
}

// qemuSpec reads qemu.start's options table into a machine spec.
func (h *Host) qemuSpec(L *lua.LState) machine.Spec {
	return h.specOf(L, L.CheckTable(1), "qemu.start")
}

// specOf reads a table of qemu.start's options into a machine spec.
func (h *Host) specOf(L *lua.LState, t *lua.LTable, fn string) machine.Spec {
	o := h.OptsOf(L, t, fn)
	spec := machine.Spec{QEMU: h.qemuConfig(o)}
	spec.Lab = h.labOpt(o)
	spec.Entry = entryOpt(o)
	spec.AppendExtra = o.String("append_extra", "")
	spec.QEMU.Disks = h.diskOpts(o)
	spec.QEMU.Forwards = h.forwardOpts(o)
	spec.NICs = h.nicOpts(o, true)
	if nb := o.Get("netboot"); nb != lua.LNil {
		srv, ok := h.objectOf(L, nb, "netboot_server").(*netboot.Server)
		if !ok {
			o.fail("netboot", "must be a server from netboot.serve, got %s", nb.Type())
		}
		spec.Netboot = srv
	}
	spec.Bootfile = o.String("bootfile", "")
	spec.KeepIPXEPrompt = o.Bool("ipxe_prompt", false)
	spec.Failures = h.failureOpts(o)
	o.Done()
	return spec
}

// qemuConfig reads the options that are the VM's own QEMU configuration.
func (h *Host) qemuConfig(o *Opts) qemu.Config {
	cfg := qemu.Config{
		Name: o.String("name", ""), Memory: o.String("memory", ""), CPUs: o.Int("cpus", 0),
		Machine: o.String("machine", ""), Accel: o.String("accel", ""), Firmware: o.String("firmware", ""),
		ISO: o.String("iso", ""), Kernel: o.String("kernel", ""), Initrd: o.String("initrd", ""),
		Append: o.String("append", ""), Boot: o.String("boot", ""), MAC: o.String("mac", ""),
		SerialBIOS: o.Bool("serial_bios", false), QEMUArgs: o.StringList("qemu_args"), Agent: o.Bool("agent", false),
		Console: o.String("console", ""),
		Binary:  o.String("binary", ""), NetUserExtra: o.String("net_user_extra", ""),
		SerialLog: o.String("serial_log", ""), Run: h.opt.Run,
	}
	if cfg.SerialLog != "" && !filepath.IsAbs(cfg.SerialLog) && h.opt.Run != nil {
		cfg.SerialLog = h.opt.Run.Path(cfg.SerialLog)
	}
	if s, ok := o.Get("net").(lua.LString); ok {
		cfg.Net = string(s)
	}
	return cfg
}

// failureOpts reads "failures": {[name] = "fail"|"warn"|"off" or
// {action=, re=|text=}}, in the order of the names.
func (h *Host) failureOpts(o *Opts) []console.Failure {
	t, ok := o.Get("failures").(*lua.LTable)
	if !ok {
		if o.Has("failures") {
			o.fail("failures", "must be a table {[name] = \"fail\"|\"warn\"|\"off\" or {action = …, re = …}}")
		}
		return nil
	}
	if t.Len() > 0 {
		o.fail("failures", "must map names to actions, not be a list")
	}
	var out []console.Failure
	for _, name := range SortedKeys(t) {
		where := fmt.Sprintf("failures[%q]", name)
		switch v := t.RawGetString(name).(type) {
		case lua.LString:
			out = append(out, console.Failure{Name: name, Action: console.FailureAction(v)})
		case *lua.LTable:
			f := h.OptsOf(o.L, v, o.fn+": "+where)
			failure := console.Failure{Name: name, Action: console.FailureAction(f.String("action", "fail")),
				Pattern: console.Pattern{Regex: f.String("re", ""), Text: f.String("text", "")}}
			f.Done()
			out = append(out, failure)
		default:
			o.fail(where, "must be an action or {action = …, re = …}, got %s", v.Type())
		}
	}
	return out
}

// entryOpt reads "entry": an ISO boot menu entry's label (or part of it),
// or its number.
func entryOpt(o *Opts) *machine.EntrySpec {
	switch v := o.Get("entry").(type) {
	case lua.LString:
		if v == "" {
			o.fail("entry", "must not be empty")
		}
		return &machine.EntrySpec{Label: string(v)}
	case lua.LNumber:
		if float64(v) != float64(int(v)) || v < 1 {
			o.fail("entry", "must be a label or a number from 1, got %v", v)
		}
		return &machine.EntrySpec{Index: int(v)}
	case *lua.LNilType:
		return nil
	default:
		o.fail("entry", "must be a label or a number, got %s", v.Type())
	}
	return nil
}

// labOpt reads "lab": the built lab image of that name.
func (h *Host) labOpt(o *Opts) *lab.Image {
	name := o.String("lab", "")
	if name == "" {
		return nil
	}
	img, err := lab.Lookup(name, lab.Options{})
	if err != nil {
		h.Raise(o.L, vmerr.Wrap(vmerr.NotFound, err, "%s: option \"lab\"", o.fn))
	}
	return img
}

// diskOpts reads "disks": paths or {path=, format=, snapshot=, interface=}.
func (h *Host) diskOpts(o *Opts) []qemu.Disk {
	t, ok := o.Get("disks").(*lua.LTable)
	if !ok {
		if o.Has("disks") {
			o.fail("disks", "must be a list")
		}
		return nil
	}
	var disks []qemu.Disk
	for i := 1; i <= t.Len(); i++ {
		switch v := t.RawGetInt(i).(type) {
		case lua.LString:
			disks = append(disks, qemu.Disk{Path: string(v)})
		case *lua.LTable:
			d := h.OptsOf(o.L, v, fmt.Sprintf("%s: disks[%d]", o.fn, i))
			disk := qemu.Disk{Path: d.String("path", ""), Format: d.String("format", ""), Interface: d.String("interface", "")}
			if d.Has("snapshot") {
				s := d.Bool("snapshot", true)
				disk.Snapshot = &s
			}
			d.Done()
			disks = append(disks, disk)
		default:
			h.Errorf(o.L, vmerr.Usage, "%s: disks[%d] must be a path or a table {path=, format=, snapshot=, interface=}", o.fn, i)
		}
	}
	return disks
}

// forwardOpts reads "forwards": guest ports or {guest=, host=, proto=, host_addr=}.
func (h *Host) forwardOpts(o *Opts) []qemu.Forward {
	t, ok := o.Get("forwards").(*lua.LTable)
	if !ok {
		if o.Has("forwards") {
			o.fail("forwards", "must be a list")
		}
		return nil
	}
	var fs []qemu.Forward
	for i := 1; i <= t.Len(); i++ {
		switch v := t.RawGetInt(i).(type) {
		case lua.LNumber:
			fs = append(fs, qemu.Forward{GuestPort: int(v)})
		case *lua.LTable:
			f := h.OptsOf(o.L, v, fmt.Sprintf("%s: forwards[%d]", o.fn, i))
			fs = append(fs, qemu.Forward{
				GuestPort: f.Int("guest", 0), HostPort: f.Int("host", 0),
				Proto: f.OneOf("proto", "tcp", "tcp", "udp"), HostAddr: f.String("host_addr", ""),
			})
			f.Done()
		default:
			h.Errorf(o.L, vmerr.Usage, "%s: forwards[%d] must be a guest port or {guest=, host=, proto=}", o.fn, i)
		}
	}
	return fs
}

// nicOpts reads "net" (a lan; a string when strings are allowed, read by
// qemuConfig) and "nics" (lans, "user" or {lan=, mac=, model=}).
func (h *Host) nicOpts(o *Opts, netString bool) []machine.NIC {
	var nics []machine.NIC
	switch v := o.Get("net").(type) {
	case *lua.LNilType:
	case lua.LString:
		if !netString {
			o.fail("net", "must be a lan: a fork keeps the original's kind of network (its device model)")
		}
	default:
		l, ok := h.objectOf(o.L, v, "lan").(*lan.LAN)
		if !ok {
			o.fail("net", "must be \"user\", \"none\" or a lan from lan.new, got %s", v.Type())
		}
		nics = append(nics, machine.NIC{LAN: l})
	}
	list := o.Get("nics")
	if list == lua.LNil {
		return nics
	}
	t, ok := list.(*lua.LTable)
	if !ok {
		o.fail("nics", "must be a list of lans, \"user\" or {lan=, mac=, model=}")
	}
	if o.Has("net") {
		h.Errorf(o.L, vmerr.Usage, "%s: give \"net\" or \"nics\", not both", o.fn)
	}
	for i := 1; i <= t.Len(); i++ {
		nics = append(nics, h.nicItem(o, i, t.RawGetInt(i)))
	}
	if len(nics) == 0 {
		o.fail("nics", "is empty (use net = \"none\" for no NIC)")
	}
	return nics
}

// nicItem reads nics[i].
func (h *Host) nicItem(o *Opts, i int, item lua.LValue) machine.NIC {
	if s, isStr := item.(lua.LString); isStr {
		if s != "user" {
			h.Errorf(o.L, vmerr.Usage, "%s: nics[%d] is %q; the only string allowed is \"user\"", o.fn, i, string(s))
		}
		return machine.NIC{User: true}
	}
	if l, ok := h.objectOf(o.L, item, "lan").(*lan.LAN); ok {
		return machine.NIC{LAN: l}
	}
	nt, ok := item.(*lua.LTable)
	if !ok {
		h.Errorf(o.L, vmerr.Usage, "%s: nics[%d] must be a lan, \"user\" or {lan=, mac=, model=}, got %s", o.fn, i, item.Type())
	}
	n := h.OptsOf(o.L, nt, fmt.Sprintf("%s: nics[%d]", o.fn, i))
	l, ok := h.objectOf(o.L, n.Get("lan"), "lan").(*lan.LAN)
	nic := machine.NIC{LAN: l, MAC: n.String("mac", ""), Model: n.String("model", "")}
	n.Done()
	if !ok {
		h.Errorf(o.L, vmerr.Usage, "%s: nics[%d].lan must be a lan from lan.new", o.fn, i)
	}
	return nic
}

// qemuStartOpts documents qemu.start's options table.
func qemuStartOpts() TypeDoc {
	return TypeDoc{
		Name: "vmscript.QemuStartOpts",
		Doc:  "Options of qemu.start: what to boot, how, and on which network.",
		Fields: []Field{
			{Name: "name", Type: "string?", Doc: "VM name, unique in the run; file names in the run directory start with it (default \"vm\")."},
			{Name: "lab", Type: "(\"mini\"|\"systemd\")?", Doc: "Boot a lab guest's kernel and initramfs (built with `vmscript lab build`)."},
			{Name: "append_extra", Type: "string?", Doc: "Words added to the kernel command line of the lab guest or the ISO's entry (needs lab or entry), e.g. \"console=ttyS0,115200\"."},
			{Name: "iso", Type: "string?", Doc: "ISO image to boot from (attached read-only)."},
			{Name: "entry", Type: "(string|integer)?", Doc: "Boot this entry of the ISO's own boot menu directly: its label (exact, else the one entry whose label contains it, ignoring case) or its number among the Linux entries of the firmware's loader (isolinux under BIOS, GRUB under UEFI). Its kernel and initrds come out of the ISO (cached by content), the ISO stays attached as a CD-ROM; vm.entry says what booted. An unknown entry's error lists them."},
			{Name: "kernel", Type: "string?", Doc: "Kernel for direct boot."},
			{Name: "initrd", Type: "string?", Doc: "Initramfs for direct boot."},
			{Name: "append", Type: "string?", Doc: "Kernel command line for direct boot."},
			{Name: "disks", Type: "(string|{path: string, format?: string, snapshot?: boolean, interface?: string})[]?", Doc: "Disk images; snapshot=true (the default) never writes the image."},
			{Name: "memory", Type: "string?", Doc: "Guest memory, e.g. \"512M\", \"2G\"."},
			{Name: "cpus", Type: "integer?", Doc: "Number of virtual CPUs."},
			{Name: "machine", Type: "string?", Doc: "QEMU machine type (default pc, as QEMU itself; q35 works too)."},
			{Name: "accel", Type: "(\"kvm\"|\"tcg\")?", Doc: "Accelerator; default KVM when /dev/kvm is usable, else TCG."},
			{Name: "firmware", Type: "(\"bios\"|\"uefi\")?", Doc: "Firmware (default bios)."},
			{Name: "boot", Type: "string?", Doc: "QEMU boot order, e.g. \"d\" for CD-ROM, \"n\" for network."},
			{Name: "net", Type: "(\"user\"|\"none\"|vmscript.LAN)?", Doc: "\"user\" (default) for QEMU user networking, or a LAN from lan.new."},
			{Name: "nics", Type: "table?", Doc: "More NICs: a list of networks as for net."},
			{Name: "mac", Type: "string?", Doc: "MAC address of the first NIC."},
			{Name: "forwards", Type: "(integer|{guest: integer, host?: integer, proto?: \"tcp\"|\"udp\", host_addr?: string})[]?", Doc: "Port forwards from 127.0.0.1 to the guest (user networking)."},
			{Name: "netboot", Type: "vmscript.NetbootServer?", Doc: "Boot from this netboot server."},
			{Name: "bootfile", Type: "string?", Doc: "The file the netboot server hands out first (needs netboot)."},
			{Name: "ipxe_prompt", Type: "boolean?", Doc: "Let iPXE's \"Press Ctrl-B\" prompt wait its 2 s (to press Ctrl-B yourself); by default a VM with BIOS text on the serial console (a BIOS netboot, serial_bios) answers it with a space at once."},
			{Name: "agent", Type: "boolean?", Doc: "Add the port of qemu-guest-agent (vm:agent); the systemd lab's guests have it without asking."},
			{Name: "console", Type: "(\"serial\"|\"virtio\")?", Doc: "The console's device: the 16550 UART ttyS0 (default) or a virtio console hvc0 (a directly booted kernel gets console=hvc0; the guest needs virtio_console, as the lab's have). Under TCG the guest writes bulk output to hvc0 about 1.7x faster than to the UART."},
			{Name: "serial_bios", Type: "boolean?", Doc: "Send the BIOS's output to the serial console as well."},
			{Name: "serial_log", Type: "string?", Doc: "Also have QEMU write the serial output to this file (relative to the run directory)."},
			{Name: "net_user_extra", Type: "string?", Doc: "Extra options for -netdev user."},
			{Name: "qemu_args", Type: "string[]?", Doc: "Extra QEMU arguments, appended as given."},
			{Name: "binary", Type: "string?", Doc: "QEMU binary (default qemu-system-x86_64)."},
			{Name: "failures", Type: "table<string, \"fail\"|\"warn\"|\"off\"|{action?: string, re?: string, text?: string}>?", Doc: "Change the console's failure patterns (console:failures) from its first byte, by name: [\"kernel-panic\"] = \"warn\", [\"oom-kill\"] = \"off\", or a new one {action = \"fail\", re = \"provisioning failed\"}."},
		},
	}
}
