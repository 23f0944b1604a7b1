package luahost

import (
	"context"
	"github.com/vmscript/vmscript/internal/testenv"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
)

func TestShellBindingsDocumented(t *testing.T) {
	for _, c := range Classes() {
		if c.Name != "shell" && c.Name != "vm" && c.Name != "console" {
			continue
		}
		for _, f := range c.Methods {
			switch f.Name {
			case "login", "shell", "dialog", "run", "test", "sudo":
				if f.Doc == "" || strings.Contains(f.Doc, "\n") || f.Returns == "" {
					t.Errorf("%s:%s: needs a one-line doc and a return type", c.Name, f.Name)
				}
			}
		}
	}
}

func TestDialogCaseOptions(t *testing.T) {
	h, err := New(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	L := h.L
	L.SetGlobal("probe", L.NewFunction(func(L *lua.LState) int {
		cs := h.dialogCases(L, L.CheckTable(1))
		L.Push(lua.LString(strings.Join([]string{cs[0].Pattern, cs[0].Send, boolStr(cs[0].Line), boolStr(cs[1].Secret), boolStr(cs[2].OK), cs[3].Fail}, "|")))
		return 1
	}))
	if err := L.DoString(`r = probe{ {"login:", send="root"}, {"Password:", send="pw", secret=true}, {"# $", ok=true}, {"incorrect", fail="bad password"} }`); err != nil {
		t.Fatal(err)
	}
	if got := L.GetGlobal("r").String(); got != "login:|root|true|true|true|bad password" {
		t.Fatalf("got %q", got)
	}
	if err := L.DoString(`local ok, e = pcall(probe, { {"x", sned="typo"} }); msg = e.message`); err != nil {
		t.Fatal(err)
	}
	if msg := L.GetGlobal("msg").String(); !strings.Contains(msg, `unknown option "sned"`) {
		t.Fatalf("typo not caught: %q", msg)
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestE2ELuaLoginRunDialog drives the serial shell from a script: login on
// the systemd lab, run, test, a timeout caught with pcall, then the
// poweroff confirmation answered with console:dialog.
func TestE2ELuaLoginRunDialog(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	testenv.Lab(t, "systemd")
	run := testenv.Run(t)
	start := time.Now()
	out, err := runLua(t, ctx, `
		local vm = qemu.start{lab = "systemd", memory = "1G", net = "none", append_extra = "lab.shutdown=confirm"}
		local sh = vm:login{user = "root", password = "", timeout = "4m"}
		local r = sh:run("echo hello; (exit 3)")
		print(string.format("%q %d", r.output, r.code))
		print(sh:test("test -d /etc"), sh:test("test -d /nope"), sh.user)
		local ok, e = pcall(sh.run, sh, "echo partial; sleep 100", {timeout = 3})
		print(ok, e.kind, e.output, e.recovered)
		print(sh:run("id -un").output)
		vm.console:sendline("poweroff")
		local d = vm.console:dialog{
			{"Really power off\\? \\[y/N\\]", send = "y"},
			{"aborted", fail = "poweroff aborted"},
			{"reboot: Power down", ok = true},
			timeout = "2m",
		}
		print(d.index, d.text)
		print(vm:wait{timeout = "1m"}.reason)
	`, nil, Options{Run: run})
	if err != nil {
		t.Fatalf("%v\noutput so far:\n%s", err, out)
	}
	want := "\"hello\\n\" 3\ntrue\tfalse\troot\nfalse\ttimeout\tpartial\n\ttrue\nroot\n\n3\treboot: Power down\nguest-shutdown\n"
	if out != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	t.Logf("lua e2e took %.1fs", time.Since(start).Seconds())
}
