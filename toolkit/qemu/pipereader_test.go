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

// blockedRead starts a Read that blocks (the pipe is empty), waits until
// it sits in poll, does act, and checks that the Read ends with want.
func blockedRead(t *testing.T, r *pipeReader, act func(), want error, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := r.Read(make([]byte, 8)); done <- err }()
	time.Sleep(30 * time.Millisecond)
	act()
	select {
	case err := <-done:
		if !errors.Is(err, want) {
			t.Fatalf("Read after %s: %v, want %v", what, err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not end a blocked Read", what)
	}
}

// A deadline set while Read is blocked (the console's drain after Close)
// wakes it.
func TestPipeReaderDeadlineWhileBlocked(t *testing.T) {
	r, _ := newTestPipe(t)
	blockedRead(t, r, func() { r.SetReadDeadline(time.Now().Add(20 * time.Millisecond)) }, os.ErrDeadlineExceeded, "a deadline set during Read")
}

func TestPipeReaderCloseWhileBlocked(t *testing.T) {
	r, w := newTestPipe(t)
	blockedRead(t, r, func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}, os.ErrClosed, "Close")
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
