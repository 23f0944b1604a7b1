package control

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// requestTimeout bounds reading a request and writing its response.
const requestTimeout = 10 * time.Second

// timelineSource is the timeline source of the server's events.
const timelineSource = "control"

// Options configure Start.
type Options struct {
	// Dir is the control directory; "" means the first of Dirs().
	Dir string
	// Pool holds the run's guests (nil: none).
	Pool *machine.Pool
	// Run is the run directory and timeline (nil: none, for tests).
	Run *journal.Run
	// Script is the script's absolute path ("" for a bare REPL).
	Script string
	// Start is when the run started.
	Start time.Time
}

// Server serves one run's control socket: it answers OpInfo, attaches
// clients to consoles (OpConsole) and dials guests for them (OpDial), for
// the owner of the run alone.
type Server struct {
	reg   *Registration
	pool  *machine.Pool
	run   *journal.Run
	owner int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	state string
	conns map[net.Conn]struct{}
	done  bool
}

// Start registers the run (see Register) in opt.Dir, or in the first of
// Dirs() that works, and serves its socket until Close.
func Start(opt Options) (*Server, error) {
	dirs := Dirs()
	if opt.Dir != "" {
		dirs = []string{opt.Dir}
	}
	e := Entry{PID: pid(), Script: opt.Script, Start: opt.Start}
	if opt.Run != nil {
		e.RunDir = absPath(opt.Run.Dir())
	}
	var reg *Registration
	var err error
	for _, dir := range dirs {
		if reg, err = Register(dir, e); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{reg: reg, pool: opt.Pool, run: opt.Run, owner: owner(), ctx: ctx, cancel: cancel,
		state: "script", conns: map[net.Conn]struct{}{}}
	s.event("listen", map[string]any{"id": reg.Entry.ID, "socket": reg.Entry.Socket})
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Entry is the run's registry entry.
func (s *Server) Entry() Entry { return s.reg.Entry }

// SetState says what the run does now ("script", "repl", "ending"); OpInfo
// reports it.
func (s *Server) SetState(state string) {
	s.mu.Lock()
	s.state = state
	s.mu.Unlock()
}

// Close unregisters the run, stops listening, ends every attached console
// and dialled connection, and waits for their handlers.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	s.mu.Unlock()
	err := s.reg.Close()
	s.cancel()
	// Attached consoles see the cancel, tell their clients why and close;
	// whatever has not finished within closeGrace is cut off.
	handlers := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(handlers)
	}()
	select {
	case <-handlers:
		return err
	case <-time.After(closeGrace):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-handlers
	return err
}

// closeGrace is how long Close lets attached clients be told the run
// ended before it closes their connections.
const closeGrace = 2 * time.Second

// serve accepts connections until the listener closes.
func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.reg.Listener().AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and friends: do not spin
			continue
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go s.handle(c)
	}
}

// track records an open connection for Close; false once closing.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// handle checks the peer, reads its request and serves it.
func (s *Server) handle(c *net.UnixConn) {
	defer s.wg.Done()
	defer s.untrack(c)
	defer c.Close()
	peer, err := peerOf(c)
	if err == nil {
		err = checkPeer(peer, s.owner, s.reg.Entry.ID)
	}
	if err != nil {
		s.event("refused", map[string]any{"uid": peer.UID, "pid": peer.PID, "error": err.Error()})
		s.reply(c, Response{Error: err.Error(), Kind: vmerr.Refused})
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	br := bufio.NewReader(c)
	var req Request
	if err := readLine(br, &req); err != nil {
		if !errors.Is(err, io.EOF) { // a bare connect is a liveness probe
			s.reply(c, Response{Error: "bad request: " + err.Error(), Kind: vmerr.Protocol})
		}
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	switch req.Op {
	case OpInfo:
		s.reply(c, Response{OK: true, Run: s.info()})
	case OpConsole:
		s.console(c, br, req, peer)
	case OpDial:
		s.dial(c, br, req, peer)
	default:
		s.reply(c, Response{Error: "unknown request " + quote(req.Op) + "; this run serves info, console and dial", Kind: vmerr.Usage})
	}
}

// reply writes a response line, bounded by requestTimeout.
func (s *Server) reply(c net.Conn, r Response) bool {
	_ = c.SetWriteDeadline(time.Now().Add(requestTimeout))
	err := writeLine(c, r)
	_ = c.SetWriteDeadline(time.Time{})
	return err == nil
}

// replyErr answers with err's message and kind.
func (s *Server) replyErr(c net.Conn, err error) {
	kind := vmerr.KindOf(err)
	if kind == "" {
		kind = vmerr.Failed
	}
	msg := err.Error()
	var ve *vmerr.Error
	if errors.As(err, &ve) {
		msg = ve.Message // the console tail is for scripts, not here
	}
	s.reply(c, Response{Error: msg, Kind: kind})
}

// info describes the run and its guests.
func (s *Server) info() *RunInfo {
	s.mu.Lock()
	ri := &RunInfo{Entry: s.reg.Entry, State: s.state, VMs: []VMInfo{}}
	s.mu.Unlock()
	if s.pool != nil {
		for _, m := range s.pool.Machines() {
			ri.VMs = append(ri.VMs, vmInfo(m))
		}
	}
	return ri
}

// machine picks the guest a request names (see pickVM).
func (s *Server) machine(name string) (*machine.Machine, error) {
	var ms []*machine.Machine
	if s.pool != nil {
		ms = s.pool.Machines()
	}
	names := make([]string, len(ms))
	running := make([]bool, len(ms))
	for i, m := range ms {
		names[i], running[i] = m.Name(), vmRunning(m)
	}
	i, err := pickVM(s.reg.Entry.ID, names, running, name)
	if err != nil {
		return nil, err
	}
	return ms[i], nil
}

// event writes to the run's timeline, if there is one.
func (s *Server) event(kind string, fields map[string]any) {
	if s.run != nil {
		s.run.Event(timelineSource, kind, fields)
	}
}

func quote(s string) string { return "\"" + s + "\"" }
