package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// Escape is the byte that detaches an attached terminal: Ctrl-], as in
// console:interact(), telnet and virsh console.
const Escape = console.InteractEscape

// detachGrace is how long a detaching terminal waits for the server to
// end the stream (the guest's echo of the last keys comes with it).
const detachGrace = time.Second

// ErrEnded is returned by Attach when the run ended the stream: the
// console closed (the VM exited) or the run ended; the stream said which.
var ErrEnded = errors.New("the run ended the console stream")

// Attach joins the terminal on in and out to an attached console until the
// user types Ctrl-] (nil), the server ends the stream (ErrEnded), or ctx
// ends. A terminal is put in raw mode meanwhile (Ctrl-C goes to the
// guest); from a pipe, the end of input detaches. in is polled, never read
// in the background, so no key typed after the return is lost. what names
// the console in the banners ("mini in run X").
func Attach(ctx context.Context, s *Stream, in *os.File, out io.Writer, what string) error {
	fd := int(in.Fd())
	fmt.Fprintf(out, "[vmscript: attached to the console of %s; type Ctrl-] to detach]\r\n", what)
	if term.IsTerminal(fd) {
		state, err := term.MakeRaw(fd)
		if err != nil {
			return vmerr.Wrap(vmerr.IO, err, "console %s: raw mode", what)
		}
		defer func() { _ = term.Restore(fd, state) }()
	}
	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, s)
		outDone <- err
	}()
	err := pumpKeys(ctx, s, in, outDone)
	if err == nil {
		fmt.Fprintf(out, "\r\n[vmscript: detached from the console of %s]\r\n", what)
	}
	return err
}

// pumpKeys sends what is typed on in to s until Ctrl-] or the end of in
// (then it half-closes s and waits for the server to end it), the stream
// ends (outDone), or ctx ends.
func pumpKeys(ctx context.Context, s *Stream, in *os.File, outDone chan error) error {
	buf := make([]byte, 4096)
	detach := func() error {
		_ = s.CloseWrite()
		select {
		case <-outDone:
		case <-time.After(detachGrace):
		}
		s.Close()
		return nil
	}
	for {
		select {
		case <-outDone:
			s.Close()
			return ErrEnded
		case <-ctx.Done():
			s.Close()
			return vmerr.Wrap(vmerr.DoneKind(ctx), context.Cause(ctx), "console")
		default:
		}
		fds := []unix.PollFd{{Fd: int32(in.Fd()), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(pollInterval/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return vmerr.Wrap(vmerr.IO, err, "console: poll the terminal")
		}
		if n <= 0 || fds[0].Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR) == 0 {
			continue
		}
		k, err := in.Read(buf)
		typed := buf[:k]
		esc := bytes.IndexByte(typed, Escape)
		if esc >= 0 {
			typed = typed[:esc]
		}
		if len(typed) > 0 {
			if _, werr := s.Write(typed); werr != nil {
				s.Close()
				return ErrEnded
			}
		}
		if esc >= 0 || k == 0 && err != nil {
			return detach()
		}
	}
}

// Pipe joins in and out to s, as a ssh ProxyCommand does with its stdin and
// stdout: in goes to s (its end half-closes s), s goes to out. It returns
// when s ends.
func Pipe(s *Stream, in io.Reader, out io.Writer) error {
	go func() {
		_, _ = io.Copy(s, in)
		_ = s.CloseWrite()
	}()
	_, err := io.Copy(out, s)
	return err
}
