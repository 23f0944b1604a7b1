package netboot

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/vmscript/vmscript/internal/iocount"
)

// maxWindow is the largest windowsize (RFC 7440) granted: 64 blocks of
// 1468 bytes are 94 KB in flight, well inside a socket buffer.
const maxWindow = 64

// tftpOptions are what a request negotiated (RFC 2347-2349, 7440).
type tftpOptions struct {
	blksize int           // 512 unless negotiated
	timeout time.Duration // the server's unless negotiated
	window  int           // 1 unless negotiated
	// acked are the options the OACK carries, in the client's order;
	// none: the transfer starts without an OACK.
	acked [][2]string
}

// transfer is one admitted TFTP request: what it reads or writes and how.
type transfer struct {
	op       uint16
	name     string // clean
	netascii bool
	c        *content // reads
	opt      tftpOptions
	req      Request // its record, filled in as it goes
	retries  int     // sends of a packet before the client is given up
	closing  func() bool
}

// transferError ends a transfer: why (for the record), its outcome
// (Aborted unless set) and, unless the client is gone or ended it, the
// ERROR to send it.
type transferError struct {
	reason  string
	outcome string
	code    uint16
	tell    bool
}

func (e *transferError) Error() string { return e.reason }

// stopped is why a transfer ends without an answer: the server closing,
// or no answer (what) after every retry.
func (t *transfer) stopped(what string) *transferError {
	if t.closing() {
		return &transferError{reason: "server closed during the transfer", code: errNotDefined, tell: true}
	}
	return &transferError{reason: fmt.Sprintf("client stopped answering (no %s after %d tries %s apart)", what, t.retries, t.opt.timeout)}
}

