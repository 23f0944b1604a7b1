package netboot

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// secret is the content of a file next to (outside) every test root; no
// response may ever contain it.
const secret = "SECRET-OUTSIDE-THE-ROOT-5f2c9e"

type fixture struct {
	dir, root string
	run       *journal.Run
	files     map[string][]byte
}

// newFixture makes a root with files of awkward sizes, a subdirectory, a
// FIFO, a symlink inside and symlinks that leave the root, and a secret
// file outside it.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, root: filepath.Join(dir, "root"), files: map[string][]byte{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(f.root, "sub/deeper"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "secret"), []byte(secret), 0o644))
	for name, size := range map[string]int{
		"empty": 0, "one": 1, "b512": 512, "b1468": 1468, "b1468x3": 3 * 1468, "b8192": 8192,
		"sub/deeper/file.bin": 100_000, "big.bin": 3<<20 + 17,
	} {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		f.files[name] = data
		must(os.WriteFile(filepath.Join(f.root, name), data, 0o644))
	}
	must(os.Symlink("sub/deeper/file.bin", filepath.Join(f.root, "inside-link")))
	f.files["inside-link"] = f.files["sub/deeper/file.bin"]
	must(os.Symlink("../secret", filepath.Join(f.root, "escape")))
	must(os.Symlink(filepath.Join(dir, "secret"), filepath.Join(f.root, "abs-escape")))
	must(os.Symlink("../..", filepath.Join(f.root, "sub/up")))
	if err := mkfifo(filepath.Join(f.root, "fifo")); err != nil {
		t.Logf("no fifo: %v", err)
	}
	run, err := journal.New(filepath.Join(dir, "run"), time.Now())
	must(err)
	t.Cleanup(func() { run.Close() })
	f.run = run
	return f
}

