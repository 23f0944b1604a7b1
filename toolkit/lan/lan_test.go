package lan

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

func newTestLAN(t *testing.T, cfg Config) (*LAN, *journal.Run) {
	t.Helper()
	run, err := journal.New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run.Close() })
	cfg.Run = run
	l, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, run
}

func types(evs []Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Dir+":"+e.Type)
	}
	return strings.Join(s, " ")
}

func TestDHCPExchangeLoggedInOrder(t *testing.T) {
	l, run := newTestLAN(t, Config{Name: "t1", DHCP: true, NAT: true})
	ctx := testCtx(t, 20*time.Second)
	n := attachFake(t, l, "vm1", "52:54:00:00:00:01")
	offer, ack := n.lease(ctx, "guest1")
	if ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("got %s, want ACK", ack.MessageType())
	}
	if !offer.YourIPAddr.Equal(ack.YourIPAddr) || !ack.YourIPAddr.Equal(net.IPv4(10, 0, 3, 100)) {
		t.Fatalf("offer %s ack %s, want 10.0.3.100", offer.YourIPAddr, ack.YourIPAddr)
	}
	if r := ack.Router(); len(r) != 1 || !r[0].Equal(net.IPv4(10, 0, 3, 1)) {
		t.Errorf("router option %v", r)
	}
	if d := ack.DNS(); len(d) != 1 || !d[0].Equal(net.IPv4(10, 0, 3, 1)) {
		t.Errorf("dns option %v", d)
	}
	lease, err := l.DHCP().WaitLease(ctx, "52:54:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	if lease.IP.String() != "10.0.3.100" || lease.Hostname != "guest1" {
		t.Fatalf("lease %+v", lease)
	}
	if got := types(l.DHCP().Events("52:54:00:00:00:01")); got != "in:DISCOVER out:OFFER in:REQUEST out:ACK" {
		t.Fatalf("events %q", got)
	}
	evs := l.DHCP().Events("")
	if evs[1].Offered != "10.0.3.100" || evs[2].Requested != "10.0.3.100" || evs[0].Hostname != "guest1" || evs[0].XID == "" {
		t.Fatalf("event fields: %+v", evs)
	}
	t.Logf("DISCOVER→ACK %v (in process)", evs[3].At.Sub(evs[0].At))
	log, _ := os.ReadFile(run.Path("t1.dhcp.log"))
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "DISCOVER") || !strings.Contains(lines[3], "ACK") || !strings.Contains(lines[3], "offered=10.0.3.100") {
		t.Fatalf("dhcp log:\n%s", log)
	}
	tl, _ := os.ReadFile(run.Path(journal.TimelineFile))
	if !bytes.Contains(tl, []byte(`"source":"lan:t1","kind":"dhcp"`)) {
		t.Fatalf("timeline has no dhcp events:\n%s", tl)
	}
	if ls := l.DHCP().Leases(); len(ls) != 1 || ls[0].MAC != "52:54:00:00:00:01" {
		t.Fatalf("leases %+v", ls)
	}
}

