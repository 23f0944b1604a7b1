package control

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Stream is an attached console or a dialled guest port: after the
// server's answer, the raw bytes both ways.
type Stream struct {
	// VM is the guest the server settled on.
	VM string
	// Addr is the address a dial reached ("" for a console).
	Addr string

	conn *net.UnixConn
	r    *bufio.Reader
}

// Read reads the stream (bytes the server sent with its answer first).
func (s *Stream) Read(p []byte) (int, error) { return s.r.Read(p) }

// Write writes to the stream.
func (s *Stream) Write(p []byte) (int, error) { return s.conn.Write(p) }

// CloseWrite ends the client's direction: the server sees end of file (a
// console detaches; a dialled port gets the half-close).
func (s *Stream) CloseWrite() error { return s.conn.CloseWrite() }

// Close closes the stream.
func (s *Stream) Close() error { return s.conn.Close() }

// Info asks the run at socket for itself and its VMs.
func Info(ctx context.Context, socket string) (*RunInfo, error) {
	s, resp, err := request(ctx, socket, Request{Op: OpInfo}, requestTimeout)
	if err != nil {
		return nil, err
	}
	s.Close()
	if resp.Run == nil {
		return nil, vmerr.New(vmerr.Protocol, "control: %s answered info without a run", socket)
	}
	return resp.Run, nil
}

// Console attaches to the serial console of vm ("" for the run's only VM).
func Console(ctx context.Context, socket, vm string) (*Stream, error) {
	s, _, err := request(ctx, socket, Request{Op: OpConsole, VM: vm}, requestTimeout)
	return s, err
}

// Dial connects to port of vm ("" for the run's only VM) by its route,
// the server waiting up to timeout (0: DefaultDialTimeout) for a LAN lease
// and the connection.
func Dial(ctx context.Context, socket, vm string, port int, timeout time.Duration) (*Stream, error) {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	req := Request{Op: OpDial, VM: vm, Port: port, TimeoutS: timeout.Seconds()}
	s, _, err := request(ctx, socket, req, timeout+requestTimeout)
	return s, err
}

// request connects, sends req and reads the answer within wait (and ctx);
// an error answer becomes a *vmerr.Error of its kind.
func request(ctx context.Context, socket string, req Request, wait time.Duration) (*Stream, Response, error) {
	var resp Response
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, requestTimeout)
	c, err := d.DialContext(dctx, "unix", socket)
	cancel()
	if err != nil {
		return nil, resp, vmerr.Wrap(vmerr.Refused, err, "control: connect to %s", socket)
	}
	conn := c.(*net.UnixConn)
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	s := &Stream{conn: conn, r: bufio.NewReader(conn)}
	// A server that refuses answers without reading the request and
	// closes: a failed write still leaves its answer to read.
	werr := writeLine(conn, req)
	err = readLine(s.r, &resp)
	if err != nil && werr != nil {
		err = werr
	}
	stopped := stop()
	if err != nil {
		conn.Close()
		switch {
		case !stopped:
			return nil, resp, vmerr.Wrap(vmerr.DoneKind(ctx), context.Cause(ctx), "control: %s %s", req.Op, socket)
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, resp, vmerr.New(vmerr.Timeout, "control: %s %s: no answer within %s", req.Op, socket, wait)
		}
		return nil, resp, vmerr.Wrap(vmerr.Protocol, err, "control: %s %s", req.Op, socket)
	}
	_ = conn.SetDeadline(time.Time{})
	if !resp.OK {
		conn.Close()
		kind := resp.Kind
		if kind == "" {
			kind = vmerr.Failed
		}
		return nil, resp, &vmerr.Error{Kind: kind, Message: resp.Error}
	}
	s.VM, s.Addr = resp.VM, resp.Addr
	return s, resp, nil
}
