// Package netboot serves one root directory over TFTP and HTTP for network
// boots, and records every request.
//
// One Server serves one root directory, confined with os.Root, plus overlay
// files generated in memory (pxelinux.cfg/default, boot.ipxe,
// pxelinux.cfg/01-<mac>) that take precedence over the directory. TFTP is
// our own (RFC 1350 with blksize, tsize, timeout and windowsize): a front
// end parses and checks every request first (names, modes, options), so
// that a refusal gets the right TFTP error code and a reason in the log;
// each admitted transfer then runs on a socket of its own, outside Go's
// network poller (see sockLink). HTTP is net/http (GET and HEAD, ranges).
// The server is read-only unless an upload directory is configured.
//
// Every request ends as one Request: protocol, client, file, bytes,
// duration, outcome (served, not found, refused, aborted) and reason. It is
// written to the run's timeline (source "netboot") and to netboot.log in the
// run directory as it completes.
//
//	srv, err := netboot.Serve(netboot.Options{Root: dir, Run: run,
//		Files: map[string]string{"boot.ipxe": "#!ipxe\nchain {{http}}/menu.ipxe\n"}})
//	defer srv.Close()
//	cfg.Devices = append(cfg.Devices, srv.BootDevice("boot.ipxe")) // QEMU user networking → iPXE → HTTP
//	r, err := srv.WaitFile(ctx, "initrd.gz")
package netboot

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmscript/vmscript/toolkit/eventlog"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Outcomes of a request.
const (
	// Served: the whole file (or the requested range) went out, or an upload
	// was stored.
	Served = "served"
	// NotFound: no such file in the overlay or the root.
	NotFound = "not found"
	// Refused: the request broke a rule (bad name, traversal, symlink out
	// of the root, write to a read-only server, malformed packet, …).
	Refused = "refused"
	// Aborted: the transfer started but did not finish (client error or
	// disappearance, server closing).
	Aborted = "aborted"
)

// Defaults of Options.
const (
	// DefaultMaxBlockSize is the largest TFTP blksize granted: a 1500-byte
	// Ethernet MTU minus 20 (IPv4) minus 8 (UDP) minus 4 (TFTP header), so a
	// DATA packet is never fragmented on the guest's link. QEMU user
	// networking and the virtual LAN both have a 1500-byte MTU; the host's
	// loopback allows more, but the guest side is the bottleneck.
	DefaultMaxBlockSize = 1468
	// DefaultTimeout is how long the TFTP server waits for an ACK before it
	// retransmits a block.
	DefaultTimeout = time.Second
	// DefaultRetries is how many times a block is sent before the transfer
	// is aborted (a vanished client is given up after about
	// DefaultTimeout × DefaultRetries).
	DefaultRetries = 5
	// UserNetHost is the address under which a guest on QEMU user networking
	// reaches the host's loopback.
	UserNetHost = "10.0.2.2"
	// LogFile is the request log's name in the run directory.
	LogFile = "netboot.log"
)

// Options configure a Server. The zero value serves nothing but is valid
// with Files.
type Options struct {
	// Name names the server in the timeline and the log (default
	// "netboot").
	Name string
	// Root is the directory served ("" serves the overlay only). It is
	// opened with os.Root: nothing outside it is ever read.
	Root string
	// Files are overlay files by clean relative name; they take precedence
	// over Root. The text may use {{server}} (the host clients reach the
	// server at, e.g. 10.0.2.2), {{tftp}} ("tftp://HOST:PORT") and {{http}}
	// ("http://HOST:PORT"), filled in when the server starts.
	Files map[string]string
	// UploadDir, if set, accepts TFTP write requests into that directory
	// (confined with os.Root; existing files are replaced). Without it every
	// write request is refused.
	UploadDir string
	// NoTFTP and NoHTTP turn a protocol off.
	NoTFTP, NoHTTP bool
	// TFTPAddr is the UDP address to listen on; default "127.0.0.1:0"
	// (an ephemeral loopback port).
	TFTPAddr string
	// TFTPConn, if set, is used instead of TFTPAddr (e.g. a UDP endpoint on
	// a gVisor netstack). It must be bound to a concrete IP address, not
	// 0.0.0.0. The server owns it from now on and closes it.
	TFTPConn net.PacketConn
	// HTTPAddr is the TCP address to listen on; default "127.0.0.1:0".
	HTTPAddr string
	// HTTPListener, if set, is used instead of HTTPAddr. The server owns it.
	HTTPListener net.Listener
	// ClientHost is the address clients use to reach this server, filled
	// in for {{server}} and used in the {{tftp}}/{{http}} URLs. Default:
	// UserNetHost (10.0.2.2) when the server listens on loopback, else the
	// listening IP.
	ClientHost string
	// MaxBlockSize caps the TFTP blksize granted (512 to 65464); default
	// DefaultMaxBlockSize. A client asking for less gets what it asked
	// for (8 at least, RFC 2348).
	MaxBlockSize int
	// Timeout and Retries tune TFTP retransmission (defaults
	// DefaultTimeout and DefaultRetries). A client's timeout option
	// (1-255 s) replaces Timeout for its transfer.
	Timeout time.Duration
	Retries int
	// Run receives the request events and netboot.log (nil: memory only).
	Run *journal.Run
}