func (f *fixture) serve(t testing.TB, opt Options) *Server {
	t.Helper()
	opt.Root = f.root
	opt.Run = f.run
	s, err := Serve(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tftpHostPort(s *Server) (string, string) {
	h, p, _ := net.SplitHostPort(s.TFTPAddr().String())
	return h, p
}

func sum(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

func TestCleanName(t *testing.T) {
	good := map[string]string{
		"pxelinux.0": "pxelinux.0", "/pxelinux.0": "pxelinux.0", "a/b/c": "a/b/c",
		"pxelinux.cfg/01-52-54-00-12-34-56": "pxelinux.cfg/01-52-54-00-12-34-56",
		"....":                              "....", "..a": "..a", "a..": "a..", "．．/x": "．．/x", "%2e%2e": "%2e%2e",
	}
	for in, want := range good {
		if got, err := CleanName(in); err != nil || got != want {
			t.Errorf("CleanName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{"", "/", "..", "../x", "a/../../x", "a/..", "/../x", "//etc/passwd", "a//b", "a/", "./a", "a/./b",
		`..\x`, `a\b`, "a\x00b", "a\nb", "a\x7fb", "\xff\xfe", strings.Repeat("a", 600), "/" + strings.Repeat("a/", 200)}
	for _, in := range bad {
		if got, err := CleanName(in); err == nil {
			t.Errorf("CleanName(%q) = %q, want an error", in, got)
		}
	}
}

// TestClients fetches files with the real clients: tftp-hpa (no options:
// blksize 512), curl with blksize 512, 1468 and 8192 and tsize, and curl
// over HTTP. Every copy must hash like the source.
func TestClients(t *testing.T) {
	f := newFixture(t)
	s := f.serve(t, Options{})
	host, port := tftpHostPort(s)
	names := []string{"empty", "one", "b512", "b1468", "b1468x3", "b8192", "sub/deeper/file.bin", "big.bin", "inside-link"}
	out := t.TempDir()
	check := func(what, name, path string) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s %s: %v", what, name, err)
			return
		}
		if sum(got) != sum(f.files[name]) {
			t.Errorf("%s %s: sha256 differs (%d bytes, want %d)", what, name, len(got), len(f.files[name]))
		}
	}
	if _, err := exec.LookPath("tftp"); err == nil {
		for _, name := range names {
			dst := filepath.Join(out, "hpa-"+strings.ReplaceAll(name, "/", "_"))
			cmd := exec.Command("tftp", "-m", "binary", host, port, "-c", "get", name, dst)
			if b, err := cmd.CombinedOutput(); err != nil || len(b) > 0 {
				t.Errorf("tftp-hpa get %s: %v %s", name, err, b)
			}
			check("tftp-hpa", name, dst)
		}
	} else {
		t.Log("tftp-hpa missing: ", err)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl missing")
	}
	for _, blk := range []int{512, 1468, 8192} {
		for _, name := range names {
			dst := filepath.Join(out, fmt.Sprintf("curl%d-%s", blk, strings.ReplaceAll(name, "/", "_")))
			cmd := exec.Command("curl", "-sS", "--fail", "--max-time", "60", "--tftp-blksize", fmt.Sprint(blk),
				"-o", dst, s.TFTPURL()+"/"+name)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("curl blksize %d %s: %v %s", blk, name, err, b)
			}
			check(fmt.Sprintf("curl blksize %d", blk), name, dst)
		}
	}
	for _, name := range names {
		dst := filepath.Join(out, "http-"+strings.ReplaceAll(name, "/", "_"))
		if b, err := exec.Command("curl", "-sS", "--fail", "-o", dst, s.HTTPURL()+"/"+name).CombinedOutput(); err != nil {
			t.Errorf("curl http %s: %v %s", name, err, b)
		}
		check("http", name, dst)
	}
	// The log saw the negotiation: curl always asks tsize, and blksize 8192
	// is granted as 1468.
	var seen8192, seenTsize bool
	for _, r := range s.Requests(Filter{Proto: "tftp", Outcome: Served}) {
		if r.Options["blksize"] == "8192" {
			seen8192 = true
			if r.BlockSize != DefaultMaxBlockSize {
				t.Errorf("blksize 8192 granted as %d", r.BlockSize)
			}
		}
		if _, ok := r.Options["tsize"]; ok {
			seenTsize = true
		}
		if r.Bytes != r.Size {
			t.Errorf("%s: %d of %d bytes", r.File, r.Bytes, r.Size)
		}
	}
	if !seen8192 || !seenTsize {
		t.Errorf("requests do not show blksize 8192 (%v) and tsize (%v)", seen8192, seenTsize)
	}
	if n := len(s.Requests(Filter{File: "big.bin", Outcome: Served})); n != 5 {
		t.Errorf("big.bin served %d times, want 5", n)
	}
	log, err := os.ReadFile(f.run.Path(LogFile))
	if err != nil || !bytes.Contains(log, []byte("tftp read big.bin from 127.0.0.1:")) {
		t.Errorf("netboot.log: %v\n%s", err, log)
	}
}

// tftpExchange sends one datagram to the server and returns the first reply
// (nil after wait).
func tftpExchange(t *testing.T, s *Server, pkt []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteTo(pkt, s.TFTPAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 70000)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func rrq(name, mode string, opts ...string) []byte {
	p := []byte{0, opRRQ}
	p = append(append(p, name...), 0)
	p = append(append(p, mode...), 0)
	for _, o := range opts {
		p = append(append(p, o...), 0)
	}
	return p
}

// TestBadInput sends every kind of bad request, over TFTP and HTTP: each
// must be refused (or, for a root-relative path, not found) with its
// reason in the requests and the log, nothing outside the root may come
// back, and the server keeps serving.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	s := f.serve(t, Options{})
	const wait = 10 * time.Second
	type tc struct {
		pkt     []byte
		code    uint16 // expected ERROR code
		outcome string
		reason  string
	}
	long := strings.Repeat("x", 600)
	cases := []tc{
		{rrq("../secret", "octet"), errAccess, Refused, "'..'"},
		{rrq("sub/../../secret", "octet"), errAccess, Refused, "'..'"},
		{rrq("/../secret", "octet"), errAccess, Refused, "'..'"},
		{rrq(`..\secret`, "octet"), errAccess, Refused, "backslash"},
		{rrq(`sub\..\..\secret`, "octet"), errAccess, Refused, "backslash"},
		{rrq("..%2fsecret", "octet"), errFileNotFound, NotFound, "not found"},
		{rrq("//"+f.dir+"/secret", "octet"), errAccess, Refused, "absolute"},
		{rrq(f.dir+"/secret", "octet"), errFileNotFound, NotFound, "not found"},
		{rrq("escape", "octet"), errAccess, Refused, "symlink leads out"},
		{rrq("abs-escape", "octet"), errAccess, Refused, "symlink leads out"},
		{rrq("sub/up/secret", "octet"), errAccess, Refused, "symlink leads out"},
		{rrq("sub", "octet"), errAccess, Refused, "is a directory"},
		{rrq("fifo", "octet"), errAccess, Refused, "not a regular file"},
		{rrq("a\x01b", "octet"), errAccess, Refused, "control character"},
		{rrq(long, "octet"), errAccess, Refused, "600 bytes"},
		{rrq("one", "mail"), errIllegalOp, Refused, "unsupported transfer mode"},
		{append([]byte{0, opWRQ}, "upload.bin\x00octet\x00"...), errAccess, Refused, "read-only"},
		{[]byte{0, 9, 'x', 0}, errIllegalOp, Refused, "unknown opcode 9"},
		{[]byte{0}, errIllegalOp, Refused, "truncated packet"},
		{[]byte{0, opRRQ}, errIllegalOp, Refused, "not NUL-terminated"},
		{append([]byte{0, opRRQ}, "one"...), errIllegalOp, Refused, "not NUL-terminated"},
		{append([]byte{0, opRRQ}, "one\x00"...), errIllegalOp, Refused, "no transfer mode"},
		{rrq("one", "octet", "blksize"), errOptionNeg, Refused, "has no value"},
		{rrq("one", "octet", "blksize", "abc"), errOptionNeg, Refused, "malformed blksize"},
		{rrq("one", "octet", "blksize", " 1468"), errOptionNeg, Refused, "malformed blksize"},
		{rrq("one", "octet", "blksize", "7"), errOptionNeg, Refused, "out of range"},
		{rrq("one", "octet", "blksize", "99999999999999999999999"), errOptionNeg, Refused, "malformed blksize"},
		{rrq("one", "octet", "blksize", "1468", "BLKSIZE", "512"), errOptionNeg, Refused, "given twice"},
		{rrq("one", "octet", "tsize", "-1"), errOptionNeg, Refused, "malformed tsize"},
		{rrq("one", "octet", "", "1"), errOptionNeg, Refused, "empty option name"},
		{rrq("missing", "octet"), errFileNotFound, NotFound, "not found"},
	}
	for _, c := range cases {
		reply := tftpExchange(t, s, c.pkt, wait)
		if len(reply) < 4 || binary.BigEndian.Uint16(reply) != opERROR {
			t.Errorf("%q: reply %q, want ERROR", printable(string(c.pkt)), reply)
			continue
		}
		if code := binary.BigEndian.Uint16(reply[2:]); code != c.code {
			t.Errorf("%q: error code %d (%s), want %d", printable(string(c.pkt)), code, reply[4:], c.code)
		}
		if bytes.Contains(reply, []byte(secret)) {
			t.Fatalf("%q: reply holds the secret", c.pkt)
		}
	}
	// A stray ACK gets no answer and is logged as ignored.
	if r := tftpExchange(t, s, []byte{0, opACK, 0, 1}, 300*time.Millisecond); r != nil {
		t.Errorf("stray ACK answered with %q", r)
	}
	reqs := s.Requests(Filter{Proto: "tftp"})
	if len(reqs) != len(cases) {
		t.Errorf("%d requests recorded, want %d", len(reqs), len(cases))
	}
	for i, c := range cases {
		if i >= len(reqs) {
			break
		}
		r := reqs[i]
		if r.Outcome != c.outcome || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("request %d (%q): outcome %q reason %q; want %q containing %q", i, printable(string(c.pkt)), r.Outcome, r.Reason, c.outcome, c.reason)
		}
	}

	// HTTP: the same spellings, percent-encoded too.
	client := &http.Client{Timeout: wait}
	for _, p := range []string{"/../secret", "/%2e%2e/secret", "/%2E%2E%2Fsecret", "/sub/%2e%2e/%2e%2e/secret", "/..%5csecret",
		"/%00", "/a%00b", "/escape", "/abs-escape", "/sub/up/secret", "/" + long, "/fifo"} {
		req, _ := http.NewRequest("GET", s.HTTPURL()+"/x", nil)
		req.URL.Opaque = p // send the path exactly as written
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("GET %s: %v", p, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %s, want 403", p, resp.Status)
		}
		if bytes.Contains(body, []byte(secret)) {
			t.Fatalf("GET %s: body holds the secret", p)
		}
	}
	resp, err := client.Post(s.HTTPURL()+"/one", "text/plain", strings.NewReader("x"))
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %v %v", err, resp)
	}
	for _, r := range s.Requests(Filter{Proto: "http"}) {
		if r.Outcome != Refused || r.Reason == "" {
			t.Errorf("http %s: outcome %q reason %q", r.File, r.Outcome, r.Reason)
		}
	}
	// Still serving.
	if r := tftpExchange(t, s, rrq("one", "octet"), wait); len(r) != 5 || r[1] != opDATA || r[4] != f.files["one"][0] {
		t.Errorf("after bad input: reply %q", r)
	}
	log, _ := os.ReadFile(f.run.Path(LogFile))
	for _, want := range []string{"'..' path component", "symlink leads out of the root", "unknown opcode 9", "ignored packet", "method POST"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("netboot.log lacks %q", want)
		}
	}
	if bytes.Contains(log, []byte(secret)) {
		t.Error("log holds the secret")
	}
}

