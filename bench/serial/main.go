// Command serial measures the console's delivery and memory:
//
//  1. Delivery: a mini guest cats a file to its console (the 16550 UART
//     ttyS0, and a virtio console hvc0); the time from the command to the
//     end marker through `vmscript run` against the same QEMU command line
//     run bare, its stdout read by a plain reader, in alternating rounds.
//
//  2. Memory: 1 GB of console output fed through a console with its log and
//     a run's timeline, a wait watching for the end; the process's peak RSS
//     (VmHWM) and the timeline's size per console byte.
//
//     go run ./bench/serial -vmscript bin/vmscript -rounds 3
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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
)

const (
	prompt = "mini# "
	line   = "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789"
)

func main() {
	bin := flag.String("vmscript", "bin/vmscript", "the vmscript binary")
	rounds := flag.Int("rounds", 3, "alternating rounds per console device")
	size := flag.Int("bytes", 1_000_000, "bytes the guest writes per measurement")
	memGB := flag.Float64("memory-gb", 1, "GB of console output for the memory measurement (0: skip)")
	bulk := flag.Int("bulk-bytes", 20_000_000, "bytes for one vmscript run through the virtio console, for its peak RSS and timeline (0: skip)")
	flag.Parse()
	if err := run(*bin, *rounds, *size, *bulk, *memGB); err != nil {
		fmt.Fprintln(os.Stderr, "bench/serial:", err)
		os.Exit(1)
	}
}

func run(bin string, rounds, size, bulk int, memGB float64) error {
	fmt.Printf("## The console: delivery against bare QEMU, and memory (bench/serial)\n\n")
	if memGB > 0 {
		if err := memory(int64(memGB * 1e9)); err != nil {
			return err
		}
	}
	dir, err := os.MkdirTemp("", "bench-serial")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "cat.lua")
	if err := os.WriteFile(script, []byte(luaScript), 0o644); err != nil {
		return err
	}
	fmt.Printf("### Delivery: a mini guest cats %d bytes (%d-byte lines) to its console\n\n", size, len(line)+1)
	fmt.Printf("%d alternating rounds per device, TCG; time from the command to the end marker; bare: the same QEMU command line, no -S, no QMP, stdout read by a plain Go reader (exec's StdoutPipe, through the runtime's network poller, which wakes on every byte the UART writes; vmscript reads its pipe outside the poller).\n\n", rounds)
	fmt.Printf("| console | vmscript (s) | bare QEMU (s) | vmscript MB/s | bare MB/s | ratio (goal ≥ 0.97) | vmscript peak RSS |\n|---|---|---|---|---|---|---|\n")
	for _, dev := range []string{"serial", "virtio"} {
		if err := delivery(bin, script, dir, dev, rounds, size); err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
	}
	fmt.Println()
	if bulk > 0 {
		if err := bulkRun(bin, script, dir, bulk); err != nil {
			return fmt.Errorf("bulk: %w", err)
		}
	}
	fmt.Println("The guest's own tty write path under TCG is the limit on both sides (its `cat` spends the time in the")
	fmt.Println("kernel: `time cat` in the guest shows it as sys); the virtio console hands over whole buffers where")
	fmt.Println("the UART takes an I/O exit per byte.")
	fmt.Println()
	return nil
}

const luaScript = `local vm = qemu.start{ name = "mini", lab = "mini", memory = "512M", accel = "tcg", console = args.console }
local con = vm.console
con:expect("mini# ", { timeout = "3m" })
con:send("yes " .. args.line .. " | head -c " .. args.size .. " > /tmp/f; echo READ''Y\r")
con:expect("READY", { timeout = "3m" })
con:expect("mini# ", { timeout = "1m" })
local t0 = time.now()
con:send("cat /tmp/f; echo DO''NE\r")
con:expect("DONE", { timeout = "10m" })
print(string.format("ELAPSED %.6f", time.now() - t0))
io.stdout:flush()
time.sleep(2) -- the bench reads vmscript's peak RSS meanwhile
vm:kill()
`