func TestPauseResume(t *testing.T) {
	l, _ := newTestLAN(t, Config{Name: "t2", DHCP: true})
	ctx := testCtx(t, 20*time.Second)
	mac := "52:54:00:00:00:02"
	n := attachFake(t, l, "vm", mac)
	l.DHCP().Pause()
	disc, _ := dhcpv4.NewDiscovery(n.mac)
	n.sendDHCP(disc)
	waitFor(t, ctx, func() bool { return len(l.DHCP().Events(mac)) == 1 })
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := l.DHCP().WaitLease(short, mac)
	cancel()
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "DISCOVER only") || !strings.Contains(err.Error(), "paused") {
		t.Fatalf("paused: %v", err)
	}
	l.DHCP().Resume()
	offer, ack := n.lease(ctx, "")
	// The first OFFER the NIC saw answers the second DISCOVER: the first
	// was never answered.
	if offer.TransactionID == disc.TransactionID || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("offer xid %s (paused xid %s), %s", offer.TransactionID, disc.TransactionID, ack.MessageType())
	}
	if got := types(l.DHCP().Events(mac)); got != "in:DISCOVER in:DISCOVER out:OFFER in:REQUEST out:ACK" {
		t.Fatalf("events %q", got)
	}
	if e := l.DHCP().Events(mac)[0]; !strings.Contains(e.Note, "paused") {
		t.Fatalf("first DISCOVER note %q", e.Note)
	}
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestNAKAndTimeoutReasons(t *testing.T) {
	l, _ := newTestLAN(t, Config{Name: "t3", DHCP: true})
	ctx := testCtx(t, 20*time.Second)
	mac := "52:54:00:00:00:03"
	n := attachFake(t, l, "vm", mac)
	if err := l.DHCP().NAK(mac); err != nil {
		t.Fatal(err)
	}
	_, nak := n.lease(ctx, "")
	if nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("got %s, want NAK", nak.MessageType())
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := l.DHCP().WaitLease(short, mac)
	cancel()
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "NAK") {
		t.Fatalf("nak: %v", err)
	}
	var ve *vmerr.Error
	if !errorsAs(err, &ve) || ve.Context["mac"] != mac || len(ve.Context["events"].([]string)) != 4 {
		t.Fatalf("context: %+v", ve)
	}
	l.DHCP().ClearNAK(mac)
	if _, ack := n.lease(ctx, ""); ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("after ClearNAK: %s", ack.MessageType())
	}

	// Nothing at all from a MAC.
	short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = l.DHCP().WaitLease(short, "52:54:00:00:00:99")
	cancel()
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "nothing was seen") {
		t.Fatalf("silent MAC: %v", err)
	}

	// An OFFER never requested.
	m2 := attachFake(t, l, "vm2", "52:54:00:00:00:04")
	disc, _ := dhcpv4.NewDiscovery(m2.mac)
	m2.sendDHCP(disc)
	if m2.reply(ctx, disc.TransactionID) == nil {
		t.Fatal("no offer")
	}
	short, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = l.DHCP().WaitLease(short, "52:54:00:00:00:04")
	cancel()
	if !strings.Contains(err.Error(), "OFFER not requested") {
		t.Fatalf("offer only: %v", err)
	}
}

func errorsAs(err error, target **vmerr.Error) bool {
	e, ok := err.(*vmerr.Error)
	if ok {
		*target = e
	}
	return ok
}

func TestStaticLeaseDelayAndBoot(t *testing.T) {
	mac := "52:54:00:00:00:05"
	l, _ := newTestLAN(t, Config{Name: "t4", DHCP: true, Static: map[string]string{"52:54:00:00:00:05": "10.0.3.7"}})
	ctx := testCtx(t, 20*time.Second)
	l.DHCP().Delay(100 * time.Millisecond)
	l.DHCP().SetBoot(nil, "pxelinux.0")
	n := attachFake(t, l, "vm", mac)
	offer, ack := n.lease(ctx, "")
	if !ack.YourIPAddr.Equal(net.IPv4(10, 0, 3, 7)) || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("static: %s %s", ack.MessageType(), ack.YourIPAddr)
	}
	if offer.BootFileNameOption() != "pxelinux.0" || !offer.ServerIPAddr.Equal(net.IPv4(10, 0, 3, 1)) {
		t.Fatalf("PXE options: file %q next-server %s", offer.BootFileNameOption(), offer.ServerIPAddr)
	}
	if len(ack.Router()) != 0 {
		t.Fatalf("router without NAT: %v", ack.Router())
	}
	evs := l.DHCP().Events(mac)
	if d := evs[1].At.Sub(evs[0].At); d < 100*time.Millisecond {
		t.Fatalf("OFFER after %v, want ≥ 100ms delay", d)
	}
	if _, err := New(context.Background(), Config{Static: map[string]string{"52:54:00:00:00:05": "10.0.3.1"}}); !vmerr.Is(err, vmerr.Usage) {
		t.Fatalf("static gateway address: %v", err)
	}
}

