package netboot

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// TFTP opcodes and error codes (RFC 1350, 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6

	errNotDefined   = 0
	errFileNotFound = 1
	errAccess       = 2
	errDiskFull     = 3
	errIllegalOp    = 4
	errOptionNeg    = 8
)

// maxDatagram is the largest UDP payload the front end reads.
const maxDatagram = 65536

// tftpRequest is a parsed RRQ or WRQ.
type tftpRequest struct {
	op   uint16
	name string
	mode string
	// opts are the options as sent (names lower-cased), in order.
	opts [][2]string
}

// refusal is a request the front end answers with an ERROR packet.
type refusal struct {
	code   uint16
	reason string
}

// parseRequest parses a datagram that arrived on the server port from a
// client with no transfer in progress. It returns the request, or stray (a
// valid packet that is not a request: it is ignored), or a refusal.
func parseRequest(pkt []byte) (req *tftpRequest, stray string, ref *refusal) {
	if len(pkt) < 2 {
		return nil, "", &refusal{errIllegalOp, fmt.Sprintf("truncated packet (%d bytes)", len(pkt))}
	}
	op := binary.BigEndian.Uint16(pkt)
	switch op {
	case opRRQ, opWRQ:
	case opDATA, opACK, opERROR, opOACK:
		return nil, fmt.Sprintf("%s with no transfer in progress", opName(op)), nil
	default:
		return nil, "", &refusal{errIllegalOp, fmt.Sprintf("unknown opcode %d", op)}
	}
	body := pkt[2:]
	if len(body) == 0 || body[len(body)-1] != 0 {
		return nil, "", &refusal{errIllegalOp, fmt.Sprintf("truncated %s: not NUL-terminated (%d bytes)", opName(op), len(pkt))}
	}
	fields := bytes.Split(body[:len(body)-1], []byte{0})
	if len(fields) < 2 {
		return nil, "", &refusal{errIllegalOp, fmt.Sprintf("truncated %s: no transfer mode", opName(op))}
	}
	req = &tftpRequest{op: op, name: string(fields[0]), mode: strings.ToLower(string(fields[1]))}
	rest := fields[2:]
	if len(rest)%2 != 0 {
		return req, "", &refusal{errOptionNeg, fmt.Sprintf("malformed options: option %q has no value", printable(string(rest[len(rest)-1])))}
	}
	seen := map[string]bool{}
	for i := 0; i < len(rest); i += 2 {
		name := strings.ToLower(string(rest[i]))
		if name == "" {
			return req, "", &refusal{errOptionNeg, "malformed options: empty option name"}
		}
		if seen[name] {
			return req, "", &refusal{errOptionNeg, fmt.Sprintf("malformed options: option %q given twice", printable(name))}
		}
		seen[name] = true
		req.opts = append(req.opts, [2]string{name, string(rest[i+1])})
	}
	return req, "", nil
}

func opName(op uint16) string {
	switch op {
	case opRRQ:
		return "RRQ"
	case opWRQ:
		return "WRQ"
	case opDATA:
		return "DATA"
	case opACK:
		return "ACK"
	case opERROR:
		return "ERROR"
	case opOACK:
		return "OACK"
	}
	return "opcode " + strconv.Itoa(int(op))
}

