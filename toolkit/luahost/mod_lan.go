package luahost

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// luaLAN is the Go side of a Lua `lan`.
type luaLAN struct {
	l    *lan.LAN
	dhcp *lua.LUserData
}

func (x *luaLAN) String() string {
	return fmt.Sprintf("lan %s (%s, gateway %s)", x.l.Name(), x.l.Subnet(), x.l.Gateway())
}

// luaDHCP is the Go side of `lan.dhcp`.
type luaDHCP struct{ l *lan.LAN }

func (x *luaDHCP) String() string { return "DHCP server of lan " + x.l.Name() }

// lanNames are the LAN names taken per host (their files would collide).
var lanNames struct {
	sync.Mutex
	m map[*Host]map[string]bool
}

func (h *Host) takeLANName(name string) bool {
	lanNames.Lock()
	defer lanNames.Unlock()
	if lanNames.m == nil {
		lanNames.m = map[*Host]map[string]bool{}
	}
	if lanNames.m[h] == nil {
		lanNames.m[h] = map[string]bool{}
		h.OnClose("forget lan names", func() {
			lanNames.Lock()
			delete(lanNames.m, h)
			lanNames.Unlock()
		})
	}
	if lanNames.m[h][name] {
		return false
	}
	lanNames.m[h][name] = true
	return true
}

// lanPort is a VM's NIC on a LAN.
type lanPort struct {
	l   *lan.LAN
	mac string
}

// lanVMs records, per host, which LAN ports each VM got (for vm:ssh over
// the LAN), and which LANs the last qemu.start named (for its netboot
// check).
var lanVMs struct {
	sync.Mutex
	ports    map[*Host]map[string][]lanPort
	lastCfg  map[*Host]*qemu.Config
	lastLANs map[*Host][]*lan.LAN
}

func (h *Host) addLANPort(vm string, p lanPort) {
	lanVMs.Lock()
	defer lanVMs.Unlock()
	if lanVMs.ports == nil {
		lanVMs.ports = map[*Host]map[string][]lanPort{}
		lanVMs.lastCfg = map[*Host]*qemu.Config{}
		lanVMs.lastLANs = map[*Host][]*lan.LAN{}
	}
	if lanVMs.ports[h] == nil {
		lanVMs.ports[h] = map[string][]lanPort{}
		h.OnClose("forget lan ports", func() { h.forgetLANState() })
	}
	lanVMs.ports[h][vm] = append(lanVMs.ports[h][vm], p)
}

func (h *Host) forgetLANState() {
	lanVMs.Lock()
	defer lanVMs.Unlock()
	delete(lanVMs.ports, h)
	delete(lanVMs.lastCfg, h)
	delete(lanVMs.lastLANs, h)
}

// vmLANPorts returns the LAN ports of a VM, in NIC order.
func (h *Host) vmLANPorts(vm string) []lanPort {
	lanVMs.Lock()
	defer lanVMs.Unlock()
	return append([]lanPort(nil), lanVMs.ports[h][vm]...)
}

// noteNetLANs remembers the LANs that qemu.start's options put cfg on.
func (h *Host) noteNetLANs(cfg *qemu.Config, lans []*lan.LAN) {
	lanVMs.Lock()
	defer lanVMs.Unlock()
	if lanVMs.lastCfg == nil {
		lanVMs.ports = map[*Host]map[string][]lanPort{}
		lanVMs.lastCfg = map[*Host]*qemu.Config{}
		lanVMs.lastLANs = map[*Host][]*lan.LAN{}
	}
	if _, ok := lanVMs.lastCfg[h]; !ok {
		h.OnClose("forget lan config", func() { h.forgetLANState() })
	}
	lanVMs.lastCfg[h] = cfg
	lanVMs.lastLANs[h] = lans
}

// netLANs returns the LANs of cfg, if cfg is the one qemu.start read last;
// ok is false when that is unknown.
func (h *Host) netLANs(cfg *qemu.Config) (lans []*lan.LAN, ok bool) {
	lanVMs.Lock()
	defer lanVMs.Unlock()
	if lanVMs.lastCfg == nil || lanVMs.lastCfg[h] != cfg {
		return nil, false
	}
	return lanVMs.lastLANs[h], true
}

