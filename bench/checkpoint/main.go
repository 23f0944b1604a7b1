// Command checkpoint measures boot-once-split-many on the systemd lab: the
// time from a cold start to a usable serial shell against the time from a
// fork of a checkpoint (taken at that shell) to a usable shell, in the same
// run, and three forks started together. It prints a markdown section.
//
//	go run ./bench/checkpoint -rounds 3
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/shell"
)

func main() {
	rounds := flag.Int("rounds", 3, "single forks to time (the median is reported)")
	memory := flag.String("memory", "1G", "guest RAM")
	flag.Parse()
	if err := run(*rounds, *memory); err != nil {
		fmt.Fprintln(os.Stderr, "bench/checkpoint:", err)
		os.Exit(1)
	}
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// usable forks and waits for a shell that answers a command.
func usable(ctx context.Context, m *machine.Machine) error {
	sh, err := m.ResumeShell(ctx, shell.Options{User: "root"})
	if err != nil {
		return err
	}
	_, err = sh.Run(ctx, "true", shell.RunOptions{Timeout: time.Minute})
	return err
}

func run(rounds int, memory string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	img, err := lab.Build(ctx, "systemd", lab.Options{})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-checkpoint")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rn, err := journal.New(dir, time.Now())
	if err != nil {
		return err
	}
	defer rn.Close()
	spec := machine.Spec{Lab: img, QEMU: qemu.Config{Name: "cold", Memory: memory, Run: rn, Forwards: []qemu.Forward{{GuestPort: 22}}}}

	t0 := time.Now()
	m, err := machine.Boot(ctx, spec)
	if err != nil {
		return err
	}
	sh, err := shell.Login(ctx, m.Console, shell.LoginOptions{User: "root", Run: rn})
	if err != nil {
		m.Stop(5 * time.Second)
		return err
	}
	if _, err := sh.Run(ctx, "true", shell.RunOptions{}); err != nil {
		m.Stop(5 * time.Second)
		return err
	}
	cold := time.Since(t0)

	t1 := time.Now()
	cp, err := m.Checkpoint(ctx, checkpoint.Options{Name: "cp"})
	if err != nil {
		m.Stop(5 * time.Second)
		return err
	}
	defer cp.Close()
	take := time.Since(t1)

	var single []time.Duration
	for i := range rounds {
		t := time.Now()
		f, err := cp.Fork(ctx, machine.ForkOptions{Name: fmt.Sprintf("single-%d", i+1)})
		if err != nil {
			return err
		}
		err = usable(ctx, f)
		single = append(single, time.Since(t))
		f.Stop(5 * time.Second)
		if err != nil {
			return err
		}
	}

	t3 := time.Now()
	forks, err := cp.ForkMany(ctx, []string{"three-1", "three-2", "three-3"}, machine.ForkOptions{})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	each := make([]time.Duration, len(forks))
	errs := make([]error, len(forks))
	for i, f := range forks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = usable(ctx, f)
			each[i] = time.Since(t3)
		}()
	}
	wg.Wait()
	three := time.Since(t3)
	for _, f := range forks {
		f.Stop(5 * time.Second)
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}

	fork := median(single)
	fmt.Printf("## Checkpoints and forks (systemd lab, %s, %s)\n\n", memory, m.VM.Accel())
	fmt.Println("| measure | time |")
	fmt.Println("|---|---|")
	fmt.Printf("| cold boot to usable shell | %s |\n", secs(cold))
	fmt.Printf("| checkpoint (pause + save %.0f MB, original stopped) | %s |\n", float64(cp.StateSize())/1e6, secs(take))
	fmt.Printf("| fork to usable shell (median of %d) | %s |\n", rounds, secs(fork))
	fmt.Printf("| three forks started together, all usable | %s (each: %s, %s, %s) |\n", secs(three), secs(each[0]), secs(each[1]), secs(each[2]))
	fmt.Printf("\nFork vs cold boot: **%.1f×** faster (goal ≥ 20×). Single fork times: %v.\n", cold.Seconds()/fork.Seconds(), single)
	return nil
}
