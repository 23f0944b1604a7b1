// Package agent is a client of the QEMU guest agent (qemu-guest-agent) on
// its virtio-serial port: exec with exit code, stdout and stderr, file read
// and write, and shutdown. It implements the one command interface
// (command.Runner) beside the serial shell and SSH.
//
// The agent speaks QMP-style JSON lines. A session starts with
// guest-sync-delimited: a 0xFF byte flushes whatever a previous client
// left half-written, and the answer, prefixed with 0xFF, carries the
// random id sent, so stale answers are skipped. A guest without an agent
// (or whose agent has not started) never answers: Dial fails after its
// timeout saying so, instead of hanging.
package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// PortName is the virtio-serial port name qemu-guest-agent opens.
const PortName = "org.qemu.guest_agent.0"

// DefaultSyncTimeout bounds Dial's wait for the agent's first answer.
const DefaultSyncTimeout = 5 * time.Second

// DefaultRunTimeout bounds a command without a timeout of its own.
const DefaultRunTimeout = 5 * time.Minute

// pollInterval is how often Run asks whether a command has exited.
var pollInterval = 20 * time.Millisecond

// Client is a session with a guest agent. Requests go one at a time.
type Client struct {
	name   string
	conn   net.Conn
	r      *bufio.Reader
	mu     sync.Mutex
	closed atomic.Bool
}

// Dial connects to the agent's socket (the host side of the port) and
// synchronises with the agent within syncTimeout (0: DefaultSyncTimeout).
func Dial(ctx context.Context, name, socket string, syncTimeout time.Duration) (*Client, error) {
	if syncTimeout <= 0 {
		syncTimeout = DefaultSyncTimeout
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "%s: guest agent socket", name).With("vm", name)
	}
	c := &Client{name: name, conn: conn, r: bufio.NewReader(conn)}
	if err := c.sync(ctx, syncTimeout); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// Close ends the session.
func (c *Client) Close() error {
	c.closed.Store(true)
	return c.conn.Close()
}

// Closed reports whether Close was called.
func (c *Client) Closed() bool { return c.closed.Load() }

// Channel implements command.Runner.
func (c *Client) Channel() string { return "agent" }

// sync sends guest-sync-delimited once a second (an agent that starts
// later, or a port the guest opens later, misses the earlier ones) until
// an answer carries one of the ids sent, or timeout passes.
func (c *Client) sync(ctx context.Context, timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	defer c.conn.SetDeadline(time.Time{})
	sent := map[int64]bool{}
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		id := rand.Int64N(1 << 40)
		sent[id] = true
		req, _ := json.Marshal(map[string]any{"execute": "guest-sync-delimited", "arguments": map[string]any{"id": id}})
		c.conn.SetWriteDeadline(deadline)
		if _, err := c.conn.Write(append([]byte{0xff}, append(req, '\n')...)); err != nil {
			return c.noAgent(timeout, err)
		}
		c.conn.SetReadDeadline(minTime(deadline, time.Now().Add(time.Second)))
		ok, err := c.readSync(sent)
		if ok {
			return c.drain(deadline, timeout)
		}
		if ne, isNet := err.(net.Error); !isNet || !ne.Timeout() {
			return c.noAgent(timeout, err)
		}
		last = err
	}
	return c.noAgent(timeout, last)
}

// drain sends a plain guest-sync and skips every answer before its own:
// the agent answers each 0xFF an earlier sync sent with a parse error, and
// each earlier sync it read late with its id, in order.
func (c *Client) drain(deadline time.Time, timeout time.Duration) error {
	id := rand.Int64N(1 << 40)
	req, _ := json.Marshal(map[string]any{"execute": "guest-sync", "arguments": map[string]any{"id": id}})
	c.conn.SetDeadline(deadline)
	if _, err := c.conn.Write(append(req, '\n')); err != nil {
		return c.noAgent(timeout, err)
	}
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return c.noAgent(timeout, err)
		}
		var resp struct {
			Return int64 `json:"return"`
		}
		if json.Unmarshal(bytes.TrimSpace(bytes.TrimLeft(line, "\xff")), &resp) == nil && resp.Return == id {
			return nil
		}
	}
}

