// Command slurm measures the Slurm engine on this one node: an N-task
// matrix of mini runs through a private one-node Slurm cluster (vmscript
// slurm submit --wait) against the same tasks run one after another
// (vmscript run --matrix --task i), Slurm's own overhead per task, and
// vmscript report over 1000 run directories (copies of a real one). It
// prints a markdown section.
//
//	go run ./bench/slurm -vmscript bin/vmscript -tasks 8
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/vmscript/vmscript/internal/slurmtest"
	"github.com/vmscript/vmscript/toolkit/results"
)

func main() {
	bin := flag.String("vmscript", "bin/vmscript", "the vmscript binary")
	tasks := flag.Int("tasks", 8, "mini tasks in the matrix")
	runs := flag.Int("report-runs", 1000, "run directories vmscript report reads")
	flag.Parse()
	if err := run(*bin, *tasks, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench/slurm:", err)
		os.Exit(1)
	}
}

// script boots mini, runs one command and quits.
const script = `
local vm = qemu.start{ name = "mini", lab = "mini", memory = "256M" }
vm.console:expect("mini# ", { timeout = "4m" })
vm.console:sendline("echo task-" .. args.i)
vm.console:expect("task-" .. args.i .. "\r\n")
vm:quit()
`

func run(bin string, n, reportRuns int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "vmscript-bench-slurm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	file, err := writeMatrix(dir, n)
	if err != nil {
		return err
	}
	seqDir := filepath.Join(dir, "sequential")
	t0 := time.Now()
	for i := range n {
		if out, err := exec.Command(bin, "run", "--matrix", file, "--task", strconv.Itoa(i), "--results", seqDir, "-q").CombinedOutput(); err != nil {
			return fmt.Errorf("task %d: %v\n%s", i, err, out)
		}
	}
	seq := time.Since(t0)
	c, err := slurmtest.Launch()
	if err != nil {
		return err
	}
	defer c.Stop()
	slurmDir := filepath.Join(dir, "slurm")
	cmd := exec.Command(bin, "slurm", "submit", file, "--results", slurmDir, "--wait")
	cmd.Env = append(os.Environ(), c.Env()...)
	t0 = time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("slurm submit: %v\n%s", err, out)
	}
	viaSlurm := time.Since(t0)
	sum, err := sumDurations(slurmDir)
	if err != nil {
		return err
	}
	reportTime, err := timeReport(bin, dir, seqDir, reportRuns)
	if err != nil {
		return err
	}
	print(n, seq, viaSlurm, sum, reportRuns, reportTime)
	return nil
}

// writeMatrix writes the script and an n-task matrix of it.
func writeMatrix(dir string, n int) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, "mini.lua"), []byte(script), 0o644); err != nil {
		return "", err
	}
	var values string
	for i := range n {
		values += fmt.Sprintf("%q, ", strconv.Itoa(i))
	}
	file := filepath.Join(dir, "matrix.lua")
	text := fmt.Sprintf("return { scripts = { \"mini.lua\" }, params = { i = { %s } }, cpus = 1, memory = \"256M\", timeout = \"10m\" }\n", values)
	return file, os.WriteFile(file, []byte(text), 0o644)
}

// sumDurations adds up the runs' own durations.
func sumDurations(dir string) (time.Duration, error) {
	runs, err := results.Gather(dir, nil)
	if err != nil {
		return 0, err
	}
	var s float64
	for _, r := range runs {
		if r.State != results.Passed {
			return 0, fmt.Errorf("task %s: %s (%s)", r.Task, r.State, r.Error)
		}
		s += r.DurationS
	}
	return time.Duration(s * float64(time.Second)), nil
}

// timeReport copies one real run directory k times and times vmscript
// report over them (median of three).
func timeReport(bin, dir, from string, k int) (time.Duration, error) {
	runs, err := filepath.Glob(filepath.Join(from, "*", "run.json"))
	if err != nil || len(runs) == 0 {
		return 0, fmt.Errorf("no run to copy in %s", from)
	}
	src := filepath.Dir(runs[0])
	root := filepath.Join(dir, "many")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return 0, err
	}
	for i := range k {
		if out, err := exec.Command("cp", "-r", src, filepath.Join(root, fmt.Sprintf("run-%04d", i))).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("cp: %v %s", err, out)
		}
	}
	var ts []time.Duration
	for range 3 {
		t0 := time.Now()
		if out, err := exec.Command(bin, "report", root, "--html", filepath.Join(root, "index.html")).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("report: %v\n%s", err, out)
		}
		ts = append(ts, time.Since(t0))
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts[1], nil
}

func print(n int, seq, viaSlurm, sum time.Duration, k int, report time.Duration) {
	cpus := 2
	fmt.Printf("## Many runs: a %d-task matrix of mini runs through Slurm (bench/slurm)\n\n", n)
	fmt.Println("A private one-node cluster (slurm-wlm 22.05, munge, select/cons_tres, one CPU per task) on this host;")
	fmt.Println("the same tasks one after another with `vmscript run --matrix --task i` as the reference.")
	fmt.Println()
	fmt.Println("| measure | value | goal |")
	fmt.Println("|---|---|---|")
	fmt.Printf("| %d tasks one after another | %.1f s | |\n", n, seq.Seconds())
	fmt.Printf("| %d tasks through `vmscript slurm submit --wait` | %.1f s | |\n", n, viaSlurm.Seconds())
	fmt.Printf("| speed-up through Slurm | **%.2f×** | ≥ 1.8× on 2 cores |\n", seq.Seconds()/viaSlurm.Seconds())
	fmt.Printf("| Slurm's overhead per task ((wall × %d − Σ task durations) / tasks) | %.2f s | |\n", cpus,
		(viaSlurm.Seconds()*float64(cpus)-sum.Seconds())/float64(n))
	fmt.Printf("| `vmscript report` over %d run directories (with --html) | %.2f s | ≤ 1 s |\n", k, report.Seconds())
	fmt.Println()
}
