package luahost

import (
	"context"
	"github.com/vmscript/vmscript/internal/testenv"
	"testing"
	"time"
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
	want := "cp\ttrue\ttrue\t0\na\tcp-1\tcp-2\ttrue\nforks answer\nfalse\tusage\ntrue\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
}
