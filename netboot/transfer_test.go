package netboot

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rawClient is a TFTP client written out packet by packet, for what no
// packaged client does (windowsize, lost blocks, timeouts).
type rawClient struct {
	t    *testing.T
	c    net.PacketConn
	srv  net.Addr // the transfer's address once known
	buf  []byte
	main net.Addr
}

func newRawClient(t *testing.T, s *Server) *rawClient {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, buf: make([]byte, 70000), main: s.TFTPAddr()}
}

func (r *rawClient) request(pkt []byte) { r.c.WriteTo(pkt, r.main) }

func (r *rawClient) send(pkt []byte) { r.c.WriteTo(pkt, r.srv) }

// next returns the next packet (nil after wait).
func (r *rawClient) next(wait time.Duration) []byte {
	r.c.SetReadDeadline(time.Now().Add(wait))
	n, from, err := r.c.ReadFrom(r.buf)
	if err != nil {
		return nil
	}
	r.srv = from
	return append([]byte(nil), r.buf[:n]...)
}

func ack(b uint16) []byte { return []byte{0, opACK, byte(b >> 8), byte(b)} }

func data(b uint16, payload []byte) []byte {
	return append([]byte{0, opDATA, byte(b >> 8), byte(b)}, payload...)
}

func expectOACK(t *testing.T, p []byte, want string) {
	t.Helper()
	if len(p) < 2 || binary.BigEndian.Uint16(p) != opOACK {
		t.Fatalf("want OACK, got %q", p)
	}
	if got := strings.ReplaceAll(string(p[2:]), "\x00", " "); got != want {
		t.Fatalf("OACK %q, want %q", got, want)
	}
}

