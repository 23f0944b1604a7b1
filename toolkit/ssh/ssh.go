// Package ssh is vmscript's SSH client for guests: connect (or wait until a
// booting guest answers), run commands with their exit code, stdout and
// stderr, copy files through SFTP or, when the server has no SFTP
// subsystem (dropbear), through cat, and open interactive pty sessions that
// offer the console's expect/send API.
//
// Every connection attempt, command, transfer and session is an event in the
// run's timeline (source "ssh:NAME"); command output is also streamed, as it
// arrives, to a transcript file in the run directory (NAME.ssh.log).
//
// Errors are *vmerr.Error: wrong password or key is kind "auth", a host key
// that differs from the pinned or recorded one is "refused", a server that
// never answered before the deadline is "timeout" naming the host, the port
// and the last error seen, and a command that overran its timeout is
// "timeout" with the partial output in the context.
package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	gossh "golang.org/x/crypto/ssh"
)

// Defaults for the Config and option durations.
const (
	// DefaultTimeout bounds one connection attempt (TCP connect, handshake
	// and authentication) when Config.Timeout is 0.
	DefaultTimeout = 30 * time.Second
	// DefaultWaitTimeout bounds Wait when its context has no deadline.
	DefaultWaitTimeout = 2 * time.Minute
	// DefaultRunTimeout bounds a command whose RunOptions.Timeout is 0.
	DefaultRunTimeout = 10 * time.Minute
	// SignalGrace is how long a timed-out command has, after the signal,
	// to report its exit before its session is closed.
	SignalGrace = 2 * time.Second
	// retryPause is the pause between two connection attempts in Wait.
	retryPause = 500 * time.Millisecond
)

