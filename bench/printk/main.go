// Command printk measures command output through the serial shell while the
// kernel floods the same console: the mini lab booted with
// printk.devkmsg=on, a guest loop writing crit-level lines to /dev/kmsg,
// and N commands with a known output run the default way (the console text
// between markers) and N the exact way (RunOptions.Exact: output in files,
// fetched checked). It counts the commands whose output is not byte for
// byte what they printed, and times a command each way. It prints a
// markdown section.
//
//	go run ./bench/printk -n 1000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/shell"
)

func main() {
	n := flag.Int("n", 1000, "commands each way")
	flag.Parse()
	if err := run(*n); err != nil {
		fmt.Fprintln(os.Stderr, "bench/printk:", err)
		os.Exit(1)
	}
}

// flood writes a crit-level line to /dev/kmsg about every 50 ms.
const flood = `(i=0; while :; do i=$((i+1)); echo "<2>flood flood flood $i" >/dev/kmsg; sleep 0.05; done) >/dev/null 2>&1 &`

// way is one way's tally.
type way struct {
	polluted int
	took     time.Duration
}

func run(n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	img, err := lab.Build(ctx, "mini", lab.Options{})
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "vmscript-bench-printk-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rn, err := journal.New(dir, time.Now())
	if err != nil {
		return err
	}
	defer rn.Close()
	m, err := machine.Boot(ctx, machine.Spec{Lab: img, AppendExtra: "printk.devkmsg=on",
		QEMU: qemu.Config{Name: "mini", Memory: "256M", Net: "none", Run: rn}})
	if err != nil {
		return err
	}
	defer m.Stop(5 * time.Second)
	if _, err := m.Console.ExpectText(ctx, "vmscript-mini: ready", console.ExpectOptions{Timeout: 2 * time.Minute}); err != nil {
		return err
	}
	sh, err := shell.Attach(ctx, m.Console, shell.Options{Run: rn, User: "root"})
	if err != nil {
		return err
	}
	if _, err := sh.Run(ctx, flood, shell.RunOptions{}); err != nil {
		return err
	}
	before := strings.Count(m.Console.Text(nil, nil), "] flood flood flood ")
	plain, err := tally(ctx, sh, n, false)
	if err != nil {
		return err
	}
	exact, err := tally(ctx, sh, n, true)
	if err != nil {
		return err
	}
	lines := strings.Count(m.Console.Text(nil, nil), "] flood flood flood ") - before - n // minus the echo of each plain command
	report(n, lines, plain, exact)
	return nil
}

// tally runs n commands one way and counts the outputs that are not exact.
func tally(ctx context.Context, sh *shell.Shell, n int, exact bool) (way, error) {
	var w way
	t0 := time.Now()
	for i := 1; i <= n; i++ {
		cmd := fmt.Sprintf("seq 1 %d; echo done-%d", 3+i%20, i)
		r, err := sh.Run(ctx, cmd, shell.RunOptions{Exact: exact, Timeout: time.Minute})
		if err != nil {
			return w, fmt.Errorf("command %d (exact %v): %v", i, exact, err)
		}
		var want strings.Builder
		for k := 1; k <= 3+i%20; k++ {
			fmt.Fprintf(&want, "%d\n", k)
		}
		fmt.Fprintf(&want, "done-%d\n", i)
		if r.Stdout != want.String() || r.Code != 0 {
			w.polluted++
		}
	}
	w.took = time.Since(t0) / time.Duration(n)
	return w, nil
}

func report(n, lines int, plain, exact way) {
	fmt.Printf("## Command output under a printk flood (bench/printk, mini lab, %d commands each way)\n\n", n)
	fmt.Printf("A guest loop writes crit-level lines to /dev/kmsg (printk.devkmsg=on) every ~50 ms; %d kernel lines\n", lines)
	fmt.Println("reached the console during the two runs. Each command prints 4–23 known lines.")
	fmt.Println()
	fmt.Println("| way | outputs not byte-exact | per command | goal |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| serial shell, default (console text between markers) | %d / %d | %.0f ms | |\n", plain.polluted, n, float64(plain.took.Microseconds())/1000)
	fmt.Printf("| serial shell, `exact = true` (files, fetched checked) | **%d / %d** | %.0f ms | 0 / 1000 |\n", exact.polluted, n, float64(exact.took.Microseconds())/1000)
	fmt.Println()
}
