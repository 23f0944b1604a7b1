// Package lan is a rootless userspace Ethernet LAN that QEMU NICs join
// through a passed socketpair: a learning switch with a queue per port (a
// slow VM never blocks the others), a gateway with its own network stack
// (gVisor netstack) on the subnet's first address, a DHCP server whose every
// message is an event the script can see, NAT to the host's network for TCP,
// UDP and DNS, and a pcap of every frame.
//
//	l, err := lan.New(ctx, lan.Config{Name: "lan", Subnet: "10.0.3.0/24", DHCP: true, NAT: true, Run: run})
//	f, port, err := l.Attach("vm1", "52:54:00:12:34:56")   // f goes to QEMU: -netdev socket,fd=N
//	lease, err := l.DHCP().WaitLease(ctx, "52:54:00:12:34:56") // or a machine.NIC{LAN: l}
//
// No TAP, no bridge, no network namespace and no root are needed: frames
// travel over unix socketpairs (QEMU's stream framing, a 4-byte big-endian
// length before each frame) and the gateway's TCP/UDP endpoints are Go
// net.Conn values (ListenTCP, ListenUDP, DialTCP).
package lan

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DefaultSubnet is the subnet of a LAN whose Config.Subnet is empty.
const DefaultSubnet = "10.0.3.0/24"

// DefaultLeaseTime is the lease time the DHCP server hands out.
const DefaultLeaseTime = time.Hour

const nicID tcpip.NICID = 1