// Request is one finished request.
type Request struct {
	// Seq numbers requests in the order they arrived, from 1.
	Seq int `json:"seq"`
	// Proto is "tftp" or "http".
	Proto string `json:"proto"`
	// Op is "read" or "write" for TFTP, the method for HTTP.
	Op string `json:"op"`
	// Client is the client's address (ip:port).
	Client string `json:"client"`
	// File is the clean name served, or the name as sent (quoted with %q
	// when it is not printable) when it was refused.
	File string `json:"file"`
	// Source is "overlay", "root" or "upload" when a file was found.
	Source string `json:"source,omitempty"`
	// Bytes is the number of file bytes sent (or received for an upload).
	Bytes int64 `json:"bytes"`
	// Size is the file's size, -1 when unknown.
	Size int64 `json:"size"`
	// BlockSize is the TFTP block size used (0 for HTTP).
	BlockSize int `json:"blksize,omitempty"`
	// Options are the TFTP options as the client sent them.
	Options map[string]string `json:"options,omitempty"`
	// Status is the HTTP status code (0 for TFTP).
	Status int `json:"status,omitempty"`
	// Start is when the request arrived; Duration how long it took.
	Start    time.Time     `json:"time"`
	Duration time.Duration `json:"duration"`
	// Outcome is Served, NotFound, Refused or Aborted.
	Outcome string `json:"outcome"`
	// Reason says why for every outcome but Served.
	Reason string `json:"reason,omitempty"`
}

// Filter selects requests; empty fields match everything.
type Filter struct {
	// File matches like WaitFile's name.
	File string
	// Proto is "tftp" or "http".
	Proto string
	// Outcome is one of the outcome constants.
	Outcome string
}

func (f Filter) match(r Request) bool {
	return (f.File == "" || matchName(f.File, r.File)) &&
		(f.Proto == "" || f.Proto == r.Proto) &&
		(f.Outcome == "" || f.Outcome == r.Outcome)
}

// Server serves one root over TFTP and HTTP. It is safe for concurrent use.
type Server struct {
	opt     Options
	name    string
	source  string // timeline source
	root    *os.Root
	upload  *os.Root
	overlay map[string]string
	started time.Time
	maxBlk  int

	tftpConn net.PacketConn
	httpSrv  *http.Server
	httpLn   net.Listener

	lan         *lan.LAN // attached to (ServeLAN), or nil
	lanBootfile string   // what the LAN's DHCP advertises (under mu)

	tftpURL, httpURL             string // as the host reaches them
	clientTFTPURL, clientHTTPURL string // as clients reach them

	closing   atomic.Bool
	closeOnce sync.Once
	serveWG   sync.WaitGroup // Serve loops
	reqWG     sync.WaitGroup // request handlers and TFTP transfers

	mu  sync.Mutex
	seq int
	// requests are the finished requests in the order they finished; the
	// log is closed when the server closes.
	requests *eventlog.Log[Request]
	active   map[string]link // TFTP transfers in progress by client address
	log      *os.File
	done     chan struct{}
}

// Serve starts a server. On error nothing is left open.
func Serve(opt Options) (_ *Server, err error) {
	if opt, err = withDefaults(opt); err != nil {
		return nil, err
	}
	s := &Server{
		opt: opt, name: opt.Name, source: "netboot", overlay: map[string]string{},
		started: time.Now(), maxBlk: opt.MaxBlockSize, requests: eventlog.New[Request](),
		active: map[string]link{}, done: make(chan struct{}),
	}
	if opt.Name != "netboot" {
		s.source = "netboot:" + opt.Name
	}
	s.requests.Subscribe(s.publish)
	defer func() {
		if err != nil {
			s.closeResources()
		}
	}()
	raw := map[string]string{}
	for name, text := range opt.Files {
		clean, err := CleanName(name)
		if err != nil {
			return nil, vmerr.New(vmerr.Usage, "netboot: overlay file %q: %v", name, err)
		}
		raw[clean] = text
	}
	if err := s.openRoots(); err != nil {
		return nil, err
	}
	// Listeners first: the overlay needs the ports.
	host, err := s.listen()
	if err != nil {
		return nil, err
	}
	client := s.clientURLs(host)
	if err := s.fillOverlay(raw, client); err != nil {
		return nil, err
	}
	if opt.Run != nil {
		if s.log, err = os.OpenFile(opt.Run.Path(LogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "netboot: log")
		}
	}
	s.start()
	return s, nil
}

