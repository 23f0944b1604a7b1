package luahost

import (
	"context"
	"github.com/vmscript/vmscript/internal/testenv"
	"os"
	"strings"
	"testing"
	"time"
)

// TestLuaSSHMini boots the mini lab from Lua and runs a command over SSH.
func TestLuaSSHMini(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	testenv.Lab(t, "mini")
	run := testenv.Run(t)
	out, err := runLua(t, ctx, `
		local vm = qemu.start{lab = "mini", memory = "512M", forwards = {22}}
		local ok, e = pcall(function() return vm:ssh{user = "root"} end)
		assert(not ok and e.kind == "usage", "no key: " .. tostring(e))
		local c = vm:ssh{user = "root", key = lab.image("mini").ssh_key}
		print(c:run("echo hi").stdout)
		local r = c:run("echo $X >&2; exit 3", {env = {X = "x1"}, stdin = ""})
		print(r.code, r.stderr)
		local ok2, e2 = pcall(function() return c:run("sleep 100", {timeout = 1}) end)
		print(e2.kind)
		local con = c:session{pty = true}
		con:sendline("echo pty-$((40+2))")
		con:expect("pty-42")
		print("session ok")
		print(c:get("/etc/passwd", "passwd.txt"):match("passwd.txt$") ~= nil)
		c:close()
		vm:quit()
		vm:wait()
	`, nil, Options{Run: run})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out)
	}
	want := "hi\n\n3\tx1\n\ntimeout\nsession ok\ntrue\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
	tr, _ := os.ReadFile(run.Path("vm.ssh.log")) // named after the VM (default name "vm")
	if !strings.Contains(string(tr), "$ echo hi\nhi\n") {
		t.Errorf("transcript:\n%s", tr)
	}
}

// TestLuaSSHNoForward: vm:ssh on a VM without a forward to port 22 explains
// what to add.
func TestLuaSSHNoForward(t *testing.T) {
	testenv.RequireQEMU(t)
	run := testenv.Run(t)
	_, err := runLua(t, context.Background(), `
		local vm = qemu.start{net = "user"}
		vm:ssh{key = "/nonexistent"}
	`, nil, Options{Run: run})
	if err == nil || !strings.Contains(err.Error(), "forwards = {22}") || !strings.Contains(err.Error(), "kind=usage") {
		t.Fatalf("error %v", err)
	}
}

// TestLuaSSHOverLAN: vm:ssh on a VM whose only NIC is on a LAN waits for
// its lease and dials that address through the LAN's stack; a VM with
// neither a forward nor a LAN NIC gets an error that says what to add.
func TestLuaSSHOverLAN(t *testing.T) {
	testenv.RequireQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	testenv.Lab(t, "mini")
	run := testenv.Run(t)
	out, err := runLua(t, ctx, `
		local none = qemu.start{ name = "none", net = "none" }
		local ok, e = pcall(function() return none:ssh{ key = "/nonexistent" } end)
		print(e.kind, tostring(e):find("neither a forward", 1, true) ~= nil)
		ok, e = pcall(function() return none:ssh{ key = "/nonexistent", via = "lan" } end)
		print(e.kind, tostring(e):find("no NIC on a lan", 1, true) ~= nil)
		none:kill()

		local l = lan.new{ name = "sshlan", nat = false }
		local vm = qemu.start{ name = "m", lab = "mini", net = l, memory = "256M" }
		local c = vm:ssh{ user = "root", key = lab.image("mini").ssh_key, timeout = "150s" }
		local lease = l:wait_lease{ mac = vm.mac, timeout = 1 }
		print(c.host == lease.ip, c.port)
		local r = c:run("ip -4 -o addr show eth0")
		print(r.code, r.stdout:find(lease.ip .. "/", 1, true) ~= nil)
		c:close()
	`, nil, Options{Run: run})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out)
	}
	want := "usage\ttrue\nusage\ttrue\ntrue\t22\n0\ttrue\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}

// TestLuaVirtioConsole: console = "virtio" puts the console on hvc0 (the
// serial shell runs there), and a bad value is a usage error naming the
// option before anything boots.
func TestLuaVirtioConsole(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	testenv.Lab(t, "mini")
	out, err := runLua(t, ctx, `
		local ok, e = pcall(qemu.start, {lab = "mini", console = "usb"})
		print(ok, e.kind, tostring(e):match('console: "usb": want serial or virtio') ~= nil)
		local vm = qemu.start{lab = "mini", memory = "512M", console = "virtio"}
		vm.console:expect("mini# ", {timeout = "3m"})
		print(vm:shell():run("tty; grep -o hvc0 /proc/consoles").output)
		vm:kill()
	`, nil, Options{Run: testenv.Run(t)})
	if want := "false\tusage\ttrue\n/dev/hvc0\nhvc0\n\n"; err != nil || out != want {
		t.Fatalf("%v: output %q, want %q", err, out, want)
	}
}