// printable returns s, or s quoted when it holds bytes a log line should not.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return strconv.Quote(s)
		}
	}
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// parseUint parses a decimal option value strictly (digits only).
func parseUint(v string, limit int64) (int64, bool) {
	if v == "" || len(v) > 19 {
		return 0, false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n <= limit
}

// requested are the options a request asked for, checked.
type requested struct {
	blksize, timeout, window int   // 0: not asked
	tsize                    int64 // -1: not asked
}

// admit decides about one datagram from a client with no transfer in
// progress. It returns the admitted transfer (its file open, its options
// negotiated), or an ERROR packet to send back, or neither (ignored).
// Refusals are recorded.
func (s *Server) admit(pkt []byte, client string) (t *transfer, reply []byte) {
	req, stray, ref := parseRequest(pkt)
	if stray != "" {
		s.ignored(client, stray)
		return nil, nil
	}
	r := newTFTPRequest(req, client)
	refuse := func(ref *refusal, outcome string) (*transfer, []byte) {
		r.Outcome, r.Reason = outcome, ref.reason
		s.record(r)
		return nil, errorPacket(ref.code, ref.reason)
	}
	if ref != nil {
		return refuse(ref, Refused)
	}
	if s.closing.Load() {
		return refuse(&refusal{errNotDefined, "server is closing"}, Refused)
	}
	want, ref := checkRequest(req)
	if ref != nil {
		return refuse(ref, Refused)
	}
	name, err := CleanName(req.name)
	if err != nil {
		return refuse(&refusal{errAccess, err.Error()}, Refused)
	}
	r.File = name
	t = &transfer{op: req.op, name: name, netascii: req.mode == "netascii", retries: s.opt.Retries, closing: s.closing.Load}
	outcome, ref := s.prepare(t, &r)
	if ref != nil {
		return refuse(ref, outcome)
	}
	t.opt = s.negotiate(req, want, t)
	r.BlockSize = t.opt.blksize
	r.Seq = s.begin()
	t.req = r
	return t, nil
}

// newTFTPRequest is the record of a request as it arrived.
func newTFTPRequest(req *tftpRequest, client string) Request {
	r := Request{Proto: "tftp", Client: client, Start: time.Now(), Size: -1, Op: "read"}
	if req == nil {
		r.Op = "?"
		return r
	}
	if req.op == opWRQ {
		r.Op = "write"
	}
	r.File = printable(req.name)
	if len(req.opts) > 0 {
		r.Options = map[string]string{}
		for _, o := range req.opts {
			r.Options[printable(o[0])] = printable(o[1])
		}
	}
	return r
}

// checkRequest checks the mode and the options the server negotiates:
// blksize (RFC 2348), tsize and timeout (RFC 2349), windowsize (RFC 7440).
// A malformed or out-of-range value is refused; other options are ignored.
func checkRequest(req *tftpRequest) (requested, *refusal) {
	want := requested{tsize: -1}
	if req.mode != "octet" && req.mode != "netascii" {
		return want, &refusal{errIllegalOp, fmt.Sprintf("unsupported transfer mode %q (want octet or netascii)", printable(req.mode))}
	}
	ranges := map[string][2]int64{"blksize": {8, 65464}, "timeout": {1, 255}, "windowsize": {1, 65535}}
	for _, o := range req.opts {
		if o[0] == "tsize" {
			n, ok := parseUint(o[1], 1<<62)
			if !ok {
				return want, &refusal{errOptionNeg, fmt.Sprintf("malformed tsize %q", printable(o[1]))}
			}
			want.tsize = n
			continue
		}
		lim, known := ranges[o[0]]
		if !known {
			continue
		}
		n, ok := parseUint(o[1], 1<<31)
		if !ok {
			return want, &refusal{errOptionNeg, fmt.Sprintf("malformed %s %q", o[0], printable(o[1]))}
		}
		if n < lim[0] || n > lim[1] {
			return want, &refusal{errOptionNeg, fmt.Sprintf("%s %d out of range %d-%d", o[0], n, lim[0], lim[1])}
		}
		switch o[0] {
		case "blksize":
			want.blksize = int(n)
		case "timeout":
			want.timeout = int(n)
		case "windowsize":
			want.window = int(n)
		}
	}
	return want, nil
}

// negotiate grants what was asked within the server's limits: blksize up
// to MaxBlockSize, windowsize up to maxWindow, the timeout as asked, tsize
// as the file's size (a read in octet mode; netascii changes the size) or
// the client's (a write). The OACK lists them in the client's order.
func (s *Server) negotiate(req *tftpRequest, want requested, t *transfer) tftpOptions {
	o := tftpOptions{blksize: 512, timeout: s.opt.Timeout, window: 1}
	for _, kv := range req.opts {
		var val string
		switch kv[0] {
		case "blksize":
			o.blksize = min(want.blksize, s.maxBlk)
			val = strconv.Itoa(o.blksize)
		case "timeout":
			o.timeout = time.Duration(want.timeout) * time.Second
			val = strconv.Itoa(want.timeout)
		case "windowsize":
			o.window = min(want.window, maxWindow)
			val = strconv.Itoa(o.window)
		case "tsize":
			switch {
			case req.op == opWRQ:
				val = strconv.FormatInt(want.tsize, 10)
			case !t.netascii && t.c.size > 0:
				// (An empty file's tsize 0 is left out: curl 7.88 fails
				// on it, with tftpd-hpa too.)
				val = strconv.FormatInt(t.c.size, 10)
			default:
				continue
			}
		default:
			continue
		}
		o.acked = append(o.acked, [2]string{kv[0], val})
	}
	return o
}

// prepare opens what the request reads (or checks the upload directory for
// a write) and records its source and size in r.
func (s *Server) prepare(t *transfer, r *Request) (string, *refusal) {
	if t.op == opWRQ {
		if s.upload == nil {
			return Refused, &refusal{errAccess, "write request to a read-only server (no upload directory)"}
		}
		r.Source = "upload"
		return "", nil
	}
	c, err := s.open(t.name)
	if errors.Is(err, errNotFound) {
		return NotFound, &refusal{errFileNotFound, err.Error()}
	}
	if err != nil {
		return Refused, &refusal{errAccess, err.Error()}
	}
	r.Source, r.Size, t.c = c.source, c.size, c
	return "", nil
}

func errorPacket(code uint16, msg string) []byte {
	if len(msg) > 400 {
		msg = msg[:400]
	}
	p := binary.BigEndian.AppendUint16(nil, opERROR)
	p = binary.BigEndian.AppendUint16(p, code)
	return append(append(p, msg...), 0)
}

// startTFTP starts the front end: one loop reading the server's port.
// Requests are admitted there; each transfer then runs on its own
// goroutine. On an OS UDP socket a transfer has a socket of its own
// (classic TFTP: a new transfer ID), connected to the client and used
// with blocking system calls (sockLink); any other PacketConn (a gVisor
// netstack endpoint) is single-port: the loop hands each client's packets
// to its transfer (portLink).
func (s *Server) startTFTP() {
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		buf := make([]byte, maxDatagram)
		for {
			n, addr, err := s.tftpConn.ReadFrom(buf)
			if err != nil {
				if s.closing.Load() || errors.Is(err, net.ErrClosed) {
					return
				}
				s.ignored("?", "read error: "+err.Error())
				time.Sleep(10 * time.Millisecond) // never spin on a broken conn
				continue
			}
			s.dispatch(buf[:n], addr)
		}
	}()
}