func (h *Host) newLAN(L *lua.LState) int {
	const fn = "lan.new"
	o := h.Opts(L, 1, fn)
	cfg := lan.Config{
		Name:        o.String("name", ""),
		Subnet:      o.String("subnet", lan.DefaultSubnet),
		DHCP:        o.Bool("dhcp", true),
		NAT:         o.Bool("nat", true),
		Pcap:        o.Bool("pcap", false),
		DNS:         o.StringList("dns"),
		DNSUpstream: o.String("dns_upstream", ""),
		Run:         h.opt.Run,
	}
	switch st := o.Get("static").(type) {
	case *lua.LNilType:
	case *lua.LTable:
		cfg.Static = map[string]string{}
		st.ForEach(func(k, v lua.LValue) {
			ks, ok1 := k.(lua.LString)
			vs, ok2 := v.(lua.LString)
			if !ok1 || !ok2 {
				o.fail("static", "must map MAC strings to IPv4 address strings, e.g. {[\"52:54:00:12:34:56\"] = \"10.0.3.7\"}")
			}
			cfg.Static[string(ks)] = string(vs)
		})
	default:
		o.fail("static", "must be a table {[mac] = ip}, got %s", st.Type())
	}
	o.Done()
	if cfg.Name == "" {
		cfg.Name = "lan"
		for i := 2; !h.takeLANName(cfg.Name); i++ {
			cfg.Name = fmt.Sprintf("lan%d", i)
		}
	} else if !h.takeLANName(cfg.Name) {
		h.Errorf(L, vmerr.Usage, "%s: a LAN named %q already exists in this run (its files would collide); pick another name", fn, cfg.Name)
	}
	l, err := lan.New(h.ctx, cfg)
	if err != nil {
		lanNames.Lock()
		delete(lanNames.m[h], cfg.Name)
		lanNames.Unlock()
		h.Raise(L, err)
	}
	h.OnClose("close lan "+l.Name(), func() { l.Close() })
	x := &luaLAN{l: l}
	x.dhcp = h.NewObject(L, "lan_dhcp", &luaDHCP{l: l})
	L.Push(h.NewObject(L, "lan", x))
	return 1
}

// nic returns a QEMU NIC that joins the LAN when QEMU starts; the port is
// remembered under the VM's name (vm:ssh dials its lease).
func (x *luaLAN) nic(h *Host, mac, model string) qemu.NIC {
	return qemu.NIC{MAC: mac, Model: model, Open: func(vm, mac string) (*os.File, error) {
		f, _, err := x.l.Attach(vm, mac)
		if err == nil {
			h.addLANPort(vm, lanPort{l: x.l, mac: mac})
		}
		return f, err
	}}
}

// netOpts reads qemu.start's "net" (a string or a lan) and "nics" (a list
// of lans, "user", or {lan=, mac=, model=}) into cfg.
func (h *Host) netOpts(L *lua.LState, o *Opts, cfg *qemu.Config) {
	const fn = "qemu.start"
	var lans []*lan.LAN
	defer func() { h.noteNetLANs(cfg, lans) }()
	asLAN := func(v lua.LValue) (*luaLAN, bool) {
		ud, ok := v.(*lua.LUserData)
		if !ok {
			return nil, false
		}
		x, ok := ud.Value.(*luaLAN)
		return x, ok
	}
	switch v := o.Get("net").(type) {
	case *lua.LNilType:
	case lua.LString:
		cfg.Net = string(v)
	default:
		x, ok := asLAN(v)
		if !ok {
			h.Errorf(L, vmerr.Usage, "%s: option \"net\" must be \"user\", \"none\" or a lan from lan.new, got %s", fn, v.Type())
		}
		cfg.Net = "none"
		cfg.NICs = append(cfg.NICs, x.nic(h, "", ""))
		lans = append(lans, x.l)
	}
	nics := o.Get("nics")
	if nics == lua.LNil {
		return
	}
	t, ok := nics.(*lua.LTable)
	if !ok {
		h.Errorf(L, vmerr.Usage, "%s: option \"nics\" must be a list of lans, \"user\" or {lan=, mac=, model=}", fn)
	}
	if o.Has("net") {
		h.Errorf(L, vmerr.Usage, "%s: give \"net\" or \"nics\", not both", fn)
	}
	cfg.Net = "none"
	for i := 1; i <= t.Len(); i++ {
		item := t.RawGetInt(i)
		if s, isStr := item.(lua.LString); isStr {
			if s != "user" {
				h.Errorf(L, vmerr.Usage, "%s: nics[%d] is %q; the only string allowed is \"user\"", fn, i, string(s))
			}
			cfg.NICs = append(cfg.NICs, qemu.NIC{User: true})
			continue
		}
		if x, ok := asLAN(item); ok {
			cfg.NICs = append(cfg.NICs, x.nic(h, "", ""))
			lans = append(lans, x.l)
			continue
		}
		nt, ok := item.(*lua.LTable)
		if !ok {
			h.Errorf(L, vmerr.Usage, "%s: nics[%d] must be a lan, \"user\" or {lan=, mac=, model=}, got %s", fn, i, item.Type())
		}
		n := h.OptsOf(L, nt, fmt.Sprintf("%s: nics[%d]", fn, i))
		x, ok := asLAN(n.Get("lan"))
		mac, model := n.String("mac", ""), n.String("model", "")
		n.Done()
		if !ok {
			h.Errorf(L, vmerr.Usage, "%s: nics[%d].lan must be a lan from lan.new", fn, i)
		}
		cfg.NICs = append(cfg.NICs, x.nic(h, mac, model))
		lans = append(lans, x.l)
	}
	if len(cfg.NICs) == 0 {
		h.Errorf(L, vmerr.Usage, "%s: option \"nics\" is empty (use net = \"none\" for no NIC)", fn)
	}
}

