// Command console-bench compares vmscript's toolkit/console with
// google/goexpect on the same trickled console text: a boot log of 1, 5 and
// 20 MB, delivered in 512-byte and 4 KiB reads, with the awaited prompt at
// its very end. It measures process CPU time (getrusage, user+system) and
// bytes allocated (runtime.MemStats.TotalAlloc) for each, and prints a
// markdown table with the ratios.
//
// Both sides read from the same kind of reader, which returns one chunk per
// Read and starts delivering only once the wait has begun, so both see the
// console arrive piece by piece. Both wait for the same regex. goexpect
// re-runs its regex over its whole buffer on every wake-up, so its cost is
// quadratic: runs predicted to exceed -cap are skipped, with a note.
//
//	go run ./bench/console                # the full table
//	go run ./bench/console -sizes 1,5 -cap 30s
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	expect "github.com/google/goexpect"

	"github.com/vmscript/vmscript/toolkit/console"
)

const prompt = "lab login: "

// bootLog returns about size bytes of boot-console-like text ending with
// the login prompt.
func bootLog(size int) []byte {
	rng := rand.New(rand.NewSource(int64(size)))
	var b strings.Builder
	b.Grow(size + 100)
	units := []string{"systemd-udevd.service", "systemd-networkd.service", "ssh.service", "pre-nixos.service", "dbus.service"}
	for b.Len() < size {
		switch rng.Intn(3) {
		case 0:
			fmt.Fprintf(&b, "[%5d.%06d] virtio_net virtio1 ens4: renamed from eth0 (%d)\r\n", b.Len()/10000, rng.Intn(1000000), rng.Intn(100))
		case 1:
			fmt.Fprintf(&b, "[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39m%s\x1b[0m - some unit.\r\n", units[rng.Intn(len(units))])
		default:
			fmt.Fprintf(&b, "         Starting \x1b[0;1;39m%s\x1b[0m...\r\n", units[rng.Intn(len(units))])
		}
	}
	b.WriteString("\r\nDebian GNU/Linux 12 lab ttyS0\r\n\r\n" + prompt)
	return []byte(b.String())
}

// chunkReader returns data in chunk-sized reads, after gate is closed.
type chunkReader struct {
	data  []byte
	chunk int
	pace  time.Duration
	gate  chan struct{}
	once  sync.Once
	first bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.once.Do(func() { <-r.gate; r.first = true })
	if !r.first && r.pace > 0 {
		time.Sleep(r.pace)
	}
	r.first = false
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.chunk)], r.data)
	r.data = r.data[n:]
	return n, nil
}

type rw struct {
	io.Reader
	io.Writer
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

type sample struct {
	cpu, wall time.Duration
	alloc     uint64
	skipped   string
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func measure(f func() error) (sample, error) {
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	c0, w0 := cpuTime(), time.Now()
	err := f()
	s := sample{cpu: cpuTime() - c0, wall: time.Since(w0)}
	runtime.ReadMemStats(&m1)
	s.alloc = m1.TotalAlloc - m0.TotalAlloc
	return s, err
}

func runConsole(data []byte, chunk int, pace time.Duration, logDir string) (sample, error) {
	return measure(func() error {
		opt := console.Options{Name: "bench", EOFGrace: -1}
		if logDir != "" {
			opt.LogPath = logDir + "/bench.console.log"
		}
		c, err := console.New(opt)
		if err != nil {
			return err
		}
		defer c.Close(nil)
		r := &chunkReader{data: data, chunk: chunk, pace: pace, gate: make(chan struct{})}
		if err := c.Attach(rw{r, io.Discard}); err != nil {
			return err
		}
		close(r.gate)
		m, err := c.Expect(context.Background(), []console.Pattern{{Regex: prompt}}, console.ExpectOptions{Timeout: 10 * time.Minute})
		if err != nil {
			return err
		}
		if m.Text != prompt {
			return fmt.Errorf("console matched %q", m.Text)
		}
		return nil
	})
}

// runFloor drains the same paced reader with a goroutine hand-off per chunk
// and no matching: the CPU cost of the delivery itself (sleeps, wake-ups).
func runFloor(data []byte, chunk int, pace time.Duration) (sample, error) {
	return measure(func() error {
		r := &chunkReader{data: data, chunk: chunk, pace: pace, gate: make(chan struct{})}
		ch := make(chan int, 1)
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := r.Read(buf)
				if n > 0 {
					ch <- n
				}
				if err != nil {
					close(ch)
					return
				}
			}
		}()
		close(r.gate)
		total := 0
		for n := range ch {
			total += n
		}
		if total != len(data) {
			return fmt.Errorf("floor read %d of %d bytes", total, len(data))
		}
		return nil
	})
}

func runGoexpect(data []byte, chunk int, pace time.Duration) (sample, error) {
	re := regexp.MustCompile(prompt)
	return measure(func() error {
		r := &chunkReader{data: data, chunk: chunk, pace: pace, gate: make(chan struct{})}
		done := make(chan struct{})
		var once sync.Once
		e, _, err := expect.SpawnGeneric(&expect.GenOptions{
			In:    nopWriteCloser{io.Discard},
			Out:   r,
			Wait:  func() error { <-done; return nil },
			Close: func() error { once.Do(func() { close(done) }); return nil },
			Check: func() bool { return true },
		}, 10*time.Minute)
		if err != nil {
			return err
		}
		defer e.Close()
		close(r.gate)
		out, _, err := e.Expect(re, 10*time.Minute)
		if err != nil {
			return err
		}
		if !strings.HasSuffix(out, prompt) {
			return fmt.Errorf("goexpect output ends %q", out[max(0, len(out)-20):])
		}
		return nil
	})
}