func TestARPFilter(t *testing.T) {
	l, _ := newTestLAN(t, Config{Name: "t5", DHCP: true, NAT: true})
	ctx := testCtx(t, 20*time.Second)
	n := attachFake(t, l, "vm", "52:54:00:00:00:06")
	me := netip.MustParseAddr("10.0.3.50")
	// A probe for an address nobody has (a promiscuous stack would claim
	// it), then a request for the gateway, which must be answered.
	n.send(arpFrame(n.mac, 1, netip.IPv4Unspecified(), me))
	n.send(arpFrame(n.mac, 1, me, netip.MustParseAddr("10.0.3.77")))
	n.send(arpFrame(n.mac, 1, me, l.Gateway()))
	var replies []netip.Addr
	n.next(ctx, func(fr []byte) bool {
		if header.Ethernet(fr).Type() != header.ARPProtocolNumber {
			return false
		}
		a := header.ARP(fr[14:])
		if a.Op() != header.ARPReply {
			return false
		}
		ip := netip.AddrFrom4([4]byte(a.ProtocolAddressSender()))
		replies = append(replies, ip)
		return ip == l.Gateway()
	})
	if len(replies) != 1 || replies[0] != l.Gateway() {
		t.Fatalf("ARP replies %v, want only the gateway's", replies)
	}
	if l.FilteredARP() == 0 {
		t.Fatal("the filter dropped nothing: the test proves nothing (is the stack still promiscuous?)")
	}
}

func TestNATAndDial(t *testing.T) {
	// Host services on 127.0.0.1 only.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(append([]byte("echo:"), buf[:n]...), a)
		}
	}()
	l, _ := newTestLAN(t, Config{Name: "t6", NAT: true, DNSUpstream: uc.LocalAddr().String()})
	ctx := testCtx(t, 30*time.Second)
	g := newGuestStack(t, l, "g1", "52:54:00:00:00:07", netip.MustParseAddr("10.0.3.50"))
	gw := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(l.Gateway().As4())}

	// TCP: guest → gateway:PORT → host 127.0.0.1:PORT.
	gw.Port = uint16(ln.Addr().(*net.TCPAddr).Port)
	c, err := gonet.DialContextTCP(ctx, g.s, gw, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("tcp nat: %q %v", buf, err)
	}
	c.Close()

	// UDP and DNS: guest → gateway:PORT and gateway:53.
	for _, port := range []int{uc.LocalAddr().(*net.UDPAddr).Port, 53} {
		gw.Port = uint16(port)
		u, err := gonet.DialUDP(g.s, nil, &gw, ipv4.ProtocolNumber)
		if err != nil {
			t.Fatal(err)
		}
		u.Write([]byte("ping"))
		u.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 64)
		n, err := u.Read(b)
		if err != nil || string(b[:n]) != "echo:ping" {
			t.Fatalf("udp nat port %d: %q %v", port, b[:n], err)
		}
		u.Close()
	}

	// The host dials into the guest through the gateway's stack.
	gl, err := gonet.ListenTCP(g.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(g.ip.As4()), Port: 2222}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	go func() {
		c, err := gl.Accept()
		if err == nil {
			c.Write([]byte("SSH-2.0-fake\r\n"))
			c.Close()
		}
	}()
	hc, err := l.DialTCP(ctx, "10.0.3.50", 2222)
	if err != nil {
		t.Fatal(err)
	}
	banner, _ := io.ReadAll(hc)
	hc.Close()
	if string(banner) != "SSH-2.0-fake\r\n" {
		t.Fatalf("banner %q", banner)
	}

	// A server on the gateway address (what a netboot server does).
	hl, err := l.ListenTCP(0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		c, err := hl.Accept()
		if err == nil {
			c.Write([]byte("from-gateway"))
			c.Close()
		}
	}()
	gw.Port = uint16(hl.Addr().(*net.TCPAddr).Port)
	c2, err := gonet.DialContextTCP(ctx, g.s, gw, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c2)
	if string(got) != "from-gateway" {
		t.Fatalf("gateway listener: %q", got)
	}
	pc, err := l.ListenUDP(0)
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
}

func TestIsolatedWithoutNAT(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l, _ := newTestLAN(t, Config{Name: "t7"})
	ctx := testCtx(t, 20*time.Second)
	g := newGuestStack(t, l, "g", "52:54:00:00:00:08", netip.MustParseAddr("10.0.3.60"))
	addr := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(l.Gateway().As4()), Port: uint16(ln.Addr().(*net.TCPAddr).Port)}
	if c, err := gonet.DialContextTCP(ctx, g.s, addr, ipv4.ProtocolNumber); err == nil {
		c.Close()
		t.Fatal("NAT=false let a guest reach the host")
	}
}

