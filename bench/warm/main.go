// Command warm measures warm starts end to end: scripts/05-storage.lua run
// by vmscript as a user runs it, the first time (booting cold, then saving
// the warm state), then in turns a warm run (restored from that state) and
// a cold run (-a cold=1: no cache at all), in one private warm cache. It
// prints a markdown section with the ratios, the restore time the warm runs
// noted, and the cache entry's size.
//
//	go run ./bench/warm -vmscript bin/vmscript -rounds 3
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	bin := flag.String("vmscript", "bin/vmscript", "the vmscript binary")
	rounds := flag.Int("rounds", 3, "warm and cold runs each, in turns")
	flag.Parse()
	if err := run(*bin, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench/warm:", err)
		os.Exit(1)
	}
}

// measurement is one run of the script.
type measurement struct {
	took    time.Duration
	restore float64 // the restore the notes state, seconds (warm runs)
}

// knobs boot the regression's storage knob; the script exits 1 (status
// missing) every time, which is its answer, not a failure.
const knobs = "knobs=lab.storage=hang"

func run(bin string, rounds int) error {
	tmp, err := os.MkdirTemp("", "vmscript-bench-warm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	cache := filepath.Join(tmp, "cache")
	runs := 0
	script := func(extra ...string) (measurement, error) {
		runs++
		return once(bin, cache, filepath.Join(tmp, "run"+strconv.Itoa(runs)), extra...)
	}
	first, err := script()
	if err != nil {
		return fmt.Errorf("first run: %w", err)
	}
	var warm, cold []measurement
	for i := range rounds {
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, isWarm := range order {
			extra := []string{"-a", "cold=1"}
			if isWarm {
				extra = nil
			}
			m, err := script(extra...)
			if err != nil {
				return err
			}
			if isWarm {
				warm = append(warm, m)
			} else {
				cold = append(cold, m)
			}
		}
	}
	size, err := dirSize(cache)
	if err != nil {
		return err
	}
	report(first, warm, cold, size)
	return nil
}

// once runs the script into dir and times it; exit 1 is the script's
// verdict, anything else an error.
func once(bin, cache, dir string, extra ...string) (measurement, error) {
	args := append([]string{"run", "scripts/05-storage.lua", "-q", "-o", dir, "-a", knobs}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "VMSCRIPT_WARM_DIR="+cache)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	m := measurement{took: time.Since(t0)}
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		return m, fmt.Errorf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out.String())
	}
	notes, _ := os.ReadFile(filepath.Join(dir, "notes.md"))
	if r := restoreRe.FindSubmatch(notes); r != nil {
		m.restore, _ = strconv.ParseFloat(string(r[1]), 64)
	}
	return m, nil
}

// restoreRe finds the restore time a warm run notes.
var restoreRe = regexp.MustCompile(`the restore ([0-9.]+)s`)

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	return n, err
}

func median(ms []measurement, f func(measurement) float64) float64 {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = f(m)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func took(m measurement) float64    { return m.took.Seconds() }
func restore(m measurement) float64 { return m.restore }

func list(ms []measurement, f func(measurement) float64) string {
	var s []string
	for _, m := range ms {
		s = append(s, fmt.Sprintf("%.1f", f(m)))
	}
	return strings.Join(s, ", ")
}

func report(first measurement, warm, cold []measurement, size int64) {
	w, c := median(warm, took), median(cold, took)
	fmt.Printf("## Warm starts: scripts/05-storage.lua end to end (systemd lab, %s)\n\n", knobs)
	fmt.Printf("`vmscript run` as a user runs it, one private warm cache; warm and cold (`-a cold=1`) runs in turns.\n\n")
	fmt.Printf("| run | runs (s) | median |\n|---|---|---|\n")
	fmt.Printf("| first (cold boot, then saves the state) | %.1f | %.1f s |\n", first.took.Seconds(), first.took.Seconds())
	fmt.Printf("| warm (restored) | %s | %.1f s |\n", list(warm, took), w)
	fmt.Printf("| cold (`-a cold=1`, no cache) | %s | %.1f s |\n\n", list(cold, took), c)
	fmt.Printf("Second run against the first: **%.1f×** faster (goal ≥ 10×); against a cold run: %.1f×.\n", first.took.Seconds()/w, c/w)
	fmt.Printf("Restore to a usable root shell, as the warm runs noted it: median **%.2f s** (%s; goal ≤ 1 s).\n", median(warm, restore), list(warm, restore))
	fmt.Printf("Cache entry: %.0f MB (memory state, disk-less guest).\n", float64(size)/1e6)
}