func leaseTable(L *lua.LState, l lan.Lease) *lua.LTable {
	t := L.NewTable()
	t.RawSetString("ip", lua.LString(l.IP.String()))
	t.RawSetString("mac", lua.LString(l.MAC))
	t.RawSetString("hostname", lua.LString(l.Hostname))
	t.RawSetString("at", lua.LString(l.At.Format(time.RFC3339Nano)))
	t.RawSetString("expires", lua.LString(l.Expires.Format(time.RFC3339Nano)))
	return t
}

func dhcpEventTable(L *lua.LState, e lan.Event) *lua.LTable {
	t := L.NewTable()
	t.RawSetString("at", lua.LString(e.At.Format(time.RFC3339Nano)))
	for k, v := range map[string]string{"dir": e.Dir, "type": e.Type, "mac": e.MAC, "xid": e.XID,
		"hostname": e.Hostname, "requested": e.Requested, "offered": e.Offered, "bootfile": e.Bootfile, "note": e.Note} {
		if v != "" {
			t.RawSetString(k, lua.LString(v))
		}
	}
	t.RawSetString("line", lua.LString(e.String()))
	return t
}

func (h *Host) checkLAN(L *lua.LState) *luaLAN { return h.CheckObject(L, 1, "lan").(*luaLAN) }

func (h *Host) checkDHCP(L *lua.LState) *luaDHCP {
	return h.CheckObject(L, 1, "lan_dhcp").(*luaDHCP)
}