// withDefaults fills in and checks the options.
func withDefaults(opt Options) (Options, error) {
	if opt.Name == "" {
		opt.Name = "netboot"
	}
	if opt.MaxBlockSize == 0 {
		opt.MaxBlockSize = DefaultMaxBlockSize
	}
	if opt.MaxBlockSize < 512 || opt.MaxBlockSize > 65464 {
		return opt, vmerr.New(vmerr.Usage, "netboot: MaxBlockSize %d out of range 512-65464", opt.MaxBlockSize)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.Retries <= 0 {
		opt.Retries = DefaultRetries
	}
	if opt.NoTFTP && opt.NoHTTP {
		return opt, vmerr.New(vmerr.Usage, "netboot: both TFTP and HTTP are off")
	}
	return opt, nil
}

// openRoots opens the served root and the upload directory, confined.
func (s *Server) openRoots() error {
	var err error
	if s.opt.Root != "" {
		if s.root, err = os.OpenRoot(s.opt.Root); err != nil {
			return vmerr.Wrap(vmerr.NotFound, err, "netboot: root")
		}
	}
	if s.opt.UploadDir != "" {
		if s.upload, err = os.OpenRoot(s.opt.UploadDir); err != nil {
			return vmerr.Wrap(vmerr.NotFound, err, "netboot: upload directory")
		}
	}
	return nil
}

// listen opens the TFTP and HTTP sockets (given ones or ephemeral loopback
// ports) and returns the host they are on.
func (s *Server) listen() (string, error) {
	opt := s.opt
	var host string
	if !opt.NoTFTP {
		pc := opt.TFTPConn
		if pc == nil {
			addr := cmp.Or(opt.TFTPAddr, "127.0.0.1:0")
			var err error
			if pc, err = net.ListenPacket("udp", addr); err != nil {
				return "", vmerr.Wrap(vmerr.IO, err, "netboot: TFTP listen")
			}
		}
		s.tftpConn = pc
		h, port, _ := net.SplitHostPort(pc.LocalAddr().String())
		if ip := net.ParseIP(h); ip == nil || ip.IsUnspecified() {
			return "", vmerr.New(vmerr.Usage, "netboot: TFTP must be bound to a concrete IP address, not %s (transfers answer from that address)", pc.LocalAddr())
		}
		host = h
		s.tftpURL = "tftp://" + net.JoinHostPort(h, port)
	}
	if !opt.NoHTTP {
		ln := opt.HTTPListener
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", cmp.Or(opt.HTTPAddr, "127.0.0.1:0")); err != nil {
				return "", vmerr.Wrap(vmerr.IO, err, "netboot: HTTP listen")
			}
		}
		s.httpLn = ln
		h, port, _ := net.SplitHostPort(ln.Addr().String())
		host = cmp.Or(host, h)
		s.httpURL = "http://" + net.JoinHostPort(h, port)
	}
	return host, nil
}

// clientURLs settles the host and URLs a guest reaches the server at (QEMU
// user networking's 10.0.2.2 for a loopback server) and returns the host.
func (s *Server) clientURLs(host string) string {
	client := s.opt.ClientHost
	if client == "" {
		client = host
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			client = UserNetHost
		}
	}
	if s.tftpConn != nil {
		_, port, _ := net.SplitHostPort(s.tftpConn.LocalAddr().String())
		s.clientTFTPURL = "tftp://" + net.JoinHostPort(client, port)
	}
	if s.httpLn != nil {
		_, port, _ := net.SplitHostPort(s.httpLn.Addr().String())
		s.clientHTTPURL = "http://" + net.JoinHostPort(client, port)
	}
	return client
}