// readSync reads answers until one carries an id of sent.
func (c *Client) readSync(sent map[int64]bool) (bool, error) {
	for {
		if _, err := c.r.ReadBytes(0xff); err != nil {
			return false, err
		}
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return false, err
		}
		var resp struct {
			Return int64 `json:"return"`
		}
		if json.Unmarshal(bytes.TrimSpace(line), &resp) == nil && sent[resp.Return] {
			return true, nil
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// noAgent is the error of a guest whose agent did not answer.
func (c *Client) noAgent(timeout time.Duration, err error) error {
	kind := vmerr.Timeout
	if ne, ok := err.(net.Error); err != nil && (!ok || !ne.Timeout()) {
		kind = vmerr.Exited
	}
	return vmerr.New(kind, "%s: no guest agent answered on %s within %s (is qemu-guest-agent installed and running in the guest?): %v",
		c.name, PortName, timeout, err).With("vm", c.name)
}

// call sends one command and decodes its return into out (nil: ignored).
func (c *Client) call(ctx context.Context, cmd string, args any, out any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(d)
		defer c.conn.SetDeadline(time.Time{})
	}
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	req, _ := json.Marshal(msg)
	if _, err := c.conn.Write(append(req, '\n')); err != nil {
		return c.ioErr(ctx, cmd, err)
	}
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return c.ioErr(ctx, cmd, err)
		}
		line = bytes.TrimLeft(line, "\xff")
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			return vmerr.Wrap(vmerr.Protocol, err, "%s: guest agent %s: answer %q", c.name, cmd, line).With("vm", c.name)
		}
		if resp.Error != nil {
			return vmerr.New(vmerr.Refused, "%s: guest agent %s: %s (%s)", c.name, cmd, resp.Error.Desc, resp.Error.Class).With("vm", c.name)
		}
		if out == nil || resp.Return == nil {
			return nil
		}
		return json.Unmarshal(resp.Return, out)
	}
}

func (c *Client) ioErr(ctx context.Context, cmd string, err error) error {
	if ctx.Err() != nil {
		return vmerr.Wrap(vmerr.DoneKind(ctx), err, "%s: guest agent %s", c.name, cmd).With("vm", c.name)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return vmerr.Wrap(vmerr.Timeout, err, "%s: guest agent %s", c.name, cmd).With("vm", c.name)
	}
	return vmerr.Wrap(vmerr.Exited, err, "%s: guest agent %s: the connection ended", c.name, cmd).With("vm", c.name)
}

// Run implements command.Runner: cmd runs under /bin/sh -c with the
// options' stdin and environment; stdout and stderr come back apart and
// exact.
func (c *Client) Run(ctx context.Context, cmd string, opt command.Options) (command.Result, error) {
	start := time.Now()
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultRunTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := map[string]any{"path": "/bin/sh", "arg": []string{"-c", cmd}, "capture-output": true}
	if len(opt.Env) > 0 {
		var env []string
		for k, v := range opt.Env {
			env = append(env, k+"="+v)
		}
		args["env"] = env
	}
	if opt.Stdin != nil {
		in, err := io.ReadAll(opt.Stdin)
		if err != nil {
			return command.Result{Code: -1}, vmerr.Wrap(vmerr.IO, err, "%s: stdin", c.name)
		}
		args["input-data"] = base64.StdEncoding.EncodeToString(in)
	}
	var started struct {
		PID int `json:"pid"`
	}
	if err := c.call(ctx, "guest-exec", args, &started); err != nil {
		return command.Result{Code: -1}, withCmd(err, cmd)
	}
	res, err := c.waitExit(ctx, started.PID)
	res.Duration = time.Since(start)
	if err != nil {
		if vmerr.Is(err, vmerr.Timeout) {
			err = vmerr.New(vmerr.Timeout, "%s: command %q did not finish within %s (guest agent, pid %d)", c.name, cmd, timeout, started.PID).With("vm", c.name).With("command", cmd)
		}
		return res, err
	}
	return res, nil
}