// TestWindowsizeRead: a read with windowsize 8 (RFC 7440), options acked
// in the client's order, a lost block (the client acknowledges the one
// before it) answered by a window from the next block, a duplicate ACK not
// answered at all, and every byte arriving in order.
func TestWindowsizeRead(t *testing.T) {
	f := newFixture(t)
	s := f.serve(t, Options{Timeout: 2 * time.Second})
	want := f.files["sub/deeper/file.bin"] // 100,000 bytes: 98 blocks of 1024
	r := newRawClient(t, s)
	r.request(rrq("sub/deeper/file.bin", "octet", "blksize", "1024", "windowsize", "8", "timeout", "3", "tsize", "0", "utimeout", "1000"))
	expectOACK(t, r.next(5*time.Second), "blksize 1024 windowsize 8 timeout 3 tsize 100000 ")
	r.send(ack(0))
	var got []byte
	expect, lost := uint16(1), false
	for {
		var last []byte
		for i := 0; i < 8; i++ {
			p := r.next(5 * time.Second)
			if p == nil || binary.BigEndian.Uint16(p) != opDATA {
				t.Fatalf("block %d: got %q", expect, p)
			}
			b := binary.BigEndian.Uint16(p[2:])
			if b != expect {
				t.Fatalf("block %d, want %d", b, expect)
			}
			if b == 20 && !lost {
				// Lose block 20: acknowledge 19; the window restarts at 20.
				lost = true
				r.send(ack(19))
				r.send(ack(19)) // a duplicate: no second window
				for j := i + 1; j < 8; j++ {
					r.next(5 * time.Second) // the rest of this window, discarded
				}
				last = nil
				break
			}
			got = append(got, p[4:]...)
			expect++
			last = p
			if len(p)-4 < 1024 {
				break
			}
		}
		if last == nil {
			continue
		}
		b := binary.BigEndian.Uint16(last[2:])
		r.send(ack(b))
		if len(last)-4 < 1024 {
			break
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d (equal: false)", len(got), len(want))
	}
	if p := r.next(300 * time.Millisecond); p != nil {
		t.Errorf("a packet after the last ACK: %q (the duplicate ACK was answered?)", p[:4])
	}
	waitRequests(t, s, 1)
	rq := s.Requests(Filter{File: "sub/deeper/file.bin"})[0]
	if rq.Outcome != Served || rq.Bytes != int64(len(want)) || rq.BlockSize != 1024 {
		t.Errorf("recorded %+v", rq)
	}
}

func waitRequests(t *testing.T, s *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(s.Requests(Filter{})) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests recorded, want %d: %+v", len(s.Requests(Filter{})), n, s.Requests(Filter{}))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWindowsizeWrite: an upload in netascii with windowsize 4 and
// blksize 8, one block sent twice and one out of order: the server
// acknowledges each window's last block and, after a gap, the last block
// in order; the file holds the converted text.
func TestWindowsizeWrite(t *testing.T) {
	f := newFixture(t)
	up := t.TempDir()
	s := f.serve(t, Options{UploadDir: up})
	text := "line one\nline two\rno newline\n\nend"
	wire := strings.NewReplacer("\r", "\r\x00", "\n", "\r\n").Replace(text)
	var blocks [][]byte
	for i := 0; i <= len(wire); i += 8 {
		blocks = append(blocks, []byte(wire[i:min(i+8, len(wire))]))
	}
	r := newRawClient(t, s)
	r.request(append([]byte{0, opWRQ}, "notes.txt\x00netascii\x00windowsize\x004\x00blksize\x008\x00tsize\x00"+itoa(len(wire))+"\x00"...))
	expectOACK(t, r.next(5*time.Second), "windowsize 4 blksize 8 tsize "+itoa(len(wire))+" ")
	// Block 1, block 3 (a gap): the server acknowledges 1.
	r.send(data(1, blocks[0]))
	r.send(data(3, blocks[2]))
	if p := r.next(5 * time.Second); !bytes.Equal(p, ack(1)) {
		t.Fatalf("after a gap: %q, want ACK 1", p)
	}
	next := 2
	for next <= len(blocks) {
		end := min(next+3, len(blocks))
		for b := next; b <= end; b++ {
			r.send(data(uint16(b), blocks[b-1]))
		}
		p := r.next(5 * time.Second)
		if !bytes.Equal(p, ack(uint16(end))) {
			t.Fatalf("window %d-%d: %q, want ACK %d", next, end, p, end)
		}
		next = end + 1
	}
	waitRequests(t, s, 1)
	got, err := os.ReadFile(filepath.Join(up, "notes.txt"))
	if err != nil || string(got) != text {
		t.Fatalf("stored %q (%v), want %q", got, err, text)
	}
	if rq := s.Requests(Filter{})[0]; rq.Outcome != Served || rq.Op != "write" || rq.Size != int64(len(wire)) {
		t.Errorf("recorded %+v", rq)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestNetasciiWithTFTPHPA: tftp-hpa's client in ascii mode gets a text with
// line feeds and carriage returns back as it was, and uploads one.
func TestNetasciiWithTFTPHPA(t *testing.T) {
	if _, err := exec.LookPath("tftp"); err != nil {
		t.Skip("tftp-hpa missing")
	}
	f := newFixture(t)
	up := t.TempDir()
	text := "first\nsecond\r\nthird\rfourth\n" + strings.Repeat("long line of text\n", 100)
	s := f.serve(t, Options{UploadDir: up, Files: map[string]string{"notes.txt": text}})
	host, port := tftpHostPort(s)
	dst := filepath.Join(t.TempDir(), "notes.txt")
	if out, err := exec.Command("tftp", "-m", "ascii", host, port, "-c", "get", "notes.txt", dst).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("tftp get: %v %s", err, out)
	}
	if got, _ := os.ReadFile(dst); string(got) != text {
		t.Errorf("ascii get: %q, want %q", got, text)
	}
	if out, err := exec.Command("tftp", "-m", "ascii", host, port, "-c", "put", dst, "back.txt").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("tftp put: %v %s", err, out)
	}
	waitRequests(t, s, 2)
	if got, _ := os.ReadFile(filepath.Join(up, "back.txt")); string(got) != text {
		t.Errorf("ascii put stored %q, want %q", got, text)
	}
}

// TestSmallBlocksAndCloseMidTransfer: blksize 8 is granted as asked; a
// transfer whose client went quiet is aborted at once when the server
// closes (not after its timeout), the client told so.
func TestSmallBlocksAndCloseMidTransfer(t *testing.T) {
	f := newFixture(t)
	s, err := Serve(Options{Root: f.root, Run: f.run, Timeout: 10 * time.Second, NoHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	r := newRawClient(t, s)
	r.request(rrq("b512", "octet", "blksize", "8"))
	expectOACK(t, r.next(5*time.Second), "blksize 8 ")
	r.send(ack(0))
	if p := r.next(5 * time.Second); !bytes.Equal(p, data(1, f.files["b512"][:8])) {
		t.Fatalf("first block: %q", p)
	}
	t0 := time.Now()
	s.Close()
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("Close took %v with a transfer waiting", d)
	}
	if p := r.next(5 * time.Second); len(p) < 4 || binary.BigEndian.Uint16(p) != opERROR || !bytes.Contains(p, []byte("closed")) {
		t.Errorf("the client was told %q", p)
	}
	rs := s.Requests(Filter{})
	if len(rs) != 1 || rs[0].Outcome != Aborted || !strings.Contains(rs[0].Reason, "server closed") || rs[0].BlockSize != 8 {
		t.Errorf("recorded %+v", rs)
	}
}

// TestNetasciiConversion round-trips random text through both converters,
// with reads and writes of awkward sizes.
func TestNetasciiConversion(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		in := make([]byte, rng.Intn(3000))
		for j := range in {
			in[j] = "ab\r\n\x00"[rng.Intn(5)]
		}
		var wire bytes.Buffer
		nr := &netasciiReader{r: bytes.NewReader(in)}
		buf := make([]byte, 1+rng.Intn(20))
		if _, err := io.CopyBuffer(&wire, struct{ io.Reader }{nr}, buf); err != nil {
			t.Fatal(err)
		}
		want := strings.NewReplacer("\r", "\r\x00", "\n", "\r\n").Replace(string(in))
		if wire.String() != want {
			t.Fatalf("to netascii: %q, want %q", wire.String(), want)
		}
		var back bytes.Buffer
		nw := &netasciiWriter{w: &back}
		for rest := wire.Bytes(); len(rest) > 0; {
			k := min(len(rest), 1+rng.Intn(9))
			nw.Write(rest[:k])
			rest = rest[k:]
		}
		nw.flush()
		if !bytes.Equal(back.Bytes(), in) {
			t.Fatalf("from netascii: %q, want %q", back.Bytes(), in)
		}
	}
}