// Config describes a LAN.
type Config struct {
	// Name names the LAN in the timeline ("lan:NAME") and its files in the
	// run directory (NAME.dhcp.log, NAME.pcap). Default "lan".
	Name string
	// Subnet is an IPv4 prefix, default 10.0.3.0/24. The gateway (DHCP
	// server, DNS, TFTP/HTTP of a netboot server) is its first address.
	Subnet string
	// DHCP runs the DHCP server on the gateway.
	DHCP bool
	// NAT lets guests reach the host's network: TCP and UDP to addresses
	// outside the subnet are connected from the host; TCP and UDP to the
	// gateway address on a port nothing listens on reach the host's
	// 127.0.0.1 on that port (like 10.0.2.2 under user-mode networking); UDP
	// and TCP port 53 of the gateway go to the host's resolver. Without NAT
	// the LAN is isolated.
	NAT bool
	// Pcap writes every frame the switch forwards to NAME.pcap in the run
	// directory. It needs Run.
	Pcap bool
	// Static maps MAC addresses to fixed IPv4 addresses (inside the subnet,
	// not the gateway), outside the dynamic pool.
	Static map[string]string
	// DNS are the name servers the DHCP server advertises; default the
	// gateway when NAT is on, none otherwise.
	DNS []string
	// DNSUpstream is the resolver ("ip:port") the gateway forwards DNS to;
	// default the first nameserver of /etc/resolv.conf, port 53.
	DNSUpstream string
	// LeaseTime is the DHCP lease time; default DefaultLeaseTime.
	LeaseTime time.Duration
	// Run receives the LAN's events and files. It may be nil (then there
	// are no files and Pcap is refused).
	Run *journal.Run
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// LAN is one virtual LAN. Its methods are safe for concurrent use.
type LAN struct {
	name      string
	cfg       Config
	prefix    netip.Prefix
	gw        netip.Addr
	gwMAC     net.HardwareAddr
	run       *journal.Run
	ctx       context.Context
	cancel    context.CancelFunc
	stack     *stack.Stack
	ch        *gatewayLink
	sw        *lanSwitch
	dhcp      *DHCP
	pcap      *pcapWriter
	pcapPath  string
	upstream  string
	filtered  uint64
	closeOnce sync.Once
	wg        sync.WaitGroup
	mu        sync.Mutex
	closers   []func()
}

// New starts a LAN: the switch, the gateway's stack and, as configured, the
// DHCP server, NAT and the pcap writer. It runs until Close or until ctx is
// done. Errors have kind "usage" (bad configuration) or "io".
func New(ctx context.Context, cfg Config) (*LAN, error) {
	if cfg.Name == "" {
		cfg.Name = "lan"
	}
	if !nameRE.MatchString(cfg.Name) {
		return nil, usage("name", "%q: use letters, digits, '.', '_' and '-'", cfg.Name)
	}
	if cfg.Subnet == "" {
		cfg.Subnet = DefaultSubnet
	}
	prefix, err := netip.ParsePrefix(cfg.Subnet)
	if err != nil || !prefix.Addr().Is4() {
		return nil, usage("subnet", "%q is not an IPv4 prefix like 10.0.3.0/24", cfg.Subnet)
	}
	prefix = prefix.Masked()
	if prefix.Bits() < 8 || prefix.Bits() > 29 {
		return nil, usage("subnet", "%q: the prefix length must be 8 to 29", cfg.Subnet)
	}
	if cfg.Pcap && cfg.Run == nil {
		return nil, usage("pcap", "needs a run directory")
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = DefaultLeaseTime
	}
	l := &LAN{name: cfg.Name, cfg: cfg, prefix: prefix, gw: prefix.Addr().Next(), run: cfg.Run}
	h := sha256.Sum256([]byte("vmscript-lan-gateway/" + cfg.Name))
	l.gwMAC = net.HardwareAddr{0x52, 0x56, 0x00, h[0], h[1], h[2]}
	statics, err := l.parseStatic(cfg.Static)
	if err != nil {
		return nil, err
	}
	var dns []net.IP
	for _, d := range cfg.DNS {
		ip := net.ParseIP(d).To4()
		if ip == nil {
			return nil, usage("dns", "%q is not an IPv4 address", d)
		}
		dns = append(dns, ip)
	}
	if cfg.DNS == nil && cfg.NAT {
		dns = []net.IP{net.IP(l.gw.AsSlice())}
	}
	l.upstream = cfg.DNSUpstream
	if l.upstream == "" && cfg.NAT {
		l.upstream = hostResolver()
	}
	l.ctx, l.cancel = context.WithCancel(ctx)
	l.sw = newSwitch(l)

	if cfg.Pcap {
		l.pcapPath = cfg.Run.Path(cfg.Name + ".pcap")
		if l.pcap, err = newPcap(l.pcapPath); err != nil {
			l.cancel()
			return nil, vmerr.Wrap(vmerr.IO, err, "lan %s: pcap", cfg.Name)
		}
	}
	if err := l.startStack(); err != nil {
		l.Close()
		return nil, err
	}
	fields := map[string]any{"subnet": prefix.String(), "gateway": l.gw.String(), "gateway_mac": l.gwMAC.String(),
		"dhcp": cfg.DHCP, "nat": cfg.NAT, "pcap": cfg.Pcap}
	if l.pcapPath != "" {
		fields["pcap_file"] = cfg.Name + ".pcap"
	}
	if cfg.NAT {
		fields["dns_upstream"] = l.upstream
	}
	l.dhcp = newDHCP(l, statics, dns)
	if cfg.DHCP {
		if err := l.dhcp.start(); err != nil {
			l.Close()
			return nil, err
		}
		fields["dhcp_log"] = cfg.Name + ".dhcp.log"
		fields["pool"] = l.dhcp.poolFirst.String() + "-" + l.dhcp.poolLast.String()
	}
	l.event("start", fields)
	go func() {
		<-l.ctx.Done()
		l.Close()
	}()
	return l, nil
}

func usage(option, format string, a ...any) error {
	return vmerr.New(vmerr.Usage, "lan: %s: %s", option, fmt.Sprintf(format, a...)).With("option", option)
}

func (l *LAN) parseStatic(m map[string]string) (map[string]netip.Addr, error) {
	out := map[string]netip.Addr{}
	seen := map[netip.Addr]string{}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		mac, err := NormalizeMAC(k)
		if err != nil {
			return nil, usage("static", "%v", err)
		}
		ip, err := netip.ParseAddr(m[k])
		if err != nil || !ip.Is4() || !l.prefix.Contains(ip) || ip == l.gw || ip == l.prefix.Addr() || ip == l.broadcast() {
			return nil, usage("static", "%s: %q is not a host address of %s other than the gateway %s", mac, m[k], l.prefix, l.gw)
		}
		if other, dup := seen[ip]; dup {
			return nil, usage("static", "%s and %s both get %s", other, mac, ip)
		}
		seen[ip] = mac
		out[mac] = ip
	}
	return out, nil
}

