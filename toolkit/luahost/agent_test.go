package luahost

import (
	"context"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"
)

// TestE2EAgentAndRunner: on the systemd lab, vm:agent runs commands (exit
// code, stdout and stderr apart, stdin), writes and reads a file byte for
// byte, vm:runner picks the agent, and the agent shuts the guest down; a
// mini VM without the agent's port fails at once, one with the port but no
// agent within its timeout, and its runner falls back to the serial shell.
func TestE2EAgentAndRunner(t *testing.T) {
	testenv.RequireQEMU(t)
	testenv.Lab(t, "systemd")
	testenv.Lab(t, "mini")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out, err := runLua(t, ctx, `
		local vm = qemu.start{ name = "lab", lab = "systemd", memory = "1G", net = "none" }
		local a = vm:agent{ timeout = "5m" }
		local r = a:run("echo out; echo err >&2; exit 3")
		print(string.format("%q %q %q %d", r.stdout, r.stderr, r.output, r.code))
		print(a:run("tr a-z A-Z", { stdin = "piped", env = { X = "1" } }).stdout, a:test("test -d /etc"))
		a:write_file("/tmp/x", "data\0bin\n")
		print(#a:read_file("/tmp/x"), a:read_file("/tmp/x") == "data\0bin\n")
		local _, ch, passed = vm:runner()
		print(ch, #passed)
		local m = qemu.start{ name = "mini", lab = "mini", memory = "256M" }
		local ok, e = pcall(m.agent, m)
		print(ok, e.kind)
		local m2 = qemu.start{ name = "mini2", lab = "mini", memory = "256M", agent = true }
		local t0 = time.now()
		local ok2, e2 = pcall(m2.agent, m2, { timeout = "2s" })
		print(ok2, e2.kind, time.now() - t0 < 10)
		local _, ch3, passed3 = m:runner()
		print(ch3, passed3[1]:match("no guest agent port") ~= nil)
		a:shutdown()
		print(vm:wait{ timeout = "3m" }.reason)
	`, nil, Options{Run: testenv.Run(t)})
	if err != nil {
		t.Fatalf("%v\noutput so far:\n%s", err, out)
	}
	want := "\"out\\n\" \"err\\n\" \"out\\nerr\\n\" 3\nPIPED\ttrue\n9\ttrue\nagent\t0\nfalse\tusage\nfalse\ttimeout\ttrue\nserial\ttrue\nguest-shutdown\n"
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
}