// fillOverlay fills {{server}}, {{tftp}} and {{http}} into the overlay
// texts.
func (s *Server) fillOverlay(raw map[string]string, client string) error {
	for name, text := range raw {
		for key, val := range map[string]string{"{{tftp}}": s.clientTFTPURL, "{{http}}": s.clientHTTPURL} {
			if strings.Contains(text, key) && val == "" {
				return vmerr.New(vmerr.Usage, "netboot: overlay file %s uses %s but that protocol is off", name, key)
			}
		}
		s.overlay[name] = strings.NewReplacer("{{server}}", client, "{{tftp}}", s.clientTFTPURL, "{{http}}", s.clientHTTPURL).Replace(text)
	}
	return nil
}

// start starts serving and records the start.
func (s *Server) start() {
	if s.tftpConn != nil {
		s.startTFTP()
	}
	if s.httpLn != nil {
		s.startHTTP()
	}
	s.event("start", map[string]any{"root": s.opt.Root, "tftp": s.tftpURL, "http": s.httpURL,
		"client_tftp": s.clientTFTPURL, "client_http": s.clientHTTPURL, "overlay": s.OverlayNames(),
		"max_blksize": s.maxBlk, "upload": s.opt.UploadDir})
	s.logLine(fmt.Sprintf("%s %s start root=%q tftp=%s http=%s clients-see tftp=%s http=%s overlay=%v max-blksize=%d",
		time.Now().Format(journal.WallFormat), s.name, s.opt.Root, s.tftpURL, s.httpURL, s.clientTFTPURL, s.clientHTTPURL, s.OverlayNames(), s.maxBlk))
}