// NormalizeMAC parses a MAC address and returns it lower-case with colons.
func NormalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%q is not a MAC address like 52:54:00:12:34:56", s)
	}
	return hw.String(), nil
}

func (l *LAN) broadcast() netip.Addr {
	a := l.prefix.Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= (1 << (32 - l.prefix.Bits())) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (l *LAN) startStack() error {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	l.stack = s
	// TCP tuned for bulk transfers to guests (SSH, HTTP of a netboot
	// server, DialTCP): SACK, and a send buffer large enough that the
	// window, not the buffer, limits a transfer.
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: 1 << 20, Max: 4 << 20})
	gw := &Port{lan: l, name: "gateway", mac: l.gwMAC, q: make(chan []byte, portQueue), done: make(chan struct{})}
	l.ch = newGatewayLink(1500+header.EthernetMinimumSize, tcpip.LinkAddress(l.gwMAC), func(frame []byte) {
		gw.rxFrames.Add(1)
		l.sw.ingress(gw, frame)
	})
	if err := s.CreateNIC(nicID, ethernet.New(l.ch)); err != nil {
		return vmerr.New(vmerr.Internal, "lan %s: gateway NIC: %s", l.name, err)
	}
	addr := tcpip.AddrFrom4(l.gw.As4())
	if err := s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: addr, PrefixLen: l.prefix.Bits()},
	}, stack.AddressProperties{}); err != nil {
		return vmerr.New(vmerr.Internal, "lan %s: gateway address: %s", l.name, err)
	}
	sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4(l.prefix.Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(l.prefix.Bits(), 32)))
	s.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: nicID}, {Destination: header.IPv4EmptySubnet, NIC: nicID}})
	if l.cfg.NAT {
		// Promiscuous: accept packets for any address (the NAT forwarders
		// see them); spoofing: answer from that address.
		s.SetPromiscuousMode(nicID, true)
		s.SetSpoofing(nicID, true)
		l.startNAT()
	}
	gw.deliver = func(frame []byte) {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
		l.ch.InjectInbound(0, pkt)
		pkt.DecRef()
	}
	l.sw.add(gw)
	l.wg.Add(1)
	go func() { defer l.wg.Done(); gw.writeLoop() }()
	l.onClose(func() { gw.close("LAN closed") })
	return nil
}

// filterGatewayFrame reports whether a frame the gateway's stack sent must
// not reach the LAN. In promiscuous mode (NAT) the stack answers ARP for
// every address, including a client's own probe or announcement, which makes
// a Linux guest decline its lease: only ARP replies for the gateway's own
// address pass.
func (l *LAN) filterGatewayFrame(frame []byte) bool {
	if len(frame) < 14+28 || frame[12] != 0x08 || frame[13] != 0x06 {
		return false
	}
	arpPkt := frame[14:]
	if arpPkt[6] != 0 || arpPkt[7] != 2 { // not a reply
		return false
	}
	sender := netip.AddrFrom4([4]byte(arpPkt[14:18]))
	if sender == l.gw {
		return false
	}
	l.mu.Lock()
	l.filtered++
	l.mu.Unlock()
	return true
}