// dispatch handles one datagram that came to the server's port.
func (s *Server) dispatch(pkt []byte, addr net.Addr) {
	client := addr.String()
	s.mu.Lock()
	l := s.active[client]
	s.mu.Unlock()
	if l != nil {
		// A transfer in progress. A repeated request is dropped (the
		// transfer answers the original); in single-port mode the rest
		// is the transfer's.
		if len(pkt) >= 2 {
			if op := binary.BigEndian.Uint16(pkt); op == opRRQ || op == opWRQ {
				return
			}
		}
		if pl, ok := l.(*portLink); ok {
			pl.deliver(pkt)
		}
		return
	}
	t, reply := s.admit(pkt, client)
	if reply != nil {
		_, _ = s.tftpConn.WriteTo(reply, addr)
	}
	if t != nil {
		s.startTransfer(t, addr)
	}
}

// startTransfer opens the transfer's link and runs it.
func (s *Server) startTransfer(t *transfer, addr net.Addr) {
	client := addr.String()
	var l link
	conn, osConn := s.tftpConn.(*net.UDPConn)
	if ua, ok := addr.(*net.UDPAddr); osConn && ok {
		local := conn.LocalAddr().(*net.UDPAddr)
		sl, err := newSockLink(&net.UDPAddr{IP: local.IP, Zone: local.Zone}, ua)
		if err != nil {
			if t.c != nil {
				t.c.close()
			}
			te := &transferError{reason: "opening the transfer's socket: " + err.Error(), code: errNotDefined}
			_, _ = s.tftpConn.WriteTo(errorPacket(te.code, te.reason), addr)
			t.fail(s, te, 0)
			return
		}
		l = sl
	} else {
		l = newPortLink(s.tftpConn, addr)
	}
	s.mu.Lock()
	s.active[client] = l
	s.mu.Unlock()
	s.reqWG.Add(1)
	go func() {
		defer s.reqWG.Done()
		defer func() {
			s.mu.Lock()
			delete(s.active, client)
			s.mu.Unlock()
			l.close()
		}()
		s.runTransfer(t, l)
	}()
}

// runTransfer moves the file and records the outcome.
func (s *Server) runTransfer(t *transfer, l link) {
	var n int64
	var err error
	if t.op == opWRQ {
		n, err = s.receiveUpload(t, l)
	} else {
		defer t.c.close()
		n, err = t.sendFile(l)
	}
	if err != nil {
		var te *transferError
		if !errors.As(err, &te) {
			te = &transferError{reason: err.Error(), code: errNotDefined, tell: true}
		}
		if te.tell {
			_ = l.send(errorPacket(te.code, te.reason))
		}
		t.fail(s, te, n)
		return
	}
	t.req.Bytes, t.req.Outcome = n, Served
	s.record(t.req)
}

// fail records the transfer with te's outcome (Aborted unless it says).
func (t *transfer) fail(s *Server, te *transferError, n int64) {
	t.req.Bytes, t.req.Outcome, t.req.Reason = n, cmp.Or(te.outcome, Aborted), te.reason
	s.record(t.req)
}

// receiveUpload stores a write transfer in the upload directory.
func (s *Server) receiveUpload(t *transfer, l link) (int64, error) {
	if n, ok := t.req.Options["tsize"]; ok {
		if v, err := strconv.ParseInt(n, 10, 64); err == nil {
			t.req.Size = v
		}
	}
	f, err := s.upload.OpenFile(t.name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, &transferError{reason: classifyOpenError(t.name, err).Error(), outcome: Refused, code: errAccess, tell: true}
	}
	n, err := t.receiveFile(l, f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = writeError(cerr)
	}
	return n, err
}

// interruptTransfers ends every transfer's wait (the server is closing).
func (s *Server) interruptTransfers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.active {
		l.interrupt()
	}
}