// OverlayNames returns the overlay's file names, sorted.
func (s *Server) OverlayNames() []string {
	names := make([]string, 0, len(s.overlay))
	for n := range s.overlay {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Overlay returns an overlay file's text as served (templates filled in).
func (s *Server) Overlay(name string) (string, bool) {
	t, ok := s.overlay[strings.TrimPrefix(name, "/")]
	return t, ok
}

// Name returns the server's name.
func (s *Server) Name() string { return s.name }

// Root returns the served directory ("" for overlay only).
func (s *Server) Root() string { return s.opt.Root }

// TFTPURL returns "tftp://IP:PORT" as the host reaches the server ("" when
// TFTP is off).
func (s *Server) TFTPURL() string { return s.tftpURL }

// HTTPURL returns "http://IP:PORT" as the host reaches the server ("" when
// HTTP is off).
func (s *Server) HTTPURL() string { return s.httpURL }

// ClientTFTPURL returns the TFTP URL as clients reach it (on loopback, QEMU
// user networking's view: tftp://10.0.2.2:PORT).
func (s *Server) ClientTFTPURL() string { return s.clientTFTPURL }

// ClientHTTPURL returns the HTTP URL as clients reach it.
func (s *Server) ClientHTTPURL() string { return s.clientHTTPURL }

// TFTPAddr returns the TFTP listening address (nil when off).
func (s *Server) TFTPAddr() net.Addr {
	if s.tftpConn == nil {
		return nil
	}
	return s.tftpConn.LocalAddr()
}

// HTTPAddr returns the HTTP listening address (nil when off).
func (s *Server) HTTPAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}

// MaxBlockSize returns the largest TFTP blksize the server grants.
func (s *Server) MaxBlockSize() int { return s.maxBlk }

// Requests returns the finished requests that f selects, in arrival order.
func (s *Server) Requests(f Filter) []Request {
	var out []Request
	for _, r := range s.requests.All() {
		if f.match(r) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// WaitFile waits until a request for name has been served completely and
// returns it. name is a clean path, or a base name that matches any
// directory ("linux" matches "debian-installer/amd64/linux"). A request
// already served counts. When ctx ends first the error (kind "timeout", or
// "cancelled") lists what was requested instead; when the server closes,
// kind "exited".
func (s *Server) WaitFile(ctx context.Context, name string) (Request, error) {
	start := time.Now()
	r, _, err := s.requests.Wait(ctx, 0, func(_ int, r Request) bool { return r.Outcome == Served && matchName(name, r.File) })
	switch {
	case err == nil:
		return r, nil
	case ctx.Err() != nil:
		return Request{}, s.waitError(vmerr.DoneKind(ctx), name, start, "")
	}
	return Request{}, s.waitError(vmerr.Exited, name, start, "the server closed")
}

func (s *Server) waitError(kind, name string, start time.Time, why string) error {
	reqs := s.Requests(Filter{})
	var b strings.Builder
	fmt.Fprintf(&b, "netboot %s: %q was not served within %s", s.name, name, time.Since(start).Round(time.Millisecond))
	if why != "" {
		fmt.Fprintf(&b, " (%s)", why)
	}
	if len(reqs) == 0 {
		b.WriteString("; nothing was requested at all")
	} else {
		fmt.Fprintf(&b, "; %d requests instead:", len(reqs))
		const show = 30
		first := 0
		if len(reqs) > show {
			first = len(reqs) - show
			fmt.Fprintf(&b, "\n  … %d earlier", first)
		}
		for _, r := range reqs[first:] {
			fmt.Fprintf(&b, "\n  %s", r.Summary())
		}
	}
	list := make([]map[string]any, 0, len(reqs))
	for _, r := range reqs {
		list = append(list, map[string]any{"proto": r.Proto, "file": r.File, "outcome": r.Outcome, "reason": r.Reason, "client": r.Client})
	}
	return vmerr.New(kind, "%s", b.String()).With("file", name).With("requests", list).With("waited_s", time.Since(start).Seconds())
}

// Summary renders a request as one line: "tftp read pxelinux.0 from
// 127.0.0.1:5000: served 42430 B in 12ms".
func (r Request) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s from %s: %s", r.Proto, r.Op, r.File, r.Client, r.Outcome)
	if r.Outcome == Served || r.Outcome == Aborted {
		fmt.Fprintf(&b, " %d", r.Bytes)
		if r.Size >= 0 {
			fmt.Fprintf(&b, "/%d", r.Size)
		}
		b.WriteString(" B")
	}
	fmt.Fprintf(&b, " in %s", r.Duration.Round(time.Microsecond))
	if r.BlockSize > 0 {
		fmt.Fprintf(&b, " blksize=%d", r.BlockSize)
	}
	if r.Status != 0 {
		fmt.Fprintf(&b, " status=%d", r.Status)
	}
	if r.Reason != "" {
		fmt.Fprintf(&b, " (%s)", r.Reason)
	}
	return b.String()
}

// begin allocates a sequence number for a request arriving now.
func (s *Server) begin() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return s.seq
}

// record stores a finished request and writes it to the timeline and log.
func (s *Server) record(r Request) {
	r.Duration = time.Since(r.Start)
	if r.Seq == 0 {
		r.Seq = s.begin()
	}
	s.requests.Append(r) // its subscriber writes the timeline and netboot.log
}

// publish writes a finished request to the timeline (the same fields as
// the Lua table) and to netboot.log.
func (s *Server) publish(_ int, r Request) {
	s.event("request", record.Map(r))
	s.logLine(r.Start.Format(journal.WallFormat) + " " + s.name + " #" + strconv.Itoa(r.Seq) + " " + r.Summary())
}

// ignored logs a packet that was not a request and got no answer (a stray
// ACK after a finished transfer, …). It is not a Request.
func (s *Server) ignored(client, why string) {
	s.event("ignored", map[string]any{"client": client, "reason": why})
	s.logLine(time.Now().Format(journal.WallFormat) + " " + s.name + " ignored packet from " + client + ": " + why)
}

func (s *Server) event(kind string, fields map[string]any) {
	if s.opt.Run != nil {
		s.opt.Run.Event(s.source, kind, fields)
	}
}

func (s *Server) logLine(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log != nil {
		// One write per line on an O_APPEND file: lines stay whole.
		_, _ = io.WriteString(s.log, line+"\n")
	}
}

// Close stops both servers, aborts TFTP transfers in progress at once (the
// client gets an ERROR) and returns when every goroutine of the server has
// ended. It closes connections passed in
// Options.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		if s.lan != nil {
			s.lan.DHCP().SetBootFunc(nil)
		}
		if s.httpSrv != nil {
			_ = s.httpSrv.Close()
		}
		if s.tftpConn != nil {
			_ = s.tftpConn.Close()
		}
		s.serveWG.Wait() // no transfer starts after this
		s.interruptTransfers()
		s.reqWG.Wait()
		s.event("stop", map[string]any{"requests": s.requests.Len()})
		s.logLine(time.Now().Format(journal.WallFormat) + " " + s.name + " stop")
		s.requests.Close(vmerr.New(vmerr.Exited, "netboot %s: closed", s.name))
		close(s.done)
		s.closeResources()
	})
	return nil
}

// Done is closed when the server has closed.
func (s *Server) Done() <-chan struct{} { return s.done }

func (s *Server) closeResources() {
	if s.tftpConn != nil {
		s.tftpConn.Close() // again after Close: harmless
	}
	if s.httpSrv == nil && s.httpLn != nil {
		s.httpLn.Close()
	}
	if s.root != nil {
		s.root.Close()
	}
	if s.upload != nil {
		s.upload.Close()
	}
	s.mu.Lock()
	if s.log != nil {
		s.log.Close()
		s.log = nil
	}
	s.mu.Unlock()
}
