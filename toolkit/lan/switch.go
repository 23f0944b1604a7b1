package lan

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// Frames crossing a port: QEMU's stream/socket netdev framing is a 4-byte
// big-endian length, then the Ethernet frame (no FCS).
const (
	// maxFrame bounds one frame on the wire; QEMU's socket backend has no
	// offloads, so frames are at most 1514 bytes, but jumbo-ish frames from
	// a guest with a raised MTU are still carried.
	maxFrame = 65535
	// portQueue is the number of frames queued towards one port before the
	// switch drops frames for it: a slow VM never blocks the others. At
	// 1024 a 64 MB transfer from the gateway dropped ~250 frames under TCG.
	portQueue = 4096
)

// Port is one place on the LAN's switch: a QEMU NIC joined through a
// socketpair, or the gateway's network stack. Its methods are safe for
// concurrent use.
type Port struct {
	lan  *LAN
	id   int
	name string
	mac  net.HardwareAddr

	q    chan []byte
	conn net.Conn // nil for the gateway
	// deliver hands a frame to the gateway's stack (gateway port only).
	deliver func([]byte)

	rxFrames, txFrames, dropped atomic.Uint64

	once sync.Once
	done chan struct{}
}

// PortStats counts a port's frames.
type PortStats struct {
	// Rx counts frames the switch received from the port.
	Rx uint64
	// Tx counts frames the switch delivered to the port.
	Tx uint64
	// Dropped counts frames for the port dropped because its queue was full.
	Dropped uint64
}

// Name returns the port's name (the VM's name, or "gateway").
func (p *Port) Name() string { return p.name }

// MAC returns the MAC address the port was attached with.
func (p *Port) MAC() string { return p.mac.String() }

// Stats returns the port's frame counters.
func (p *Port) Stats() PortStats {
	return PortStats{Rx: p.rxFrames.Load(), Tx: p.txFrames.Load(), Dropped: p.dropped.Load()}
}

// Done is closed when the port has left the switch (QEMU closed its end, or
// the LAN closed).
func (p *Port) Done() <-chan struct{} { return p.done }

// Close detaches the port from the switch.
func (p *Port) Close() { p.close("closed") }

func (p *Port) close(why string) {
	p.once.Do(func() {
		close(p.done)
		if p.conn != nil {
			p.conn.Close()
		}
		p.lan.sw.remove(p)
		if p.conn != nil {
			st := p.Stats()
			p.lan.event("port-down", map[string]any{"port": p.name, "mac": p.mac.String(), "why": why,
				"rx": st.Rx, "tx": st.Tx, "dropped": st.Dropped})
		}
	})
}

// enqueue queues a frame for the port, dropping it when the queue is full.
// The port owns the frame from here on.
func (p *Port) enqueue(frame []byte) {
	select {
	case <-p.done:
		freeFrame(frame)
		return
	default:
	}
	select {
	case p.q <- frame:
	default:
		p.dropped.Add(1)
		freeFrame(frame)
	}
}

// readLoop reads frames from QEMU and gives them to the switch.
func (p *Port) readLoop() {
	hdr := make([]byte, 4)
	// Buffered: a burst of small frames (TCP ACKs) costs one read.
	r := bufio.NewReaderSize(p.conn, 64<<10)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			p.close(readWhy(err))
			return
		}
		n := binary.BigEndian.Uint32(hdr)
		if n > maxFrame {
			p.close("protocol error: frame length " + strconv.Itoa(int(n)))
			return
		}
		frame := newFrame(int(n))
		if _, err := io.ReadFull(r, frame); err != nil {
			p.close(readWhy(err))
			return
		}
		p.rxFrames.Add(1)
		p.lan.sw.ingress(p, frame)
	}
}

func readWhy(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "QEMU closed its end (exited)"
	}
	if errors.Is(err, net.ErrClosed) {
		return "closed"
	}
	return err.Error()
}

// writeBatch is how many bytes of queued frames writeLoop gathers into one
// write to QEMU: one syscall (and one wake-up of QEMU) per batch rather
// than per frame when frames arrive faster than QEMU reads them.
const writeBatch = 64 << 10

// writeLoop writes queued frames to QEMU (or to the gateway's stack).
func (p *Port) writeLoop() {
	var buf []byte
	for {
		select {
		case <-p.done:
			return
		case frame := <-p.q:
			if p.conn == nil {
				p.deliver(frame)
				freeFrame(frame)
				p.txFrames.Add(1)
				continue
			}
			buf = appendFrame(buf[:0], frame)
			n := uint64(1)
		gather:
			for len(buf) < writeBatch {
				select {
				case more := <-p.q:
					buf = appendFrame(buf, more)
					n++
				default:
					break gather
				}
			}
			if _, err := p.conn.Write(buf); err != nil {
				p.close("write: " + err.Error())
				return
			}
			p.txFrames.Add(n)
		}
	}
}

// appendFrame appends a frame in QEMU's stream framing (a 4-byte
// big-endian length, then the frame) and frees the frame.
func appendFrame(buf, frame []byte) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(frame)))
	buf = append(buf, frame...)
	freeFrame(frame)
	return buf
}

// lanSwitch is a learning Ethernet switch.
type lanSwitch struct {
	lan *LAN

	mu     sync.RWMutex
	ports  map[*Port]bool
	table  map[[6]byte]*Port
	gw     *Port
	nextID int
}

func newSwitch(l *LAN) *lanSwitch {
	return &lanSwitch{lan: l, ports: map[*Port]bool{}, table: map[[6]byte]*Port{}}
}

func (s *lanSwitch) add(p *Port) {
	s.mu.Lock()
	s.nextID++
	p.id = s.nextID
	s.ports[p] = true
	if len(p.mac) == 6 {
		s.table[[6]byte(p.mac)] = p
	}
	if p.conn == nil {
		s.gw = p
	}
	s.mu.Unlock()
}

func (s *lanSwitch) remove(p *Port) {
	s.mu.Lock()
	delete(s.ports, p)
	for k, v := range s.table {
		if v == p {
			delete(s.table, k)
		}
	}
	s.mu.Unlock()
}

// ingress forwards a frame that came in on port src. The switch owns the
// frame from here on.
func (s *lanSwitch) ingress(src *Port, frame []byte) {
	if len(frame) < 14 || (src.conn == nil && s.lan.filterGatewayFrame(frame)) {
		freeFrame(frame)
		return
	}
	s.lan.capture(frame)
	if src.conn != nil {
		s.lan.answerRouterSolicitation(src, frame)
	}
	var dst, from [6]byte
	copy(dst[:], frame[0:6])
	copy(from[:], frame[6:12])
	if from[0]&1 == 0 {
		s.mu.RLock()
		known := s.table[from]
		s.mu.RUnlock()
		if known != src {
			s.mu.Lock()
			if s.ports[src] {
				s.table[from] = src
			}
			s.mu.Unlock()
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if dst[0]&1 == 0 {
		if p := s.table[dst]; p != nil {
			if p != src {
				p.enqueue(frame)
			} else {
				freeFrame(frame)
			}
			return
		}
	}
	// Broadcast, multicast or unknown unicast: flood, a copy to each port.
	// The gateway's stack only gets broadcast and multicast (it is
	// promiscuous for NAT and would take other hosts' unicast frames as its
	// own).
	for p := range s.ports {
		if p == src || (p == s.gw && dst[0]&1 == 0) {
			continue
		}
		p.enqueue(copyFrame(frame))
	}
	freeFrame(frame)
}
