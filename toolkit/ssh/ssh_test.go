package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/ssh/sshdtest"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// One sshd per configuration per test binary.
var (
	serversMu sync.Mutex
	servers   = map[bool]*sshdtest.Server{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, s := range servers {
		s.Close()
		os.RemoveAll(s.Dir)
	}
	os.Exit(code)
}

// server returns the shared sshd (with or without the SFTP subsystem). It
// skips when sshd is missing, unless VMSCRIPT_REQUIRE_QEMU is set (CI).
func server(t *testing.T, noSFTP bool) *sshdtest.Server {
	t.Helper()
	if !sshdtest.Available() {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("%s is missing and VMSCRIPT_REQUIRE_QEMU is set (apt-get install openssh-server)", sshdtest.Binary)
		}
		t.Skipf("%s not installed", sshdtest.Binary)
	}
	serversMu.Lock()
	defer serversMu.Unlock()
	if s, ok := servers[noSFTP]; ok {
		return s
	}
	dir, err := os.MkdirTemp("", "vmscript-sshd-")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sshdtest.Start(context.Background(), dir, sshdtest.Options{NoSFTP: noSFTP})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	servers[noSFTP] = s
	return s
}

func newRun(t *testing.T) *journal.Run {
	t.Helper()
	r, err := journal.New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func baseConfig(s *sshdtest.Server, run *journal.Run) Config {
	return Config{Host: s.Host, Port: s.Port, User: s.User, Keys: [][]byte{s.ClientKeyPEM}, Run: run}
}

func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantKind(t *testing.T, err error, kind string) *vmerr.Error {
	t.Helper()
	var ve *vmerr.Error
	if !errors.As(err, &ve) {
		t.Fatalf("want a *vmerr.Error of kind %q, got %T %v", kind, err, err)
	}
	if ve.Kind != kind {
		t.Fatalf("want kind %q, got %q: %v", kind, ve.Kind, err)
	}
	return ve
}

func TestKeyAuthAndRun(t *testing.T) {
	s := server(t, false)
	run := newRun(t)
	c := dial(t, baseConfig(s, run))
	ctx := context.Background()

	res, err := c.Run(ctx, "echo out; echo err >&2; exit 3", RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "out\n" || res.Stderr != "err\n" || res.Code != 3 || res.Signal != "" {
		t.Fatalf("result %+v", res)
	}
	for _, tc := range []struct {
		cmd  string
		code int
	}{{"true", 0}, {"false", 1}, {"exit 42", 42}, {"no-such-command-xyz", 127}, {"kill -KILL $$", 128 + 9}} {
		res, err := c.Run(ctx, tc.cmd, RunOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tc.cmd, err)
		}
		if res.Code != tc.code {
			t.Errorf("%s: code %d, want %d (%+v)", tc.cmd, res.Code, tc.code, res)
		}
		if tc.cmd == "kill -KILL $$" && res.Signal != "KILL" {
			t.Errorf("%s: signal %q, want KILL", tc.cmd, res.Signal)
		}
	}

	res, err = c.Run(ctx, "tr a-z A-Z; printf '%s|%s' \"$GREETING\" \"$OTHER\" >&2", RunOptions{
		Stdin: strings.NewReader("hello stdin\n"),
		Env:   map[string]string{"GREETING": "it's a \"test\" $HOME", "OTHER": "2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stdout != "HELLO STDIN\n" || res.Stderr != "it's a \"test\" $HOME|2" {
		t.Fatalf("stdin/env: %+v", res)
	}
	if _, err := c.Run(ctx, "true", RunOptions{Env: map[string]string{"BAD-NAME": "x"}}); err == nil {
		t.Fatal("bad env name accepted")
	} else {
		wantKind(t, err, vmerr.Usage)
	}

	// Parallel commands on one connection.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := c.Run(ctx, fmt.Sprintf("echo %d", i), RunOptions{})
			if err == nil && res.Stdout != fmt.Sprintf("%d\n", i) {
				err = fmt.Errorf("parallel %d: %q", i, res.Stdout)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}

	// Transcript and timeline.
	tr, err := os.ReadFile(c.TranscriptPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"$ echo out; echo err >&2; exit 3\n", "\nout\n", "\nerr\n", "exit 3 ", "HELLO STDIN"} {
		if !strings.Contains(string(tr), want) {
			t.Errorf("transcript lacks %q:\n%s", want, tr)
		}
	}
	f, _ := os.Open(run.Path(journal.TimelineFile))
	evs, _, err := journal.ReadTimeline(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var runs, exits, connects int
	for _, ev := range evs {
		if ev.Source != "ssh:"+c.Name() {
			continue
		}
		switch ev.Kind {
		case "run":
			runs++
		case "exit":
			exits++
		case "connect":
			connects++
		}
	}
	if runs != 15 || exits != 15 || connects != 1 {
		t.Errorf("timeline: %d runs, %d exits, %d connects; want 15, 15, 1", runs, exits, connects)
	}
	// accept-new recorded the key in the run directory.
	kh, err := os.ReadFile(run.Path("known_hosts"))
	if err != nil || !strings.Contains(string(kh), strings.Fields(s.HostKey)[1]) {
		t.Errorf("known_hosts: %v %q", err, kh)
	}
	// A second client of the run checks against it.
	dial(t, baseConfig(s, run))
}

func TestAuthFailures(t *testing.T) {
	s := server(t, false)
	ctx := context.Background()
	wrong, _, err := sshdtest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(s, nil)
	cfg.Keys = [][]byte{wrong}
	_, err = Dial(ctx, cfg)
	e := wantKind(t, err, vmerr.Auth)
	if e.Context["port"] != s.Port {
		t.Errorf("context %v", e.Context)
	}

	cfg = baseConfig(s, nil)
	cfg.Keys = nil
	cfg.Password = "definitely-not-the-password"
	_, err = Dial(ctx, cfg)
	wantKind(t, err, vmerr.Auth)

	// Wait gives up at once on an auth failure instead of retrying.
	cfg.Keys = [][]byte{wrong}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	_, err = Wait(wctx, cfg)
	wantKind(t, err, vmerr.Auth)
	if time.Since(start) > 30*time.Second {
		t.Errorf("Wait retried an auth failure for %v", time.Since(start))
	}

	cfg = baseConfig(s, nil)
	cfg.Keys, cfg.Password = nil, ""
	_, err = Dial(ctx, cfg)
	wantKind(t, err, vmerr.Usage)
}

func TestHostKeyPinning(t *testing.T) {
	s := server(t, false)
	ctx := context.Background()
	cfg := baseConfig(s, nil)
	cfg.HostKey = s.HostKey
	c := dial(t, cfg)
	if res, err := c.Run(ctx, "echo pinned", RunOptions{}); err != nil || res.Stdout != "pinned\n" {
		t.Fatalf("%+v %v", res, err)
	}
	_, other, _ := sshdtest.NewKey()
	cfg.HostKey = other
	_, err := Dial(ctx, cfg)
	e := wantKind(t, err, vmerr.Refused)
	if !strings.Contains(e.Error(), "does not match") {
		t.Errorf("message: %v", e)
	}
	// A fingerprint pins too.
	_, err = Dial(ctx, Config{Host: s.Host, Port: s.Port, User: s.User, Keys: [][]byte{s.ClientKeyPEM}, HostKey: "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
	wantKind(t, err, vmerr.Refused)
	_, err = Dial(ctx, Config{Host: s.Host, Port: s.Port, User: s.User, Keys: [][]byte{s.ClientKeyPEM}, HostKey: "garbage"})
	wantKind(t, err, vmerr.Usage)

	// accept-new refuses a key that differs from the recorded one.
	kh := filepath.Join(t.TempDir(), "known_hosts")
	line := fmt.Sprintf("[%s]:%d %s\n", s.Host, s.Port, other)
	if err := os.WriteFile(kh, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = baseConfig(s, nil)
	cfg.KnownHostsPath = kh
	_, err = Dial(ctx, cfg)
	wantKind(t, err, vmerr.Refused)
}

func TestWaitNothingListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = Wait(ctx, Config{Host: "127.0.0.1", Port: port, Password: "x"})
	e := wantKind(t, err, vmerr.Timeout)
	msg := e.Error()
	if !strings.Contains(msg, "127.0.0.1:"+strconv.Itoa(port)) || !strings.Contains(msg, "connection refused") {
		t.Errorf("message should name host:port and the last error: %s", msg)
	}
	if e.Context["attempts"].(int) < 2 {
		t.Errorf("attempts %v", e.Context["attempts"])
	}
}

// TestWaitResetThenListen mimics QEMU's hostfwd: connections are accepted
// and reset until the real server is there.
func TestWaitResetThenListen(t *testing.T) {
	s := server(t, false)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	resets := 0
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			resets++
			n := resets
			mu.Unlock()
			if n <= 3 {
				conn.(*net.TCPConn).SetLinger(0)
				conn.Close()
				continue
			}
			go func() {
				up, err := net.Dial("tcp", net.JoinHostPort(s.Host, strconv.Itoa(s.Port)))
				if err != nil {
					conn.Close()
					return
				}
				go func() { copyClose(up, conn) }()
				copyClose(conn, up)
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := baseConfig(s, nil)
	cfg.Port = l.Addr().(*net.TCPAddr).Port
	c, err := Wait(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if res, err := c.Run(ctx, "echo via-proxy", RunOptions{}); err != nil || res.Stdout != "via-proxy\n" {
		t.Fatalf("%+v %v", res, err)
	}
	if err := c.Wait(ctx); err != nil {
		t.Fatalf("Client.Wait on a live connection: %v", err)
	}
}

func copyClose(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

func TestRunTimeoutSignals(t *testing.T) {
	s := server(t, false)
	c := dial(t, baseConfig(s, newRun(t)))
	ctx := context.Background()
	start := time.Now()
	res, err := c.Run(ctx, "echo pid=$$; echo partial-err >&2; exec sleep 100", RunOptions{Timeout: time.Second})
	e := wantKind(t, err, vmerr.Timeout)
	if time.Since(start) > 30*time.Second {
		t.Errorf("timeout took %v", time.Since(start))
	}
	if !strings.HasPrefix(res.Stdout, "pid=") || e.Context["stdout"] != res.Stdout || res.Stderr != "partial-err\n" {
		t.Fatalf("partial output: %+v, context %v", res, e.Context)
	}
	if res.Signal != "TERM" {
		t.Errorf("signal %q, want TERM", res.Signal)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(res.Stdout, "pid=")))
	// The sleep was signalled: its process is gone.
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(data, []byte("sleep")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep (pid %d) still running", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The client still works.
	if res, err := c.Run(ctx, "echo after", RunOptions{}); err != nil || res.Stdout != "after\n" {
		t.Fatalf("%+v %v", res, err)
	}
	// A cancelled context ends a command too.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(500*time.Millisecond, cancel)
	_, err = c.Run(cctx, "sleep 100", RunOptions{})
	wantKind(t, err, vmerr.Cancelled)
}

func TestGetPut(t *testing.T) {
	for _, mode := range []string{"sftp", "cat-option", "cat-no-subsystem"} {
		t.Run(mode, func(t *testing.T) {
			s := server(t, mode == "cat-no-subsystem")
			cfg := baseConfig(s, newRun(t))
			cfg.NoSFTP = mode == "cat-option"
			c := dial(t, cfg)
			want := "sftp"
			if mode != "sftp" {
				want = "cat"
			}
			ctx := context.Background()
			dir := t.TempDir()
			data := bytes.Repeat([]byte("vmscript \x00\xff binary\n"), 40000) // ~800 KB
			local := filepath.Join(dir, "up.bin")
			if err := os.WriteFile(local, data, 0o644); err != nil {
				t.Fatal(err)
			}
			remote := filepath.Join(dir, "remote.bin") // the server is this machine
			n, method, err := c.Put(ctx, local, remote)
			if err != nil || n != int64(len(data)) || method != want {
				t.Fatalf("Put: %d %s %v", n, method, err)
			}
			got, _ := os.ReadFile(remote)
			if !bytes.Equal(got, data) {
				t.Fatalf("remote content differs (%d bytes)", len(got))
			}
			back := filepath.Join(dir, "back.bin")
			n, method, err = c.Get(ctx, remote, back)
			if err != nil || n != int64(len(data)) || method != want {
				t.Fatalf("Get: %d %s %v", n, method, err)
			}
			got, _ = os.ReadFile(back)
			if !bytes.Equal(got, data) {
				t.Fatalf("local content differs (%d bytes)", len(got))
			}
			_, _, err = c.Get(ctx, filepath.Join(dir, "missing"), filepath.Join(dir, "x"))
			wantKind(t, err, vmerr.NotFound)
			if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
				t.Error("failed Get left a local file")
			}
			_, _, err = c.Put(ctx, filepath.Join(dir, "missing"), remote)
			wantKind(t, err, vmerr.NotFound)
			// The transcript does not hold the file's bytes.
			if tr, _ := os.ReadFile(c.TranscriptPath()); bytes.Contains(tr, []byte("binary")) {
				t.Error("transcript holds copied data")
			}
		})
	}
}

func TestPTYSession(t *testing.T) {
	s := server(t, false)
	run := newRun(t)
	c := dial(t, baseConfig(s, run))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sess, err := c.Session(ctx, SessionOptions{PTY: true})
	if err != nil {
		t.Fatal(err)
	}
	con := sess.Console
	opt := console.ExpectOptions{Timeout: 30 * time.Second}
	if err := con.SendLine(ctx, "PS1='pty> '; tty; echo mark-$((6*7))"); err != nil {
		t.Fatal(err)
	}
	m, err := con.Expect(ctx, []console.Pattern{{Regex: `mark-(\d+)`}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	if m.Captures[0] != "42" || !strings.Contains(m.Before, "/dev/pts/") {
		t.Fatalf("match %+v", m)
	}
	// A prompt that needs an answer, as sudo or a confirmation would.
	if err := con.SendLine(ctx, `read -p "Really? [y/N] " a; echo "answer=$a"`); err != nil {
		t.Fatal(err)
	}
	if _, err := con.ExpectText(ctx, "Really? [y/N] ", opt); err != nil {
		t.Fatal(err)
	}
	if err := con.SendLine(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	if _, err := con.ExpectText(ctx, "answer=y", opt); err != nil {
		t.Fatal(err)
	}
	if err := con.SendLine(ctx, "exit 7"); err != nil {
		t.Fatal(err)
	}
	res, err := sess.Wait(ctx)
	if err != nil || res.Code != 7 {
		t.Fatalf("session end: %+v %v", res, err)
	}
	// A wait after the end fails at once with kind exited.
	_, err = con.ExpectText(ctx, "never", opt)
	wantKind(t, err, vmerr.Exited)
	if log, _ := os.ReadFile(sess.LogPath); !bytes.Contains(log, []byte("answer=y")) {
		t.Errorf("session log: %q", log)
	}

	// Client.Close ends an open session.
	sess2, err := c.Session(ctx, SessionOptions{PTY: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case <-sess2.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("session still open after Client.Close")
	}
}
