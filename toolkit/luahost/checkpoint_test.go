package luahost

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"
)

// TestLuaCheckpointMini boots the mini lab from Lua, checkpoints it and
// forks it twice; each fork's console answers with the state of the
// checkpoint and the files are removed at the end.
func TestLuaCheckpointMini(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	testenv.Lab(t, "mini")
	run := testenv.Run(t)
	out, err := runLua(t, ctx, `
		local vm = qemu.start{name = "orig", lab = "mini", memory = "512M", forwards = {22}}
		vm.console:expect({re = "[#$] $", settle = "300ms"}, {timeout = "2m"})
		vm.console:sendline("echo before > /tmp/x; echo do''ne")
		vm.console:expect("done")
		local cp = vm:checkpoint{name = "cp", continue = true}
		print(cp.name, cp.path:match("checkpoints/cp$") ~= nil, cp.state_bytes > 0, #cp.layers)
		local a = cp:fork{name = "a"}
		local forks = cp:fork_many(2)
		print(a.name, forks[1].name, forks[2].name, a.forwards[1].host ~= vm.forwards[1].host)
		for i, f in ipairs({a, forks[1], forks[2]}) do
			f.console:sendline("cat /tmp/x | sed s/^/got-/")
			f.console:expect("got-before")
		end
		print("forks answer")
		local okr, er = pcall(a.renew_lease, a, {shell = a:shell{timeout = "1m"}})
		print(er.kind, er.message:find("no NIC on a vmscript LAN", 1, true) ~= nil)
		local ok, e = pcall(function() return cp:fork{name = "a"} end)
		print(ok, e.kind)
		local path = cp.path
		cp:remove()
		print(io.open(path .. "/state.bin") == nil)
		for _, f in ipairs({a, forks[1], forks[2], vm}) do f:quit() end
	`, nil, Options{Run: run})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out)
	}
	want := "cp\ttrue\ttrue\t0\na\tcp-1\tcp-2\ttrue\nforks answer\nusage\ttrue\nfalse\tusage\ntrue\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}

// TestE2ELuaForkRenewLease: the systemd lab on a LAN, checkpointed at a
// root prompt and forked twice onto the same LAN. Each restored guest still
// uses the checkpoint's MAC; vm:renew_lease gives it its fork's MAC, and the
// LAN leases each fork its own address, which the guest carries when
// renew_lease returns.
func TestE2ELuaForkRenewLease(t *testing.T) {
	testenv.RequireQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	testenv.Lab(t, "systemd")
	run := testenv.Run(t)
	out, err := runLua(t, ctx, `
		local l = lan.new{}
		local vm = qemu.start{name = "orig", lab = "systemd", memory = "1G", net = l}
		local first = l:wait_lease{mac = vm.mac, timeout = "4m"}
		local sh = vm:login{user = "root", timeout = "4m"}
		local ok, e = pcall(vm.renew_lease, vm, {shell = sh, ifcae = "lan"})
		print("typo", e.kind)
		ok, e = pcall(vm.renew_lease, vm, {shell = vm})
		print("not a shell", e.kind)
		local cp = vm:checkpoint{name = "cp"}
		local ips = {[first.ip] = "orig"}
		for _, name in ipairs({"a", "b"}) do
			local f = cp:fork{name = name, net = l}
			-- b: no shell given, renew_lease takes the one at the prompt
			local lease = name == "a" and f:renew_lease{shell = f:shell{timeout = "1m"}, timeout = "90s"} or f:renew_lease{timeout = "90s"}
			local fsh = f:shell{timeout = "1m"}
			assert(lease.mac == f.mac and lease.mac ~= vm.mac, "lease for " .. lease.mac)
			assert(ips[lease.ip] == nil, name .. " got " .. lease.ip .. ", already " .. tostring(ips[lease.ip]))
			ips[lease.ip] = name
			-- renew_lease returns once the guest carries the address
			local r = fsh:run("ip -4 -o addr show " .. lease.iface)
			assert(r.output:find(" " .. lease.ip .. "/", 1, true), "guest of " .. name .. ": " .. r.output)
			print(name, lease.iface, fsh:run("cat /sys/class/net/lan/address").output == f.mac .. "\n")
			f:quit()
		end
	`, nil, Options{Run: run})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out)
	}
	want := "typo\tusage\nnot a shell\tusage\na\tlan\ttrue\nb\tlan\ttrue\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}

// TestE2ELuaForkRenewLeaseMini: the same on the mini lab, whose busybox
// udhcpc runs as a daemon: renew_lease restarts it (one udhcpc afterwards,
// no RELEASE that would free the original's lease) and the fork carries its
// own address while the original keeps its lease. On a LAN that does not
// answer, the timeout names what the LAN saw and carries the console tail.
func TestE2ELuaForkRenewLeaseMini(t *testing.T) {
	testenv.RequireQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	testenv.Lab(t, "mini")
	run := testenv.Run(t)
	out, err := runLua(t, ctx, `
		local l = lan.new{}
		local vm = qemu.start{name = "orig", lab = "mini", memory = "512M", net = l}
		local first = l:wait_lease{mac = vm.mac, timeout = "2m"}
		vm:shell{timeout = "2m"}
		local cp = vm:checkpoint{name = "cp"}
		local f = cp:fork{name = "f", net = l}
		local lease = f:renew_lease{timeout = "1m"}
		assert(lease.mac == f.mac and lease.ip ~= first.ip, lease.ip)
		local r = f:shell{}:run("pidof udhcpc | wc -w; cat /run/ipv4")
		print(lease.iface, r.output == "1\n" .. lease.ip .. "\n" or r.output)
		local held = {}
		for _, x in ipairs(l:leases()) do held[x.mac] = x.ip end
		print(held[vm.mac] == first.ip)
		f:quit()
		-- a LAN that does not answer: the timeout says what the LAN saw
		-- and carries the fork's console
		l.dhcp:pause()
		local g = cp:fork{name = "g", net = l}
		local ok, e = pcall(g.renew_lease, g, {timeout = "15s"})
		print(ok, e.kind, e.message:match("^vm:renew_lease: lan \"lan\": no DHCP lease for " .. g.mac .. " after [%d.]+s: DISCOVER only") ~= nil,
			e.vm, type(e.tail) == "table" and #e.tail > 0)
		g:quit()
	`, nil, Options{Run: run})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out)
	}
	if want := "eth0\ttrue\ntrue\nfalse\ttimeout\ttrue\tg\ttrue\n"; out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
	b, err := os.ReadFile(filepath.Join(run.Dir(), "lan.dhcp.log"))
	if err != nil || !strings.Contains(string(b), " ACK ") {
		t.Fatalf("the LAN's DHCP log: %v\n%s", err, b)
	}
	if strings.Contains(string(b), "RELEASE") {
		t.Errorf("a RELEASE reached the LAN:\n%s", b)
	}
}