// delivery runs rounds of vmscript and bare QEMU, alternating, and prints
// one table row.
func delivery(bin, script, dir, dev string, rounds, size int) error {
	args := []string{"-a", "console=" + dev, "-a", "line=" + line, "-a", "size=" + strconv.Itoa(size)}
	warm := filepath.Join(dir, "warm-"+dev)
	if _, _, err := viaVmscript(bin, script, warm, args); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	bare, err := bareArgs(filepath.Join(warm, "mini.cmdline"))
	if err != nil {
		return err
	}
	var vs, bs []float64
	var peak int64
	for i := range rounds {
		for _, first := range []bool{i%2 == 0, i%2 == 1} {
			if first {
				d, hwm, err := viaVmscript(bin, script, filepath.Join(dir, fmt.Sprintf("%s-%d", dev, i)), args)
				if err != nil {
					return err
				}
				vs, peak = append(vs, d), max(peak, hwm)
			} else {
				d, err := viaBare(bare, size)
				if err != nil {
					return err
				}
				bs = append(bs, d)
			}
		}
	}
	mv, mb := median(vs), median(bs)
	fmt.Printf("| %s | %s | %s | %.3f | %.3f | **%.2f** | %.0f MB |\n", dev, list(vs), list(bs),
		float64(size)/mv/1e6, float64(size)/mb/1e6, mb/mv, float64(peak)/1e6)
	return nil
}

// viaVmscript runs the script and returns the seconds it measured and
// vmscript's peak RSS (read while the script sleeps after measuring).
func viaVmscript(bin, script, out string, args []string) (float64, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"run", script, "--out", out, "-q"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	secs, hwm := -1.0, int64(0)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ELAPSED "); ok {
			secs, _ = strconv.ParseFloat(v, 64)
			hwm = vmHWM(strconv.Itoa(cmd.Process.Pid))
		}
	}
	if err := cmd.Wait(); err != nil {
		return 0, 0, fmt.Errorf("vmscript run: %v: %s", err, stderr.String())
	}
	if secs < 0 {
		return 0, 0, fmt.Errorf("vmscript printed no ELAPSED: %s", stderr.String())
	}
	return secs, hwm, nil
}

// bulkRun has one vmscript run's guest write bulk bytes through hvc0 and
// prints vmscript's peak RSS and the timeline's size against the log's.
func bulkRun(bin, script, dir string, bulk int) error {
	out := filepath.Join(dir, "bulk")
	secs, hwm, err := viaVmscript(bin, script, out, []string{"-a", "console=virtio", "-a", "line=" + line, "-a", "size=" + strconv.Itoa(bulk)})
	if err != nil {
		return err
	}
	log, err := os.Stat(filepath.Join(out, "mini.console.log"))
	if err != nil {
		return err
	}
	tl, err := os.Stat(filepath.Join(out, journal.TimelineFile))
	if err != nil {
		return err
	}
	fmt.Printf("One `vmscript run` whose guest cats %.0f MB through hvc0 (%.1f s): vmscript's peak RSS **%.0f MB**; console log %.1f MB, timeline %.1f kB (%.5f timeline bytes per console byte).\n\n",
		float64(bulk)/1e6, secs, float64(hwm)/1e6, float64(log.Size())/1e6, float64(tl.Size())/1e3, float64(tl.Size())/float64(log.Size()))
	return nil
}

// viaBare does what the script does against QEMU's stdio.
func viaBare(argv []string, size int) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	r := &reader{r: out, buf: make([]byte, 64<<10)}
	if err := r.waitFor(prompt); err != nil {
		return 0, fmt.Errorf("%v: %s", err, stderr.String())
	}
	fmt.Fprintf(in, "yes %s | head -c %d > /tmp/f; echo READ''Y\r", line, size)
	if err := r.waitFor("READY"); err != nil {
		return 0, err
	}
	if err := r.waitFor(prompt); err != nil {
		return 0, err
	}
	t0 := time.Now()
	fmt.Fprintf(in, "cat /tmp/f; echo DO''NE\r")
	if err := r.waitFor("DONE"); err != nil {
		return 0, err
	}
	return time.Since(t0).Seconds(), nil
}

