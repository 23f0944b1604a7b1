package qemu

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newTestPipe(t *testing.T) (*pipeReader, *os.File) {
	t.Helper()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, err := newPipeReader(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	w := os.NewFile(uintptr(fds[1]), "w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func TestPipeReaderReadsAndEOF(t *testing.T) {
	r, w := newTestPipe(t)
	go func() {
		time.Sleep(20 * time.Millisecond) // Read blocks in poll first
		w.Write([]byte("hello"))
		w.Close()
	}()
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadAll = %q, %v; want hello, nil", got, err)
	}
}

func TestPipeReaderDeadline(t *testing.T) {
	r, _ := newTestPipe(t)
	r.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	t0 := time.Now()
	_, err := r.Read(make([]byte, 8))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v", err)
	}
	if d := time.Since(t0); d < 40*time.Millisecond || d > 2*time.Second {
		t.Fatalf("Read returned after %v, deadline was 50ms", d)
	}
}

// A deadline set while Read is blocked (the console's drain after Close)
// wakes it.
func TestPipeReaderDeadlineWhileBlocked(t *testing.T) {
	r, _ := newTestPipe(t)
	done := make(chan error, 1)
	go func() { _, err := r.Read(make([]byte, 8)); done <- err }()
	time.Sleep(30 * time.Millisecond)
	r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v, want deadline exceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline set during Read did not end it")
	}
}

func TestPipeReaderCloseWhileBlocked(t *testing.T) {
	r, w := newTestPipe(t)
	done := make(chan error, 1)
	go func() { _, err := r.Read(make([]byte, 8)); done <- err }()
	time.Sleep(30 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Read")
	}
	// The read end is gone once the Read left: a write finds no reader.
	if _, err := w.Write([]byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("write after the reader closed: %v, want EPIPE", err)
	}
	if err := r.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
}
