package luahost

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"
)

// TestE2EScreenGRUBRescue: Debian's grub-rescue-cdrom.iso under BIOS prints
// nothing on the serial console; from Lua its menu is read exactly from the
// VGA text screen, `c` opens GRUB's command line, `echo hello` is typed and
// read back, and a wait for what never shows fails with the screen's text.
func TestE2EScreenGRUBRescue(t *testing.T) {
	testenv.RequireQEMU(t)
	iso := "/usr/lib/grub-rescue/grub-rescue-cdrom.iso"
	testenv.RequireTool(t, "grub-mkrescue") // the grub-rescue-pc package's neighbours; the ISO is checked below
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := runLua(t, ctx, `
		local vm = qemu.start{ name = "rescue", iso = args.iso, boot = "d", memory = "256M", net = "none" }
		local m = vm.screen:expect("Change the colors", { timeout = "60s" })
		local s = vm.screen:text()
		print(s.mode, s.cols, s.rows, m.line > 1, s.text:find("GNU GRUB", 1, true) ~= nil and s.text:find("Microsoft Windows", 1, true) ~= nil)
		vm:key("c")
		vm.screen:expect("grub>", { timeout = "30s" })
		vm:type("echo hello\n")
		local h = vm.screen:expect({ re = "^hello$" }, { timeout = "30s" })
		print(h.text, h.index, h.shot ~= nil)
		local ok, e = pcall(vm.screen.expect, vm.screen, "never shown", { timeout = "1s" })
		print(ok, e.kind, (e.screen or ""):find("grub>", 1, true) ~= nil, e.shot ~= nil)
		print(#vm.console:tail(5))
		vm:quit()
	`, nil, Options{Run: testenv.Run(t), Args: map[string]string{"iso": iso}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "text\t80\t25\ttrue\ttrue\nhello\t1\ttrue\nfalse\ttimeout\ttrue\ttrue\n0\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, strings.TrimSpace(want))
	}
}