// reader finds texts in a stream, keeping only a tail of it.
type reader struct {
	r    io.Reader
	buf  []byte
	seen []byte
}

func (r *reader) waitFor(s string) error {
	for {
		if i := bytes.Index(r.seen, []byte(s)); i >= 0 {
			r.seen = r.seen[i+len(s):]
			return nil
		}
		if len(r.seen) > 4096 {
			r.seen = r.seen[len(r.seen)-len(s):]
		}
		n, err := r.r.Read(r.buf)
		r.seen = append(r.seen, r.buf[:n]...)
		if err != nil && n == 0 {
			return fmt.Errorf("waiting for %q: %v", s, err)
		}
	}
}

// bareArgs turns vmscript's command line into a bare one: not paused, no
// QMP (the console is on QEMU's stdio already).
func bareArgs(cmdline string) ([]string, error) {
	data, err := os.ReadFile(cmdline)
	if err != nil {
		return nil, err
	}
	args := strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(data)), "'", ""))
	var out []string
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-S":
			continue
		case "-qmp":
			i++
			continue
		case "-append":
			// The only argument with spaces: the rest of it up to the
			// next option.
			j := i + 1
			for j+1 < len(args) && !strings.HasPrefix(args[j+1], "-") {
				j++
			}
			out = append(out, "-append", strings.Join(args[i+1:j+1], " "))
			i = j
			continue
		}
		out = append(out, args[i])
	}
	return out, nil
}

// memory feeds n bytes of console lines through a console with a log and a
// timeline, a wait for the end marker running all along, and prints the
// peak RSS and the timeline's size.
func memory(n int64) error {
	dir, err := os.MkdirTemp("", "bench-serial-mem")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	run, err := journal.New(dir, time.Now())
	if err != nil {
		return err
	}
	con, err := console.New(console.Options{Name: "flood", Run: run, LogPath: run.Path("flood.console.log")})
	if err != nil {
		return err
	}
	before := vmHWM("self")
	done := make(chan error, 1)
	go func() {
		_, err := con.ExpectText(context.Background(), "END-OF-FLOOD", console.ExpectOptions{Timeout: time.Hour})
		done <- err
	}()
	chunk := bytes.Repeat([]byte("[ 1234.567890] "+line+"\r\n"), 4096/89+1)[:4096]
	t0 := time.Now()
	var fed int64
	for fed < n {
		con.Feed(chunk)
		fed += int64(len(chunk))
	}
	con.Feed([]byte("\r\nEND-OF-FLOOD\r\n"))
	if err := <-done; err != nil {
		return err
	}
	took := time.Since(t0)
	con.Close(nil)
	<-con.Done()
	run.Close()
	peak := vmHWM("self")
	tl, err := os.Stat(run.Path(journal.TimelineFile))
	if err != nil {
		return err
	}
	fmt.Printf("### Memory: %.1f GB of console output (4 KiB chunks of 89-byte lines), log and timeline on, one wait\n\n", float64(fed)/1e9)
	fmt.Printf("| peak RSS (VmHWM) | before feeding | goal | timeline | timeline bytes per console byte | fed at |\n|---|---|---|---|---|---|\n")
	fmt.Printf("| **%.0f MB** | %.0f MB | ≤ 100 MB | %.1f kB | %.6f | %.0f MB/s |\n\n", float64(peak)/1e6, float64(before)/1e6,
		float64(tl.Size())/1e3, float64(tl.Size())/float64(fed), float64(fed)/took.Seconds()/1e6)
	return nil
}

// vmHWM is a process's peak resident set, in bytes.
func vmHWM(pid string) int64 {
	data, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func list(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, ", ")
}
