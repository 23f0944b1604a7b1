package netboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pin/tftp/v3"
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

// pendingRead is an admitted request waiting for pin/tftp's handler.
type pendingRead struct {
	req Request
	c   *content // reads
	// name is the clean name (writes).
	name string
}

// admit decides about one datagram from a client with no transfer in
// progress. It returns the clean request to hand to pin/tftp, or an ERROR
// packet to send back, or neither (ignored). Refusals are recorded.
func (s *Server) admit(pkt []byte, client string) (pass, reply []byte) {
	req, stray, ref := parseRequest(pkt)
	if stray != "" {
		s.ignored(client, stray)
		return nil, nil
	}
	r := newTFTPRequest(req, client)
	refuse := func(ref *refusal, outcome string) ([]byte, []byte) {
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
	blk, tsize, ref := checkRequest(req)
	if ref != nil {
		return refuse(ref, Refused)
	}
	name, err := CleanName(req.name)
	if err != nil {
		return refuse(&refusal{errAccess, err.Error()}, Refused)
	}
	r.File = name
	r.BlockSize = 512
	if blk >= 512 {
		r.BlockSize = min(blk, s.maxBlk)
	}
	p, outcome, ref := s.prepare(req, name, &r)
	if ref != nil {
		return refuse(ref, outcome)
	}
	r.Seq = s.begin()
	p.req = r
	s.mu.Lock()
	if old := s.pending[client]; old != nil && old.c != nil {
		old.c.close()
	}
	s.pending[client] = p
	s.active[client] = true
	s.mu.Unlock()
	return cleanRequest(req, name, blk, tsize), nil
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

// checkRequest checks the mode and the options: blksize and tsize are
// negotiated, others ignored (pin/tftp implements no timeout or
// windowsize).
func checkRequest(req *tftpRequest) (blk int, tsize string, ref *refusal) {
	if req.mode != "octet" && req.mode != "netascii" {
		return 0, "", &refusal{errIllegalOp, fmt.Sprintf("unsupported transfer mode %q (want octet or netascii)", printable(req.mode))}
	}
	for _, o := range req.opts {
		switch o[0] {
		case "blksize":
			n, ok := parseUint(o[1], 1<<31)
			if !ok {
				return 0, "", &refusal{errOptionNeg, fmt.Sprintf("malformed blksize %q", printable(o[1]))}
			}
			if n < 8 || n > 65464 {
				return 0, "", &refusal{errOptionNeg, fmt.Sprintf("blksize %d out of range 8-65464", n)}
			}
			blk = int(n)
		case "tsize":
			if _, ok := parseUint(o[1], 1<<62); !ok {
				return 0, "", &refusal{errOptionNeg, fmt.Sprintf("malformed tsize %q", printable(o[1]))}
			}
			tsize = o[1]
		}
	}
	return blk, tsize, nil
}

// prepare opens what the request reads (or checks the upload directory for
// a write) and records its source and size in r.
func (s *Server) prepare(req *tftpRequest, name string, r *Request) (*pendingRead, string, *refusal) {
	p := &pendingRead{name: name}
	if req.op == opWRQ {
		if s.upload == nil {
			return nil, Refused, &refusal{errAccess, "write request to a read-only server (no upload directory)"}
		}
		r.Source = "upload"
		return p, "", nil
	}
	c, err := s.open(name)
	if errors.Is(err, errNotFound) {
		return nil, NotFound, &refusal{errFileNotFound, err.Error()}
	}
	if err != nil {
		return nil, Refused, &refusal{errAccess, err.Error()}
	}
	r.Source, r.Size, p.c = c.source, c.size, c
	return p, "", nil
}

// cleanRequest is the request pin/tftp sees: the clean name, the canonical
// mode, only the options it implements.
func cleanRequest(req *tftpRequest, name string, blk int, tsize string) []byte {
	out := binary.BigEndian.AppendUint16(nil, req.op)
	out = append(append(out, name...), 0)
	out = append(append(out, req.mode...), 0)
	if blk >= 512 {
		out = append(append(out, "blksize\x00"...), strconv.Itoa(blk)...)
		out = append(out, 0)
	}
	if tsize != "" {
		out = append(append(out, "tsize\x00"...), tsize...)
		out = append(out, 0)
	}
	return out
}

func errorPacket(code uint16, msg string) []byte {
	if len(msg) > 400 {
		msg = msg[:400]
	}
	p := binary.BigEndian.AppendUint16(nil, opERROR)
	p = binary.BigEndian.AppendUint16(p, code)
	return append(append(p, msg...), 0)
}

// frontConn sits between the socket and pin/tftp: packets of transfers in
// progress pass through; everything else is checked by admit.
type frontConn struct {
	net.PacketConn
	s   *Server
	buf []byte
}

// ReadFrom implements net.PacketConn for pin/tftp's single read loop.
func (c *frontConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(c.buf)
		if err != nil {
			return 0, addr, err
		}
		if _, ok := addr.(*net.UDPAddr); !ok {
			// pin/tftp needs a *net.UDPAddr; a conn that reports others
			// cannot be served.
			c.s.ignored(addr.String(), fmt.Sprintf("source address of type %T", addr))
			continue
		}
		pkt := c.buf[:n]
		client := addr.String()
		c.s.mu.Lock()
		active := c.s.active[client]
		c.s.mu.Unlock()
		if active {
			// A transfer in progress: ACKs and ERRORs go to it; a repeated
			// request is dropped (the transfer answers the original).
			if n >= 2 {
				if op := binary.BigEndian.Uint16(pkt); op == opRRQ || op == opWRQ {
					continue
				}
			}
			if n > len(p) {
				continue
			}
			return copy(p, pkt), addr, nil
		}
		pass, reply := c.s.admit(pkt, client)
		if reply != nil {
			_, _ = c.PacketConn.WriteTo(reply, addr)
		}
		if pass != nil {
			return copy(p, pass), addr, nil
		}
	}
}

// startTFTP runs pin/tftp behind the front end. On an OS UDP socket each
// transfer gets its own socket (classic TFTP; measured on loopback: half the
// CPU per block of single-port mode and about 1.6× its throughput), bound to
// the wildcard address on an ephemeral port because pin/tftp only learns
// the local address from the listening *net.UDPConn, which the front end
// hides; it accepts packets only from the client's address and port. Any
// other PacketConn gets single-port mode, where every packet passes the
// front end.
func (s *Server) startTFTP() {
	srv := tftp.NewServer(s.tftpRead, s.tftpWrite)
	if _, ok := s.tftpConn.(*net.UDPConn); !ok {
		// A conn that is not the OS's (gVisor netstack): all transfers
		// share it; pin/tftp needs single-port mode for that.
		srv.EnableSinglePort()
	}
	srv.SetBlockSizeNegotiation(false)
	srv.SetBlockSize(s.maxBlk)
	srv.SetTimeout(s.opt.Timeout)
	srv.SetRetries(s.opt.Retries)
	srv.SetBackoff(func(int) time.Duration { return 0 })
	s.tftp = srv
	s.front = &frontConn{PacketConn: s.tftpConn, s: s, buf: make([]byte, maxDatagram)}
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		_ = srv.Serve(s.front)
	}()
}

