// Command boot measures vmscript's harness overhead: the time from process
// start to the mini lab's shell prompt through `vmscript run`, against the
// same QEMU command line run bare with the serial port on stdout, in
// alternating pairs. It prints a markdown section with the ratio.
//
//	go run ./bench/boot -vmscript bin/vmscript -pairs 7
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

const prompt = "mini# "

func main() {
	bin := flag.String("vmscript", "bin/vmscript", "the vmscript binary")
	pairs := flag.Int("pairs", 7, "alternating pairs to run")
	flag.Parse()
	if err := run(*bin, *pairs); err != nil {
		fmt.Fprintln(os.Stderr, "bench/boot:", err)
		os.Exit(1)
	}
}

func run(bin string, pairs int) error {
	dir, err := os.MkdirTemp("", "bench-boot")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "boot.lua")
	src := `local vm = qemu.start{ name = "mini", lab = "mini", memory = "512M", accel = "tcg" }
vm.console:expect("` + prompt + `", { timeout = "3m" })
print("PROMPT")
io.stdout:flush()
vm:kill()
`
	if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
		return err
	}
	// One warm-up run gives the command line vmscript uses.
	first := filepath.Join(dir, "warm")
	if _, err := timeVmscript(bin, script, first); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	bare, err := bareArgs(filepath.Join(first, "mini.cmdline"))
	if err != nil {
		return err
	}
	var vs, bs []time.Duration
	for i := 0; i < pairs; i++ {
		// Alternate which goes first, so drift on a shared machine hits both.
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, viaVmscript := range order {
			if viaVmscript {
				d, err := timeVmscript(bin, script, filepath.Join(dir, fmt.Sprintf("run%d", i)))
				if err != nil {
					return err
				}
				vs = append(vs, d)
			} else {
				d, err := timeBare(bare)
				if err != nil {
					return err
				}
				bs = append(bs, d)
			}
		}
	}
	mv, mb := median(vs), median(bs)
	fmt.Printf("## Harness overhead: process start to the `mini` prompt\n\n")
	fmt.Printf("%d alternating pairs, TCG, same QEMU command line (bare: serial on stdio, no `-S`, no QMP).\n\n", pairs)
	fmt.Printf("| | median | min | max |\n|---|---|---|---|\n")
	fmt.Printf("| vmscript run | %.2f s | %.2f s | %.2f s |\n", mv.Seconds(), minD(vs).Seconds(), maxD(vs).Seconds())
	fmt.Printf("| bare QEMU | %.2f s | %.2f s | %.2f s |\n\n", mb.Seconds(), minD(bs).Seconds(), maxD(bs).Seconds())
	fmt.Printf("Ratio vmscript / bare (medians): **%.3f** (goal ≤ 1.03)\n\n", mv.Seconds()/mb.Seconds())
	return nil
}

// timeVmscript runs the script and returns the time until it printed PROMPT.
func timeVmscript(bin, script, out string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", script, "--out", out)
	return timeUntil(cmd, "PROMPT")
}

// bareArgs turns vmscript's recorded command line into a bare one: serial on
// stdio, no QMP, not paused.
func bareArgs(cmdline string) ([]string, error) {
	data, err := os.ReadFile(cmdline)
	if err != nil {
		return nil, err
	}
	args, err := shellSplit(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, err
	}
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-S":
			continue
		case a == "-chardev" || a == "-serial" || a == "-qmp":
			i++
			continue
		}
		out = append(out, a)
	}
	return append(out, "-serial", "stdio"), nil
}

func timeBare(args []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return timeUntil(cmd, prompt)
}

// timeUntil starts cmd and returns the time until its stdout contains want,
// then kills it.
func timeUntil(cmd *exec.Cmd, want string) (time.Duration, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	found := make(chan time.Duration, 1)
	go func() {
		rd := bufio.NewReader(out)
		var seen []byte
		buf := make([]byte, 4096)
		for {
			n, err := rd.Read(buf)
			seen = append(seen, buf[:n]...)
			if bytes.Contains(seen, []byte(want)) {
				found <- time.Since(start)
				_, _ = io.Copy(io.Discard, rd)
				return
			}
			if err != nil {
				close(found)
				return
			}
		}
	}()
	d, ok := <-found
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if !ok {
		return 0, fmt.Errorf("%s never printed %q: %s", cmd.Path, want, stderr.String())
	}
	return d, nil
}

// shellSplit undoes the single-quote quoting of a .cmdline file.
func shellSplit(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord, inQuote := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\'':
			inQuote = false
		case inQuote:
			cur.WriteByte(c)
		case c == '\'':
			inQuote, inWord = true, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote in command line")
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func minD(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

func maxD(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
