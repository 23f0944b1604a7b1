package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
)

// Tail and polling of an attached console.
const (
	// TailLines is how many of the console's last lines an attached
	// client is shown first (from the raw log: colours and prompt intact).
	TailLines = 10
	// tailBytes bounds how far back the tail is looked for.
	tailBytes = 16 << 10
	// pollInterval is how often an attached console looks for new bytes
	// (Console.Interact's pace).
	pollInterval = 20 * time.Millisecond
)

// errClientLeft ends a console stream whose client closed its side.
var errClientLeft = errors.New("the client detached")

// console serves OpConsole: the answer, then the stream.
func (s *Server) console(c *net.UnixConn, br *bufio.Reader, req Request, peer Peer) {
	m, err := s.machine(req.VM)
	if err != nil {
		s.replyErr(c, err)
		return
	}
	if !s.reply(c, Response{OK: true, VM: m.Name()}) {
		return
	}
	s.event("console-attach", map[string]any{"vm": m.Name(), "pid": peer.PID})
	typed, why := streamConsole(s.ctx, c, br, m.Console)
	s.event("console-detach", map[string]any{"vm": m.Name(), "pid": peer.PID, "typed_bytes": typed, "why": why})
}

// streamConsole joins conn to con until the client leaves, the console
// closes or ctx ends: con's raw bytes from the start of its last
// TailLines lines, then every byte from there on, go to conn (read from
// the console's history by offset, so a slow client loses nothing and
// costs no memory); what arrives on in is sent to the console (Console.Send:
// in the timeline, bound by its send timeout). It closes conn, and returns
// the number of bytes typed and why it ended.
func streamConsole(ctx context.Context, conn net.Conn, in io.Reader, con *console.Console) (int64, string) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := &lockedWriter{w: conn}
	var typed atomic.Int64
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		typed.Store(forwardKeys(ctx, in, con, w))
		cancel(errClientLeft)
	}()
	why := pumpConsole(ctx, w, con)
	conn.Close()
	reader.Wait()
	return typed.Load(), why
}

// forwardKeys sends what arrives on in to the console until in ends; a
// failed send is reported to the client in its stream.
func forwardKeys(ctx context.Context, in io.Reader, con *console.Console, w *lockedWriter) int64 {
	var n int64
	buf := make([]byte, 4096)
	for {
		k, err := in.Read(buf)
		if k > 0 {
			if serr := con.Send(ctx, string(buf[:k])); serr != nil {
				if ctx.Err() != nil {
					return n
				}
				w.notice("sending to the console of %s failed: %v", con.Name(), serr)
			} else {
				n += int64(k)
			}
		}
		if err != nil {
			return n
		}
	}
}

// pumpConsole writes the console's tail and then its new bytes to w until
// the console closes, the client leaves or ctx ends; it returns why.
func pumpConsole(ctx context.Context, w *lockedWriter, con *console.Console) string {
	mark := tailMark(con)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if err := flushConsole(w, con, &mark); err != nil {
			return "write: " + err.Error()
		}
		select {
		case <-con.Done():
			_ = flushConsole(w, con, &mark)
			w.notice("the console of %s closed: %v", con.Name(), con.Err())
			return "console closed"
		case <-ctx.Done():
			if context.Cause(ctx) == errClientLeft {
				// The guest's echo of the last keys, if it comes at once.
				time.Sleep(pollInterval)
				_ = flushConsole(w, con, &mark)
				return "detached"
			}
			select {
			case <-con.Done(): // the run stopped the VM first
				_ = flushConsole(w, con, &mark)
				w.notice("the console of %s closed: %v", con.Name(), con.Err())
				return "console closed"
			default:
			}
			w.notice("the run ended")
			return "run ended"
		case <-tick.C:
		}
	}
}

// flushConsole writes what arrived since mark and moves mark past it.
func flushConsole(w *lockedWriter, con *console.Console, mark *console.Mark) error {
	b := con.Raw(mark, nil)
	if len(b) == 0 {
		return nil
	}
	mark.Raw += int64(len(b))
	_, err := w.Write(b)
	return err
}

// tailMark returns where an attached client starts: the start of the
// console's last TailLines lines (the unfinished last one, a prompt,
// included), looked for in its last tailBytes.
func tailMark(con *console.Console) console.Mark {
	end := con.Mark()
	from := max(end.Raw-tailBytes, 0)
	b := con.Raw(&console.Mark{Raw: from}, &end)
	i := len(b)
	if i > 0 && b[i-1] == '\n' {
		i--
	}
	for n := 0; n < TailLines; n++ {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			if from > 0 { // a cut line: start after it
				if k := bytes.IndexByte(b, '\n'); k >= 0 {
					return console.Mark{Raw: from + int64(k) + 1}
				}
			}
			return console.Mark{Raw: from}
		}
		i = j
	}
	return console.Mark{Raw: from + int64(i) + 1}
}

// lockedWriter serializes the console's bytes and notices on one
// connection.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// notice writes a bracketed line for the person at the terminal, on a line
// of its own.
func (l *lockedWriter) notice(format string, a ...any) {
	_, _ = fmt.Fprintf(l, "\r\n[vmscript: "+format+"]\r\n", a...)
}
