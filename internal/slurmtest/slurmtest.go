// Package slurmtest starts a private one-node Slurm cluster for tests, as
// measured on Debian 12's slurm-wlm 22.05 and munge: munged as the munge
// user on a socket of its own, slurmctld and slurmd as root in the
// foreground on free ports, with proctrack/linuxproc, task/none and
// select/cons_tres (CR_CPU_Memory), every file in one temporary directory.
// It stops them by their PIDs (Stop; Start does so when the test ends). Clients reach it with the
// environment Env returns (SLURM_CONF).
package slurmtest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"
	"github.com/vmscript/vmscript/toolkit/hostmem"
)

// Cluster is a running private cluster.
type Cluster struct {
	// Dir holds its configuration, state, sockets and logs.
	Dir string
	// Conf is its slurm.conf.
	Conf string

	procs []*proc
}

// Env is the environment a Slurm client needs to reach the cluster.
func (c *Cluster) Env() []string { return []string{"SLURM_CONF=" + c.Conf} }

// Start starts a cluster for t (skipping t, or failing it with
// VMSCRIPT_REQUIRE_QEMU, when Slurm or munge is not installed) and stops
// it when t ends; its logs are shown when t failed.
func Start(t *testing.T) *Cluster {
	t.Helper()
	for _, tool := range []string{"munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"} {
		testenv.RequireTool(t, tool)
	}
	if os.Geteuid() != 0 {
		t.Skip("a private Slurm cluster needs root (munged runs as munge, the daemons as root)")
	}
	c, err := Launch()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(c.Logs())
		}
		c.Stop()
	})
	return c
}

// Launch starts munged, slurmctld and slurmd and waits until the node is
// idle; on a failure it stops what it started and says why, with the logs.
func Launch() (*Cluster, error) {
	dir, err := os.MkdirTemp("", "vms-slurm-") // short: unix socket paths
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755) // munge must reach its socket directory
	c := &Cluster{Dir: dir, Conf: filepath.Join(dir, "slurm.conf")}
	if err := c.launch(); err != nil {
		logs := c.Logs()
		c.Stop()
		return nil, fmt.Errorf("slurm: %v\n%s", err, logs)
	}
	return c, nil
}

func (c *Cluster) launch() error {
	socket, err := c.startMunge()
	if err != nil {
		return err
	}
	if err := c.writeConf(socket); err != nil {
		return err
	}
	if err := c.start("slurmctld", "/usr/sbin/slurmctld", "-D", "-f", c.Conf); err != nil {
		return err
	}
	if err := c.waitFor("slurmctld answers", func(out string) bool { return out != "" }); err != nil {
		return err
	}
	if err := c.start("slurmd", "/usr/sbin/slurmd", "-D", "-f", c.Conf); err != nil {
		return err
	}
	return c.waitFor("the node is idle", func(out string) bool { return strings.Contains(out, "idle") })
}

// Stop stops the daemons (SIGTERM, then SIGKILL after 10 s), newest
// first, by their PIDs, and removes the cluster's directory.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	c.procs = nil
	os.RemoveAll(c.Dir)
}

// Logs returns the tails of the daemons' logs.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, l := range []string{"slurmctld.log", "slurmd.log", "munge/munged.log", "munged.out", "slurmctld.out", "slurmd.out"} {
		data, _ := os.ReadFile(filepath.Join(c.Dir, l))
		fmt.Fprintf(&b, "%s:\n%s\n", l, tail(data, 3000))
	}
	return b.String()
}

// startMunge starts munged as the munge user with a fresh key; it returns
// its socket.
func (c *Cluster) startMunge() (string, error) {
	u, err := user.Lookup("munge")
	if err != nil {
		return "", fmt.Errorf("no munge user (package munge): %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	private, run := filepath.Join(c.Dir, "munge"), filepath.Join(c.Dir, "run")
	key := make([]byte, 1024)
	rand.Read(key)
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{private, 0o700}, {run, 0o755}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return "", err
		}
		os.Chown(d.path, uid, gid)
	}
	if err := os.WriteFile(filepath.Join(private, "key"), key, 0o600); err != nil {
		return "", err
	}
	os.Chown(filepath.Join(private, "key"), uid, gid)
	socket := filepath.Join(run, "munge.socket")
	err = c.start("munged", "/usr/sbin/munged", "-F", "--socket="+socket, "--key-file="+filepath.Join(private, "key"),
		"--log-file="+filepath.Join(private, "munged.log"), "--pid-file="+filepath.Join(run, "munged.pid"), "--seed-file="+filepath.Join(private, "seed"))
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			return socket, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("munged made no socket in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mungeUser makes munged's command run as the munge user.
func mungeUser(cmd *exec.Cmd) {
	u, err := user.Lookup("munge")
	if err != nil {
		return
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// writeConf writes the cluster's slurm.conf: one node, this host, all its
// CPUs and its memory less 2 GiB.
func (c *Cluster) writeConf(socket string) error {
	host, _ := os.Hostname()
	host, _, _ = strings.Cut(host, ".")
	for _, d := range []string{"state", "spool"} {
		os.Mkdir(filepath.Join(c.Dir, d), 0o755)
	}
	conf := fmt.Sprintf(`ClusterName=vmscripttest
SlurmctldHost=%[1]s(127.0.0.1)
SlurmctldPort=%[2]d
SlurmdPort=%[3]d
AuthType=auth/munge
AuthInfo=socket=%[4]s
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=%[5]s/state
SlurmdSpoolDir=%[5]s/spool
SlurmctldPidFile=%[5]s/slurmctld.pid
SlurmdPidFile=%[5]s/slurmd.pid
SlurmctldLogFile=%[5]s/slurmctld.log
SlurmdLogFile=%[5]s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
KillWait=20
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=%[1]s NodeAddr=127.0.0.1 CPUs=%[6]d RealMemory=%[7]d State=UNKNOWN
PartitionName=vmscript Nodes=ALL Default=YES MaxTime=INFINITE State=UP
`, host, freePort(), freePort(), socket, c.Dir, runtime.NumCPU(), memMiB()-2048)
	return os.WriteFile(c.Conf, []byte(conf), 0o644)
}

// proc is a daemon of the cluster.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs a daemon in the foreground, its output in DIR/NAME.out.
func (c *Cluster) start(name, path string, args ...string) error {
	out, err := os.Create(filepath.Join(c.Dir, name+".out"))
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), c.Env()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if name == "munged" {
		mungeUser(cmd)
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("%s: %v", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); out.Close(); close(p.done) }()
	c.procs = append(c.procs, p)
	return nil
}

// waitFor polls sinfo until what it prints satisfies ok (60 s at most).
func (c *Cluster) waitFor(what string, ok func(string) bool) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		cmd := exec.Command("sinfo", "--noheader", "--format", "%t")
		cmd.Env = append(os.Environ(), c.Env()...)
		out, _ := cmd.Output()
		if ok(strings.TrimSpace(string(out))) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited 60s for %s (sinfo: %q)", what, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// freePort returns a TCP port nothing listens on now.
func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// memMiB is the host's MemTotal in MiB (4 GiB when it cannot be read).
func memMiB() int {
	b, err := hostmem.MemTotal()
	if err != nil {
		return 4096
	}
	return int(b >> 20)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return bytes.TrimSpace(b)
}
