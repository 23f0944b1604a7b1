package netboot

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// link is one TFTP transfer's path to its client: what it sends goes to
// the client, what it receives came from the client (the transfer ID of
// RFC 1350: other sources never reach it).
type link interface {
	send(pkt []byte) error
	// recv waits up to timeout (a socket: rounded up to timeoutStep) for
	// the next datagram; errLinkTimeout when none came, errLinkClosed
	// after interrupt.
	recv(buf []byte, timeout time.Duration) (int, error)
	// interrupt ends a recv in progress and every later one.
	interrupt()
	close()
}

var (
	errLinkTimeout = errors.New("timeout")
	errLinkClosed  = errors.New("link closed")
)

// sockLink is a UDP socket of its own, bound to the server's address on an
// ephemeral port and connected to the client, used with blocking system
// calls outside Go's network poller. A transfer is lock-step (a block, its
// ACK): every packet through the poller costs an epoll wake-up and a
// goroutine hand-off on top of the system call, about as much as the
// packet itself on loopback. Here a block costs a send(2) and a recv(2)
// that sleeps in the kernel until the ACK is there.
type sockLink struct {
	fd      int
	timeout time.Duration // SO_RCVTIMEO as set
	spin    bool          // poll for the next answer before sleeping
	misses  int           // polls in a row that ended asleep

	mu      sync.Mutex
	stopped bool // interrupted: reads end
	closed  bool // fd is closed (a number the kernel may hand out again)
}

