package luahost

import (
	"context"
	"github.com/vmscript/vmscript/internal/testenv"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// TestLANBindingsNoQEMU: lan.new, its fields and errors, and how
// qemu.start reads net = lan and nics = {…}.
func TestLANBindingsNoQEMU(t *testing.T) {
	run := testenv.Run(t)
	out, err := runLua(t, nil, `
		local l = lan.new{ name = "net1", subnet = "10.0.9.0/24", pcap = true, static = { ["52:54:00:00:00:07"] = "10.0.9.7" } }
		print(l.name, l.subnet, l.gateway, l.pcap ~= nil, l.dhcp_log ~= nil, #l:leases(), #l:dhcp_events{})
		l.dhcp:pause(); l.dhcp:resume(); l.dhcp:delay("10ms"); l.dhcp:delay(0)
		l.dhcp:nak("52:54:00:00:00:07"); l.dhcp:clear_nak("52:54:00:00:00:07")
		local ok, e = pcall(l.wait_lease, l, { mac = "52:54:00:00:00:01", timeout = 0.05 })
		print(e.kind, e.mac, e.seen)
		ok, e = pcall(lan.new, { name = "net1" })
		print(e.kind)
		ok, e = pcall(lan.new, { subnet = "fe80::/64" })
		print(e.kind)
		ok, e = pcall(lan.new, { subnt = "10.0.0.0/24" })
		print(e.kind)
		local l2 = lan.new{ nat = false, dhcp = false }
		print(l2.name, l2.dhcp_log)
		ok, e = pcall(l2.wait_lease, l2, { mac = "52:54:00:00:00:01", timeout = 0.05 })
		print(e.seen)
		ok, e = pcall(qemu.start, { net = 5 })
		print(e.kind)
		ok, e = pcall(qemu.start, { net = l, nics = { l } })
		print(e.kind)
		ok, e = pcall(qemu.start, { nics = { "tap" } })
		print(e.kind)
		l:close()
	`, nil, Options{Run: run})
	if err != nil {
		t.Fatal(err)
	}
	want := "net1\t10.0.9.0/24\t10.0.9.1\ttrue\ttrue\t0\t0\n" +
		"timeout\t52:54:00:00:00:01\tnothing was seen from that MAC (no DISCOVER: the client never asked)\n" +
		"usage\nusage\nusage\n" +
		"lan\tnil\n" +
		"the LAN has no DHCP server (dhcp = false)\n" +
		"usage\nusage\nusage\n"
	if out != want {
		t.Fatalf("got:\n%s\nwant:\n%s", out, want)
	}

	// qemuConfig with nics: order and kinds.
	h, err := New(context.Background(), Options{Run: run, Stdout: os.Stdout})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.L.DoString(`l = lan.new{ name = "cfg" }`); err != nil {
		t.Fatal(err)
	}
	opts := h.L.NewTable()
	nics := h.L.NewTable()
	nics.Append(h.L.GetGlobal("l"))
	nics.Append(lua.LString("user"))
	spec := h.L.NewTable()
	spec.RawSetString("lan", h.L.GetGlobal("l"))
	spec.RawSetString("mac", lua.LString("52:54:00:00:00:42"))
	nics.Append(spec)
	opts.RawSetString("nics", nics)
	opts.RawSetString("forwards", h.L.NewTable())
	h.L.Push(opts)
	cfg, err := h.qemuSpec(h.L).QEMUConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Net != "" || len(cfg.NICs) != 3 || cfg.NICs[0].Open == nil || !cfg.NICs[1].User || cfg.NICs[2].MAC != "52:54:00:00:00:42" {
		t.Fatalf("cfg: net %q nics %+v", cfg.Net, cfg.NICs)
	}
	cfg.Name = "x"
	if err := cfg.Validate(); err != nil && !vmerr.Is(err, vmerr.NotFound) {
		t.Fatalf("validate: %v", err)
	}
}

// TestE2ELANLua: the script's view — a mini guest on a LAN, its lease
// cross-checked against the guest, the DHCP events in order, vm:link.
func TestE2ELANLua(t *testing.T) {
	testenv.RequireQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	testenv.Lab(t, "mini")
	run := testenv.Run(t)
	out, err := runLua(t, ctx, `
		local l = lan.new{ pcap = true }
		local vm = qemu.start{ name = "m1", lab = "mini", net = l, memory = "256M", accel = "tcg" }
		local lease = l:wait_lease{ mac = vm.mac, timeout = "150s" }
		vm.console:expect("mini# ", { timeout = "60s" })
		vm.console:sendline("while ! test -s /run/ipv4; do sleep 0.2; done; ip -4 -o addr show eth0")
		local m = vm.console:expect({ re = "inet ([0-9.]+)/" }, { timeout = "30s" })
		assert(m.captures[1] == lease.ip, "guest " .. m.captures[1] .. " lease " .. lease.ip)
		local seq = {}
		for _, e in ipairs(l:dhcp_events{ mac = vm.mac }) do seq[#seq + 1] = e.dir .. ":" .. e.type end
		print(table.concat(seq, " "))
		print(#l:leases(), l:leases()[1].mac == vm.mac)
		vm:link(false)
		vm:link(true, 1)
		vm:link(true, "n1")
		local ok, e = pcall(vm.link, vm, true, "n9")
		print(e.kind)
	`, nil, Options{Run: run})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "in:DISCOVER out:OFFER in:REQUEST out:ACK") || lines[1] != "1\ttrue" || lines[2] != "usage" {
		t.Fatalf("output:\n%s", out)
	}
	if _, err := os.Stat(run.Path("lan.pcap")); err != nil {
		t.Fatal(err)
	}
	if log, _ := os.ReadFile(run.Path("lan.dhcp.log")); !strings.Contains(string(log), "ACK") {
		t.Fatalf("dhcp log:\n%s", log)
	}
}
