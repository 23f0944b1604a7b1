// Command channels measures a command's round trip on each of the three
// command channels of one systemd lab guest: the guest agent
// (qemu-guest-agent on virtio-serial), SSH over the user network's forward,
// and the serial shell — N × `true` each, in alternating blocks, with the
// ratios against SSH. It prints a markdown section.
//
//	go run ./bench/channels -n 200
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/ssh"
)

func main() {
	n := flag.Int("n", 200, "commands on each channel")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "bench/channels:", err)
		os.Exit(1)
	}
}

func run(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	img, err := lab.Build(ctx, "systemd", lab.Options{})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "vmscript-bench-channels-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rn, err := journal.New(dir, time.Now())
	if err != nil {
		return err
	}
	defer rn.Close()
	m, err := machine.Boot(ctx, machine.Spec{Lab: img,
		QEMU: qemu.Config{Name: "lab", Memory: "1G", Forwards: []qemu.Forward{{GuestPort: 22}}, Run: rn}})
	if err != nil {
		return err
	}
	defer m.Stop(10 * time.Second)
	runners, err := connect(ctx, m, img)
	if err != nil {
		return err
	}
	times := map[string][]time.Duration{}
	names := []string{"agent", "ssh", "serial"}
	for block := 0; block < 4; block++ {
		for _, name := range names {
			for i := 0; i < n/4; i++ {
				t0 := time.Now()
				r, err := runners[name].Run(ctx, "true", command.Options{Timeout: time.Minute})
				if err != nil || r.Code != 0 {
					return fmt.Errorf("%s: true: %v (code %d)", name, err, r.Code)
				}
				times[name] = append(times[name], time.Since(t0))
			}
		}
	}
	report(n, names, times)
	return nil
}

// connect logs in on the serial console, then opens SSH and the agent.
func connect(ctx context.Context, m *machine.Machine, img *lab.Image) (map[string]command.Runner, error) {
	sh, err := shell.Login(ctx, m.Console, shell.LoginOptions{User: "root", Timeout: 5 * time.Minute, Run: m.Run()})
	if err != nil {
		return nil, err
	}
	c, err := m.SSH(ctx, machine.SSHOptions{Config: ssh.Config{User: "root", KeyFiles: []string{img.Files["ssh-key"]}, WaitTimeout: 2 * time.Minute}})
	if err != nil {
		return nil, err
	}
	a, err := m.Agent(ctx, time.Minute)
	if err != nil {
		return nil, err
	}
	return map[string]command.Runner{"serial": sh, "ssh": c, "agent": a}, nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func report(n int, names []string, times map[string][]time.Duration) {
	fmt.Printf("## Command channels: %d × `true` on one systemd lab guest (bench/channels)\n\n", n)
	fmt.Println("The guest agent (qemu-guest-agent, virtio-serial), SSH over the user network's forward (one")
	fmt.Println("connection, a session per command), the serial shell (marker protocol); in four alternating")
	fmt.Println("blocks. Medians; ratios: SSH's time over the channel's (above 1: faster than SSH).")
	fmt.Println()
	fmt.Println("| channel | per command | vs SSH |")
	fmt.Println("|---|---|---|")
	ref := median(times["ssh"])
	for _, name := range names {
		m := median(times[name])
		fmt.Printf("| %s | %.1f ms | %.2f× |\n", name, float64(m.Microseconds())/1000, float64(ref)/float64(m))
	}
	fmt.Println()
}