// clientError is the reason of an ERROR packet from the client.
func clientError(pkt []byte) *transferError {
	code := binary.BigEndian.Uint16(pkt[2:])
	msg := pkt[4:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	return &transferError{reason: fmt.Sprintf("client sent an error: code=%d %s", code, printable(string(msg)))}
}

// oack is the OACK packet of the negotiated options.
func (o *tftpOptions) oack() []byte {
	p := binary.BigEndian.AppendUint16(nil, opOACK)
	for _, kv := range o.acked {
		p = append(append(p, kv[0]...), 0)
		p = append(append(p, kv[1]...), 0)
	}
	return p
}

// sendFile runs a read transfer: an OACK first if options were accepted,
// then windows of DATA blocks, each window resent whole after a timeout
// and from the block after the one acknowledged. A duplicate ACK is not
// answered (the sorcerer's apprentice bug). It returns the file bytes sent.
func (t *transfer) sendFile(l link) (int64, error) {
	if len(t.opt.acked) > 0 {
		if err := t.sendOACK(l); err != nil {
			return 0, err
		}
	}
	counter := &iocount.Reader{R: t.c.r}
	var src io.Reader = bufio.NewReaderSize(counter, max(128<<10, t.opt.blksize))
	if t.netascii {
		src = &netasciiReader{r: src}
	}
	w := &window{size: t.opt.window, blksize: t.opt.blksize, next: 1, base: 1}
	buf := make([]byte, maxDatagram)
	for {
		if err := w.fill(src); err != nil {
			return counter.N, &transferError{reason: "reading the file: " + err.Error(), code: errNotDefined, tell: true}
		}
		done, err := t.sendWindow(l, w, buf)
		if err != nil || done {
			return counter.N, err
		}
	}
}

// sendOACK sends the OACK until the client acknowledges block 0.
func (t *transfer) sendOACK(l link) error {
	w := &window{pkts: [][]byte{t.opt.oack()}} // block 0
	_, err := t.sendWindow(l, w, make([]byte, maxDatagram))
	return err
}

// sendWindow sends the window's packets and waits for an ACK that moves it
// (or resends them after each timeout). done: the last block was
// acknowledged.
func (t *transfer) sendWindow(l link, w *window, buf []byte) (done bool, err error) {
	for tries := 1; ; tries++ {
		if t.closing() {
			return false, t.stopped("ACK")
		}
		for _, p := range w.pkts {
			if err := l.send(p); err != nil {
				return false, &transferError{reason: "sending: " + err.Error()}
			}
		}
		moved, err := t.awaitACK(l, w, buf)
		if err != nil || moved {
			return moved && w.finished(), err
		}
		if tries >= t.retries {
			return false, t.stopped("ACK")
		}
	}
}

// awaitACK reads the client's packets for one timeout: an ACK inside the
// window moves it (true); a duplicate or stray packet is ignored.
func (t *transfer) awaitACK(l link, w *window, buf []byte) (bool, error) {
	deadline := time.Now().Add(t.opt.timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		n, err := l.recv(buf, left)
		switch {
		case errors.Is(err, errLinkTimeout):
			return false, nil
		case err != nil:
			return false, t.stopped("ACK")
		case n >= 4 && binary.BigEndian.Uint16(buf) == opERROR:
			return false, clientError(buf[:n])
		case n >= 4 && binary.BigEndian.Uint16(buf) == opACK:
			if w.ack(binary.BigEndian.Uint16(buf[2:])) {
				return true, nil
			}
		}
	}
}

// window is the blocks in flight: pkts hold blocks base… as DATA packets.
type window struct {
	size, blksize int
	base, next    uint64 // first block in pkts; block the next read becomes
	pkts          [][]byte
	spare         [][]byte
	last          bool // the short block that ends the file is loaded
}

// fill reads blocks until the window is full or the file's last block is
// in it.
func (w *window) fill(src io.Reader) error {
	for len(w.pkts) < w.size && !w.last {
		var p []byte
		if k := len(w.spare); k > 0 {
			p, w.spare = w.spare[k-1][:4+w.blksize], w.spare[:k-1]
		} else {
			p = make([]byte, 4+w.blksize)
		}
		binary.BigEndian.PutUint16(p, opDATA)
		binary.BigEndian.PutUint16(p[2:], uint16(w.next))
		n, err := io.ReadFull(src, p[4:])
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			w.last = true
		case err != nil:
			return err
		}
		w.pkts = append(w.pkts, p[:4+n])
		w.next++
	}
	return nil
}

// ack applies an ACK of wire block b: true when it acknowledges a block
// in the window (which then starts after it).
func (w *window) ack(b uint16) bool {
	for i := range w.pkts {
		if uint16(w.base+uint64(i)) == b {
			w.spare = append(w.spare, w.pkts[:i+1]...)
			w.pkts = append(w.pkts[:0], w.pkts[i+1:]...)
			w.base += uint64(i) + 1
			return true
		}
	}
	return false
}

// finished: the last block is loaded and acknowledged.
func (w *window) finished() bool { return w.last && len(w.pkts) == 0 }

// receiveFile runs a write transfer into dst: an OACK (or ACK 0) first,
// then DATA blocks, each window's last one acknowledged (every block with
// no windowsize); a block out of order is answered with the ACK of the
// last one in order, which makes the client resend from there. After the
// final ACK it dallies one timeout for a resent final block (the ACK was
// lost). It returns the bytes received.
func (t *transfer) receiveFile(l link, dst io.Writer) (int64, error) {
	var out io.Writer = dst
	var na *netasciiWriter
	if t.netascii {
		na = &netasciiWriter{w: dst}
		out = na
	}
	reply := binary.BigEndian.AppendUint16(nil, opACK)
	reply = append(reply, 0, 0)
	if len(t.opt.acked) > 0 {
		reply = t.opt.oack()
	}
	r := &receiver{t: t, l: l, out: out, reply: reply, expect: 1, buf: make([]byte, maxDatagram)}
	for !r.done {
		if err := r.step(); err != nil {
			return r.got, err
		}
	}
	if na != nil {
		if err := na.flush(); err != nil {
			return r.got, writeError(err)
		}
	}
	r.dally()
	return r.got, nil
}

