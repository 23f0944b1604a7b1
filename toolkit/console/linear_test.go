package console

import (
	"bytes"
	"fmt"
	"math/rand"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// bootLog returns about size bytes of boot-console-like text (kernel lines,
// coloured systemd status lines) ending with a login prompt.
func bootLog(size int) []byte {
	rng := rand.New(rand.NewSource(int64(size)))
	var b bytes.Buffer
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
	b.WriteString("\r\nDebian GNU/Linux 12 lab ttyS0\r\n\r\nlab login: ")
	return b.Bytes()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// trickle feeds data in chunk-sized pieces while three waits (plain, line
// regex, raw) wait for the prompt at its end; it returns the CPU and wall
// time used.
func trickle(t testing.TB, data []byte, chunk int) (cpu, wall time.Duration) {
	c, err := New(Options{Name: "big"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(nil)
	chs := []<-chan result{
		expectAsync(c, text("lab login: "), ExpectOptions{Timeout: 5 * time.Minute}),
		expectAsync(c, regex(`^(\w+) login: $`), ExpectOptions{Timeout: 5 * time.Minute}),
		expectAsync(c, text("ttyS0\r\n\r\nlab login"), ExpectOptions{Timeout: 5 * time.Minute, Raw: true}),
	}
	waitersPending(t, c, len(chs))
	runtime.GC()
	c0, w0 := cpuTime(), time.Now()
	for p := data; len(p) > 0; {
		k := min(chunk, len(p))
		c.Feed(p[:k])
		p = p[k:]
		runtime.Gosched()
	}
	for _, ch := range chs {
		r := waitResult(t, ch)
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	return cpuTime() - c0, time.Since(w0)
}

// TestLinearCost checks that a wait's cost grows linearly with the console:
// 8× the bytes must cost well under 16× the time (a rescanning matcher is
// quadratic: 64×). Best of a few runs, to tolerate a noisy machine.
func TestLinearCost(t *testing.T) {
	small, large := bootLog(1<<20), bootLog(8<<20)
	best := func(data []byte) (time.Duration, time.Duration) {
		var bc, bw time.Duration
		for i := 0; i < 3; i++ {
			c, w := trickle(t, data, 512)
			if i == 0 || c < bc {
				bc = c
			}
			if i == 0 || w < bw {
				bw = w
			}
		}
		return bc, bw
	}
	sc, sw := best(small)
	lc, lw := best(large)
	t.Logf("1 MB: cpu %v wall %v; 8 MB: cpu %v wall %v; ratios cpu %.1f× wall %.1f×",
		sc, sw, lc, lw, float64(lc)/float64(sc), float64(lw)/float64(sw))
	if float64(lc) > 16*float64(sc) && float64(lw) > 16*float64(sw) {
		t.Errorf("8× the console cost %.1f× the CPU and %.1f× the wall time", float64(lc)/float64(sc), float64(lw)/float64(sw))
	}
	if testing.Short() {
		return
	}
	// 20 MB trickled in 512-byte chunks: the prompt at the end is found, at
	// a per-byte cost comparable to the 8 MB run (2.5× the bytes; allow 3×
	// that for noise before calling it superlinear).
	c, w := trickle(t, bootLog(20<<20), 512)
	t.Logf("20 MB: cpu %v wall %v (%.1f× the 8 MB cpu for 2.5× the bytes)", c, w, float64(c)/float64(lc))
	if float64(c) > 7.5*float64(lc) && float64(w) > 7.5*float64(lw) {
		t.Errorf("20 MB cost %.1f× the CPU of 8 MB", float64(c)/float64(lc))
	}
}