// newSockLink opens the transfer's socket from local (the server's
// address) to client.
func newSockLink(local, client *net.UDPAddr) (*sockLink, error) {
	family, la, ca := unix.AF_INET, sockaddr(local), sockaddr(client)
	if local.IP.To4() == nil {
		family = unix.AF_INET6
	}
	if la == nil || ca == nil || (client.IP.To4() == nil) != (family == unix.AF_INET6) {
		return nil, &net.AddrError{Err: "address family mismatch", Addr: client.String()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, la); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	if err := unix.Connect(fd, ca); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	return &sockLink{fd: fd}, nil
}

// sockaddr converts a UDP address for bind and connect (port 0 binds an
// ephemeral port).
func sockaddr(a *net.UDPAddr) unix.Sockaddr {
	if ip4 := a.IP.To4(); ip4 != nil {
		sa := &unix.SockaddrInet4{Port: a.Port}
		copy(sa.Addr[:], ip4)
		return sa
	}
	if ip6 := a.IP.To16(); ip6 != nil {
		sa := &unix.SockaddrInet6{Port: a.Port}
		copy(sa.Addr[:], ip6)
		if a.Zone != "" {
			if ifi, err := net.InterfaceByName(a.Zone); err == nil {
				sa.ZoneId = uint32(ifi.Index)
			}
		}
		return sa
	}
	return nil
}

func (l *sockLink) send(pkt []byte) error {
	for {
		_, err := unix.Write(l.fd, pkt)
		if !errors.Is(err, unix.EINTR) {
			if err != nil {
				return os.NewSyscallError("send", err)
			}
			return nil
		}
	}
}

func (l *sockLink) recv(buf []byte, timeout time.Duration) (int, error) {
	if err := l.setTimeout(timeout); err != nil {
		return 0, err
	}
	start := time.Now()
	if l.spin {
		if n, ok := l.poll(buf, start.Add(spinLimit)); ok {
			l.misses = 0
			return n, nil
		}
		// The client was slower this time; a few times in a row and
		// the link sleeps again.
		if l.misses++; l.misses >= spinMisses {
			l.spin = false
		}
	}
	n, err := l.wait(buf)
	if err == nil && !l.spin && canSpin && time.Since(start) < 2*spinLimit {
		// An answer this quick (a wake-up included) will likely come
		// as quick again: wait for the next one awake.
		l.spin, l.misses = true, 0
	}
	return n, err
}

// Spinning for an answer. A lock-step transfer to a client on this host
// (curl, a TFTP client in a container) gets each ACK some 30 µs after its
// block; a thread asleep in recv(2) needs a wake-up, an inter-processor
// interrupt on another core, for each of them. Measured with curl at
// blksize 1468 against tftpd-hpa, alternating, medians of 4 pairs: 1.06×
// its rate asleep, 1.47× polling for up to 30 µs first. A link starts to
// poll (for up to spinLimit) after an answer that came within twice that,
// wake-up included, and goes back to sleeping after spinMisses polls in a
// row ran out: a guest behind QEMU (hundreds of µs per ACK under TCG)
// never makes it spin. Never on a machine with one CPU, where the polling
// would hold off the client.
const (
	spinLimit  = 50 * time.Microsecond
	spinMisses = 4
)

var canSpin = runtime.NumCPU() > 1

// timeoutStep is the granularity of a link's receive timeout.
const timeoutStep = 10 * time.Millisecond

// poll reads without blocking until a datagram is there or until end.
func (l *sockLink) poll(buf []byte, end time.Time) (int, bool) {
	for {
		n, _, err := unix.Recvfrom(l.fd, buf, unix.MSG_DONTWAIT)
		if err == nil && n > 0 {
			return n, true
		}
		if err == nil {
			return 0, false // empty, or shut down (interrupt): wait tells
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) || !time.Now().Before(end) {
			return 0, false
		}
	}
}

// wait blocks in recv(2) until a datagram, the timeout or an interrupt.
func (l *sockLink) wait(buf []byte) (int, error) {
	for {
		n, err := unix.Read(l.fd, buf)
		l.mu.Lock()
		stopped := l.stopped
		l.mu.Unlock()
		switch {
		case stopped:
			return 0, errLinkClosed
		case err == nil:
			return n, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return 0, errLinkTimeout
		case errors.Is(err, unix.ECONNREFUSED):
			// An ICMP port unreachable for an earlier send: the client's
			// socket is gone. Keep listening until the timeout says so.
			continue
		}
		return 0, os.NewSyscallError("recv", err)
	}
}

// setTimeout sets SO_RCVTIMEO when it changes (one system call per
// transfer, not per block).
func (l *sockLink) setTimeout(d time.Duration) error {
	// Rounded up: a wait for the rest of a timeout asks for a little less
	// each time, and a setsockopt(2) per block would cost as much as the
	// block's recv. A wait may end up to timeoutStep late.
	d = (max(d, time.Millisecond) + timeoutStep - 1) / timeoutStep * timeoutStep
	if d == l.timeout {
		return nil
	}
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(l.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	l.timeout = d
	return nil
}

// interrupt wakes a recv sleeping in the kernel: shutdown(2) of a
// connected UDP socket's receiving side ends its blocked reads with end of
// file (sending still works, for a last ERROR).
func (l *sockLink) interrupt() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped && !l.closed {
		l.stopped = true
		_ = unix.Shutdown(l.fd, unix.SHUT_RD)
	}
}

func (l *sockLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		unix.Close(l.fd)
	}
}

// portLink is a transfer on the server's one port (single-port mode, for a
// conn that is not the OS's, like a gVisor netstack endpoint): the front
// end hands it the client's datagrams and it answers through the shared
// conn.
type portLink struct {
	conn   net.PacketConn
	client net.Addr
	in     chan []byte
	stop   chan struct{}
	once   sync.Once
}

// portLinkQueue is how many datagrams of one client may wait for its
// transfer; more are dropped, as a full socket buffer would.
const portLinkQueue = 64

func newPortLink(conn net.PacketConn, client net.Addr) *portLink {
	return &portLink{conn: conn, client: client, in: make(chan []byte, portLinkQueue), stop: make(chan struct{})}
}

// deliver queues a datagram from the client (the front end's loop).
func (l *portLink) deliver(pkt []byte) {
	select {
	case l.in <- append([]byte(nil), pkt...):
	default:
	}
}

func (l *portLink) send(pkt []byte) error {
	_, err := l.conn.WriteTo(pkt, l.client)
	return err
}

func (l *portLink) recv(buf []byte, timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case pkt := <-l.in:
		return copy(buf, pkt), nil
	case <-t.C:
		return 0, errLinkTimeout
	case <-l.stop:
		return 0, errLinkClosed
	}
}

func (l *portLink) interrupt() { l.once.Do(func() { close(l.stop) }) }
func (l *portLink) close()     {}