// TestVanishingClient: a client that takes the first block and never
// answers again is given up after Timeout × Retries, logged as aborted,
// and the server keeps serving others.
func TestVanishingClient(t *testing.T) {
	f := newFixture(t)
	s := f.serve(t, Options{Timeout: 200 * time.Millisecond, Retries: 2})
	if r := tftpExchange(t, s, rrq("big.bin", "octet", "blksize", "1468"), 10*time.Second); len(r) < 2 || r[1] != opOACK {
		t.Fatalf("reply %q", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if rs := s.Requests(Filter{File: "big.bin"}); len(rs) > 0 {
			if rs[0].Outcome != Aborted || !strings.Contains(rs[0].Reason, "stopped answering") {
				t.Errorf("outcome %q reason %q", rs[0].Outcome, rs[0].Reason)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("transfer never aborted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A client that disappears with an ERROR mid-transfer.
	c, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer c.Close()
	c.WriteTo(rrq("big.bin", "octet"), s.TFTPAddr())
	buf := make([]byte, 2000)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := c.ReadFrom(buf)
	if err != nil || n < 4 || buf[1] != opDATA {
		t.Fatalf("first block: %v %q", err, buf[:n])
	}
	c.WriteTo(errorPacket(0, "user pressed ctrl-c"), from)
	for {
		if rs := s.Requests(Filter{File: "big.bin"}); len(rs) > 1 {
			if rs[1].Outcome != Aborted || !strings.Contains(rs[1].Reason, "ctrl-c") {
				t.Errorf("outcome %q reason %q", rs[1].Outcome, rs[1].Reason)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("transfer never aborted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := tftpExchange(t, s, rrq("one", "octet"), 10*time.Second); len(r) != 5 {
		t.Errorf("after abort: %q", r)
	}
}

// TestConcurrentAndNoGoroutineLeft: 50 clients at once (pin/tftp's client,
// blksize 1468, tsize) plus HTTP; then Close must leave no goroutine.
func TestConcurrentAndNoGoroutineLeft(t *testing.T) {
	f := newFixture(t)
	before := runtime.NumGoroutine()
	s, err := Serve(Options{Root: f.root, Run: f.run})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := []string{"big.bin", "sub/deeper/file.bin", "b1468x3", "inside-link"}[i%4]
			c, err := tftp.NewClient(s.TFTPAddr().String())
			if err != nil {
				errs <- err
				return
			}
			c.SetBlockSize(1468)
			c.SetTimeout(5 * time.Second)
			c.SetRetries(10)
			c.RequestTSize(true)
			wt, err := c.Receive(name, "octet")
			if err != nil {
				errs <- fmt.Errorf("client %d %s: %v", i, name, err)
				return
			}
			var b bytes.Buffer
			if _, err := wt.WriteTo(&b); err != nil {
				errs <- fmt.Errorf("client %d %s: %v", i, name, err)
				return
			}
			if sum(b.Bytes()) != sum(f.files[name]) {
				errs <- fmt.Errorf("client %d %s: sha256 differs", i, name)
			}
			if i%10 == 0 {
				resp, err := http.Get(s.HTTPURL() + "/" + name)
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if sum(body) != sum(f.files[name]) {
					errs <- fmt.Errorf("http %s: sha256 differs", name)
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A client is done once it sent its last ACK; the server records the
	// transfer when that ACK arrives, a moment later on a loaded machine.
	served := func() int { return len(s.Requests(Filter{Proto: "tftp", Outcome: Served})) }
	for deadline := time.Now().Add(10 * time.Second); served() < 50 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := served(); n != 50 {
		t.Errorf("%d TFTP requests served, want 50: %+v", n, s.Requests(Filter{Proto: "tftp"}))
	}
	// A transfer in progress when Close comes is aborted, not waited for.
	c, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer c.Close()
	c.WriteTo(rrq("big.bin", "octet"), s.TFTPAddr())
	buf := make([]byte, 600)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := c.ReadFrom(buf)
	if err != nil || buf[1] != opDATA {
		t.Fatalf("first block: %v %q", err, buf[:n])
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	// Keep ACKing so the server sees our answer and aborts at the next block.
	for blk := uint16(1); ; blk++ {
		select {
		case <-closed:
		default:
			c.WriteTo([]byte{0, opACK, byte(blk >> 8), byte(blk)}, from)
			c.SetReadDeadline(time.Now().Add(time.Second))
			c.ReadFrom(buf)
			continue
		}
		break
	}
	if rs := s.Requests(Filter{File: "big.bin", Outcome: Aborted}); len(rs) != 1 || !strings.Contains(rs[0].Reason, "server closed") {
		t.Errorf("transfer at close: %+v", rs)
	}
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestOverlayWaitFileAndUpload(t *testing.T) {
	f := newFixture(t)
	up := t.TempDir()
	s := f.serve(t, Options{UploadDir: up, Files: map[string]string{
		"boot.ipxe":             "#!ipxe\nkernel {{http}}/vmlinuz\n",
		"/pxelinux.cfg/default": "default x\n# {{server}} {{tftp}}\n",
		"one":                   "overlay wins",
	}})
	_, port := tftpHostPort(s)
	if got, _ := s.Overlay("pxelinux.cfg/default"); got != "default x\n# 10.0.2.2 tftp://10.0.2.2:"+port+"\n" {
		t.Errorf("template: %q", got)
	}
	resp, err := http.Get(s.HTTPURL() + "/one")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "overlay wins" {
		t.Errorf("overlay: %q", body)
	}
	r, err := s.WaitFile(context.Background(), "one")
	if err != nil || r.Source != "overlay" || r.Bytes != 12 {
		t.Errorf("WaitFile: %+v %v", r, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = s.WaitFile(ctx, "initrd.gz")
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "http GET one") {
		t.Errorf("WaitFile timeout error: %v", err)
	}
	// Upload over TFTP.
	c, _ := tftp.NewClient(s.TFTPAddr().String())
	rf, err := c.Send("uploaded.bin", "octet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rf.ReadFrom(bytes.NewReader(f.files["b8192"])); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(up, "uploaded.bin"))
	if sum(got) != sum(f.files["b8192"]) {
		t.Error("upload differs")
	}
	if _, err := c.Send("../escape.bin", "octet"); err == nil {
		t.Error("upload with .. accepted")
	}
}

// FuzzTFTPRequest feeds arbitrary datagrams to the request front end. A
// request it lets through must name a clean path inside the root, and an
// opened file must be one of the fixture's.
func FuzzTFTPRequest(f *testing.F) {
	fx := newFixture(f)
	s, err := Serve(Options{Root: fx.root, NoHTTP: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	for _, seed := range [][]byte{
		rrq("one", "octet"), rrq("/one", "OCTET", "blksize", "1468", "tsize", "0"), rrq("../secret", "octet"),
		rrq("escape", "netascii"), rrq("sub/up/secret", "octet"), rrq("one", "octet", "blksize"),
		rrq(`..\x`, "octet"), {0}, {0, 1}, {0, 9}, {0, 4, 0, 1}, {0, 2, 'a', 0, 'o', 'c', 't', 'e', 't', 0},
		rrq("big.bin", "octet", "windowsize", "8", "timeout", "1"), rrq(strings.Repeat("a/", 300), "octet"),
	} {
		f.Add(seed)
	}
	const client = "127.0.0.1:9"
	f.Fuzz(func(t *testing.T, pkt []byte) {
		tr, reply := s.admit(pkt, client)
		if tr == nil {
			if reply != nil && (len(reply) < 5 || binary.BigEndian.Uint16(reply) != opERROR || reply[len(reply)-1] != 0) {
				t.Fatalf("bad ERROR packet %q", reply)
			}
			return
		}
		if reply != nil {
			t.Fatalf("admitted and refused at once: %q", reply)
		}
		if clean, err := CleanName(tr.name); err != nil || clean != tr.name {
			t.Fatalf("admitted name %q is not clean: %v", tr.name, err)
		}
		o := tr.opt
		if o.blksize < 8 || o.blksize > s.maxBlk || o.window < 1 || o.window > maxWindow || o.timeout < time.Second || o.timeout > 255*time.Second {
			t.Fatalf("%q negotiated out of bounds: %+v", pkt, o)
		}
		if len(o.acked) > 0 {
			// The OACK must parse back to what was granted.
			oack := o.oack()
			fields := bytes.Split(oack[2:len(oack)-1], []byte{0})
			if binary.BigEndian.Uint16(oack) != opOACK || len(fields) != 2*len(o.acked) {
				t.Fatalf("OACK %q for %+v", oack, o.acked)
			}
		}
		if tr.c != nil {
			defer tr.c.close()
			data, err := io.ReadAll(tr.c.r)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, []byte(secret)) {
				t.Fatalf("%q opened a file outside the root", pkt)
			}
			if _, err := os.Stat(filepath.Join(fx.root, tr.name)); err != nil && tr.c.source == "root" {
				t.Fatalf("opened %q, which is not in the root: %v", tr.name, err)
			}
		}
	})
}

// opaqueConn hides the *net.UDPConn, as a gVisor netstack conn would be
// opaque: the server must use single-port mode.
type opaqueConn struct{ net.PacketConn }

// TestSinglePortConn serves over a caller-given PacketConn that is not the
// OS's (the LAN's gateway address will be one): every packet, ACKs too, goes
// through the one conn, and files still arrive intact.
func TestSinglePortConn(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl missing")
	}
	f := newFixture(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	s, err := Serve(Options{Root: f.root, Run: f.run, TFTPConn: opaqueConn{pc}, NoHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "big")
	var wg sync.WaitGroup
	for _, blk := range []string{"512", "1468", "8192"} {
		wg.Add(1)
		go func(blk string) {
			defer wg.Done()
			out, err := exec.Command("curl", "-sS", "--fail", "--tftp-blksize", blk, "-o", dst+blk, s.TFTPURL()+"/big.bin").CombinedOutput()
			if err != nil {
				t.Errorf("curl blksize %s: %v %s", blk, err, out)
			}
		}(blk)
	}
	wg.Wait()
	for _, blk := range []string{"512", "1468", "8192"} {
		if got, _ := os.ReadFile(dst + blk); sum(got) != sum(f.files["big.bin"]) {
			t.Errorf("blksize %s: sha256 differs", blk)
		}
	}
	if r := tftpExchange(t, s, rrq("../secret", "octet"), 10*time.Second); len(r) < 4 || r[1] != opERROR {
		t.Errorf("traversal: %q", r)
	}
	s.Close()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}