// take returns the admitted request of a client and keeps it marked active
// until done is called.
func (s *Server) take(client string) (*pendingRead, func()) {
	s.reqWG.Add(1)
	s.mu.Lock()
	p := s.pending[client]
	delete(s.pending, client)
	s.mu.Unlock()
	return p, func() {
		s.mu.Lock()
		delete(s.active, client)
		s.mu.Unlock()
		s.reqWG.Done()
	}
}

// errClosing aborts transfers when the server closes.
var errClosing = errors.New("server is closing")

// transferReader counts the bytes pin/tftp reads and fails once the server
// closes, which aborts the transfer at its next block.
type transferReader struct {
	r       io.Reader
	n       int64
	closing func() bool
}

func (t *transferReader) Read(p []byte) (int, error) {
	if t.closing() {
		return 0, errClosing
	}
	n, err := t.r.Read(p)
	t.n += int64(n)
	return n, err
}

func (s *Server) tftpRead(filename string, rf io.ReaderFrom) error {
	ot, _ := rf.(tftp.OutgoingTransfer)
	if ot == nil {
		return errors.New("internal error: transfer without a remote address")
	}
	addr := ot.RemoteAddr()
	p, done := s.take(addr.String())
	defer done()
	if p == nil || p.c == nil || p.name != filename {
		return errors.New("internal error: request was not admitted")
	}
	defer p.c.close()
	ot.SetSize(p.c.size)
	tr := &transferReader{r: p.c.r, closing: s.closing.Load}
	_, err := rf.ReadFrom(tr)
	r := p.req
	r.Bytes = tr.n
	if err != nil {
		r.Outcome, r.Reason = Aborted, abortReason(err, s.opt.Timeout, s.opt.Retries)
	} else {
		r.Outcome = Served
	}
	s.record(r)
	return err
}

func (s *Server) tftpWrite(filename string, wt io.WriterTo) error {
	it, _ := wt.(tftp.IncomingTransfer)
	if it == nil {
		return errors.New("internal error: transfer without a remote address")
	}
	addr := it.RemoteAddr()
	p, done := s.take(addr.String())
	defer done()
	if p == nil || p.name != filename || s.upload == nil {
		return errors.New("internal error: request was not admitted")
	}
	r := p.req
	if n, ok := it.Size(); ok {
		r.Size = n
	}
	f, err := s.upload.OpenFile(filename, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		r.Outcome, r.Reason = Refused, classifyOpenError(filename, err).Error()
		s.record(r)
		return errors.New(r.Reason)
	}
	n, err := wt.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	r.Bytes = n
	if err != nil {
		r.Outcome, r.Reason = Aborted, abortReason(err, s.opt.Timeout, s.opt.Retries)
	} else {
		r.Outcome = Served
	}
	s.record(r)
	return err
}

// abortReason explains pin/tftp's transfer errors.
func abortReason(err error, timeout time.Duration, retries int) string {
	msg := err.Error()
	switch {
	case errors.Is(err, errClosing):
		return "server closed during the transfer"
	case strings.Contains(msg, "channel timeout"), strings.Contains(msg, "timeout"):
		return fmt.Sprintf("client stopped answering (no ACK after %d tries %s apart)", retries, timeout)
	case strings.Contains(msg, "code="):
		return "client sent an error: " + msg
	}
	return msg
}
