package control

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
)

// fakeGuest is a console attached to one end of a pipe; the test plays the
// guest on the other.
func fakeGuest(t *testing.T) (*console.Console, net.Conn) {
	t.Helper()
	con, err := console.New(console.Options{Name: "g", EOFGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	host, guest := net.Pipe()
	if err := con.Attach(host); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { con.Close(nil); guest.Close() })
	return con, guest
}

// readUntil reads r until it has seen want, failing after 10 s.
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var got strings.Builder
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 256)
		for !strings.Contains(got.String(), want) {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reading for %q: %v; got %q", want, err, got.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("never saw %q", want)
	}
	return got.String()
}

// TestStreamConsole: an attached client sees the last TailLines lines
// (the unfinished prompt included), then every byte from there on, even a
// burst far larger than any buffer; its keys reach the guest through the
// console; its half-close detaches; the console's close is told in the
// stream.
func TestStreamConsole(t *testing.T) {
	con, guest := fakeGuest(t)
	for i := 1; i <= 30; i++ {
		con.Feed([]byte(fmt.Sprintf("old line %d\r\n", i)))
	}
	con.Feed([]byte("prompt# "))
	srv, cli := socketPair(t)
	done := make(chan string, 1)
	go func() {
		_, why := streamConsole(context.Background(), srv, srv, con)
		done <- why
	}()
	got := readUntil(t, cli, "prompt# ")
	if strings.Contains(got, "old line 20\r\n") || !strings.HasPrefix(got, "old line 22\r\n") {
		t.Errorf("tail: %q", got)
	}
	// Every byte of a burst, in order.
	var burst strings.Builder
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&burst, "b%d\n", i)
	}
	go con.Feed([]byte(burst.String()))
	got = readUntil(t, cli, "b19999\n")
	if !strings.Contains(got, burst.String()) {
		t.Errorf("burst lost bytes (%d read)", len(got))
	}
	// Keys typed go to the guest.
	go func() { _, _ = cli.Write([]byte("ls\r")) }()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(guest, buf); err != nil || string(buf) != "ls\r" {
		t.Fatalf("guest got %q, %v", buf, err)
	}
	_ = cli.CloseWrite()
	select {
	case why := <-done:
		if why != "detached" {
			t.Errorf("ended: %s", why)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("half-close did not detach")
	}

	// A second client; the console closes under it.
	srv2, cli2 := socketPair(t)
	go streamConsole(context.Background(), srv2, srv2, con)
	readUntil(t, cli2, "b19999\n")
	con.Close(nil)
	readUntil(t, cli2, "[vmscript: the console of g closed")
}

// TestTailMark: fewer lines than TailLines start at the beginning; a
// history longer than tailBytes starts at a line boundary.
func TestTailMark(t *testing.T) {
	con, _ := fakeGuest(t)
	con.Feed([]byte("a\nb\n"))
	if m := tailMark(con); m.Raw != 0 {
		t.Errorf("short: %d", m.Raw)
	}
	con.Feed([]byte(strings.Repeat("x", tailBytes) + "\nlast\n"))
	m := tailMark(con)
	if got := string(con.Raw(&m, nil)); got != "last\n" {
		t.Errorf("long line: %q", got)
	}
}

// TestAttachFromPipe: the terminal side sends what is typed up to Ctrl-],
// then detaches; output arrives meanwhile.
func TestAttachFromPipe(t *testing.T) {
	srv, cli := socketPair(t)
	s := &Stream{conn: cli, r: bufio.NewReader(cli)}
	in, typeIn, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	defer typeIn.Close()
	outR, out := io.Pipe()
	res := make(chan error, 1)
	go func() { res <- Attach(context.Background(), s, in, out, "g") }()
	readUntil(t, outR, "type Ctrl-] to detach")
	_, _ = srv.Write([]byte("hello from the guest\r\n"))
	readUntil(t, outR, "hello from the guest")
	go func() { _, _ = typeIn.Write([]byte("echo hi\r\x1dignored")) }()
	got, _ := io.ReadAll(srv) // until the half-close
	if string(got) != "echo hi\r" {
		t.Errorf("server got %q", got)
	}
	srv.Close()
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	if err := <-res; err != nil {
		t.Errorf("Attach: %v", err)
	}
}

// TestSplice: bytes both ways; the client's half-close reaches the guest as
// end of file while the guest's answer still comes back.
func TestSplice(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		data, _ := io.ReadAll(c) // until the half-close
		_, _ = c.Write([]byte("echo:" + string(data)))
		c.Close()
	}()
	g, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, cli := socketPair(t)
	done := make(chan [2]int64, 1)
	go func() {
		up, down := splice(context.Background(), srv, srv, g)
		done <- [2]int64{up, down}
	}()
	_, _ = cli.Write([]byte("ping"))
	_ = cli.CloseWrite()
	got, _ := io.ReadAll(cli)
	if string(got) != "echo:ping" {
		t.Errorf("got %q", got)
	}
	if n := <-done; n != [2]int64{4, 9} {
		t.Errorf("bytes %v", n)
	}
}
