package ssh_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/ssh"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// bootLab boots a lab guest with a forward to its port 22 and returns the
// machine, the host port and the image. It skips without QEMU unless
// VMSCRIPT_REQUIRE_QEMU is set.
func bootLab(t *testing.T, run *journal.Run, name, memory string) (*machine.Machine, int, *lab.Image) {
	t.Helper()
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	img, err := lab.Build(ctx, name, lab.Options{})
	if err != nil {
		t.Fatalf("lab.Build(%s): %v", name, err)
	}
	m, err := machine.Boot(ctx, machine.Spec{Lab: img, QEMU: qemu.Config{
		Name: name, Run: run, Memory: memory, Forwards: []qemu.Forward{{GuestPort: 22}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(machine.DefaultStopGrace) })
	for _, f := range m.VM.Forwards() {
		if f.GuestPort == 22 {
			return m, f.HostPort, img
		}
	}
	t.Fatal("no forward to port 22")
	return nil, 0, nil
}

func waitLab(t *testing.T, cfg ssh.Config, m *machine.Machine) *ssh.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := ssh.Wait(ctx, cfg)
	if err != nil {
		t.Fatalf("Wait: %v\n--- console tail ---\n%s", err, strings.Join(m.Console.Tail(30), "\n"))
	}
	t.Logf("%s: SSH login after %v", cfg.Name, time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() { c.Close() })
	return c
}

func checkRun(t *testing.T, c *ssh.Client, cmd, stdout string, code int) {
	t.Helper()
	res, err := c.Run(context.Background(), cmd, ssh.RunOptions{Timeout: time.Minute})
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if res.Code != code || (stdout != "" && res.Stdout != stdout) {
		t.Fatalf("%s: %+v, want stdout %q code %d", cmd, res, stdout, code)
	}
}

// TestE2EMini: dropbear (no SFTP), key auth as root.
func TestE2EMini(t *testing.T) {
	t.Parallel()
	run := testenv.Run(t)
	m, port, img := bootLab(t, run, "mini", "512M")
	c := waitLab(t, ssh.Config{Port: port, User: "root", KeyFiles: []string{img.Files["ssh-key"]}, Run: run, Name: "mini"}, m)
	if v := string(ssh.ServerVersion(c)); !strings.Contains(strings.ToLower(v), "dropbear") {
		t.Errorf("server %s, want dropbear", v)
	}
	checkRun(t, c, "echo hi; echo err >&2", "hi\n", 0)
	checkRun(t, c, "exit 42", "", 42)
	checkRun(t, c, "false", "", 1)
	checkRun(t, c, "no-such-command-xyz", "", 127)
	res, err := c.Run(context.Background(), `echo "$A-$B"`, ssh.RunOptions{Env: map[string]string{"A": "x y", "B": "'q'"}})
	if err != nil || res.Stdout != "x y-'q'\n" {
		t.Fatalf("env: %+v %v", res, err)
	}

	// mini has no /etc/os-release: the cat fallback reports it as notfound.
	_, _, missErr := c.Get(context.Background(), "/etc/os-release", filepath.Join(t.TempDir(), "x"))
	if !vmerr.Is(missErr, vmerr.NotFound) {
		t.Fatalf("get of a missing file: %v", missErr)
	}
	local := filepath.Join(t.TempDir(), "passwd")
	n, method, err := c.Get(context.Background(), "/etc/passwd", local)
	if err != nil {
		t.Fatal(err)
	}
	if method != ssh.MethodCat {
		t.Errorf("dropbear: method %s, want cat", method)
	}
	data, _ := os.ReadFile(local)
	if int64(len(data)) != n || n == 0 {
		t.Errorf("got %d bytes, file has %d", n, len(data))
	}
	t.Logf("mini /etc/passwd (%d bytes via %s): %q; missing file: %v", n, method, firstLine(string(data)), missErr)
	if _, _, err := c.Put(context.Background(), local, "/tmp/copy"); err != nil {
		t.Fatal(err)
	}
	checkRun(t, c, "cmp /etc/passwd /tmp/copy && echo same", "same\n", 0)

	start := time.Now()
	res, err = c.Run(context.Background(), "echo started; sleep 100", ssh.RunOptions{Timeout: 3 * time.Second})
	if !vmerr.Is(err, vmerr.Timeout) || res.Stdout != "started\n" {
		t.Fatalf("timeout: %+v %v", res, err)
	}
	t.Logf("mini: sleep 100 timed out after %v; result %+v", time.Since(start).Round(100*time.Millisecond), res)
	// The sleep is gone.
	checkRun(t, c, "ps | grep -c '[s]leep 100' || true", "0\n", 0)
}

// TestE2ESystemd: OpenSSH with SFTP; key for root, password and key for nixos.
func TestE2ESystemd(t *testing.T) {
	t.Parallel()
	run := testenv.Run(t)
	m, port, img := bootLab(t, run, "systemd", "1G")
	root := waitLab(t, ssh.Config{Port: port, User: "root", KeyFiles: []string{img.Files["ssh-key"]}, Run: run, Name: "systemd-root"}, m)
	checkRun(t, root, "id -un; exit 3", "root\n", 3)
	local := filepath.Join(t.TempDir(), "os-release")
	n, method, err := root.Get(context.Background(), "/etc/os-release", local)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(local)
	if method != ssh.MethodSFTP || n == 0 || !strings.Contains(string(data), "Debian") {
		t.Fatalf("get: %d bytes via %s: %q", n, method, data)
	}
	start := time.Now()
	res, err := root.Run(context.Background(), "echo started; sleep 100", ssh.RunOptions{Timeout: 3 * time.Second})
	if !vmerr.Is(err, vmerr.Timeout) || res.Stdout != "started\n" {
		t.Fatalf("timeout: %+v %v", res, err)
	}
	t.Logf("systemd: sleep 100 timed out after %v; result %+v", time.Since(start).Round(100*time.Millisecond), res)
	checkRun(t, root, "pgrep -c -f '^sleep 100' || true", "0\n", 0)

	nixos := waitLab(t, ssh.Config{Port: port, User: "nixos", Password: "nixos", Run: run, Name: "systemd-nixos-pw"}, m)
	checkRun(t, nixos, "id -un", "nixos\n", 0)
	key := waitLab(t, ssh.Config{Port: port, User: "nixos", KeyFiles: []string{img.Files["ssh-key"]}, Run: run, Name: "systemd-nixos-key"}, m)
	checkRun(t, key, "id -un", "nixos\n", 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = ssh.Dial(ctx, ssh.Config{Port: port, User: "nixos", Password: "wrong", Run: run})
	if !vmerr.Is(err, vmerr.Auth) {
		t.Fatalf("wrong password: %v", err)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
