package luahost

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/journal"
)

func TestNetbootLua(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl missing")
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "kernel"), []byte("KERNEL"), 0o644); err != nil {
		t.Fatal(err)
	}
	run, err := journal.New(filepath.Join(t.TempDir(), "run"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer run.Close()
	out, err := runLua(t, nil, `
		local srv = netboot.serve{ root = args.root, files = { ["boot.ipxe"] = "#!ipxe\nkernel {{http}}/kernel\n" } }
		assert(srv.tftp_url:match("^tftp://127%.0%.0%.1:%d+$"), srv.tftp_url)
		assert(srv.http_url:match("^http://127%.0%.0%.1:%d+$"), srv.http_url)
		assert(srv.client_http_url:match("^http://10%.0%.2%.2:%d+$"), srv.client_http_url)
		local function fetch(url)
			local p = io.popen("curl -sS --path-as-is " .. url)
			local body = p:read("*a")
			p:close()
			return body
		end
		print(fetch(srv.http_url .. "/boot.ipxe"))
		print(fetch(srv.tftp_url .. "/kernel"))
		fetch(srv.http_url .. "/../etc/passwd")
		local r = srv:wait_file("kernel", { timeout = 5 })
		print(r.proto, r.file, r.bytes, r.outcome)
		local all = srv:requests()
		print(#all, all[1].file, all[3].outcome, all[3].reason ~= nil)
		print(#srv:requests{ file = "boot.ipxe" }, #srv:requests{ outcome = "refused" })
		local ok, err = pcall(srv.wait_file, srv, "initrd", { timeout = 0.2 })
		print(ok, err.kind, tostring(err):find("tftp read kernel", 1, true) ~= nil)
		local ok2, err2 = pcall(netboot.serve, { root = args.root, bogus = 1 })
		print(ok2, err2.kind)
		srv:close()
		srv:close()
	`, nil, Options{Args: map[string]string{"root": root}, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	want := []string{
		"#!ipxe",
		"kernel http://10.0.2.2:", // port varies
		"",
		"KERNEL",
		"tftp\tkernel\t6\tserved",
		"3\tboot.ipxe\trefused\ttrue",
		"1\t1",
		"false\ttimeout\ttrue",
		"false\tusage",
	}
	for i, w := range want {
		if i >= len(lines) || !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: got %q, want prefix %q\n%s", i+1, lines[min(i, len(lines)-1)], w, out)
		}
	}
	log, _ := os.ReadFile(run.Path("netboot.log"))
	if !strings.Contains(string(log), "'..' path component") {
		t.Errorf("netboot.log:\n%s", log)
	}
}

// TestNetbootLuaQEMU boots the systemd lab's netboot tree from a script:
// netboot.serve + qemu.start{netboot = srv, bootfile = "pxelinux.0"}, and
// waits for pxelinux to fetch its config over vmscript's TFTP.
func TestNetbootLuaQEMU(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := lab.Build(ctx, "systemd", lab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	run, err := journal.New(filepath.Join(t.TempDir(), "run"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer run.Close()
	out, err := runLua(t, ctx, `
		local srv = netboot.serve{ root = args.root }
		local vm = qemu.start{ name = "luapxe", netboot = srv, bootfile = "pxelinux.0" }
		vm.console:expect("iPXE", { timeout = "2m" })
		local r = srv:wait_file("pxelinux.cfg/default", { timeout = "3m" })
		print(r.proto, r.file, r.outcome)
		for _, q in ipairs(srv:requests{ outcome = "served" }) do print(q.file) end
		vm:kill()
		srv:close()
	`, nil, Options{Args: map[string]string{"root": img.Files["netboot"]}, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "tftp\tpxelinux.cfg/default\tserved\npxelinux.0\nldlinux.c32\npxelinux.cfg/default\n") {
		t.Errorf("output:\n%s", out)
	}
	cmdline, _ := os.ReadFile(run.Path("luapxe.cmdline"))
	t.Logf("cmdline: %s", cmdline)
}