func TestTwoGuestsSeeEachOther(t *testing.T) {
	l, _ := newTestLAN(t, Config{Name: "t8"})
	ctx := testCtx(t, 20*time.Second)
	a := newGuestStack(t, l, "a", "52:54:00:00:00:0a", netip.MustParseAddr("10.0.3.10"))
	b := newGuestStack(t, l, "b", "52:54:00:00:00:0b", netip.MustParseAddr("10.0.3.11"))
	echoServer(t, b)
	c, err := gonet.DialContextTCP(ctx, a.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(b.ip.As4()), Port: 7}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("x"), 200000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("vm-to-vm echo: %v", err)
	}
	// VM-to-VM frames bypass the gateway.
	for _, p := range l.Ports() {
		if p.Name() == "gateway" && p.Stats().Tx > 10 {
			t.Errorf("gateway got %d frames of a VM-to-VM flow", p.Stats().Tx)
		}
	}
}

func TestPcapReadableByTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatal("tshark is missing (apt-get install tshark)")
		}
		t.Skip("tshark is missing (apt-get install tshark)")
	}
	l, run := newTestLAN(t, Config{Name: "cap", DHCP: true, Pcap: true})
	ctx := testCtx(t, 20*time.Second)
	n := attachFake(t, l, "vm", "52:54:00:00:00:0c")
	n.lease(ctx, "pcap-guest")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, tshark, "-r", run.Path("cap.pcap"), "-Y", "dhcp", "-T", "fields", "-e", "dhcp.option.dhcp").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	if got := strings.Fields(string(out)); strings.Join(got, ",") != "1,2,3,5" {
		t.Fatalf("tshark saw DHCP message types %q, want 1,2,3,5 (DISCOVER OFFER REQUEST ACK)", out)
	}
}

func TestSlowPortDoesNotBlock(t *testing.T) {
	l, _ := newTestLAN(t, Config{Name: "t9"})
	// A port whose QEMU never reads.
	f, _, err := l.Attach("stuck", "52:54:00:00:00:0d")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := testCtx(t, 20*time.Second)
	a := attachFake(t, l, "a", "52:54:00:00:00:0e")
	b := attachFake(t, l, "b", "52:54:00:00:00:0f")
	// Broadcasts fill the stuck port's queue and socket buffer; b must get
	// every one of them regardless.
	const count = 5000
	fr := udpFrame(a.mac, bcastMAC, netip.MustParseAddr("10.0.3.20"), netip.MustParseAddr("10.0.3.255"), 9, 9, make([]byte, 1000))
	for i := 0; i < count; i += 50 {
		for j := 0; j < 50; j++ {
			a.send(fr)
		}
		for j := 0; j < 50; j++ {
			if b.next(ctx, func([]byte) bool { return true }) == nil {
				t.Fatalf("b got %d of %d broadcasts", i+j, count)
			}
		}
	}
	for _, p := range l.Ports() {
		if p.Name() == "stuck" && p.Stats().Dropped == 0 {
			t.Errorf("the stuck port dropped nothing")
		}
	}
}