// FilteredARP returns how many ARP replies of the gateway's stack for other
// addresses than its own the switch dropped.
func (l *LAN) FilteredARP() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.filtered
}

func (l *LAN) capture(frame []byte) {
	if l.pcap != nil {
		l.pcap.write(time.Now(), frame)
	}
}

func (l *LAN) event(kind string, fields map[string]any) {
	if l.run != nil {
		l.run.Event("lan:"+l.name, kind, fields)
	}
}

func (l *LAN) onClose(fn func()) {
	l.mu.Lock()
	l.closers = append(l.closers, fn)
	l.mu.Unlock()
}

// Name returns the LAN's name.
func (l *LAN) Name() string { return l.name }

// Subnet returns the LAN's prefix.
func (l *LAN) Subnet() netip.Prefix { return l.prefix }

// Gateway returns the gateway's address (the subnet's first address).
func (l *LAN) Gateway() netip.Addr { return l.gw }

// GatewayMAC returns the gateway's MAC address.
func (l *LAN) GatewayMAC() string { return l.gwMAC.String() }

// PcapPath returns the pcap file's path, "" without Pcap.
func (l *LAN) PcapPath() string { return l.pcapPath }

// DHCPLogPath returns the DHCP log's path, "" without DHCP or a run.
func (l *LAN) DHCPLogPath() string {
	if l.run == nil || !l.cfg.DHCP {
		return ""
	}
	return l.run.Path(l.name + ".dhcp.log")
}

// DHCP returns the DHCP server (its events, leases and fault injection). It
// is never nil; without Config.DHCP it answers nothing and records nothing.
func (l *LAN) DHCP() *DHCP { return l.dhcp }

// Attach adds a port for a QEMU NIC named name (the VM's name, for the
// timeline) with MAC address mac, and returns QEMU's end of the socketpair:
// pass it to QEMU (exec.Cmd.ExtraFiles) as `-netdev socket,id=ID,fd=N` or
// `-netdev stream,id=ID,addr.type=fd,addr.str=N`, then close it in this
// process, so that the port sees QEMU's exit. The port leaves the switch
// when QEMU's end is closed.
func (l *LAN) Attach(name, mac string) (*os.File, *Port, error) {
	if l.ctx.Err() != nil {
		return nil, nil, vmerr.New(vmerr.Usage, "lan %s is closed", l.name)
	}
	norm, err := NormalizeMAC(mac)
	if err != nil {
		return nil, nil, usage("mac", "%v", err)
	}
	hw, _ := net.ParseMAC(norm)
	if hw[0]&1 != 0 {
		return nil, nil, usage("mac", "%s is a multicast address", norm)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, vmerr.Wrap(vmerr.IO, err, "lan %s: socketpair", l.name)
	}
	ours := os.NewFile(uintptr(fds[0]), "lan-"+l.name+"-switch")
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		syscall.Close(fds[1])
		return nil, nil, vmerr.Wrap(vmerr.IO, err, "lan %s: socketpair", l.name)
	}
	theirs := os.NewFile(uintptr(fds[1]), "lan-"+l.name+"-"+name)
	p := &Port{lan: l, name: name, mac: hw, q: make(chan []byte, portQueue), conn: conn, done: make(chan struct{})}
	l.sw.add(p)
	l.wg.Add(2)
	go func() { defer l.wg.Done(); p.readLoop() }()
	go func() { defer l.wg.Done(); p.writeLoop() }()
	l.onClose(func() { p.close("LAN closed") })
	l.event("port-up", map[string]any{"port": name, "mac": norm})
	return theirs, p, nil
}

// presentMACs returns the MAC addresses on the switch: its ports' own and
// those learned from frames (a restored fork sends from the checkpoint's
// MAC until it is renewed). A port that leaves takes both with it.
func (l *LAN) presentMACs() map[string]bool {
	l.sw.mu.RLock()
	defer l.sw.mu.RUnlock()
	macs := make(map[string]bool, len(l.sw.table))
	for mac := range l.sw.table {
		macs[net.HardwareAddr(mac[:]).String()] = true
	}
	return macs
}

