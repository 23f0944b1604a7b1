package netboot_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"

	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

// TestE2EPXEOverLAN: the Debian installer PXE-boots on a virtual LAN: the
// LAN's DHCP names pxelinux.0 on the gateway, iPXE (the NIC ROM) fetches it
// from vmscript's TFTP on the gateway's port 69, pxelinux fetches the
// kernel and initrd, and the installer asks for a language.
func TestE2EPXEOverLAN(t *testing.T) {
	needQEMU(t)
	if _, err := os.Stat(DebianNetboot); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("package debian-installer-12-netboot-amd64: %v", err)
		}
		t.Skipf("package debian-installer-12-netboot-amd64: %v", err)
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	run := testenv.Run(t)
	l, err := lan.New(ctx, lan.Config{Name: "pxe", DHCP: true, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	srv, err := netboot.ServeLAN(l, netboot.Options{Root: DebianNetboot, Run: run,
		Files: map[string]string{"pxelinux.cfg/default": DebianPXEConfig}}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if srv.ClientTFTPURL() != "tftp://10.0.3.1:69" || srv.LANBootfile() != "pxelinux.0" {
		t.Fatalf("client URL %s, bootfile %s", srv.ClientTFTPURL(), srv.LANBootfile())
	}
	if _, err := netboot.ServeLAN(l, netboot.Options{Files: map[string]string{"x": "y"}}, "x"); err == nil {
		t.Fatal("a second server on the same LAN was accepted")
	}
	cfg := qemu.Config{Name: "di-lan", Memory: "1G", Accel: "tcg", Run: run,
		NICs: []qemu.NIC{{Open: func(vm, mac string) (*os.File, error) {
			f, _, err := l.Attach(vm, mac)
			return f, err
		}}},
		Devices: []qemu.Device{srv.BootDevice("")}}
	probe := cfg
	probe.Dir = "/tmp/vms-probe"
	if argv, err := probe.Args(); err != nil {
		t.Fatal(err)
	} else if a := strings.Join(argv, " "); !strings.Contains(a, "-boot order=n") || !strings.Contains(a, "etc/sercon-port") || strings.Contains(a, "bootfile=") {
		t.Fatalf("configured: %s", a)
	}
	bad := qemu.Config{Name: "user", Dir: "/tmp/vms-user", Devices: []qemu.Device{srv.BootDevice("")}}
	if _, err := bad.Args(); err == nil || !strings.Contains(err.Error(), "net = lan") {
		t.Fatalf("user networking against a LAN server: %v", err)
	}
	start := time.Now()
	m, err := machine.Boot(ctx, machine.Spec{QEMU: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(5 * time.Second)
	if _, err := m.Console.Expect(ctx, []console.Pattern{{Text: "Select a language"}}, console.ExpectOptions{Timeout: 210 * time.Second}); err != nil {
		t.Fatalf("%v\nrequests:\n%s", err, summaries(srv))
	}
	t.Logf("installer over the LAN: \"Select a language\" after %.1fs\nrequests:\n%s", time.Since(start).Seconds(), summaries(srv))
	if err := inOrder(srv, "pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default", "debian-installer/amd64/linux", "debian-installer/amd64/initrd.gz"); err != nil {
		t.Error(err)
	}
	mac := m.VM.MAC()
	var acks []lan.Event
	for _, e := range l.DHCP().Events(mac) {
		if e.Type == lan.Ack {
			acks = append(acks, e)
		}
	}
	if len(acks) == 0 || acks[0].Bootfile != "pxelinux.0" {
		t.Errorf("ACKs %v: want the first with bootfile pxelinux.0", acks)
	}
	for _, r := range srv.Requests(netboot.Filter{Outcome: netboot.Served}) {
		if r.Proto != "tftp" || !strings.HasPrefix(r.Client, "10.0.3.") {
			t.Errorf("not TFTP from the LAN: %s", r.Summary())
		}
	}
}
