package lan

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// fakeNIC plays QEMU's side of a port: frames with a 4-byte big-endian
// length over the socketpair.
type fakeNIC struct {
	t    *testing.T
	mac  net.HardwareAddr
	conn net.Conn
	rx   chan []byte
}

func attachFake(t *testing.T, l *LAN, name, mac string) *fakeNIC {
	t.Helper()
	f, _, err := l.Attach(name, mac)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	hw, _ := net.ParseMAC(mac)
	n := &fakeNIC{t: t, mac: hw, conn: c, rx: make(chan []byte, 1024)}
	go func() {
		defer close(n.rx)
		hdr := make([]byte, 4)
		for {
			if _, err := io.ReadFull(c, hdr); err != nil {
				return
			}
			fr := make([]byte, binary.BigEndian.Uint32(hdr))
			if _, err := io.ReadFull(c, fr); err != nil {
				return
			}
			n.rx <- fr
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n
}

func (n *fakeNIC) send(frame []byte) {
	n.t.Helper()
	b := make([]byte, 4, 4+len(frame))
	binary.BigEndian.PutUint32(b, uint32(len(frame)))
	if _, err := n.conn.Write(append(b, frame...)); err != nil {
		n.t.Fatal(err)
	}
}

// next returns the next received frame that match accepts, or nil when
// ctx ends.
func (n *fakeNIC) next(ctx context.Context, match func([]byte) bool) []byte {
	for {
		select {
		case fr, ok := <-n.rx:
			if !ok {
				return nil
			}
			if match(fr) {
				return fr
			}
		case <-ctx.Done():
			return nil
		}
	}
}

var bcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 14+20+8+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(srcMAC), DstAddr: tcpip.LinkAddress(dstMAC), Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(b[14:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(20 + 8 + len(payload)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[34:])
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(8 + len(payload))})
	copy(b[42:], payload)
	return b
}

func arpFrame(srcMAC net.HardwareAddr, op uint16, senderIP, targetIP netip.Addr) []byte {
	b := make([]byte, 14+28)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(srcMAC), DstAddr: tcpip.LinkAddress(bcastMAC), Type: header.ARPProtocolNumber})
	a := header.ARP(b[14:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPOp(op))
	copy(a.HardwareAddressSender(), srcMAC)
	s, t := senderIP.As4(), targetIP.As4()
	copy(a.ProtocolAddressSender(), s[:])
	copy(a.ProtocolAddressTarget(), t[:])
	return b
}

// dhcpOf parses a frame as a DHCP message to the client port, or nil.
func dhcpOf(fr []byte) *dhcpv4.DHCPv4 {
	if len(fr) < 42 || header.Ethernet(fr).Type() != header.IPv4ProtocolNumber {
		return nil
	}
	ip := header.IPv4(fr[14:])
	if ip.Protocol() != uint8(header.UDPProtocolNumber) {
		return nil
	}
	u := header.UDP(fr[14+int(ip.HeaderLength()):])
	if u.DestinationPort() != 68 {
		return nil
	}
	m, err := dhcpv4.FromBytes(u.Payload())
	if err != nil {
		return nil
	}
	return m
}

func (n *fakeNIC) sendDHCP(m *dhcpv4.DHCPv4) {
	n.send(udpFrame(n.mac, bcastMAC, netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255}), 68, 67, m.ToBytes()))
}

// reply waits for a DHCP reply of the given xid.
func (n *fakeNIC) reply(ctx context.Context, xid dhcpv4.TransactionID) *dhcpv4.DHCPv4 {
	var got *dhcpv4.DHCPv4
	n.next(ctx, func(fr []byte) bool {
		m := dhcpOf(fr)
		if m != nil && m.TransactionID == xid {
			got = m
			return true
		}
		return false
	})
	return got
}

// lease runs DISCOVER/OFFER/REQUEST/ACK and returns the ACK (or the NAK).
func (n *fakeNIC) lease(ctx context.Context, hostname string) (offer, ack *dhcpv4.DHCPv4) {
	n.t.Helper()
	disc, err := dhcpv4.NewDiscovery(n.mac, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
	if err != nil {
		n.t.Fatal(err)
	}
	n.sendDHCP(disc)
	offer = n.reply(ctx, disc.TransactionID)
	if offer == nil {
		n.t.Fatal("no OFFER")
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptHostName(hostname)))
	if err != nil {
		n.t.Fatal(err)
	}
	n.sendDHCP(req)
	ack = n.reply(ctx, req.TransactionID)
	if ack == nil {
		n.t.Fatal("no ACK or NAK")
	}
	return offer, ack
}

// guestStack is a second gVisor stack behind a fake NIC: a full TCP/UDP
// guest for the NAT and DialTCP tests.
type guestStack struct {
	s  *stack.Stack
	ip netip.Addr
	// maxFrame is the largest frame the switch delivered to it.
	maxFrame atomic.Int64
}

func newGuestStack(t *testing.T, l *LAN, name, mac string, ip netip.Addr) *guestStack {
	t.Helper()
	n := attachFake(t, l, name, mac)
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	ch := channel.New(256, 1514, tcpip.LinkAddress(n.mac))
	if err := s.CreateNIC(1, ethernet.New(ch)); err != nil {
		t.Fatal(err)
	}
	s.AddProtocolAddress(1, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(ip.As4()), PrefixLen: l.prefix.Bits()}}, stack.AddressProperties{})
	sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4(l.prefix.Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(l.prefix.Bits(), 32)))
	s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: 1}, {Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(l.gw.As4()), NIC: 1}})
	g := &guestStack{s: s, ip: ip}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			pkt := ch.ReadContext(ctx)
			if pkt == nil {
				return
			}
			v := pkt.ToView()
			fr := append([]byte(nil), v.AsSlice()...)
			v.Release()
			pkt.DecRef()
			b := make([]byte, 4, 4+len(fr))
			binary.BigEndian.PutUint32(b, uint32(len(fr)))
			n.conn.Write(append(b, fr...))
		}
	}()
	go func() {
		for fr := range n.rx {
			if int64(len(fr)) > g.maxFrame.Load() {
				g.maxFrame.Store(int64(len(fr)))
			}
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(fr)})
			ch.InjectInbound(0, pkt)
			pkt.DecRef()
		}
	}()
	t.Cleanup(func() {
		cancel()
		n.conn.Close()
		s.Close()
		s.Wait()
	})
	return g
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
