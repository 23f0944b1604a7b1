package netboot

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

// TestServeLANBoot: a server on a LAN listens on the gateway, and the boot
// file its DHCP names depends on the client (iPXE gets HTTP for a script).
func TestServeLANBoot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lan.New(ctx, lan.Config{Name: "t", Subnet: "10.0.7.0/24", DHCP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := ServeLAN(l, Options{Files: map[string]string{"a": "b"}, ClientHost: "1.2.3.4"}, "a"); err == nil {
		t.Fatal("ClientHost accepted")
	}
	if _, err := ServeLAN(l, Options{Files: map[string]string{"a": "b"}}, "missing"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing bootfile: %v", err)
	}
	if l.DHCP().Booting() {
		t.Fatal("a failed ServeLAN left its boot function")
	}
	s, err := ServeLAN(l, Options{Files: map[string]string{
		"pxelinux.0": "PXE", "boot.ipxe": "#!ipxe\nchain {{http}}/x\n"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.ClientHTTPURL() != "http://10.0.7.1:80" || s.ClientTFTPURL() != "tftp://10.0.7.1:69" {
		t.Fatalf("urls %s %s", s.ClientHTTPURL(), s.ClientTFTPURL())
	}
	if txt, _ := s.Overlay("boot.ipxe"); !strings.Contains(txt, "chain http://10.0.7.1:80/x") {
		t.Fatalf("overlay %q", txt)
	}
	pxe, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1})
	ipxe, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2},
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))))
	check := func(req *dhcpv4.DHCPv4, want string) {
		t.Helper()
		next, file := s.dhcpBoot(req)
		if !next.Equal(net.IPv4(10, 0, 7, 1)) || file != want {
			t.Errorf("boot %s %q, want 10.0.7.1 %q", next, file, want)
		}
	}
	check(pxe, "pxelinux.0")
	check(ipxe, "pxelinux.0")
	if err := s.SetLANBootfile("boot.ipxe"); err != nil {
		t.Fatal(err)
	}
	check(pxe, "boot.ipxe")
	check(ipxe, "http://10.0.7.1/boot.ipxe")
	if err := s.SetLANBootfile("http://example.org/x.ipxe"); err != nil {
		t.Fatal(err)
	}
	check(pxe, "http://example.org/x.ipxe")

	// ConfigureNetboot: a LAN VM gets boot order n and the serial BIOS, no
	// user-networking options; a user-networking VM is refused.
	cfg := qemu.Config{Name: "v", Dir: "/tmp/vms-v", NICs: []qemu.NIC{{Open: func(string, string) (f *os.File, err error) { return nil, nil }}},
		Devices: []qemu.Device{s.BootDevice("pxelinux.0")}}
	if argv, err := cfg.Args(); err != nil {
		if _, romErr := nicROM(); romErr == nil {
			t.Fatal(err)
		}
	} else if a := strings.Join(argv, " "); !strings.Contains(a, "-boot order=n") || !strings.Contains(a, "etc/sercon-port") ||
		strings.Contains(a, "bootfile=") || s.LANBootfile() != "pxelinux.0" {
		t.Fatalf("argv %s, bootfile %s", a, s.LANBootfile())
	}
	user := qemu.Config{Name: "u", Net: "user", Dir: "/tmp/vms-u", Devices: []qemu.Device{s.BootDevice("")}}
	if _, err := user.Args(); err == nil {
		t.Fatal("user networking accepted")
	}
	if _, err := ServeLAN(l, Options{Files: map[string]string{"a": "b"}}, "a"); err == nil {
		t.Fatal("second server accepted")
	}
	s.Close()
	if l.DHCP().Booting() {
		t.Fatal("Close left the boot function")
	}
	// The ports are free again.
	s2, err := ServeLAN(l, Options{Files: map[string]string{"a": "b"}}, "a")
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}
