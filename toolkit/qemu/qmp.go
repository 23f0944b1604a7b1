package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmscript/vmscript/toolkit/eventlog"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultCommandTimeout bounds a QMP command whose context has no deadline.
const DefaultCommandTimeout = 30 * time.Second

// Event is one QMP event as QEMU sent it.
type Event struct {
	// Seq numbers the events of one connection from 0, in arrival order.
	// Pass Seq+1 as WaitEvent's from to wait for a later event.
	Seq int `json:"seq"`
	// Name is the event name, e.g. "SHUTDOWN", "STOP", "RESET".
	Name string `json:"event"`
	// Data is the event's data object (may be empty).
	Data json.RawMessage `json:"data"`
	// Time is QEMU's timestamp of the event.
	Time time.Time `json:"time"`
	// Received is when the client read it.
	Received time.Time `json:"-"`
	// Internal marks a STOP or RESUME of vmscript's own brief pauses (a
	// screen reading the VGA registers), not the guest's or the script's:
	// VM.WaitEvent passes over them.
	Internal bool `json:"internal,omitempty"`
}

// Greeting is QMP's greeting.
type Greeting struct {
	// Version is the QEMU version, e.g. "7.2.22".
	Version string
	// Package is QEMU's package string, e.g. "Debian 1:7.2+dfsg-7".
	Package string
	// Capabilities are the offered capabilities (e.g. "oob").
	Capabilities []string
}

// CommandError is an error reply of QEMU to a command.
type CommandError struct {
	// Command is the command QEMU refused.
	Command string
	// Class is QEMU's error class, e.g. "GenericError", "CommandNotFound".
	Class string
	// Desc is QEMU's description of the error.
	Desc string
}

