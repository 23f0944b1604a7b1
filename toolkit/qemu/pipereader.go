package qemu

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// pipeReader reads the read end of a pipe outside Go's network poller.
//
// A 16550 hands QEMU's chardev one byte per write(2). A pipe in the
// runtime's epoll set wakes a poller thread on every one of those writes,
// whether or not anyone is reading at that moment: 1 MB of console output
// cost the console process 2.2 s of CPU in epoll_wait alone, and QEMU's
// vCPU thread the wake-ups (the writer pays them). Here the pipe has a
// waiter only while Read is blocked in poll(2); while the console's reader
// lets a flood gather, QEMU's writes wake nobody.
//
// Read may block in poll(2) on its own thread; SetReadDeadline and Close
// wake it through an eventfd. The descriptors are closed by Close, or by
// the Read in flight when Close came, so that a number is never reused
// under a poll.
type pipeReader struct {
	fd, wake int

	mu       sync.Mutex
	deadline time.Time
	closed   bool
	active   int // Reads in flight
}

// newPipeReader takes ownership of fd, the read end of a pipe, and makes
// it non-blocking.
func newPipeReader(fd int) (*pipeReader, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &pipeReader{fd: fd, wake: wake}, nil
}

// Read reads what is in the pipe, waiting for the first byte. It returns
// io.EOF once every writer is gone, os.ErrDeadlineExceeded past the read
// deadline and os.ErrClosed after Close.
func (p *pipeReader) Read(b []byte) (int, error) {
	if !p.enter() {
		return 0, os.ErrClosed
	}
	defer p.leave()
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(p.fd, b)
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case errors.Is(err, unix.EINTR):
			continue
		case !errors.Is(err, unix.EAGAIN):
			return 0, &os.PathError{Op: "read", Path: "pipe", Err: err}
		}
		if err := p.wait(); err != nil {
			return 0, err
		}
	}
}

// wait blocks until the pipe is readable (or hung up), the deadline
// passes, or Close or SetReadDeadline wakes it.
func (p *pipeReader) wait() error {
	p.mu.Lock()
	deadline, closed := p.deadline, p.closed
	p.mu.Unlock()
	if closed {
		return os.ErrClosed
	}
	timeout := -1
	if !deadline.IsZero() {
		left := time.Until(deadline)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		timeout = int((left + time.Millisecond - 1) / time.Millisecond)
	}
	fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}, {Fd: int32(p.wake), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
		return &os.PathError{Op: "poll", Path: "pipe", Err: err}
	}
	if fds[1].Revents != 0 {
		var n [8]byte
		_, _ = unix.Read(p.wake, n[:])
	}
	return nil
}

// SetReadDeadline bounds Read; the zero time waits for ever.
func (p *pipeReader) SetReadDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return os.ErrClosed
	}
	p.deadline = t
	p.poke()
	return nil
}

// Close ends a Read in flight with os.ErrClosed and closes the pipe.
func (p *pipeReader) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return os.ErrClosed
	}
	p.closed = true
	if p.active > 0 {
		p.poke() // the last Read closes the descriptors
		return nil
	}
	return p.closeFDs()
}

func (p *pipeReader) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.active++
	return true
}

func (p *pipeReader) leave() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active--; p.active == 0 && p.closed {
		_ = p.closeFDs()
	}
}

// poke wakes a Read blocked in poll(2). Called with mu held.
func (p *pipeReader) poke() {
	one := [8]byte{1}
	_, _ = unix.Write(p.wake, one[:])
}

func (p *pipeReader) closeFDs() error {
	err := unix.Close(p.fd)
	if e := unix.Close(p.wake); err == nil {
		err = e
	}
	return err
}
