package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"github.com/vmscript/vmscript/internal/iocount"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultCopyTimeout bounds Get and Put when ctx has no deadline.
const DefaultCopyTimeout = 10 * time.Minute

// Transfer methods reported by Get and Put.
const (
	MethodSFTP = "sftp"
	MethodCat  = "cat"
)

// Get copies the remote file to local (written to a temporary file, then
// renamed) and returns the number of bytes and the method used: SFTP, or
// cat over exec when the server has no SFTP subsystem (or Config.NoSFTP).
// A missing remote file is kind "notfound".
func (c *Client) Get(ctx context.Context, remote, local string) (int64, string, error) {
	ctx, cancel := withDefaultDeadline(ctx, DefaultCopyTimeout)
	defer cancel()
	start := time.Now()
	dir := filepath.Dir(local)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(local)+".part*")
	if err != nil {
		return 0, "", c.ctxFields(vmerr.Wrap(vmerr.IO, err, "ssh %s: get %s: local file", c.cfg.Name, remote)).With("local", local)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	n, method, err := c.transfer(ctx, func(sc *sftp.Client) (int64, error) {
		f, err := sc.Open(remote)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		return copyCtx(ctx, tmp, f, func() { f.Close() })
	}, func() (int64, error) {
		cw := &iocount.Writer{W: tmp}
		res, err := c.run(ctx, "cat -- "+shellquote.Quote(remote), RunOptions{Timeout: remaining(ctx)}, cw)
		if err != nil {
			return cw.N, err
		}
		if res.Code != 0 {
			return 0, c.catError(res, remote)
		}
		return cw.N, nil
	})
	if err == nil {
		if err = tmp.Close(); err == nil {
			_ = os.Chmod(tmp.Name(), 0o644)
			err = os.Rename(tmp.Name(), local)
		}
		if err != nil {
			err = vmerr.Wrap(vmerr.IO, err, "ssh %s: get %s: writing %s", c.cfg.Name, remote, local)
		}
	}
	return n, method, c.copyDone("get", remote, local, n, method, start, err)
}

// Put copies the local file to remote (created or truncated) and returns the
// number of bytes and the method used, like Get.
func (c *Client) Put(ctx context.Context, local, remote string) (int64, string, error) {
	ctx, cancel := withDefaultDeadline(ctx, DefaultCopyTimeout)
	defer cancel()
	start := time.Now()
	src, err := os.Open(local)
	if err != nil {
		kind := vmerr.IO
		if errors.Is(err, fs.ErrNotExist) {
			kind = vmerr.NotFound
		}
		return 0, "", c.ctxFields(vmerr.Wrap(kind, err, "ssh %s: put %s", c.cfg.Name, remote)).With("local", local)
	}
	defer src.Close()
	n, method, err := c.transfer(ctx, func(sc *sftp.Client) (int64, error) {
		if _, err := src.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		f, err := sc.Create(remote)
		if err != nil {
			return 0, err
		}
		n, err := copyCtx(ctx, f, src, func() { f.Close() })
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return n, err
	}, func() (int64, error) {
		if _, err := src.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		cr := &iocount.Reader{R: src}
		res, err := c.Run(ctx, "cat > "+shellquote.Quote(remote), RunOptions{Stdin: cr, Timeout: remaining(ctx)})
		if err != nil {
			return 0, err
		}
		if res.Code != 0 {
			return 0, c.catError(res, remote)
		}
		return cr.N, nil
	})
	return n, method, c.copyDone("put", remote, local, n, method, start, err)
}

// transfer runs viaSFTP when the server offers SFTP, else viaCat.
func (c *Client) transfer(ctx context.Context, viaSFTP func(*sftp.Client) (int64, error), viaCat func() (int64, error)) (int64, string, error) {
	sc, err := c.sftpClient(ctx)
	if err != nil {
		return 0, "", err
	}
	if sc == nil {
		n, err := viaCat()
		return n, MethodCat, err
	}
	n, err := viaSFTP(sc)
	if err != nil && ctx.Err() != nil {
		c.dropSFTP(sc)
	}
	return n, MethodSFTP, err
}

