package lan

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// NAT timeouts.
const (
	natDialTimeout = 10 * time.Second
	// natUDPIdle ends a UDP flow after this long without a packet.
	natUDPIdle = 60 * time.Second
	// natDNSIdle ends a DNS flow sooner: one query, one answer.
	natDNSIdle = 10 * time.Second
)

// hostResolver returns the first nameserver of /etc/resolv.conf as ip:53,
// or 127.0.0.1:53.
func hostResolver() string {
	f, err := os.Open("/etc/resolv.conf")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 2 && fs[0] == "nameserver" {
				if ip, err := netip.ParseAddr(fs[1]); err == nil && ip.Is4() {
					return net.JoinHostPort(ip.String(), "53")
				}
			}
		}
	}
	return "127.0.0.1:53"
}

// natTarget says where the host connects for a guest's flow to dst:port, or
// false when the flow is not NAT's: it must come from a guest address of
// the subnet, and go to the gateway (then to the host's 127.0.0.1, or its
// resolver for port 53) or outside the subnet. Broadcast and multicast —
// including the stack's own looped-back DHCP replies — never are.
func (l *LAN) natTarget(src, dst tcpip.Address, port uint16) (string, bool) {
	s, ok1 := netip.AddrFromSlice(src.AsSlice())
	d, ok2 := netip.AddrFromSlice(dst.AsSlice())
	if !ok1 || !ok2 || !s.Is4() || !d.Is4() {
		return "", false
	}
	if !l.prefix.Contains(s) || s == l.gw || s == l.prefix.Addr() || s == l.broadcast() {
		return "", false
	}
	if d.IsMulticast() || d.IsUnspecified() || d == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || d == l.broadcast() {
		return "", false
	}
	if d == l.gw {
		if port == 53 && l.upstream != "" {
			return l.upstream, true
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), true
	}
	if l.prefix.Contains(d) {
		return "", false
	}
	return net.JoinHostPort(d.String(), strconv.Itoa(int(port))), true
}

func (l *LAN) startNAT() {
	tcpFwd := tcp.NewForwarder(l.stack, 0, 512, func(r *tcp.ForwarderRequest) {
		id := r.ID()
		target, ok := l.natTarget(id.RemoteAddress, id.LocalAddress, id.LocalPort)
		if !ok {
			r.Complete(true)
			return
		}
		var d net.Dialer
		d.Timeout = natDialTimeout
		host, err := d.DialContext(l.ctx, "tcp", target)
		if err != nil {
			r.Complete(true)
			l.event("nat", map[string]any{"proto": "tcp", "from": id.RemoteAddress.String(), "to": target, "error": err.Error()})
			return
		}
		var wq waiter.Queue
		ep, terr := r.CreateEndpoint(&wq)
		if terr != nil {
			r.Complete(true)
			host.Close()
			return
		}
		r.Complete(false)
		guest := gonet.NewTCPConn(&wq, ep)
		l.event("nat", map[string]any{"proto": "tcp", "from": id.RemoteAddress.String() + ":" + strconv.Itoa(int(id.RemotePort)), "to": target})
		l.splice(guest, host)
	})
	l.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)

	udpFwd := udp.NewForwarder(l.stack, func(r *udp.ForwarderRequest) bool {
		id := r.ID()
		target, ok := l.natTarget(id.RemoteAddress, id.LocalAddress, id.LocalPort)
		if !ok {
			return false
		}
		raddr, err := net.ResolveUDPAddr("udp", target)
		if err != nil {
			return false
		}
		host, err := net.DialUDP("udp", nil, raddr)
		if err != nil {
			return false
		}
		var wq waiter.Queue
		ep, terr := r.CreateEndpoint(&wq)
		if terr != nil {
			host.Close()
			return false
		}
		guest := gonet.NewUDPConn(&wq, ep)
		idle := natUDPIdle
		if id.LocalPort == 53 {
			idle = natDNSIdle
		}
		l.event("nat", map[string]any{"proto": "udp", "from": id.RemoteAddress.String() + ":" + strconv.Itoa(int(id.RemotePort)), "to": target})
		go l.udpFlow(guest, host, idle)
		return true
	})
	l.stack.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)
}

// splice copies both ways until either side ends, then closes both.
func (l *LAN) splice(a, b net.Conn) {
	var once sync.Once
	closeBoth := func() { once.Do(func() { a.Close(); b.Close() }) }
	stop := make(chan struct{})
	go func() {
		select {
		case <-l.ctx.Done():
			closeBoth()
		case <-stop:
		}
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			closeBoth()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	close(stop)
	closeBoth()
}

// udpFlow relays datagrams between a guest's flow and the host's socket
// until idle passes without a packet either way.
func (l *LAN) udpFlow(guest *gonet.UDPConn, host *net.UDPConn, idle time.Duration) {
	var once sync.Once
	closeBoth := func() { once.Do(func() { guest.Close(); host.Close() }) }
	defer closeBoth()
	var mu sync.Mutex
	last := time.Now()
	touch := func() { mu.Lock(); last = time.Now(); mu.Unlock() }
	done := make(chan struct{}, 2)
	go func() {
		buf := make([]byte, 65535)
		for {
			n, err := host.Read(buf)
			if err != nil {
				done <- struct{}{}
				return
			}
			touch()
			if _, err := guest.Write(buf[:n]); err != nil {
				done <- struct{}{}
				return
			}
		}
	}()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, err := guest.Read(buf)
			if err != nil {
				done <- struct{}{}
				return
			}
			touch()
			if _, err := host.Write(buf[:n]); err != nil {
				done <- struct{}{}
				return
			}
		}
	}()
	t := time.NewTicker(idle / 4)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-l.ctx.Done():
			return
		case <-t.C:
			mu.Lock()
			quiet := time.Since(last)
			mu.Unlock()
			if quiet > idle {
				return
			}
		}
	}
}
