package qemu

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func TestNICArgs(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := Config{Name: "a", Dir: "/tmp/vms-a", Accel: "tcg",
		NICs:     []NIC{{File: f}, {User: true}, {File: f, MAC: "52:54:00:00:00:09", Model: "e1000"}},
		Forwards: []Forward{{GuestPort: 22}}}
	argv, err := cfg.Args()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(argv, " ")
	want := "-netdev socket,id=n1,fd=3 -device virtio-net-pci,netdev=n1,mac=" + DeriveMAC("a") +
		" -netdev user,id=n2,hostfwd=tcp:127.0.0.1:0-:22 -device virtio-net-pci,netdev=n2,mac=" + DeriveMAC("a/nic2") +
		" -netdev socket,id=n3,fd=4 -device e1000,netdev=n3,mac=52:54:00:00:00:09"
	if !strings.Contains(got, want) || strings.Contains(got, "id=n0") {
		t.Fatalf("args:\n%s\nwant to contain:\n%s", got, want)
	}
	// Net user stays first (n0), NICs follow.
	cfg = Config{Name: "b", Dir: "/tmp/vms-b", Accel: "tcg", NICs: []NIC{{File: f}}}
	cfg.Net = "user"
	argv, _ = cfg.Args()
	got = strings.Join(argv, " ")
	if !strings.Contains(got, "-netdev user,id=n0 -device virtio-net-pci,netdev=n0,mac="+DeriveMAC("b")+" -netdev socket,id=n1,fd=3 -device virtio-net-pci,netdev=n1,mac="+DeriveMAC("b/nic1")) {
		t.Fatalf("net user + NICs: %s", got)
	}
	// Net "none" with NICs: MAC is NICs[0]'s.
	c := (Config{Name: "c", MAC: "52:54:00:00:00:0c", NICs: []NIC{{File: f}}}).withDefaults()
	if c.Net != "none" || c.NICs[0].MAC != "52:54:00:00:00:0c" {
		t.Fatalf("defaults: net %q, nic mac %q", c.Net, c.NICs[0].MAC)
	}
	c = (Config{Name: "c", NICs: []NIC{{File: f, MAC: "52:54:00:00:00:0d"}}}).withDefaults()
	if c.MAC != "52:54:00:00:00:0d" {
		t.Fatalf("VM MAC %q, want the first NIC's", c.MAC)
	}

	bad := []struct {
		cfg    Config
		option string
	}{
		{Config{NICs: []NIC{{}}}, "nics[1]"},
		{Config{NICs: []NIC{{User: true, File: f}}}, "nics[1]"},
		{Config{NICs: []NIC{{User: true}}, Net: "user"}, "nics"},
		{Config{NICs: []NIC{{File: f, MAC: "53:00:00:00:00:01"}}}, "nics[1].mac"},
		{Config{NICs: []NIC{{File: f, MAC: "52:54:00:00:00:01"}, {File: f, MAC: "52:54:00:00:00:01"}}}, "nics[2].mac"},
		{Config{NICs: []NIC{{File: f, Model: "virtio net"}}}, "nics[1].model"},
		{Config{NICs: []NIC{{File: f}}, Forwards: []Forward{{GuestPort: 22}}}, "forwards"},
		{Config{MAC: "52:54:00:00:00:01", NICs: []NIC{{File: f, MAC: "52:54:00:00:00:02"}}}, "mac"},
	}
	for _, tt := range bad {
		err := tt.cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), "qemu: "+tt.option) || !vmerr.Is(err, vmerr.Usage) {
			t.Errorf("%+v: %v, want a usage error about %s", tt.cfg.NICs, err, tt.option)
		}
	}
	if err := (Config{NICs: []NIC{{File: f}}, Boot: "n"}).Validate(); err != nil {
		t.Errorf("netboot on a LAN NIC: %v", err)
	}
}

// TestE2ENICFrames boots firmware only (SeaBIOS, then the NIC's iPXE ROM
// with boot order n) on a socketpair NIC: its DHCPDISCOVER arrives with the
// stream framing and the NIC's MAC; set_link works on the netdev.
func TestE2ENICFrames(t *testing.T) {
	requireQEMU(t)
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours := os.NewFile(uintptr(fds[0]), "ours")
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var openedFor string
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	vm, err := Start(ctx, Config{Name: "nic", Accel: "tcg", Memory: "256M", Boot: "n", Run: newRun(t),
		NICs: []NIC{{Open: func(vm, mac string) (*os.File, error) {
			openedFor = vm + " " + mac
			return os.NewFile(uintptr(fds[1]), "theirs"), nil
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Stop(5 * time.Second)
	if openedFor != "nic "+DeriveMAC("nic") || vm.MAC() != DeriveMAC("nic") {
		t.Fatalf("Open called with %q, VM MAC %s", openedFor, vm.MAC())
	}
	if ids := vm.Netdevs(); len(ids) != 1 || ids[0] != "n1" {
		t.Fatalf("netdevs %v", ids)
	}
	if err := vm.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC(DeriveMAC("nic"))
	hdr := make([]byte, 4)
	conn.SetReadDeadline(time.Now().Add(50 * time.Second))
	for {
		if _, err := io.ReadFull(conn, hdr); err != nil {
			t.Fatalf("no DHCPDISCOVER from the NIC's ROM: %v", err)
		}
		fr := make([]byte, binary.BigEndian.Uint32(hdr))
		if _, err := io.ReadFull(conn, fr); err != nil {
			t.Fatal(err)
		}
		// Ethernet broadcast from our MAC, IPv4 UDP 68 → 67.
		if len(fr) > 42 && string(fr[6:12]) == string(mac) && fr[12] == 8 && fr[13] == 0 && fr[23] == 17 &&
			binary.BigEndian.Uint16(fr[34:]) == 68 && binary.BigEndian.Uint16(fr[36:]) == 67 {
			break
		}
	}
	if err := vm.SetLink(ctx, "", false); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetLink(ctx, "n1", true); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetLink(ctx, "n7", true); !vmerr.Is(err, vmerr.Usage) {
		t.Fatalf("unknown netdev: %v", err)
	}
}
