package luahost

import (
	"fmt"

	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func lanModule() Module {
	return Module{
		Name: "lan",
		Doc:  "Virtual LANs that QEMU NICs join: a DHCP server whose every message the script sees, NAT, pcap.",
		Funcs: []Func{{
			Name:    "new",
			Params:  "opts?: {name?: string, subnet?: string, dhcp?: boolean, nat?: boolean, pcap?: boolean, static?: table<string, string>, dns?: string[], dns_upstream?: string}",
			Returns: "vmscript.LAN", Fn: (*Host).lanNew,
			Doc: "Start a LAN (default 10.0.3.0/24, dhcp and nat on, pcap off; a /24 leases .100–.254, and a full pool reclaims the address of a VM that left); join VMs with qemu.start{net = lan} or nics = {lan, \"user\"}.",
		}},
	}
}

func lanClass() Class {
	lease := record.LuaType(lan.Lease{})
	return Class{
		Name: "lan",
		Doc:  "A virtual LAN: switch, gateway (DHCP, DNS, NAT) and its logs in the run directory.",
		Fields: []Field{
			{Name: "name", Type: "string", Doc: "The LAN's name (its files are NAME.dhcp.log and NAME.pcap)."},
			{Name: "subnet", Type: "string", Doc: "The subnet, e.g. \"10.0.3.0/24\"."},
			{Name: "gateway", Type: "string", Doc: "The gateway's address (DHCP server, DNS, host services)."},
			{Name: "pcap", Type: "string?", Doc: "Path of the pcap file (pcap = true)."},
			{Name: "dhcp_log", Type: "string?", Doc: "Path of the DHCP log."},
			{Name: "dhcp", Type: "vmscript.LanDHCP", Doc: "The DHCP server's fault injection: pause, resume, delay, nak."},
		},
		Get: (*Host).lanField,
		Methods: []Func{
			{Name: "wait_lease", Params: "opts: {mac: string, timeout?: duration}", Returns: lease, Fn: (*Host).lanWaitLease,
				Doc: "Wait until the MAC holds a DHCP lease (default 2 min); a timeout error says what was seen from it (nothing, DISCOVER only, OFFER not requested, NAK)."},
			{Name: "leases", Returns: lease + "[]", Fn: (*Host).lanLeases, Doc: "The current leases, ordered by address."},
			{Name: "dhcp_events", Params: "opts?: {mac?: string}", Returns: record.LuaType(lan.Event{}) + "[]", Fn: (*Host).lanDHCPEvents,
				Doc: "Every DHCP message so far (of one MAC with mac=), in order: dir \"in\"/\"out\", type DISCOVER, OFFER, REQUEST, ACK, NAK, …"},
			{Name: "close", Fn: (*Host).lanClose, Doc: "Stop the LAN now (it stops by itself at the end of the run)."},
		},
	}
}

func lanDHCPClass() Class {
	return Class{
		Name: "lan_dhcp",
		Doc:  "A LAN's DHCP server, for fault injection.",
		Methods: []Func{
			{Name: "pause", Fn: (*Host).dhcpPause, Doc: "Stop answering: DHCP messages are still logged, marked \"not answered: DHCP paused\"."},
			{Name: "resume", Fn: (*Host).dhcpResume, Doc: "Answer again after pause()."},
			{Name: "delay", Params: "dur: duration", Fn: (*Host).dhcpDelay, Doc: "Hold every reply for dur before sending it (0 ends the delay)."},
			{Name: "nak", Params: "mac: string", Fn: (*Host).dhcpNAK, Doc: "Answer every REQUEST from mac with a NAK until clear_nak(mac)."},
			{Name: "clear_nak", Params: "mac: string", Fn: (*Host).dhcpClearNAK, Doc: "End nak(mac)."},
		},
	}
}

func (h *Host) lanNew(L *lua.LState) int {
	o := h.Opts(L, 1, "lan.new")
	cfg := lan.Config{
		Name: o.String("name", ""), Subnet: o.String("subnet", lan.DefaultSubnet), DHCP: o.Bool("dhcp", true),
		NAT: o.Bool("nat", true), Pcap: o.Bool("pcap", false), DNS: o.StringList("dns"),
		DNSUpstream: o.String("dns_upstream", ""), Run: h.opt.Run, Static: h.staticLeases(o),
	}
	o.Done()
	cfg.Name = h.takeLANName(L, cfg.Name)
	l, err := lan.New(h.ctx, cfg)
	if err != nil {
		delete(h.lanNames, cfg.Name)
		h.Raise(L, err)
	}
	h.OnClose("close lan "+l.Name(), func() { l.Close() })
	L.Push(h.NewObject(L, "lan", l))
	return 1
}

// staticLeases reads "static": {[mac] = ip}.
func (h *Host) staticLeases(o *Opts) map[string]string {
	switch st := o.Get("static").(type) {
	case *lua.LNilType:
		return nil
	case *lua.LTable:
		out := map[string]string{}
		st.ForEach(func(k, v lua.LValue) {
			ks, ok1 := k.(lua.LString)
			vs, ok2 := v.(lua.LString)
			if !ok1 || !ok2 {
				o.fail("static", "must map MAC strings to IPv4 address strings, e.g. {[\"52:54:00:12:34:56\"] = \"10.0.3.7\"}")
			}
			out[string(ks)] = string(vs)
		})
		return out
	default:
		o.fail("static", "must be a table {[mac] = ip}, got %s", st.Type())
	}
	return nil
}

// takeLANName reserves a LAN name in the run: the given one, or the first
// free of "lan", "lan2", ….
func (h *Host) takeLANName(L *lua.LState, name string) string {
	if name == "" {
		name = "lan"
		for i := 2; h.lanNames[name]; i++ {
			name = fmt.Sprintf("lan%d", i)
		}
	} else if h.lanNames[name] {
		h.Errorf(L, vmerr.Usage, "lan.new: a LAN named %q already exists in this run (its files would collide); pick another name", name)
	}
	h.lanNames[name] = true
	return name
}

func (h *Host) checkLAN(L *lua.LState) *lan.LAN { return h.CheckObject(L, 1, "lan").(*lan.LAN) }

func (h *Host) lanField(L *lua.LState, self any, name string) lua.LValue {
	l := self.(*lan.LAN)
	switch name {
	case "name":
		return lua.LString(l.Name())
	case "subnet":
		return lua.LString(l.Subnet().String())
	case "gateway":
		return lua.LString(l.Gateway().String())
	case "pcap":
		return optString(l.PcapPath())
	case "dhcp_log":
		return optString(l.DHCPLogPath())
	case "dhcp":
		return h.NewObject(L, "lan_dhcp", l.DHCP())
	}
	return nil
}

// optString is s, or nil when it is empty.
func optString(s string) lua.LValue {
	if s == "" {
		return lua.LNil
	}
	return lua.LString(s)
}

func (h *Host) lanWaitLease(L *lua.LState) int {
	l := h.checkLAN(L)
	o := h.Opts(L, 2, "lan:wait_lease")
	mac := o.String("mac", "")
	timeout := o.Duration("timeout", defaultWaitTimeout)
	o.Done()
	if mac == "" {
		h.Errorf(L, vmerr.Usage, "lan:wait_lease: option \"mac\" is required (e.g. mac = vm.mac)")
	}
	ctx, cancel := h.withTimeout(timeout)
	defer cancel()
	lease, err := l.DHCP().WaitLease(ctx, mac)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, lease))
	return 1
}