// Error returns "qmp CMD: CLASS: DESC".
func (e *CommandError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// QMPClient is a QMP client on one connection. Commands may be issued
// concurrently; replies are matched by id, and events are kept for the
// life of the client. It is safe for concurrent use.
type QMPClient struct {
	conn     net.Conn
	greeting Greeting

	wmu sync.Mutex // serialises writes of whole commands

	// events holds every event of the connection; it is closed with the
	// connection's end.
	events *eventlog.Log[Event]
	// internal, when set, says whether an event is one of vmscript's own
	// (see Event.Internal); it is asked as the event is read.
	internal atomic.Pointer[func(name string) bool]

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan reply
	err     error         // why the connection ended; set once
	done    chan struct{} // closed when the reader stops
}

type reply struct {
	ret json.RawMessage
	err *CommandError
}

// message is any object QEMU sends.
type message struct {
	QMP *struct {
		Version struct {
			QEMU struct {
				Major, Minor, Micro int
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
	ID     json.RawMessage `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// DialQMP reads QMP's greeting from conn, negotiates capabilities and starts
// reading replies and events. onEvent, if not nil, is called (in order, from
// the reader goroutine; it must not block) for every event. The handshake is
// bounded by ctx (DefaultCommandTimeout if it has no deadline). The client
// owns conn from then on.
func DialQMP(ctx context.Context, conn net.Conn, onEvent func(Event)) (*QMPClient, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	c := &QMPClient{
		conn:    conn,
		events:  eventlog.New[Event](),
		pending: map[string]chan reply{},
		done:    make(chan struct{}),
	}
	if onEvent != nil {
		c.events.Subscribe(func(_ int, ev Event) { onEvent(ev) })
	}
	dec := json.NewDecoder(conn)
	// The greeting is read here, under the context's deadline.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	var g message
	err := dec.Decode(&g)
	stop()
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, vmerr.Wrap(vmerr.Timeout, err, "qmp: no greeting")
		}
		return nil, vmerr.Wrap(vmerr.Exited, err, "qmp: no greeting (connection closed)")
	}
	if g.QMP == nil {
		conn.Close()
		return nil, vmerr.New(vmerr.Protocol, "qmp: first message is not a QMP greeting")
	}
	v := g.QMP.Version.QEMU
	c.greeting = Greeting{
		Version:      fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro),
		Package:      g.QMP.Version.Package,
		Capabilities: g.QMP.Capabilities,
	}
	go c.read(dec)
	if _, err := c.Command(ctx, "qmp_capabilities", nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Greeting returns what QEMU said on connecting.
func (c *QMPClient) Greeting() Greeting { return c.greeting }

// Done is closed when the connection has ended.
func (c *QMPClient) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is up.
func (c *QMPClient) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection; pending and later commands fail.
func (c *QMPClient) Close() error {
	c.fail(vmerr.New(vmerr.Exited, "qmp: connection closed by vmscript"))
	err := c.conn.Close()
	<-c.done
	return err
}

// fail ends the client with err (once): pending commands get err at once.
func (c *QMPClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	for id, ch := range c.pending {
		delete(c.pending, id)
		close(ch)
	}
	c.events.Close(err)
}

func (c *QMPClient) read(dec *json.Decoder) {
	defer close(c.done)
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				c.fail(vmerr.Wrap(vmerr.Exited, err, "qmp: QEMU closed the connection"))
			} else {
				c.fail(vmerr.Wrap(vmerr.Exited, err, "qmp: connection lost"))
			}
			c.conn.Close()
			return
		}
		switch {
		case m.Event != "":
			ev := Event{
				Name:     m.Event,
				Data:     m.Data,
				Time:     time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000),
				Received: time.Now(),
			}
			ev.Seq = c.events.Len() // only this goroutine appends
			if f := c.internal.Load(); f != nil {
				ev.Internal = (*f)(ev.Name)
			}
			c.events.Append(ev)
		case m.ID != nil:
			id := string(bytes.TrimSpace(m.ID))
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch == nil {
				continue // a reply to a command whose caller gave up
			}
			r := reply{ret: m.Return}
			if m.Error != nil {
				r.err = &CommandError{Class: m.Error.Class, Desc: m.Error.Desc}
			}
			if r.ret == nil && r.err == nil {
				r.ret = json.RawMessage("{}")
			}
			ch <- r
		}
		// Anything else (a reply without id) cannot be ours: every command
		// carries an id.
	}
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultCommandTimeout)
}

// Command runs one QMP command with optional arguments (any value that
// encodes to a JSON object, or nil) and returns its "return" value. It fails
// with kind "exited" at once if the connection is or becomes closed, kind
// "timeout" when ctx (DefaultCommandTimeout without a deadline) expires, and
// kind "refused" with a *CommandError when QEMU answers with an error.
func (c *QMPClient) Command(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        uint64 `json:"id"`
	}{Execute: cmd, Arguments: args}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, vmerr.Wrap(vmerr.Exited, err, "qmp %s", cmd).With("command", cmd)
	}
	c.nextID++
	req.ID = c.nextID
	key := strconv.FormatUint(req.ID, 10)
	ch := make(chan reply, 1)
	c.pending[key] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, key)
		c.mu.Unlock()
	}

	data, err := json.Marshal(req)
	if err != nil {
		forget()
		return nil, vmerr.Wrap(vmerr.Usage, err, "qmp %s: arguments", cmd).With("command", cmd)
	}
	data = append(data, '\n')
	if err := c.write(ctx, data); err != nil {
		forget()
		// The socket's write deadline is the context's, and its timer can
		// fire a moment before the context's own: an i/o timeout is the
		// deadline too.
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			kind := vmerr.DoneKind(ctx)
			return nil, vmerr.Wrap(kind, err, "qmp %s: sending", cmd).With("command", cmd)
		}
		if e := c.Err(); e != nil {
			err = e
		}
		return nil, vmerr.Wrap(vmerr.Exited, err, "qmp %s: sending", cmd).With("command", cmd)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, vmerr.Wrap(vmerr.Exited, c.Err(), "qmp %s", cmd).With("command", cmd)
		}
		if r.err != nil {
			r.err.Command = cmd
			e := vmerr.Wrap(vmerr.Refused, r.err, "qemu refused").With("command", cmd)
			e.Message = r.err.Error()
			return nil, e
		}
		return r.ret, nil
	case <-ctx.Done():
		forget()
		kind := vmerr.DoneKind(ctx)
		return nil, vmerr.Wrap(kind, ctx.Err(), "qmp %s: no reply", cmd).With("command", cmd)
	}
}

// write sends one whole command, bounded by ctx.
func (c *QMPClient) write(ctx context.Context, data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetWriteDeadline(time.Now()) })
	_, err := c.conn.Write(data)
	if !stop() {
		// The deadline was forced; clear it for the next writer.
		err = errors.Join(err, ctx.Err())
	}
	c.conn.SetWriteDeadline(time.Time{})
	return err
}

// SetInternal installs the function that marks events as vmscript's own as
// they are read (Event.Internal).
func (c *QMPClient) SetInternal(f func(name string) bool) { c.internal.Store(&f) }

// Events returns a copy of the events received so far.
func (c *QMPClient) Events() []Event { return c.events.All() }

// Mark returns the Seq the next event will have: pass it to WaitEvent to
// wait only for events that arrive after this call.
func (c *QMPClient) Mark() int { return c.events.Len() }

// WaitEvent returns the first event with Seq ≥ from named name (any name if
// empty) for which match (if not nil) returns true. Events that arrived
// before the call count, so nothing is missed between a command and the wait
// for its event. It fails with kind "exited" when the connection ends before
// such an event arrives, and kind "timeout" when ctx expires (there is no
// default deadline: pass one).
func (c *QMPClient) WaitEvent(ctx context.Context, name string, match func(json.RawMessage) bool, from int) (Event, error) {
	return c.WaitFor(ctx, name, from, func(ev Event) bool { return match == nil || match(ev.Data) })
}

// WaitFor is WaitEvent with a predicate on the whole event (its Internal
// mark, say); name is only for the error messages and also selects ("" any).
func (c *QMPClient) WaitFor(ctx context.Context, name string, from int, pred func(Event) bool) (Event, error) {
	ev, _, err := c.events.Wait(ctx, from, func(_ int, ev Event) bool {
		return (name == "" || ev.Name == name) && pred(ev)
	})
	if err == nil {
		return ev, nil
	}
	if ctx.Err() != nil {
		return Event{}, vmerr.Wrap(vmerr.DoneKind(ctx), ctx.Err(), "qmp: waiting for event %s", name).With("event", name)
	}
	return Event{}, vmerr.Wrap(vmerr.Exited, err, "qmp: waiting for event %s", name).With("event", name)
}