// waitExit polls guest-exec-status until the process exits.
func (c *Client) waitExit(ctx context.Context, pid int) (command.Result, error) {
	for {
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode *int   `json:"exitcode"`
			Signal   *int   `json:"signal"`
			Out      string `json:"out-data"`
			Err      string `json:"err-data"`
			OutTrunc bool   `json:"out-truncated"`
			ErrTrunc bool   `json:"err-truncated"`
		}
		if err := c.call(ctx, "guest-exec-status", map[string]any{"pid": pid}, &st); err != nil {
			return command.Result{Code: -1}, err
		}
		if st.Exited {
			out, _ := base64.StdEncoding.DecodeString(st.Out)
			errb, _ := base64.StdEncoding.DecodeString(st.Err)
			r := command.Result{Stdout: string(out), Stderr: string(errb), Output: string(out) + string(errb), Code: -1}
			switch {
			case st.ExitCode != nil:
				r.Code = *st.ExitCode
			case st.Signal != nil:
				r.Code = 128 + *st.Signal
				r.Signal = fmt.Sprint(*st.Signal)
			}
			if st.OutTrunc || st.ErrTrunc {
				return r, vmerr.New(vmerr.Protocol, "%s: the guest agent truncated the output of pid %d (it keeps 16 MiB)", c.name, pid).With("vm", c.name)
			}
			return r, nil
		}
		select {
		case <-ctx.Done():
			return command.Result{Code: -1}, vmerr.New(vmerr.DoneKind(ctx), "%s: pid %d still runs", c.name, pid)
		case <-time.After(pollInterval):
		}
	}
}

func withCmd(err error, cmd string) error {
	if e, ok := err.(*vmerr.Error); ok {
		return e.With("command", cmd)
	}
	return err
}

// ReadFile reads a guest file whole, through guest-file-open/read/close.
func (c *Client) ReadFile(ctx context.Context, path string) ([]byte, error) {
	var h int64
	if err := c.call(ctx, "guest-file-open", map[string]any{"path": path, "mode": "r"}, &h); err != nil {
		return nil, err
	}
	defer c.call(context.WithoutCancel(ctx), "guest-file-close", map[string]any{"handle": h}, nil)
	var data []byte
	for {
		var rd struct {
			Count int    `json:"count"`
			Buf   string `json:"buf-b64"`
			EOF   bool   `json:"eof"`
		}
		if err := c.call(ctx, "guest-file-read", map[string]any{"handle": h, "count": 1 << 20}, &rd); err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(rd.Buf)
		if err != nil {
			return nil, vmerr.Wrap(vmerr.Protocol, err, "%s: guest-file-read of %s", c.name, path)
		}
		data = append(data, b...)
		if rd.EOF || rd.Count == 0 {
			return data, nil
		}
	}
}

// WriteFile writes data to a guest file (created or truncated).
func (c *Client) WriteFile(ctx context.Context, path string, data []byte) error {
	var h int64
	if err := c.call(ctx, "guest-file-open", map[string]any{"path": path, "mode": "w"}, &h); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), 1<<20)
		if err := c.call(ctx, "guest-file-write", map[string]any{"handle": h, "buf-b64": base64.StdEncoding.EncodeToString(data[:n])}, nil); err != nil {
			c.call(context.WithoutCancel(ctx), "guest-file-close", map[string]any{"handle": h}, nil)
			return err
		}
		data = data[n:]
	}
	return c.call(ctx, "guest-file-close", map[string]any{"handle": h}, nil)
}

// Shutdown asks the guest to power off ("powerdown"), halt or reboot. The
// agent does not answer a shutdown; it returns once the request is sent.
func (c *Client) Shutdown(mode string) error {
	switch mode {
	case "", "powerdown", "halt", "reboot":
	default:
		return vmerr.New(vmerr.Usage, "%s: shutdown mode %q: want powerdown, halt or reboot", c.name, mode)
	}
	if mode == "" {
		mode = "powerdown"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	req, _ := json.Marshal(map[string]any{"execute": "guest-shutdown", "arguments": map[string]any{"mode": mode}})
	if _, err := c.conn.Write(append(req, '\n')); err != nil {
		return vmerr.Wrap(vmerr.Exited, err, "%s: guest agent guest-shutdown", c.name)
	}
	return nil
}

var _ command.Runner = (*Client)(nil)
