package console

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

type sendReq struct {
	p        []byte
	deadline time.Time
	done     chan error
}

// writer performs Sends one at a time on the attached connection. A
// connection with write deadlines (net.Conn, pollable *os.File) gets each
// Send's deadline, so a blocked write is abandoned by the kernel side too;
// on other writers a timed-out Send returns and the write finishes (or not)
// in the background, holding up later Sends, which time out in turn.
func (c *Console) writer(w io.Writer) {
	wd, _ := w.(interface{ SetWriteDeadline(time.Time) error })
	for {
		select {
		case <-c.done:
			return
		case req := <-c.sendCh:
			if wd != nil {
				_ = wd.SetWriteDeadline(req.deadline)
			}
			_, err := w.Write(req.p)
			req.done <- err
		}
	}
}

// Send writes s to the serial port. It is bound by ctx and by
// Options.SendTimeout: a guest that stops reading cannot block the caller.
// Each Send is a "send" event in the timeline. Errors: "timeout",
// "cancelled", the Close reason, "io" (write failed or not attached).
func (c *Console) Send(ctx context.Context, s string) error {
	return c.sendLogged(ctx, s, s)
}

// SendSecret is Send for a password: the timeline records "<secret>"
// instead of the text.
func (c *Console) SendSecret(ctx context.Context, s string) error {
	return c.sendLogged(ctx, s, "<secret>")
}

func (c *Console) sendLogged(ctx context.Context, s, shown string) error {
	start := time.Now()
	err := c.send(ctx, s, start)
	if c.run != nil {
		f := map[string]any{"text": shown, "bytes": len(s)}
		if err != nil {
			f["error"] = err.Error()
		}
		c.event("send", f)
	}
	return err
}

// SendLine sends s followed by Options.LineEnding ("\r" by default).
func (c *Console) SendLine(ctx context.Context, s string) error {
	return c.Send(ctx, s+c.lineEnding)
}

func (c *Console) send(ctx context.Context, s string, start time.Time) error {
	c.mu.Lock()
	sendCh := c.sendCh
	closeErr := c.closeErr
	c.mu.Unlock()
	ctxErr := func(e *vmerr.Error) error {
		return e.With("vm", c.name).With("bytes", len(s)).With("waited_s", float64(time.Since(start).Milliseconds())/1000)
	}
	if closeErr != nil {
		return ctxErr(copyErr(closeErr))
	}
	if sendCh == nil {
		return ctxErr(vmerr.New(vmerr.IO, "%s: console not attached, cannot send", c.name))
	}
	deadline := start.Add(c.sendTimeout)
	ctxBound := false // the context's deadline is the binding one
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxBound = d, true
	}
	req := &sendReq{p: []byte(s), deadline: deadline, done: make(chan error, 1)}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	cancelErr := func() error {
		cause := context.Cause(ctx)
		if cause == nil { // the write deadline fired a hair before ctx's timer
			cause = context.DeadlineExceeded
		}
		return ctxErr(vmerr.Wrap(vmerr.Cancelled, cause, "%s: cancelled while sending to the console", c.name))
	}
	timeoutErr := func() error {
		if ctxBound || ctx.Err() != nil {
			return cancelErr()
		}
		return ctxErr(vmerr.New(vmerr.Timeout, "%s: sending %d bytes to the console did not complete within %s (guest not reading?)",
			c.name, len(s), fmtSeconds(time.Since(start))))
	}
	select {
	case sendCh <- req:
	case <-timer.C:
		return timeoutErr()
	case <-ctx.Done():
		return cancelErr()
	case <-c.closedCh:
		return ctxErr(copyErr(c.closeErr))
	}
	select {
	case err := <-req.done:
		switch {
		case err == nil:
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return timeoutErr()
		default:
			return ctxErr(vmerr.Wrap(vmerr.IO, err, "%s: console write", c.name))
		}
	case <-timer.C:
		return timeoutErr()
	case <-ctx.Done():
		return cancelErr()
	}
}