func init() {
	Register(Module{
		Name: "lan",
		Doc:  "Virtual LANs that QEMU NICs join: a DHCP server whose every message the script sees, NAT, pcap.",
		Funcs: []Func{{
			Name:    "new",
			Params:  "opts?: {name?: string, subnet?: string, dhcp?: boolean, nat?: boolean, pcap?: boolean, static?: table<string, string>, dns?: string[], dns_upstream?: string}",
			Returns: "vmscript.LAN",
			Doc:     "Start a LAN (default 10.0.3.0/24, dhcp and nat on, pcap off; a /24 leases .100–.254, and a full pool reclaims the address of a VM that left); join VMs with qemu.start{net = lan} or nics = {lan, \"user\"}.",
			Fn:      func(h *Host, L *lua.LState) int { return h.newLAN(L) },
		}},
	})
	RegisterClass(Class{
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
		Get: func(h *Host, L *lua.LState, self any, name string) lua.LValue {
			x := self.(*luaLAN)
			switch name {
			case "name":
				return lua.LString(x.l.Name())
			case "subnet":
				return lua.LString(x.l.Subnet().String())
			case "gateway":
				return lua.LString(x.l.Gateway().String())
			case "pcap":
				if p := x.l.PcapPath(); p != "" {
					return lua.LString(p)
				}
				return lua.LNil
			case "dhcp_log":
				if p := x.l.DHCPLogPath(); p != "" {
					return lua.LString(p)
				}
				return lua.LNil
			case "dhcp":
				return x.dhcp
			}
			return nil
		},
		Methods: []Func{
			{
				Name: "wait_lease", Params: "opts: {mac: string, timeout?: duration}", Returns: "{ip: string, mac: string, hostname: string, at: string, expires: string}",
				Doc: "Wait until the MAC holds a DHCP lease (default 2 min); a timeout error says what was seen from it (nothing, DISCOVER only, OFFER not requested, NAK).",
				Fn: func(h *Host, L *lua.LState) int {
					x := h.checkLAN(L)
					o := h.Opts(L, 2, "lan:wait_lease")
					mac := o.String("mac", "")
					timeout := o.Duration("timeout", defaultWaitTimeout)
					o.Done()
					if mac == "" {
						h.Errorf(L, vmerr.Usage, "lan:wait_lease: option \"mac\" is required (e.g. mac = vm.mac)")
					}
					ctx, cancel := h.withTimeout(timeout)
					defer cancel()
					l, err := x.l.DHCP().WaitLease(ctx, mac)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(leaseTable(L, l))
					return 1
				},
			},
			{
				Name: "leases", Returns: "{ip: string, mac: string, hostname: string, at: string, expires: string}[]",
				Doc: "The current leases, ordered by address.",
				Fn: func(h *Host, L *lua.LState) int {
					x := h.checkLAN(L)
					t := L.NewTable()
					for _, l := range x.l.DHCP().Leases() {
						t.Append(leaseTable(L, l))
					}
					L.Push(t)
					return 1
				},
			},
			{
				Name: "dhcp_events", Params: "opts?: {mac?: string}", Returns: "{at: string, dir: string, type: string, mac: string, xid: string, hostname?: string, requested?: string, offered?: string, bootfile?: string, note?: string, line: string}[]",
				Doc: "Every DHCP message so far (of one MAC with mac=), in order: dir \"in\"/\"out\", type DISCOVER, OFFER, REQUEST, ACK, NAK, …",
				Fn: func(h *Host, L *lua.LState) int {
					x := h.checkLAN(L)
					o := h.Opts(L, 2, "lan:dhcp_events")
					mac := o.String("mac", "")
					o.Done()
					t := L.NewTable()
					for _, e := range x.l.DHCP().Events(mac) {
						t.Append(dhcpEventTable(L, e))
					}
					L.Push(t)
					return 1
				},
			},
			{
				Name: "close", Doc: "Stop the LAN now (it stops by itself at the end of the run).",
				Fn: func(h *Host, L *lua.LState) int {
					if err := h.checkLAN(L).l.Close(); err != nil {
						h.Raise(L, vmerr.Wrap(vmerr.IO, err, "lan:close"))
					}
					return 0
				},
			},
		},
	})
	RegisterClass(Class{
		Name: "lan_dhcp",
		Doc:  "A LAN's DHCP server, for fault injection.",
		Methods: []Func{
			{
				Name: "pause", Doc: "Stop answering: DHCP messages are still logged, marked \"not answered: DHCP paused\".",
				Fn: func(h *Host, L *lua.LState) int { h.checkDHCP(L).l.DHCP().Pause(); return 0 },
			},
			{
				Name: "resume", Doc: "Answer again after pause().",
				Fn: func(h *Host, L *lua.LState) int { h.checkDHCP(L).l.DHCP().Resume(); return 0 },
			},
			{
				Name: "delay", Params: "dur: duration",
				Doc: "Hold every reply for dur before sending it (0 ends the delay).",
				Fn: func(h *Host, L *lua.LState) int {
					x := h.checkDHCP(L)
					x.l.DHCP().Delay(h.CheckDuration(L, 2))
					return 0
				},
			},
			{
				Name: "nak", Params: "mac: string",
				Doc: "Answer every REQUEST from mac with a NAK until clear_nak(mac).",
				Fn: func(h *Host, L *lua.LState) int {
					if err := h.checkDHCP(L).l.DHCP().NAK(L.CheckString(2)); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name: "clear_nak", Params: "mac: string",
				Doc: "End nak(mac).",
				Fn: func(h *Host, L *lua.LState) int {
					if err := h.checkDHCP(L).l.DHCP().ClearNAK(L.CheckString(2)); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
		},
	})
	ExtendClass("vm", Func{
		Name: "link", Params: "up: boolean, nic?: string|integer",
		Doc: "Plug (true) or pull (false) the virtual cable of every NIC, or of one (netdev id like \"n1\", or its 1-based index), via QMP set_link.",
		Fn: func(h *Host, L *lua.LState) int {
			v := h.checkVM(L)
			up := L.CheckBool(2)
			netdev := ""
			switch n := L.Get(3).(type) {
			case *lua.LNilType:
			case lua.LString:
				netdev = string(n)
			case lua.LNumber:
				ids := v.m.VM.Netdevs()
				if int(n) < 1 || int(n) > len(ids) {
					h.ArgError(L, 3, "NIC %d: the VM has %d (%s)", int(n), len(ids), strings.Join(ids, ", "))
				}
				netdev = ids[int(n)-1]
			default:
				h.ArgError(L, 3, "nic must be a netdev id or an index, got %s", n.Type())
			}
			ctx, cancel := h.withTimeout(defaultQMPTimeout)
			defer cancel()
			if err := v.m.VM.SetLink(ctx, netdev, up); err != nil {
				h.Raise(L, err)
			}
			return 0
		},
	})
}
