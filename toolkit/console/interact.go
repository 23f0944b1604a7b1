package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// InteractEscape is the byte that ends console:interact(): Ctrl-], as in
// telnet and virsh console.
const InteractEscape = 0x1d

// interactPoll is how often interact looks for keys and console output.
const interactPoll = 20 * time.Millisecond

// Interact attaches the terminal on in/out to the console until the user
// types Ctrl-] (nil error), the console closes (its close reason), or ctx
// ends. The terminal is in raw mode meanwhile; every typed byte goes
// through Console.Send, so it is in the timeline, and the guest's echo is in
// the console log. in is polled, never read in the background, so no key
// typed after the return is lost to a stray reader.
func (c *Console) Interact(ctx context.Context, in *os.File, out io.Writer) error {
	fd := int(in.Fd())
	if !term.IsTerminal(fd) {
		return vmerr.New(vmerr.Usage, "console %s: interact needs a terminal on standard input", c.Name()).With("vm", c.Name())
	}
	c.event("interact-start", nil)
	defer c.event("interact-end", nil)

	fmt.Fprintf(out, "\r\n[vmscript: attached to the console of %s; type Ctrl-] to return]\r\n", c.Name())
	// Show where the console is: its last lines, with the unfinished prompt.
	mark := c.Mark()
	tail := c.Tail(5)
	ctxt := strings.Join(tail, "\r\n")
	if mark.Raw > 0 && len(tail) > 0 {
		if last := c.Raw(&Mark{Raw: mark.Raw - 1}, nil); len(last) == 1 && last[0] == '\n' {
			ctxt += "\r\n"
		}
	}
	_, _ = io.WriteString(out, ctxt)

	state, err := term.MakeRaw(fd)
	if err != nil {
		return vmerr.Wrap(vmerr.IO, err, "console %s: raw mode", c.Name())
	}
	defer func() {
		_ = term.Restore(fd, state)
		fmt.Fprintf(out, "\r\n[vmscript: detached from the console of %s]\n", c.Name())
	}()

	buf := make([]byte, 4096)
	for {
		// Output first: whatever arrived since the last look, raw, as the
		// guest sent it.
		if b := c.Raw(&mark, nil); len(b) > 0 {
			mark.Raw += int64(len(b))
			_, _ = out.Write(b)
		}
		select {
		case <-c.Done():
			if b := c.Raw(&mark, nil); len(b) > 0 {
				_, _ = out.Write(b)
			}
			return c.Err()
		case <-ctx.Done():
			return vmerr.Wrap(vmerr.DoneKind(ctx), context.Cause(ctx), "console %s: interact", c.Name())
		default:
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(interactPoll/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return vmerr.Wrap(vmerr.IO, err, "console %s: poll terminal", c.Name())
		}
		if n <= 0 || fds[0].Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR) == 0 {
			continue
		}
		k, err := in.Read(buf)
		if k == 0 && err != nil {
			return vmerr.Wrap(vmerr.IO, err, "console %s: read terminal", c.Name())
		}
		typed := buf[:k]
		esc := bytes.IndexByte(typed, InteractEscape)
		if esc >= 0 {
			typed = typed[:esc]
		}
		if len(typed) > 0 {
			if err := c.Send(ctx, string(typed)); err != nil {
				return err
			}
		}
		if esc >= 0 {
			// Let the guest's echo of the last keys reach the screen.
			time.Sleep(interactPoll)
			if b := c.Raw(&mark, nil); len(b) > 0 {
				_, _ = out.Write(b)
			}
			return nil
		}
	}
}
