package guest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRenewMAC runs renew-mac.sh, as the one line Command makes of it, under sh with fake ip, networkctl,
// pidof, udhcpc and dhclient that log their arguments: networkd's links get
// the MAC change only (no D-Bus call that could race its DHCP client), a
// udhcpc running for the link is killed and started again with its
// arguments (spaces kept), one for another link is left alone, other links
// get a one-shot DHCP client, and a failed MAC change fails the command.
// The interface is one no host has (but for the eth0 default case), and a
// busybox sh is refused: it would run its own ip applet, not the fake.
func TestRenewMAC(t *testing.T) {
	tools := map[string]string{}
	for _, name := range []string{"sh", "grep", "tr", "sleep", "readlink", "printf"} {
		path, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("no %s", name)
		}
		tools[name] = path
	}
	if real, err := filepath.EvalSymlinks(tools["sh"]); err != nil || strings.Contains(filepath.Base(real), "busybox") {
		t.Skipf("sh is %s: busybox runs its applets, not the fakes", real)
	}
	change := func(iface string) string {
		return "ip link set dev " + iface + " down|ip link set dev " + iface + " address 52:54:00:01:02:03|ip link set dev " + iface + " up"
	}
	const nic = "vmstest0"
	cases := []struct {
		name       string
		iface      string
		networkctl string // its output for "list --no-legend IFACE"; "" = not installed
		ipFails    bool
		udhcpc     bool     // udhcpc installed
		daemon     []string // the arguments of a running "udhcpc"; nil = none runs
		restarted  bool     // the daemon is killed and started again
		wantCode   int
		wantCalls  string
	}{
		{name: "networkd", networkctl: "  2 " + nic + " ether routable configured", udhcpc: true,
			wantCalls: "networkctl list --no-legend " + nic + "|" + change(nic)},
		{name: "unmanaged by networkd", networkctl: "  2 " + nic + " ether off unmanaged", udhcpc: true,
			wantCalls: "networkctl list --no-legend " + nic + "|pidof udhcpc|" + change(nic) + "|udhcpc -n -q -i " + nic},
		{name: "udhcpc -i IFACE", udhcpc: true, daemon: []string{"-i", nic, "-x", "hostname:a b"}, restarted: true,
			wantCalls: "pidof udhcpc|" + change(nic) + "|started 4: -i " + nic + " -x hostname:a b"},
		{name: "udhcpc -iIFACE", udhcpc: true, daemon: []string{"-b", "-i" + nic}, restarted: true,
			wantCalls: "pidof udhcpc|" + change(nic) + "|started 2: -b -i" + nic},
		{name: "udhcpc --interface=IFACE", udhcpc: true, daemon: []string{"--interface=" + nic}, restarted: true,
			wantCalls: "pidof udhcpc|" + change(nic) + "|started 1: --interface=" + nic},
		{name: "udhcpc without -i serves eth0", iface: "eth0", udhcpc: true, daemon: []string{"-b"}, restarted: true,
			wantCalls: "pidof udhcpc|" + change("eth0") + "|started 1: -b"},
		{name: "udhcpc of a VLAN on IFACE", udhcpc: true, daemon: []string{"-i", nic + ".100", "-p", "/run/" + nic + ".pid"},
			wantCalls: "pidof udhcpc|" + change(nic) + "|udhcpc -n -q -i " + nic},
		{name: "udhcpc without -i, IFACE not eth0", udhcpc: true, daemon: []string{"-b"},
			wantCalls: "pidof udhcpc|" + change(nic) + "|udhcpc -n -q -i " + nic},
		{name: "no networkctl, no udhcpc",
			wantCalls: "pidof udhcpc|" + change(nic) + "|dhclient " + nic},
		{name: "ip fails", ipFails: true, udhcpc: true, wantCode: 1, wantCalls: "pidof udhcpc|ip link set dev " + nic + " down"},
		{name: "ip fails, udhcpc restarted all the same", ipFails: true, udhcpc: true, daemon: []string{"-i", nic}, restarted: true, wantCode: 1,
			wantCalls: "pidof udhcpc|ip link set dev " + nic + " down|started 2: -i " + nic},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			iface := c.iface
			if iface == "" {
				iface = nic
			}
			bin := t.TempDir()
			calls := filepath.Join(bin, "calls")
			fake := func(name, body string) {
				script := "#!" + tools["sh"] + "\necho \"" + name + " $*\" >> " + calls + "\n" + body + "\n"
				if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// Only the fakes and these real tools are on the PATH, so a
			// networkctl or udhcpc of this machine cannot answer.
			for name, path := range tools {
				if err := os.Symlink(path, filepath.Join(bin, name)); err != nil {
					t.Fatal(err)
				}
			}
			if c.networkctl != "" {
				fake("networkctl", "echo '"+c.networkctl+"'")
			}
			if c.ipFails {
				fake("ip", "exit 1")
			} else {
				fake("ip", "exit 0")
			}
			if c.udhcpc {
				fake("udhcpc", "exit 0")
			}
			fake("dhclient", "exit 0")
			pid := ""
			exited := make(chan struct{})
			if c.daemon != nil {
				// A stand-in daemon with udhcpc's arguments (so it must
				// not exec: its command line is what the command reads);
				// each start logs its argument count and arguments, and
				// its PIDs for the cleanup: the command restarts it.
				daemon := filepath.Join(bin, "daemon")
				pids := filepath.Join(bin, "pids")
				body := "#!" + tools["sh"] + "\necho \"started $#: $*\" >> " + calls + "\nsleep 60 &\necho $$ $! >> " + pids + "\nwait\n"
				if err := os.WriteFile(daemon, []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
				d := exec.Command(daemon, c.daemon...)
				if err := d.Start(); err != nil {
					t.Fatal(err)
				}
				go func() { d.Wait(); close(exited) }()
				t.Cleanup(func() {
					b, _ := os.ReadFile(pids)
					for _, f := range strings.Fields(string(b)) {
						if n, err := strconv.Atoi(f); err == nil {
							syscall.Kill(n, syscall.SIGKILL)
						}
					}
				})
				pid = strconv.Itoa(d.Process.Pid)
				waitFor(t, calls, "started ")
				os.Remove(calls)
			}
			fake("pidof", "echo "+pid)
			cmd := exec.Command(tools["sh"], "-c", Command("renew-mac.sh", iface, "52:54:00:01:02:03"))
			cmd.Env = append(os.Environ(), "PATH="+bin)
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			var gotCalls string
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				// The restarted daemon logs in the background.
				got, _ := os.ReadFile(calls)
				gotCalls = strings.ReplaceAll(strings.TrimSpace(string(got)), "\n", "|")
				if gotCalls == c.wantCalls || time.Now().After(deadline) {
					break
				}
			}
			if c.daemon != nil {
				select {
				case <-exited:
					if !c.restarted {
						t.Error("the udhcpc of another interface was killed")
					}
				case <-time.After(time.Second):
					if c.restarted {
						t.Error("the running udhcpc was not killed")
					}
				}
			}
			if code != c.wantCode || gotCalls != c.wantCalls {
				t.Errorf("exit %d, calls %q\nwant exit %d, calls %q", code, gotCalls, c.wantCode, c.wantCalls)
			}
		})
	}
}

// waitFor waits up to 5 s for file to hold want.
func waitFor(t *testing.T, file, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(file); strings.Contains(string(b), want) {
			return
		}
	}
	t.Fatalf("%s never held %q", file, want)
}