func parseInts(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad number %q\n", f)
			os.Exit(2)
		}
		out = append(out, n)
	}
	return out
}

func mb(b uint64) string {
	switch {
	case b >= 10<<30:
		return fmt.Sprintf("%.0f GB", float64(b)/(1<<30))
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(b)/(1<<30))
	default:
		return fmt.Sprintf("%.1f MB", float64(b)/(1<<20))
	}
}

func secs(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func main() {
	sizes := flag.String("sizes", "1,5,20", "console sizes in MB")
	chunks := flag.String("chunks", "512,4096", "read sizes in bytes")
	capDur := flag.Duration("cap", 90*time.Second, "skip a goexpect run whose CPU time, extrapolated quadratically from the previous size, exceeds this")
	pace := flag.Duration("pace", 20*time.Microsecond, "pause between chunks, so the console trickles as a serial port does (0 = as fast as the reader takes it)")
	withLog := flag.Bool("log", true, "also measure the console with its log file written (production setting)")
	flag.Parse()

	logDir := ""
	if *withLog {
		d, err := os.MkdirTemp("", "console-bench")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
		logDir = d
	}

	fmt.Printf("# console matching: toolkit/console vs google/goexpect\n\n")
	fmt.Printf("%s/%s, %d CPUs, %s. Same boot-log text, prompt at the end, delivered one chunk per Read; both wait for the regex %q.\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), prompt)
	fmt.Printf("CPU is process user+system time (getrusage); alloc is runtime.MemStats.TotalAlloc.\n\n")
	hdr := "| size | chunk | delivery floor CPU | console CPU | goexpect CPU | CPU ratio | CPU ratio above floor | console alloc | goexpect alloc | alloc ratio | console wall | goexpect wall |"
	if *withLog {
		hdr += " console+log CPU |"
	}
	fmt.Println(hdr)
	fmt.Println(strings.Repeat("|---", strings.Count(hdr, "|")-1) + "|")
	var notes []string
	for _, chunk := range parseInts(*chunks) {
		var prevSize int
		var prevCPU time.Duration
		for _, size := range parseInts(*sizes) {
			data := bootLog(size << 20)
			cs, err := runConsole(data, chunk, *pace, "")
			if err != nil {
				fmt.Fprintln(os.Stderr, "console:", err)
				os.Exit(1)
			}
			var ls sample
			if *withLog {
				if ls, err = runConsole(data, chunk, *pace, logDir); err != nil {
					fmt.Fprintln(os.Stderr, "console+log:", err)
					os.Exit(1)
				}
			}
			var gs sample
			if prevSize > 0 {
				f := float64(size) / float64(prevSize)
				if pred := time.Duration(float64(prevCPU) * f * f); pred > *capDur {
					gs.skipped = fmt.Sprintf("skipped (predicted ~%s CPU)", secs(pred))
					notes = append(notes, fmt.Sprintf("goexpect at %d MB / %d B chunks skipped: %s at %d MB extrapolates quadratically to ~%s, over the -cap of %s.",
						size, chunk, secs(prevCPU), prevSize, secs(pred), *capDur))
				}
			}
			if gs.skipped == "" {
				if gs, err = runGoexpect(data, chunk, *pace); err != nil {
					fmt.Fprintln(os.Stderr, "goexpect:", err)
					os.Exit(1)
				}
				prevSize, prevCPU = size, gs.cpu
			}
			fs, err := runFloor(data, chunk, *pace)
			if err != nil {
				fmt.Fprintln(os.Stderr, "floor:", err)
				os.Exit(1)
			}
			row := fmt.Sprintf("| %d MB | %d B | %s | %s |", size, chunk, secs(fs.cpu), secs(cs.cpu))
			if gs.skipped != "" {
				row += fmt.Sprintf(" %s | — | — | %s | — | — | %s | — |", gs.skipped, mb(cs.alloc), secs(cs.wall))
			} else {
				row += fmt.Sprintf(" %s | %.0f× | %s | %s | %s | %.0f× | %s | %s |",
					secs(gs.cpu), float64(gs.cpu)/float64(max(cs.cpu, time.Millisecond)),
					aboveFloor(cs.cpu, gs.cpu, fs.cpu),
					mb(cs.alloc), mb(gs.alloc), float64(gs.alloc)/float64(max(cs.alloc, 1)),
					secs(cs.wall), secs(gs.wall))
			}
			if *withLog {
				row += fmt.Sprintf(" %s |", secs(ls.cpu))
			}
			fmt.Println(row)
		}
	}
	fmt.Println()
	fmt.Println("Notes:")
	fmt.Printf("- Chunks are paced %s apart (-pace) so each one is a separate wake-up, as on a serial port; the delivery floor is the CPU of that pacing and hand-off alone (no matching), included in both sides' CPU.\n", *pace)
	fmt.Println("- goexpect's wall time includes missed wake-ups: it polls every CheckDuration (2 s) when a wake-up is lost.")
	fmt.Println("- console alloc is everything allocated over the run: the history passes through memory (its newest 1-4 MiB stay there, the rest is spilled to disk), so it grows with the output while the peak does not (bench/serial).")
	for _, n := range notes {
		fmt.Println("- " + n)
	}
}

// aboveFloor compares the CPU each side spent beyond the delivery floor (the
// pacing and hand-off both pay): the cost of matching itself. A console
// within noise of the floor is counted as 10 ms, and the ratio shown as a
// lower bound.
func aboveFloor(console, goexpect, floor time.Duration) string {
	const least = 10 * time.Millisecond
	c, g := console-floor, goexpect-floor
	if g <= 0 {
		return "—"
	}
	if c < least {
		return fmt.Sprintf("≥ %.0f×", float64(g)/float64(least))
	}
	return fmt.Sprintf("%.0f×", float64(g)/float64(c))
}