// sftpClient returns the connection's SFTP client, starting it on first use;
// nil (and no error) means "use cat": the server has no SFTP subsystem or
// Config.NoSFTP is set.
func (c *Client) sftpClient(ctx context.Context) (*sftp.Client, error) {
	if c.cfg.NoSFTP {
		return nil, nil
	}
	conn, err := c.connection()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.sftp != nil || c.noSFTP {
		sc := c.sftp
		c.mu.Unlock()
		return sc, nil
	}
	c.mu.Unlock()
	sess, err := c.newSession(ctx, conn)
	if err != nil {
		return nil, err
	}
	type result struct {
		sc  *sftp.Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		if err := sess.RequestSubsystem("sftp"); err != nil {
			ch <- result{nil, err}
			return
		}
		w, err := sess.StdinPipe()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		r, err := sess.StdoutPipe()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		sc, err := sftp.NewClientPipe(r, w)
		ch <- result{sc, err}
	}()
	t := time.NewTimer(c.cfg.Timeout)
	defer t.Stop()
	var r result
	select {
	case r = <-ch:
	case <-t.C:
		r.err = fmt.Errorf("no SFTP answer within %s", c.cfg.Timeout)
	case <-ctx.Done():
		sess.Close()
		return nil, c.ctxFields(vmerr.Wrap(vmerr.Cancelled, context.Cause(ctx), "ssh %s: starting SFTP", c.cfg.Name))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.err != nil {
		sess.Close()
		c.noSFTP = true
		c.event("sftp-unavailable", map[string]any{"error": r.err.Error(), "fallback": MethodCat})
		return nil, nil
	}
	if c.sftp != nil { // another caller won the race
		r.sc.Close()
		return c.sftp, nil
	}
	c.sftp = r.sc
	return r.sc, nil
}

func (c *Client) dropSFTP(sc *sftp.Client) {
	c.mu.Lock()
	if c.sftp == sc {
		c.sftp = nil
	}
	c.mu.Unlock()
	sc.Close()
}

func (c *Client) copyDone(op, remote, local string, n int64, method string, start time.Time, err error) error {
	f := map[string]any{"remote": remote, "local": local, "bytes": n, "method": method, "duration_s": time.Since(start).Seconds()}
	if err == nil {
		c.event(op, f)
		return nil
	}
	var ve *vmerr.Error
	if !errors.As(err, &ve) {
		kind := vmerr.IO
		switch {
		case errors.Is(err, fs.ErrNotExist):
			kind = vmerr.NotFound
		case errors.Is(err, fs.ErrPermission):
			kind = vmerr.Refused
		case errors.Is(err, context.DeadlineExceeded):
			kind = vmerr.Timeout
		case errors.Is(err, context.Canceled):
			kind = vmerr.Cancelled
		}
		ve = c.ctxFields(vmerr.Wrap(kind, err, "ssh %s: %s %s (%s)", c.cfg.Name, op, remote, method))
	}
	ve.With("remote", remote).With("local", local)
	f["error"] = ve.Error()
	f["kind"] = ve.Kind
	c.event(op+"-error", f)
	return ve
}

// catError explains a failed cat.
func (c *Client) catError(res Result, remote string) error {
	msg := strings.TrimSpace(res.Stderr)
	kind := vmerr.IO
	switch {
	case strings.Contains(msg, "No such file"):
		kind = vmerr.NotFound
	case strings.Contains(msg, "Permission denied"):
		kind = vmerr.Refused
	}
	return c.ctxFields(vmerr.New(kind, "ssh %s: cat %s exited %d: %s", c.cfg.Name, remote, res.Code, msg)).With("code", res.Code)
}

// copyCtx copies until done, or until ctx ends (then abort unblocks it).
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader, abort func()) (int64, error) {
	stop := context.AfterFunc(ctx, abort)
	defer stop()
	n, err := io.Copy(dst, src)
	if err != nil && ctx.Err() != nil {
		return n, fmt.Errorf("%w after %d bytes", ctx.Err(), n)
	}
	return n, err
}

func withDefaultDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// remaining returns the time left until ctx's deadline (at least 1 ms).
func remaining(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return 0
}