func (h *Host) lanLeases(L *lua.LState) int {
	L.Push(ToLua(L, h.checkLAN(L).DHCP().Leases()))
	return 1
}

func (h *Host) lanDHCPEvents(L *lua.LState) int {
	l := h.checkLAN(L)
	o := h.Opts(L, 2, "lan:dhcp_events")
	mac := o.String("mac", "")
	o.Done()
	L.Push(ToLua(L, l.DHCP().Events(mac)))
	return 1
}

func (h *Host) lanClose(L *lua.LState) int {
	if err := h.checkLAN(L).Close(); err != nil {
		h.Raise(L, vmerr.Wrap(vmerr.IO, err, "lan:close"))
	}
	return 0
}

func (h *Host) checkDHCP(L *lua.LState) *lan.DHCP { return h.CheckObject(L, 1, "lan_dhcp").(*lan.DHCP) }

func (h *Host) dhcpPause(L *lua.LState) int { h.checkDHCP(L).Pause(); return 0 }

func (h *Host) dhcpResume(L *lua.LState) int { h.checkDHCP(L).Resume(); return 0 }

func (h *Host) dhcpDelay(L *lua.LState) int {
	h.checkDHCP(L).Delay(h.CheckDuration(L, 2))
	return 0
}

func (h *Host) dhcpNAK(L *lua.LState) int {
	if err := h.checkDHCP(L).NAK(L.CheckString(2)); err != nil {
		h.Raise(L, err)
	}
	return 0
}

func (h *Host) dhcpClearNAK(L *lua.LState) int {
	if err := h.checkDHCP(L).ClearNAK(L.CheckString(2)); err != nil {
		h.Raise(L, err)
	}
	return 0
}