// TestDescribeSeen: a timeout names where the client stopped, also after a
// NAK sent it back to DISCOVER (the fork whose client went quiet after its
// second OFFER was first reported as just "answered with NAK").
func TestDescribeSeen(t *testing.T) {
	in := func(typ, requested string) Event { return Event{Dir: "in", Type: typ, Requested: requested} }
	out := func(typ, offered, note string) Event {
		return Event{Dir: "out", Type: typ, Offered: offered, Note: note}
	}
	cases := []struct {
		name string
		evs  []Event
		want string
	}{
		{"nothing", nil, "nothing was seen from that MAC (no DISCOVER: the client never asked)"},
		{"discover only", []Event{in(Discover, ""), in(Discover, "")}, "DISCOVER only: 2 DISCOVER(s), none answered"},
		{"offer not requested", []Event{in(Discover, ""), out(Offer, "10.0.3.101", "")}, "OFFER not requested: 1 DISCOVER(s), 1 OFFER(s) of 10.0.3.101, but no REQUEST came back"},
		{"request not acked", []Event{in(Discover, ""), out(Offer, "10.0.3.101", ""), in(Request, "10.0.3.101")}, "1 REQUEST(s) (for 10.0.3.101), none acknowledged"},
		{"nak then silence", []Event{in(Request, "10.0.3.100"), out(Nak, "", "10.0.3.100 belongs to m")},
			"its REQUEST (for 10.0.3.100) was answered with NAK 1 time(s) (10.0.3.100 belongs to m); nothing came from it after the last NAK"},
		{"nak then offer not requested", []Event{in(Request, "10.0.3.100"), out(Nak, "", "taken"), in(Discover, "10.0.3.100"), out(Offer, "10.0.3.102", "")},
			"its REQUEST (for 10.0.3.100) was answered with NAK 1 time(s) (taken); after the last NAK: OFFER not requested: 1 DISCOVER(s), 1 OFFER(s) of 10.0.3.102, but no REQUEST came back"},
		{"two naks", []Event{in(Request, "10.0.3.100"), out(Nak, "", ""), in(Request, "10.0.3.105"), out(Nak, "", ""), in(Discover, "")},
			"its REQUEST (for 10.0.3.105) was answered with NAK 2 time(s); after the last NAK: DISCOVER only: 1 DISCOVER(s), none answered"},
	}
	for _, c := range cases {
		if got := describeSeen(c.evs, true); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
	if got := describeSeen(nil, false); !strings.Contains(got, "no DHCP server") {
		t.Errorf("dhcp off: %q", got)
	}
}

// TestPoolReclaimsLeftMACs: a /29 pool (.2–.6) full of leases; a newcomer
// gets nothing while every owner is on the switch, and the lowest address of
// an owner that left once some have — the OFFER says so and the old lease
// is gone. A MAC still sending on another port (a fork restored from a VM
// that quit) keeps its address; a static MAC's address is never reclaimed.
func TestPoolReclaimsLeftMACs(t *testing.T) {
	static := "52:54:00:00:09:99"
	l, _ := newTestLAN(t, Config{Name: "pool", Subnet: "10.0.9.0/29", DHCP: true, Static: map[string]string{static: "10.0.9.6"}})
	ctx := testCtx(t, 20*time.Second)
	var nics []*fakeNIC
	for i := 0; i < 4; i++ {
		n := attachFake(t, l, fmt.Sprintf("vm%d", i), fmt.Sprintf("52:54:00:00:09:%02x", i))
		if _, ack := n.lease(ctx, ""); ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("vm%d: %s", i, ack.MessageType())
		}
		nics = append(nics, n)
	}
	// The static MAC never attaches: its address stays its own.
	late := attachFake(t, l, "late", "52:54:00:00:09:10")
	disc, _ := dhcpv4.NewDiscovery(late.mac)
	late.sendDHCP(disc)
	// The refusal is logged when the DISCOVER is handled.
	refused := func() bool {
		evs := l.DHCP().Events("52:54:00:00:09:10")
		return len(evs) > 0 && strings.Contains(evs[len(evs)-1].Note, "pool exhausted")
	}
	eventually(t, "the DISCOVER to a full pool is refused", refused)
	if evs := l.DHCP().Events("52:54:00:00:09:10"); len(evs) != 1 {
		t.Fatalf("events of the DISCOVER to a full pool: %+v", evs)
	}

	// vm1 (.3) and vm2 (.4) leave, but a fork restored from vm1 still
	// sends from vm1's MAC on a port of its own: the newcomer gets vm2's .4.
	for _, i := range []int{2, 1} {
		nics[i].conn.Close()
	}
	eventually(t, "vm1 and vm2 leave the switch", func() bool {
		on := l.presentMACs()
		return !on["52:54:00:00:09:01"] && !on["52:54:00:00:09:02"]
	})
	fork := attachFake(t, l, "fork", "52:54:00:00:09:20")
	fork.send(arpFrame(nics[1].mac, 1, netip.MustParseAddr("10.0.9.3"), netip.MustParseAddr("10.0.9.1")))
	eventually(t, "the switch learns the fork's old MAC", func() bool { return l.presentMACs()["52:54:00:00:09:01"] })
	offer, ack := late.lease(ctx, "")
	if got := offer.YourIPAddr.String(); got != "10.0.9.4" || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("offer %s, %s", got, ack.MessageType())
	}
	var note string
	for _, e := range l.DHCP().Events("52:54:00:00:09:10") {
		if e.Type == Offer {
			note = e.Note
		}
	}
	if note != "pool full: reclaimed from 52:54:00:00:09:02, which left the LAN" {
		t.Fatalf("offer note %q", note)
	}
	held := map[string]string{}
	for _, le := range l.DHCP().Leases() {
		held[le.MAC] = le.IP.String()
	}
	if _, ok := held["52:54:00:00:09:02"]; ok || held["52:54:00:00:09:10"] != "10.0.9.4" || held["52:54:00:00:09:01"] != "10.0.9.3" {
		t.Fatalf("leases after the reclaim: %v", held)
	}
}