// receiver is a write transfer's state.
type receiver struct {
	t      *transfer
	l      link
	out    io.Writer
	reply  []byte // the last ACK (or OACK) sent, resent on a timeout
	expect uint64 // the next block in order
	inWin  int    // blocks in order since the last ACK
	got    int64
	tries  int // timeouts since the last block in order
	done   bool
	buf    []byte
}

// step sends the pending reply (if any) and handles the next packet or
// timeout.
func (r *receiver) step() error {
	if r.reply != nil {
		if err := r.sendReply(); err != nil {
			return err
		}
	}
	n, err := r.l.recv(r.buf, r.t.opt.timeout)
	switch {
	case r.t.closing():
		return r.t.stopped("DATA")
	case errors.Is(err, errLinkTimeout):
		// Every send of the same reply that timed out counts.
		if r.tries++; r.tries >= r.t.retries {
			return r.t.stopped("DATA")
		}
		r.reply = r.lastACK()
		return nil
	case err != nil:
		return r.t.stopped("DATA")
	case n >= 4 && binary.BigEndian.Uint16(r.buf) == opERROR:
		return clientError(r.buf[:n])
	case n < 4 || binary.BigEndian.Uint16(r.buf) != opDATA:
		r.reply = nil // a stray packet: keep waiting
		return nil
	}
	return r.data(binary.BigEndian.Uint16(r.buf[2:]), r.buf[4:n])
}

// data takes one DATA block.
func (r *receiver) data(b uint16, payload []byte) error {
	if b != uint16(r.expect) {
		// A resent block or a gap: acknowledge the last one in order.
		r.inWin, r.reply = 0, r.lastACK()
		return nil
	}
	if len(payload) > r.t.opt.blksize {
		return &transferError{reason: fmt.Sprintf("block %d holds %d bytes, more than the blksize %d", b, len(payload), r.t.opt.blksize), code: errIllegalOp, tell: true}
	}
	if _, err := r.out.Write(payload); err != nil {
		return writeError(err)
	}
	r.got += int64(len(payload))
	r.expect++
	r.inWin++
	r.tries = 0
	r.reply = nil
	if len(payload) < r.t.opt.blksize {
		r.done = true
	}
	if r.done || r.inWin >= r.t.opt.window {
		r.inWin, r.reply = 0, r.lastACK()
		if r.done {
			return r.sendReply()
		}
	}
	return nil
}

func (r *receiver) sendReply() error {
	if err := r.l.send(r.reply); err != nil {
		return &transferError{reason: "sending: " + err.Error()}
	}
	return nil
}

// lastACK acknowledges the last block received in order.
func (r *receiver) lastACK() []byte {
	if r.expect == 1 && len(r.t.opt.acked) > 0 {
		return r.t.opt.oack() // the client has not acknowledged the OACK yet
	}
	p := binary.BigEndian.AppendUint16(nil, opACK)
	return binary.BigEndian.AppendUint16(p, uint16(r.expect-1))
}

// dally answers a resent final block for one timeout.
func (r *receiver) dally() {
	deadline := time.Now().Add(min(r.t.opt.timeout, time.Second))
	for {
		left := time.Until(deadline)
		if left <= 0 || r.t.closing() {
			return
		}
		n, err := r.l.recv(r.buf, left)
		if err != nil {
			return
		}
		if n >= 4 && binary.BigEndian.Uint16(r.buf) == opDATA && binary.BigEndian.Uint16(r.buf[2:]) == uint16(r.expect-1) {
			_ = r.sendReply()
		}
	}
}

// writeError is an upload that could not be stored (disk full, …).
func writeError(err error) *transferError {
	return &transferError{reason: "storing the upload: " + err.Error(), code: errDiskFull, tell: true}
}
