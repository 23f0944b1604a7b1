package control

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
	"golang.org/x/sys/unix"
)

// startServer serves a run without guests in a fresh control directory.
func startServer(t *testing.T) *Server {
	t.Helper()
	s, err := Start(Options{Dir: filepath.Join(t.TempDir(), "ctl"), Script: "/x/boot.lua", Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestProtocolInfoAndErrors: info carries the entry and the state; a
// console or dial on a run without VMs, and an unknown request, are
// answered with a kind; a bare connect (the liveness probe) is harmless.
func TestProtocolInfoAndErrors(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	sock := s.Entry().Socket
	info, err := Info(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != s.Entry().ID || info.PID != os.Getpid() || info.Script != "/x/boot.lua" || info.State != "script" || len(info.VMs) != 0 {
		t.Errorf("info %+v", info)
	}
	s.SetState("repl")
	if info, _ := Info(ctx, sock); info == nil || info.State != "repl" {
		t.Errorf("state after SetState: %+v", info)
	}
	if _, err := Console(ctx, sock, ""); vmerr.KindOf(err) != vmerr.NotFound || !strings.Contains(err.Error(), "has no VM") {
		t.Errorf("console without VMs: %v", err)
	}
	if _, err := Dial(ctx, sock, "mini", 22, time.Second); vmerr.KindOf(err) != vmerr.NotFound {
		t.Errorf("dial without VMs: %v", err)
	}
	if _, _, err := request(ctx, sock, Request{Op: "reboot"}, time.Second); vmerr.KindOf(err) != vmerr.Usage || !strings.Contains(err.Error(), "info, console and dial") {
		t.Errorf("unknown op: %v", err)
	}
	if !alive(s.Entry()) {
		t.Errorf("probe: live server not alive")
	}
	// Close: unregistered, socket gone, clients refused.
	s.Close()
	if _, err := Info(ctx, sock); vmerr.KindOf(err) != vmerr.Refused {
		t.Errorf("info after Close: %v", err)
	}
	if len(List(filepath.Dir(sock))) != 0 {
		t.Errorf("listed after Close")
	}
}

// TestReadLineKeepsStream: the request line is read without eating the raw
// bytes behind it, and an over-long line is refused.
func TestReadLineKeepsStream(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader(`{"op":"console","vm":"a","future":1}`+"\nraw\x00bytes"), 16)
	var req Request
	if err := readLine(br, &req); err != nil || req.Op != OpConsole || req.VM != "a" {
		t.Fatalf("readLine: %+v %v", req, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "raw\x00bytes" {
		t.Errorf("rest %q", rest)
	}
	long := bufio.NewReader(strings.NewReader(strings.Repeat("x", maxLine+10) + "\n"))
	if err := readLine(long, &req); err == nil {
		t.Errorf("over-long line accepted")
	}
	if err := readLine(bufio.NewReader(strings.NewReader(`{"op":`)), &req); err != io.ErrUnexpectedEOF {
		t.Errorf("cut line: %v", err)
	}
}

// TestCheckPeer: SO_PEERCRED names the process at the other end; a uid
// other than the owner's is refused with a message that says whose run it
// is and who asked.
func TestCheckPeer(t *testing.T) {
	a, b := socketPair(t)
	defer a.Close()
	defer b.Close()
	p, err := peerOf(a)
	if err != nil || p.UID != os.Geteuid() || p.PID != os.Getpid() {
		t.Fatalf("peer %+v, %v", p, err)
	}
	if err := checkPeer(p, os.Geteuid(), "r"); err != nil {
		t.Errorf("owner refused: %v", err)
	}
	err = checkPeer(Peer{PID: 42, UID: 4242}, 1000, "run-7")
	if err == nil || !strings.Contains(err.Error(), "refused: run run-7 belongs to uid 1000") || !strings.Contains(err.Error(), "uid 4242") {
		t.Errorf("foreign peer: %v", err)
	}
}

// socketPair returns two connected unix stream sockets.
func socketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// foreignClientEnv makes the test binary act as a client of the socket it
// names (TestForeignUIDRefused runs it as another user).
const foreignClientEnv = "VMSCRIPT_CONTROL_TEST_CLIENT"

func TestMain(m *testing.M) {
	if sock := os.Getenv(foreignClientEnv); sock != "" {
		_, err := Info(context.Background(), sock)
		if err == nil {
			os.Stdout.WriteString("ADMITTED\n")
			os.Exit(0)
		}
		os.Stdout.WriteString(vmerr.KindOf(err) + ": " + err.Error() + "\n")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestForeignUIDRefused: a client running as another user is refused by
// the server even when the directory and socket modes let it connect (as
// they would root). Needs root to run the client as nobody.
func TestForeignUIDRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running a client as another user needs root")
	}
	// Open the way for anyone: the server's own check must still hold.
	pub, err := os.MkdirTemp("", "control-foreign")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	s, err := Start(Options{Dir: filepath.Join(pub, "ctl"), Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sock := s.Entry().Socket
	for _, p := range []string{pub, filepath.Dir(sock)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(pub, "client.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), foreignClientEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.HasPrefix(string(out), "refused: refused: run "+s.Entry().ID+" belongs to uid 0") ||
		!strings.Contains(string(out), "uid 65534") {
		t.Fatalf("foreign client: %v\n%s", err, out)
	}
	// The owner still gets in.
	if _, err := Info(context.Background(), sock); err != nil {
		t.Errorf("owner after the refusal: %v", err)
	}
}