// routerSolicit builds an ICMPv6 Router Solicitation from mac and src.
func routerSolicit(mac net.HardwareAddr, src tcpip.Address) []byte {
	icmpLen := header.ICMPv6HeaderSize + header.NDPRSMinimumSize
	fr := make([]byte, header.EthernetMinimumSize+header.IPv6MinimumSize+icmpLen)
	allRouters := tcpip.AddrFrom16([16]byte{0xff, 0x02, 15: 0x02})
	header.Ethernet(fr).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(mac),
		DstAddr: header.EthernetAddressFromMulticastIPv6Address(allRouters), Type: header.IPv6ProtocolNumber})
	ip := header.IPv6(fr[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv6Fields{PayloadLength: uint16(icmpLen), TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit: 255, SrcAddr: src, DstAddr: allRouters})
	icmp := header.ICMPv6(ip.Payload())
	icmp.SetType(header.ICMPv6RouterSolicit)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: src, Dst: allRouters}))
	return fr
}

// TestRouterAdvert: a Router Solicitation gets a minimal advertisement from
// the gateway (lifetime 0, no M/O flag, no prefix, its link-layer address),
// unicast to a solicitor with a link-local address and to all nodes from
// the unspecified address; checksums verify. (It ends iPXE's ~13 s wait
// for IPv6 routers; measured 16 s → 50 ms from ACK to boot file.)
func TestRouterAdvert(t *testing.T) {
	l, _ := newTestLAN(t, Config{Name: "ra", DHCP: true})
	ctx := testCtx(t, 10*time.Second)
	n := attachFake(t, l, "vm", "52:54:00:00:0a:01")
	ll := header.LinkLocalAddr(tcpip.LinkAddress(n.mac))
	for _, c := range []struct {
		src    tcpip.Address
		dst    tcpip.Address
		dstMAC tcpip.LinkAddress
	}{
		{ll, ll, tcpip.LinkAddress(n.mac)},
		{header.IPv6Any, header.IPv6AllNodesMulticastAddress, header.EthernetAddressFromMulticastIPv6Address(header.IPv6AllNodesMulticastAddress)},
	} {
		n.send(routerSolicit(n.mac, c.src))
		fr := n.next(ctx, func(fr []byte) bool {
			_, isRS := routerSolicitation(fr)
			return !isRS && len(fr) > 54 && header.Ethernet(fr).Type() == header.IPv6ProtocolNumber
		})
		if fr == nil {
			t.Fatalf("from %s: no answer", c.src)
		}
		eth := header.Ethernet(fr)
		ip := header.IPv6(fr[header.EthernetMinimumSize:])
		icmp := header.ICMPv6(ip.Payload())
		gw := tcpip.LinkAddress(l.gwMAC)
		if eth.SourceAddress() != gw || eth.DestinationAddress() != c.dstMAC || ip.HopLimit() != 255 ||
			ip.SourceAddress() != header.LinkLocalAddr(gw) || ip.DestinationAddress() != c.dst {
			t.Fatalf("from %s: frame %s→%s, IPv6 %s→%s hop %d", c.src, eth.SourceAddress(), eth.DestinationAddress(),
				ip.SourceAddress(), ip.DestinationAddress(), ip.HopLimit())
		}
		if icmp.Type() != header.ICMPv6RouterAdvert ||
			header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()}) != icmp.Checksum() {
			t.Fatalf("from %s: type %d, checksum %#x", c.src, icmp.Type(), icmp.Checksum())
		}
		ra := header.NDPRouterAdvert(icmp.MessageBody())
		if ra.RouterLifetime() != 0 || ra.ManagedAddrConfFlag() || ra.OtherConfFlag() {
			t.Fatalf("from %s: lifetime %v, M %v, O %v", c.src, ra.RouterLifetime(), ra.ManagedAddrConfFlag(), ra.OtherConfFlag())
		}
		it, err := ra.Options().Iter(true)
		if err != nil {
			t.Fatal(err)
		}
		opt, done, err := it.Next()
		if err != nil || done {
			t.Fatalf("from %s: options: %v %v", c.src, done, err)
		}
		if sll, ok := opt.(header.NDPSourceLinkLayerAddressOption); !ok || sll.EthernetAddress() != gw {
			t.Fatalf("from %s: option %v", c.src, opt)
		}
		if _, done, _ := it.Next(); !done {
			t.Fatalf("from %s: more than one option", c.src)
		}
	}
}