// Config says where and how to connect.
type Config struct {
	// Host is the server's address; default 127.0.0.1.
	Host string
	// Port is the server's port; default 22.
	Port int
	// User is the login name; default "root".
	User string
	// Password enables password and keyboard-interactive authentication.
	Password string
	// KeyFiles are private key files (OpenSSH or PEM format, unencrypted).
	KeyFiles []string
	// Keys are private keys given as their file content.
	Keys [][]byte
	// HostKey is the host key policy: AcceptNew ("" too), Insecure, or one
	// or more pinned keys (authorized_keys or known_hosts lines, or SHA256
	// fingerprints), one per line. A mismatch is kind "refused".
	HostKey string
	// KnownHostsPath is where AcceptNew looks keys up and records new ones.
	// "" means the run directory's known_hosts (with Run), or memory.
	KnownHostsPath string
	// Timeout bounds one connection attempt; 0 means DefaultTimeout.
	Timeout time.Duration
	// WaitTimeout bounds Wait (and a reconnecting Client.Wait) when its
	// context has no deadline; 0 means DefaultWaitTimeout.
	WaitTimeout time.Duration
	// Name labels the client in the timeline (source "ssh:NAME") and names
	// its transcript (NAME.ssh.log); default "USER@HOST-PORT".
	Name string
	// Run is the run directory and timeline; nil records nothing.
	Run *journal.Run
	// NoSFTP makes Get and Put use cat over exec even when the server offers
	// SFTP.
	NoSFTP bool
	// Dial, if set, makes the TCP connection of every attempt instead of a
	// net.Dialer (network "tcp", addr "Host:Port"), e.g. through a virtual
	// LAN's network stack. Its error should be a plain error (not a
	// *vmerr.Error of a kind other than "io") when a retry may succeed:
	// Wait gives up at once on kinds "auth", "refused", "usage" and
	// "cancelled".
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (cfg *Config) setDefaults() {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port == 0 {
		cfg.Port = 22
	}
	if cfg.User == "" {
		cfg.User = "root"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("%s@%s-%d", cfg.User, cfg.Host, cfg.Port)
	}
	if cfg.KnownHostsPath == "" && cfg.Run != nil && (cfg.HostKey == "" || cfg.HostKey == AcceptNew) {
		cfg.KnownHostsPath = cfg.Run.Path("known_hosts")
	}
}

// Client is a connection to one SSH server. It is safe for concurrent use:
// commands, transfers and sessions each get their own channel.
type Client struct {
	cfg    Config
	addr   string
	source string
	cc     *gossh.ClientConfig

	mu         sync.Mutex
	conn       *gossh.Client
	sftp       *sftp.Client
	noSFTP     bool // the server has no SFTP subsystem (learned once per connection)
	closed     bool
	sessions   map[*Session]struct{}
	seq        int
	transcript *os.File
	trErr      error
}

// Addr returns "host:port".
func (c *Client) Addr() string { return c.addr }

// Name returns the client's label.
func (c *Client) Name() string { return c.cfg.Name }

// Config returns the configuration with defaults filled in.
func (c *Client) Config() Config { return c.cfg }

// TranscriptPath returns the transcript file, or "" without a run.
func (c *Client) TranscriptPath() string {
	if c.cfg.Run == nil {
		return ""
	}
	return c.cfg.Run.Path(transcriptName(c.cfg.Name))
}

func (c *Client) String() string {
	return fmt.Sprintf("ssh %s (%s@%s)", c.cfg.Name, c.cfg.User, c.addr)
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._@-]+`)

func transcriptName(name string) string { return unsafeName.ReplaceAllString(name, "_") + ".ssh.log" }

// newClient validates cfg and prepares the client configuration.
func newClient(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, vmerr.New(vmerr.Usage, "ssh: port %d out of range", cfg.Port)
	}
	var methods []gossh.AuthMethod
	var signers []gossh.Signer
	for _, f := range cfg.KeyFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			kind := vmerr.IO
			if errors.Is(err, os.ErrNotExist) {
				kind = vmerr.NotFound
			}
			return nil, vmerr.Wrap(kind, err, "ssh: key file").With("key", f)
		}
		s, err := gossh.ParsePrivateKey(data)
		if err != nil {
			return nil, vmerr.Wrap(vmerr.Usage, err, "ssh: key file %s", f).With("key", f)
		}
		signers = append(signers, s)
	}
	for i, k := range cfg.Keys {
		s, err := gossh.ParsePrivateKey(k)
		if err != nil {
			return nil, vmerr.Wrap(vmerr.Usage, err, "ssh: key %d", i+1)
		}
		signers = append(signers, s)
	}
	if len(signers) > 0 {
		methods = append(methods, gossh.PublicKeys(signers...))
	}
	if cfg.Password != "" {
		pw := cfg.Password
		methods = append(methods, gossh.Password(pw),
			gossh.KeyboardInteractive(func(name, instruction string, questions []string, echos []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range questions {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	if len(methods) == 0 {
		return nil, vmerr.New(vmerr.Usage, "ssh %s@%s:%d: give a password or a key", cfg.User, cfg.Host, cfg.Port)
	}
	cb, algos, err := hostKeyCallback(&cfg)
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:      cfg,
		addr:     net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		source:   "ssh:" + cfg.Name,
		sessions: map[*Session]struct{}{},
		cc: &gossh.ClientConfig{
			User:              cfg.User,
			Auth:              methods,
			HostKeyCallback:   cb,
			HostKeyAlgorithms: algos,
			Timeout:           cfg.Timeout,
		},
	}
	return c, nil
}

// Dial makes one connection attempt, bounded by cfg.Timeout and ctx.
// Errors: "auth" (no key or password accepted), "refused" (host key
// mismatch), "timeout", "cancelled", "io" (nothing listening, connection
// reset), "usage" (bad configuration).
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	conn, err := c.dialOnce(ctx)
	if err != nil {
		e := c.classify(err, ctx, start)
		c.event("connect-error", map[string]any{"error": e.Error(), "kind": e.Kind})
		return nil, e
	}
	c.setConn(conn, start, 1)
	return c, nil
}

// Wait connects, retrying failed attempts (nothing listening yet, connection
// reset, handshake cut short — a booting guest behind QEMU's hostfwd does
// all of these) until one succeeds or ctx ends; a ctx without deadline gets
// DefaultWaitTimeout. Authentication failures and host key mismatches end
// the wait at once. A wait that runs out is kind "timeout" naming the host,
// the port and the last error seen.
func Wait(ctx context.Context, cfg Config) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	conn, attempts, start, err := c.waitConn(ctx)
	if err != nil {
		return nil, err
	}
	c.setConn(conn, start, attempts)
	return c, nil
}

// waitConn retries dialOnce until it succeeds, fails for good, or ctx ends.
func (c *Client) waitConn(ctx context.Context) (*gossh.Client, int, time.Time, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.WaitTimeout)
		defer cancel()
	}
	start := time.Now()
	c.event("wait", map[string]any{"addr": c.addr, "user": c.cfg.User})
	var last error
	attempts := 0
	for {
		attempts++
		conn, err := c.dialOnce(ctx)
		if err == nil {
			return conn, attempts, start, nil
		}
		e := c.classify(err, ctx, start)
		if e.Kind == vmerr.Auth || e.Kind == vmerr.Refused || e.Kind == vmerr.Usage || e.Kind == vmerr.Cancelled {
			c.event("connect-error", map[string]any{"error": e.Error(), "kind": e.Kind, "attempts": attempts})
			return nil, attempts, start, e.With("attempts", attempts)
		}
		if ctx.Err() == nil || last == nil {
			last = err
		}
		pause := time.NewTimer(retryPause)
		select {
		case <-ctx.Done():
			pause.Stop()
			return nil, attempts, start, c.waitTimeout(ctx, start, attempts, last)
		case <-pause.C:
		}
		if ctx.Err() != nil {
			return nil, attempts, start, c.waitTimeout(ctx, start, attempts, last)
		}
	}
}

func (c *Client) waitTimeout(ctx context.Context, start time.Time, attempts int, last error) *vmerr.Error {
	waited := time.Since(start)
	kind := vmerr.DoneKind(ctx)
	lastMsg := "none"
	if last != nil {
		lastMsg = last.Error()
	}
	e := vmerr.New(kind, "ssh %s@%s: no SSH login within %.1fs (%d attempts); last error: %s",
		c.cfg.User, c.addr, waited.Seconds(), attempts, lastMsg)
	e.Err = last
	c.event("wait-timeout", map[string]any{"attempts": attempts, "waited_s": waited.Seconds(), "last_error": lastMsg})
	return c.ctxFields(e).With("attempts", attempts).With("waited_s", waited.Seconds()).With("last_error", lastMsg)
}

// dialOnce makes one TCP connection and SSH handshake, bounded by the
// attempt timeout and ctx.
func (c *Client) dialOnce(ctx context.Context) (*gossh.Client, error) {
	actx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	dial := c.cfg.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(actx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	// The handshake has no context: a deadline on the socket bounds it, and
	// a cancelled ctx closes the socket.
	if dl, ok := actx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(actx, func() { nc.Close() })
	sc, chans, reqs, err := gossh.NewClientConn(nc, c.addr, c.cc)
	if !stop() && err == nil {
		sc.Close()
		return nil, actx.Err()
	}
	if err != nil {
		if actx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", actx.Err(), err)
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return gossh.NewClient(sc, chans, reqs), nil
}

// classify maps a connection error to a *vmerr.Error.
func (c *Client) classify(err error, ctx context.Context, start time.Time) *vmerr.Error {
	var ve *vmerr.Error
	if errors.As(err, &ve) && ve.Kind != vmerr.IO {
		return c.ctxFields(ve)
	}
	var he *hostKeyError
	if errors.As(err, &he) {
		return c.ctxFields(vmerr.Wrap(vmerr.Refused, he, "ssh %s", c.addr))
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "unable to authenticate"),
		// x/crypto's keyboard-interactive reports a plain failure reply
		// (SSH_MSG_USERAUTH_FAILURE, 51) from a server without any
		// keyboard-interactive device as an unexpected message.
		strings.Contains(msg, "unexpected message type 51"):
		return c.ctxFields(vmerr.Wrap(vmerr.Auth, err, "ssh %s@%s: authentication failed (%s)", c.cfg.User, c.addr, c.methods()))
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return c.ctxFields(vmerr.Wrap(vmerr.Cancelled, err, "ssh %s: cancelled", c.addr))
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return c.ctxFields(vmerr.Wrap(vmerr.Timeout, err, "ssh %s: no answer within %.1fs", c.addr, time.Since(start).Seconds()))
	case errors.Is(err, syscall.ECONNREFUSED):
		return c.ctxFields(vmerr.Wrap(vmerr.IO, err, "ssh %s: nothing listening", c.addr))
	}
	return c.ctxFields(vmerr.Wrap(vmerr.IO, err, "ssh %s", c.addr))
}

func (c *Client) methods() string {
	var m []string
	if len(c.cfg.KeyFiles)+len(c.cfg.Keys) > 0 {
		m = append(m, "key")
	}
	if c.cfg.Password != "" {
		m = append(m, "password")
	}
	return "tried " + strings.Join(m, " and ")
}

func (c *Client) ctxFields(e *vmerr.Error) *vmerr.Error {
	return e.With("host", c.cfg.Host).With("port", c.cfg.Port).With("user", c.cfg.User)
}

func (c *Client) setConn(conn *gossh.Client, start time.Time, attempts int) {
	c.mu.Lock()
	old := c.conn
	c.conn = conn
	c.sftp = nil
	c.noSFTP = false
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	c.event("connect", map[string]any{
		"addr": c.addr, "user": c.cfg.User, "server": string(conn.ServerVersion()),
		"attempts": attempts, "duration_s": time.Since(start).Seconds(),
	})
}

func (c *Client) event(kind string, fields map[string]any) {
	if c.cfg.Run != nil {
		c.cfg.Run.Event(c.source, kind, fields)
	}
}

// connection returns the live connection or an error when closed.
func (c *Client) connection() (*gossh.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, c.ctxFields(vmerr.New(vmerr.Usage, "ssh %s: client is closed", c.cfg.Name))
	}
	if c.conn == nil {
		return nil, c.ctxFields(vmerr.New(vmerr.IO, "ssh %s: not connected (call Wait)", c.cfg.Name))
	}
	return c.conn, nil
}

// Wait checks that the connection is alive (a keepalive round trip) and, if
// it is not (the guest rebooted), reconnects, retrying until ctx ends like
// the package's Wait.
func (c *Client) Wait(ctx context.Context) error {
	conn, err := c.connection()
	if err != nil && vmerr.Is(err, vmerr.Usage) {
		return err
	}
	if conn != nil && c.alive(ctx, conn) {
		return nil
	}
	nc, attempts, start, err := c.waitConn(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		nc.Close()
		return c.ctxFields(vmerr.New(vmerr.Usage, "ssh %s: client is closed", c.cfg.Name))
	}
	c.setConn(nc, start, attempts)
	return nil
}

// alive sends a keepalive request, bounded by a few seconds.
func (c *Client) alive(ctx context.Context, conn *gossh.Client) bool {
	done := make(chan error, 1)
	go func() {
		_, _, err := conn.SendRequest("keepalive@openssh.com", true, nil)
		done <- err
	}()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case err := <-done:
		return err == nil
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Close closes the sessions, the SFTP client and the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conn, sc := c.conn, c.sftp
	c.conn, c.sftp = nil, nil
	sessions := make([]*Session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
	if sc != nil {
		sc.Close()
	}
	var err error
	if conn != nil {
		err = conn.Close()
	}
	c.mu.Lock()
	if c.transcript != nil {
		c.transcript.Close()
		c.transcript = nil
	}
	c.mu.Unlock()
	c.event("close", nil)
	return err
}

// transcriptWriter returns the transcript file (opened on first use, in
// append mode, so clients with one name share it), or nil.
func (c *Client) transcriptWriter() io.Writer {
	if c.cfg.Run == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.transcript == nil && c.trErr == nil {
		c.transcript, c.trErr = os.OpenFile(c.TranscriptPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if c.trErr != nil {
			c.event("transcript-error", map[string]any{"error": c.trErr.Error()})
		}
	}
	if c.transcript == nil {
		return nil
	}
	return c.transcript
}

func (c *Client) nextSeq() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return c.seq
}