// Ports returns the ports on the switch, the gateway first.
func (l *LAN) Ports() []*Port {
	l.sw.mu.RLock()
	defer l.sw.mu.RUnlock()
	out := make([]*Port, 0, len(l.sw.ports))
	for p := range l.sw.ports {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (l *LAN) fullAddr(ip netip.Addr, port int) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(ip.As4()), Port: uint16(port)}
}

// ListenTCP listens on the gateway's address (port 0: an ephemeral port),
// for servers guests reach on the LAN (HTTP of a netboot server, …).
func (l *LAN) ListenTCP(port int) (net.Listener, error) {
	ln, err := gonet.ListenTCP(l.stack, l.fullAddr(l.gw, port), ipv4.ProtocolNumber)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "lan %s: listen tcp %s:%d", l.name, l.gw, port)
	}
	l.onClose(func() { ln.Close() })
	return ln, nil
}

// ListenUDP returns a packet conn bound to the gateway's address and port
// (TFTP of a netboot server, which serves such a conn in single-port
// mode).
func (l *LAN) ListenUDP(port int) (net.PacketConn, error) {
	addr := l.fullAddr(l.gw, port)
	c, err := gonet.DialUDP(l.stack, &addr, nil, ipv4.ProtocolNumber)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "lan %s: listen udp %s:%d", l.name, l.gw, port)
	}
	l.onClose(func() { c.Close() })
	return c, nil
}

// DialTCP connects from the gateway to a guest's address and port (SSH to a
// guest by its leased address, no port forward). It is bounded by ctx.
func (l *LAN) DialTCP(ctx context.Context, ip string, port int) (net.Conn, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil || !addr.Is4() {
		return nil, usage("ip", "%q is not an IPv4 address", ip)
	}
	c, err := gonet.DialContextTCP(ctx, l.stack, l.fullAddr(addr, port), ipv4.ProtocolNumber)
	if err != nil {
		kind := vmerr.Refused
		if ctx.Err() != nil {
			kind = vmerr.Timeout
		}
		return nil, vmerr.Wrap(kind, err, "lan %s: dial %s:%d", l.name, ip, port).With("lan", l.name)
	}
	return c, nil
}

// udpEndpoint makes a raw UDP endpoint on the gateway's stack (for the DHCP
// server: bound to 0.0.0.0:port on the gateway NIC, broadcast allowed).
func (l *LAN) udpEndpoint(port int) (net.PacketConn, error) {
	var wq waiter.Queue
	ep, terr := l.stack.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, fmt.Errorf("%s", terr)
	}
	ep.SocketOptions().SetBroadcast(true)
	if terr := ep.SocketOptions().SetBindToDevice(int32(nicID)); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("bind to device: %s", terr)
	}
	if terr := ep.Bind(tcpip.FullAddress{Port: uint16(port)}); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("bind 0.0.0.0:%d: %s", port, terr)
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// Close stops the LAN: ports, servers, the stack; the pcap is flushed.
func (l *LAN) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.cancel()
		l.mu.Lock()
		closers := l.closers
		l.closers = nil
		l.mu.Unlock()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		if l.dhcp != nil {
			l.dhcp.stop()
		}
		if l.stack != nil {
			l.stack.Close()
		}
		if l.ch != nil {
			l.ch.Close()
		}
		l.wg.Wait()
		if l.stack != nil {
			l.stack.Wait()
		}
		fields := map[string]any{"filtered_arp": l.FilteredARP()}
		if l.pcap != nil {
			l.pcap.mu.Lock()
			fields["pcap_frames"] = l.pcap.frames
			l.pcap.mu.Unlock()
			err = l.pcap.close()
		}
		l.event("stop", fields)
	})
	return err
}