// eventually polls cond for up to 10 s and fails the test naming what was
// awaited.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
	}
}

// TestFramesArriveIntact: the switch recycles frame buffers; a buffer freed
// while a port still queues its frame would show up here as a frame with
// another frame's bytes. Unicast and flooded frames, interleaved, each with
// its own payload, must reach their ports byte for byte and in order.
func TestFramesArriveIntact(t *testing.T) {
	l, _ := newTestLAN(t, Config{Name: "t10"})
	ctx := testCtx(t, 20*time.Second)
	a := attachFake(t, l, "a", "52:54:00:00:01:0a")
	b := attachFake(t, l, "b", "52:54:00:00:01:0b")
	c := attachFake(t, l, "c", "52:54:00:00:01:0c")
	// b and c announce themselves so that the switch learns their ports.
	src, bcast := netip.MustParseAddr("10.0.3.30"), netip.MustParseAddr("10.0.3.255")
	b.send(udpFrame(b.mac, bcastMAC, src, bcast, 1, 1, nil))
	c.send(udpFrame(c.mac, bcastMAC, src, bcast, 1, 1, nil))
	isTest := func(fr []byte) bool { return len(fr) > 42 && fr[36] == 0 && fr[37] == 2 } // UDP destination port 2
	frame := func(dst net.HardwareAddr, i int) []byte {
		payload := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 300+i%400)
		return udpFrame(a.mac, dst, src, bcast, 2, 2, payload)
	}
	const count = 2000
	var wantB, wantC [][]byte
	for i := range count {
		dst := b.mac
		if i%5 == 0 {
			dst = bcastMAC
		}
		fr := frame(dst, i)
		a.send(fr)
		wantB = append(wantB, fr)
		if i%5 == 0 {
			wantC = append(wantC, fr)
		}
	}
	for _, port := range []struct {
		n    *fakeNIC
		want [][]byte
	}{{b, wantB}, {c, wantC}} {
		for i, want := range port.want {
			got := port.n.next(ctx, isTest)
			if !bytes.Equal(got, want) {
				t.Fatalf("port %s, frame %d of %d: got %d bytes, want %d, or different bytes", port.n.mac, i, len(port.want), len(got), len(want))
			}
		}
	}
}

// TestGatewayBulkTCP: a bulk transfer from the gateway's stack to a guest
// and back (its segments leave the stack as GSO batches cut to the MSS, in
// pooled frames handed straight to the switch) arrives intact, in frames
// no larger than the MTU, and without a checksum error on either side (a
// pooled frame reused too early would show up as one).
func TestGatewayBulkTCP(t *testing.T) {
	l, _ := newTestLAN(t, Config{Name: "t11"})
	ctx := testCtx(t, 30*time.Second)
	g := newGuestStack(t, l, "g", "52:54:00:00:02:0a", netip.MustParseAddr("10.0.3.40"))
	echoServer(t, g)
	c, err := l.DialTCP(ctx, g.ip.String(), 7)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{1}).Read(msg)
	go c.Write(msg)
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(25 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo of 4 MiB through the gateway: %v", err)
	}
	if m := g.maxFrame.Load(); m > 1514 {
		t.Errorf("the guest got a %d-byte frame; the MTU allows 1514", m)
	}
	for name, s := range map[string]*stack.Stack{"gateway": l.stack, "guest": g.s} {
		if n := s.Stats().TCP.ChecksumErrors.Value(); n != 0 {
			t.Errorf("%s: %d TCP checksum errors", name, n)
		}
	}
}

// echoServer makes g echo one TCP connection on port 7, until the test ends.
func echoServer(t *testing.T, g *guestStack) {
	t.Helper()
	ln, err := gonet.ListenTCP(g.s, tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(g.ip.As4()), Port: 7}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(c, c)
			c.Close()
		}
	}()
}
