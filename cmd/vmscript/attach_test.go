package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/control"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

// TestSplitSSHArgs: options (with their arguments) up to the first other
// word or "--", then the remote command.
func TestSplitSSHArgs(t *testing.T) {
	for _, tc := range []struct{ in, opts, cmd string }{
		{"", "", ""},
		{"uname -a", "", "uname -a"},
		{"-v -l alice ls /", "-v -l alice", "ls /"},
		{"-lalice -o A=b -4 -- -x", "-lalice -o A=b -4", "-x"},
		{"-vL 8080:h:80 -N", "-vL 8080:h:80 -N", ""},
		{"-p", "-p", ""},
	} {
		opts, cmd := splitSSHArgs(strings.Fields(tc.in))
		if strings.Join(opts, " ") != tc.opts || strings.Join(cmd, " ") != tc.cmd {
			t.Errorf("%q: opts %q cmd %q; want %q %q", tc.in, opts, cmd, tc.opts, tc.cmd)
		}
	}
}

// TestSSHArgv: the user's options come first (ssh keeps an option's first
// value), the ProxyCommand quotes the paths and escapes '%' for ssh, the
// lab key is passed, the command comes after the destination.
func TestSSHArgv(t *testing.T) {
	vm := control.VMInfo{Name: "mini", SSHKey: "/k/ssh-key"}
	argv := sshArgv("/opt/my bin/vmscript", "/tmp/vmscript-0/100%.sock", vm, []string{"-o", "User=alice", "id", "-u"})
	got := strings.Join(argv, "|")
	want := "ssh|-o|User=alice|-o|ProxyCommand='/opt/my bin/vmscript' __proxy /tmp/vmscript-0/100%%.sock mini %p|" +
		"-o|User=root|-o|StrictHostKeyChecking=no|-o|UserKnownHostsFile=/dev/null|-o|LogLevel=ERROR|" +
		"-i|/k/ssh-key|-o|IdentitiesOnly=yes|--|mini|id|-u"
	if got != want {
		t.Errorf("argv\n got %s\nwant %s", got, want)
	}
	if h := sshHost("a b"); h != "guest" {
		t.Errorf("odd name: %q", h)
	}
}

// TestPrintRuns: a run's line, its directory, its VMs as a table.
func TestPrintRuns(t *testing.T) {
	now := time.Now()
	runs := []*control.RunInfo{{
		Entry: control.Entry{ID: "r1", PID: 7, Script: "/s/boot.lua", RunDir: "/w/r1", Start: now.Add(-90 * time.Second)},
		State: "repl",
		VMs: []control.VMInfo{
			{Name: "mini", PID: 8, Accel: "tcg", Running: true, ConsoleLog: "/w/r1/mini.console.log",
				Forwards: []qemu.Forward{{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 4022, GuestPort: 22}}},
			{Name: "b", PID: 9, Accel: "tcg", Exit: "host-qmp-quit (exit 0)",
				LAN: []control.LANPort{{LAN: "lan", MAC: "52:54:00:00:00:01", IP: "10.0.3.100"}, {LAN: "l2", MAC: "52:54:00:00:00:02"}}},
		},
	}}
	var b strings.Builder
	printRuns(&b, runs, now)
	for _, want := range []string{
		"run r1  pid 7  repl  up 1m30s  /s/boot.lua\n", "  dir /w/r1\n",
		"127.0.0.1:4022->22", "running", "exited host-qmp-quit (exit 0)",
		"lan 52:54:00:00:00:01=10.0.3.100, l2 52:54:00:00:00:02=no-lease", "/w/r1/mini.console.log",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printRuns(&b, nil, now)
	if b.String() != "no live runs\n" {
		t.Errorf("empty: %q", b.String())
	}
}

// TestAttachCLIWithoutVMs: a run without VMs is listed; console and ssh on
// it say it has no VM; an unknown run is named; a run killed with SIGKILL
// leaves a stale entry that the next ps removes.
func TestAttachCLIWithoutVMs(t *testing.T) {
	dir := t.TempDir()
	writeScript(t, dir, "idle.lua", "print('up')\ntime.sleep(120)\n")
	runDir := filepath.Join(dir, "idle-run")
	run := startVMS(t, "run", dir, nil, "run", "idle.lua", "--out", runDir)
	waitOutput(t, "run", &run.out, "up\n", time.Minute)
	ri := psRun(t, dir, runDir)
	if ri == nil || ri.ID == "" || ri.State != "script" || ri.PID != run.cmd.Process.Pid || len(ri.VMs) != 0 {
		t.Fatalf("ps: %+v", ri)
	}
	if !strings.Contains(run.err.String(), "vmscript: run id "+ri.ID+" (attach: vmscript console "+ri.ID) {
		t.Errorf("run's stderr lacks the attach hint:\n%s", run.err.String())
	}
	for _, args := range [][]string{{"console", ri.ID}, {"ssh", runDir, "--", "true"}} {
		if r := vms(t, dir, nil, args...); r.code != 1 || !strings.Contains(r.stderr, "has no VM (yet)") {
			t.Errorf("%v: exit %d, %s", args, r.code, r.stderr)
		}
	}
	if r := vms(t, dir, nil, "console", "no-such-run-here"); r.code != 1 || !strings.Contains(r.stderr, `no live run is "no-such-run-here"`) {
		t.Errorf("unknown run: exit %d, %s", r.code, r.stderr)
	}
	if r := vms(t, dir, nil, "ssh"); r.code != 2 {
		t.Errorf("ssh without RUN: exit %d, %s", r.code, r.stderr)
	}
	entry := strings.TrimSuffix(ri.Socket, ".sock") + ".json"
	_ = run.cmd.Process.Signal(syscall.SIGKILL)
	run.wait(time.Minute)
	if _, err := os.Stat(entry); err != nil {
		t.Fatalf("a killed run's entry should be there until ps: %v", err)
	}
	if psRun(t, dir, runDir) != nil {
		t.Errorf("ps lists a killed run")
	}
	for _, p := range []string{entry, ri.Socket} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s not cleaned up: %v", p, err)
		}
	}
}
