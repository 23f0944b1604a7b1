package luahost

import (
	"context"
	"github.com/vmscript/vmscript/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
// waits for pxelinux to fetch its config over vmscript's TFTP. With
// ipxe_prompt = true, iPXE's Ctrl-B prompt is left to wait its 2 s.
func TestNetbootLuaQEMU(t *testing.T) {
	testenv.RequireQEMU(t)
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
	var answered atomic.Int32
	run.Subscribe(func(ev journal.Event) {
		if ev.Kind == "ipxe-prompt" {
			answered.Add(1)
		}
	})
	out, err := runLua(t, ctx, `
		local srv = netboot.serve{ root = args.root }
		local vm = qemu.start{ name = "luapxe", netboot = srv, bootfile = "pxelinux.0", ipxe_prompt = true }
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
	if n := answered.Load(); n != 0 {
		t.Errorf("ipxe_prompt = true, yet the prompt was answered (%d events)", n)
	}
	cmdline, _ := os.ReadFile(run.Path("luapxe.cmdline"))
	t.Logf("cmdline: %s", cmdline)
}

// TestNetbootLuaLAN: netboot.serve{lan = l} on a LAN's gateway, the
// Debian installer booted from it through iPXE: the LAN's DHCP hands iPXE
// the HTTP URL of boot.ipxe, the kernel and initrd come over HTTP, and the
// installer asks for a language.
func TestNetbootLuaLAN(t *testing.T) {
	testenv.RequireQEMU(t)
	const tree = "/usr/lib/debian-installer/images/12/amd64/text"
	if _, err := os.Stat(tree); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("package debian-installer-12-netboot-amd64: %v", err)
		}
		t.Skipf("package debian-installer-12-netboot-amd64: %v", err)
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	run, err := journal.New(filepath.Join(t.TempDir(), "run"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer run.Close()
	var mu sync.Mutex
	var answered, firstRequest int64 = -1, -1
	run.Subscribe(func(ev journal.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.Kind == "ipxe-prompt" && answered < 0:
			answered = ev.Mono
		case ev.Source == "netboot" && ev.Kind == "request" && firstRequest < 0:
			firstRequest = ev.Mono
		}
	})
	out, err := runLua(t, ctx, `
		-- The prompt is answered beside the script's waits: they still
		-- start at the console's first byte.
		local l = lan.new{ name = "pxe" }
		local ok, e = pcall(netboot.serve, { lan = l, root = args.tree, bootfile = "nope.0" })
		print(e.kind)
		ok, e = pcall(netboot.serve, { root = args.tree, bootfile = "pxelinux.0" })
		print(e.kind)
		local srv = netboot.serve{ lan = l, root = args.tree, bootfile = "boot.ipxe", files = {
			["boot.ipxe"] = "#!ipxe\nkernel debian-installer/amd64/linux initrd=initrd.gz vga=788 console=ttyS0,115200 --- quiet\ninitrd debian-installer/amd64/initrd.gz\nboot\n",
		} }
		print(srv.lan, srv.bootfile, srv.client_http_url)
		ok, e = pcall(qemu.start, { name = "wrong", netboot = srv })
		print(e.kind)
		local other = lan.new{ name = "other" }
		ok, e = pcall(qemu.start, { name = "wrong2", net = other, netboot = srv })
		print(e.kind, tostring(e):find("serves lan pxe", 1, true) ~= nil)
		local vm = qemu.start{ name = "di", net = l, netboot = srv, memory = "1G" }
		vm.console:expect("Press Ctrl-B for the iPXE command line", { timeout = "2m" })
		vm.console:expect("Select a language", { timeout = "210s" })
		local acks = {}
		for _, ev in ipairs(l:dhcp_events{ mac = vm.mac }) do
			if ev.type == "ACK" then acks[#acks + 1] = ev.bootfile end
		end
		print(acks[1])
		for _, r in ipairs(srv:requests{ outcome = "served" }) do print(r.proto, r.file) end
	`, nil, Options{Args: map[string]string{"tree": tree}, Run: run})
	if err != nil {
		t.Fatalf("%v\noutput:\n%s", err, out)
	}
	want := "notfound\nusage\npxe\tboot.ipxe\thttp://10.0.3.1:80\nusage\nusage\ttrue\n" +
		"http://10.0.3.1/boot.ipxe\n" +
		"http\tboot.ipxe\nhttp\tdebian-installer/amd64/linux\nhttp\tdebian-installer/amd64/initrd.gz\n"
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
	// iPXE's prompt answered at once: its first request follows within
	// well under the prompt's 2 s (0.07 s measured on the LAN).
	mu.Lock()
	defer mu.Unlock()
	if answered < 0 || firstRequest < answered || time.Duration(firstRequest-answered) > 1500*time.Millisecond {
		t.Errorf("iPXE prompt answered at %d ns, first request at %d ns", answered, firstRequest)
	}
}
