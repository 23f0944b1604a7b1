package control

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/machine"
)

// DefaultDialTimeout bounds an OpDial that sets no timeout: the wait for a
// LAN lease and the connection.
const DefaultDialTimeout = 30 * time.Second

// maxDialTimeout caps OpDial's timeout.
const maxDialTimeout = 10 * time.Minute

// dial serves OpDial: it connects to the guest's port by its route,
// answers, then splices the two connections.
func (s *Server) dial(c *net.UnixConn, br *bufio.Reader, req Request, peer Peer) {
	m, err := s.machine(req.VM)
	if err != nil {
		s.replyErr(c, err)
		return
	}
	timeout := DefaultDialTimeout
	if req.TimeoutS > 0 {
		timeout = min(time.Duration(req.TimeoutS*float64(time.Second)), maxDialTimeout)
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	g, err := m.DialTCP(ctx, machine.DialOptions{Port: req.Port, Via: req.Via})
	cancel()
	fields := map[string]any{"vm": m.Name(), "port": req.Port, "pid": peer.PID}
	if err != nil {
		fields["error"] = err.Error()
		s.event("dial", fields)
		s.replyErr(c, err)
		return
	}
	defer g.Close()
	addr := g.RemoteAddr().String()
	fields["addr"] = addr
	s.event("dial", fields)
	if !s.reply(c, Response{OK: true, VM: m.Name(), Addr: addr}) {
		return
	}
	up, down := splice(s.ctx, c, br, g)
	s.event("dial-end", map[string]any{"vm": m.Name(), "addr": addr, "pid": peer.PID, "bytes_to_guest": up, "bytes_from_guest": down})
}

// splice copies client (read through cr, which may hold bytes already
// buffered) to guest and guest to client until both directions end. The
// end of one direction half-closes the other side's writing, as TCP does;
// a failure, or ctx ending, closes both. It returns the bytes copied each
// way.
func splice(ctx context.Context, client net.Conn, cr io.Reader, guest net.Conn) (up, down int64) {
	closeBoth := func() {
		client.Close()
		guest.Close()
	}
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		var err error
		up, err = io.Copy(guest, cr)
		finish(guest, err, closeBoth)
	}()
	go func() {
		defer wg.Done()
		var err error
		down, err = io.Copy(client, guest)
		finish(client, err, closeBoth)
	}()
	wg.Wait()
	return up, down
}

// finish ends one direction of a splice: a clean end half-closes dst, a
// failure closes everything.
func finish(dst net.Conn, err error, closeBoth func()) {
	cw, ok := dst.(interface{ CloseWrite() error })
	if err != nil || !ok || cw.CloseWrite() != nil {
		closeBoth()
	}
}
