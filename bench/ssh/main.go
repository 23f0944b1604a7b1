// Command ssh benchmarks vmscript's SSH client against OpenSSH's ssh with a
// ControlMaster socket (labgrid's method): N sequential `true` commands over
// one connection to a throwaway OpenSSH sshd on 127.0.0.1, alternating the
// two clients over several rounds, and prints the wall-time ratio
// (vmscript / OpenSSH; below 1.0 means vmscript is faster).
//
//	go run ./bench/ssh -n 200 -rounds 5
//
// It needs /usr/sbin/sshd (openssh-server) and /usr/bin/ssh.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/ssh"
	"github.com/vmscript/vmscript/toolkit/ssh/sshdtest"
)

func main() {
	n := flag.Int("n", 200, "commands per measurement")
	rounds := flag.Int("rounds", 5, "rounds (each measures both clients, alternating which goes first)")
	flag.Parse()
	if err := bench(*n, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench/ssh:", err)
		os.Exit(1)
	}
}

func bench(n, rounds int) error {
	dir, err := os.MkdirTemp("", "vmscript-bench-ssh-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	srv, err := sshdtest.Start(ctx, filepath.Join(mkdir(dir, "sshd")), sshdtest.Options{})
	if err != nil {
		return err
	}
	defer srv.Close()

	vmscript, closeVM, err := vmscriptClient(ctx, dir, srv, n)
	if err != nil {
		return err
	}
	defer closeVM()
	openssh, closeSSH, err := opensshClient(dir, srv, n)
	if err != nil {
		return err
	}
	defer closeSSH()
	return compare(n, rounds, vmscript, openssh)
}

// vmscriptClient returns a function running n `true` over one vmscript
// connection, with a run directory (timeline and transcript are part of
// the real cost).
func vmscriptClient(ctx context.Context, dir string, srv *sshdtest.Server, n int) (func() error, func(), error) {
	run, err := journal.New(filepath.Join(dir, "run"), time.Now())
	if err != nil {
		return nil, nil, err
	}
	c, err := ssh.Dial(ctx, ssh.Config{Host: srv.Host, Port: srv.Port, User: srv.User, Keys: [][]byte{srv.ClientKeyPEM}, HostKey: srv.HostKey, Run: run})
	if err != nil {
		run.Close()
		return nil, nil, err
	}
	vmscript := func() error {
		for range n {
			res, err := c.Run(ctx, "true", ssh.RunOptions{})
			if err != nil {
				return err
			}
			if res.Code != 0 {
				return fmt.Errorf("true exited %d", res.Code)
			}
		}
		return nil
	}
	return vmscript, func() { c.Close(); run.Close() }, nil
}

// opensshClient returns a function running n `true` through OpenSSH: a
// master connection, then one `ssh` process per command multiplexed over it.
func opensshClient(dir string, srv *sshdtest.Server, n int) (func() error, func(), error) {
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, []byte(fmt.Sprintf("[%s]:%d %s\n", srv.Host, srv.Port, srv.HostKey)), 0o600); err != nil {
		return nil, nil, err
	}
	sock := filepath.Join(dir, "cm.sock")
	base := []string{"-F", "/dev/null", "-i", srv.ClientKey, "-p", strconv.Itoa(srv.Port),
		"-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + known, "-o", "StrictHostKeyChecking=yes",
		"-o", "ControlPath=" + sock}
	target := srv.User + "@" + srv.Host
	master := exec.Command("ssh", append(append([]string{}, base...), "-o", "ControlMaster=yes", "-o", "ControlPersist=yes", "-N", "-f", target)...)
	// -f backgrounds the master, which keeps any output pipe open: give it
	// files, not pipes, or waiting for the command never ends.
	masterLog, err := os.Create(filepath.Join(dir, "master.log"))
	if err != nil {
		return nil, nil, err
	}
	master.Stdout, master.Stderr = masterLog, masterLog
	if err := master.Run(); err != nil {
		log, _ := os.ReadFile(masterLog.Name())
		masterLog.Close()
		return nil, nil, fmt.Errorf("ssh master: %v: %s", err, log)
	}
	openssh := func() error {
		for range n {
			cmd := exec.Command("ssh", append(append([]string{}, base...), "-o", "ControlMaster=no", target, "true")...)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("ssh: %v: %s", err, out)
			}
		}
		return nil
	}
	stop := func() {
		exec.Command("ssh", append(append([]string{}, base...), "-O", "exit", target)...).Run()
		masterLog.Close()
	}
	return openssh, stop, nil
}

// compare warms both clients up, then times them in turns over rounds and
// prints the medians and their ratio.
func compare(n, rounds int, vmscript, openssh func() error) error {
	// Warm up both.
	if err := vmscript(); err != nil {
		return err
	}
	if err := openssh(); err != nil {
		return err
	}
	var ours, theirs []time.Duration
	for r := range rounds {
		order := []func() error{vmscript, openssh}
		if r%2 == 1 {
			order = []func() error{openssh, vmscript}
		}
		for i, fn := range order {
			start := time.Now()
			if err := fn(); err != nil {
				return err
			}
			d := time.Since(start)
			if (i == 0) == (r%2 == 0) {
				ours = append(ours, d)
			} else {
				theirs = append(theirs, d)
			}
		}
		fmt.Printf("round %d: vmscript %v, openssh+ControlMaster %v, ratio %.3f\n", r+1,
			ours[r].Round(time.Millisecond), theirs[r].Round(time.Millisecond), ours[r].Seconds()/theirs[r].Seconds())
	}
	mo, mt := median(ours), median(theirs)
	fmt.Printf("%d sequential `true` over one connection, %d rounds (medians):\n", n, rounds)
	fmt.Printf("  vmscript ssh:             %v (%.2f ms/command)\n", mo.Round(time.Millisecond), mo.Seconds()*1000/float64(n))
	fmt.Printf("  OpenSSH ssh, ControlMaster: %v (%.2f ms/command)\n", mt.Round(time.Millisecond), mt.Seconds()*1000/float64(n))
	fmt.Printf("  ratio vmscript/OpenSSH:   %.3f (goal <= 1.0)\n", mo.Seconds()/mt.Seconds())
	return nil
}

func mkdir(parent, name string) string {
	p := filepath.Join(parent, name)
	_ = os.MkdirAll(p, 0o700)
	return p
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
