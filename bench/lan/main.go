// Command lan measures vmscript's virtual LAN in one run and prints a
// markdown section with ratios.
//
//  1. TCP throughput host→guest: one mini lab guest with two NICs — eth0 on
//     a vmscript LAN (DHCP lease), eth1 on QEMU user networking with a
//     hostfwd — and one busybox `nc -ll -p 5001 -e sh -c 'cat >/dev/null;
//     echo done'` listening on both. The host sends -size MB and half-closes;
//     the clock stops when the guest's "done" comes back (everything was
//     received). Over the LAN the host dials through the gateway's gVisor
//     stack (lan.DialTCP); over user networking it dials the forward on
//     127.0.0.1. Alternating, -rounds times each; the ratio is the median
//     LAN throughput over the median user-networking one (goal ≥ 1.0).
//
//  2. TCP throughput guest→host: busybox nc connects and runs dd (`nc HOST
//     PORT -e dd …`), which writes -size MB of zeros straight into the
//     socket — over the LAN to a listener on the gateway's stack
//     (lan.ListenTCP), over user networking to 10.0.2.2 (the host's
//     loopback); the host clocks from accept to the last byte. (Piping dd
//     into nc held both paths at 3–4 MB/s: busybox nc's own copy loop.)
//     Guest→guest: a second mini guest on the LAN reads exactly -size MB
//     (head -c) and reports on its console; the clock runs from the
//     sender's command to that report.
//
//  3. DHCP DISCOVER→ACK latency on the LAN, from the DHCP events (the
//     records of NAME.dhcp.log): the mini guest's udhcpc, and iPXE
//     (/usr/lib/ipxe/ipxe.iso, package ipxe) booted -ipxe times.
//
//     go run ./bench/lan
//     go run ./bench/lan -size 16 -rounds 3 -ipxe 1
//     go run ./bench/lan -ipxe 0 -cpuprofile lan.prof   # where the LAN's CPU goes
//
// It needs qemu-system-x86_64 and builds (or reuses) the mini lab image.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

const (
	guestPort = 5001
	ipxeISO   = "/usr/lib/ipxe/ipxe.iso"
)

func main() {
	size := flag.Int("size", 64, "MB sent per transfer")
	rounds := flag.Int("rounds", 3, "transfers per path (alternating LAN and user networking)")
	ipxe := flag.Int("ipxe", 3, "iPXE boots for the DHCP latency (0: none)")
	keep := flag.Bool("keep", false, "keep the run directory")
	flag.BoolVar(&measureUp, "up", true, "also measure guest→host and guest→guest")
	cpuProfile := flag.String("cpuprofile", "", "write this process's CPU profile (the LAN's switch and gateway stack run here) to `file`")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench/lan:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	if err := bench(*size, *rounds, *ipxe, *keep); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench/lan:", err)
		os.Exit(1)
	}
}

// results is what one bench run measured.
type results struct {
	sizeMB              int
	accel               string
	fwd                 int
	lanRates, userRates []float64
	// guest→host over each path, and guest→guest on the LAN.
	upLAN, upUser, g2g []float64
	miniDHCP           time.Duration
	ipxeDHCP           []time.Duration
	bootToLease        time.Duration
	drops              string
}

func bench(sizeMB, rounds, ipxeBoots int, keep bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "vmscript-bench-lan-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	run, err := journal.New(dir, time.Now())
	if err != nil {
		return err
	}
	defer run.Close()
	img, err := lab.Build(ctx, "mini", lab.Options{})
	if err != nil {
		return err
	}
	l, err := lan.New(ctx, lan.Config{Name: "bench", DHCP: true, Run: run})
	if err != nil {
		return err
	}
	defer l.Close()
	res := &results{sizeMB: sizeMB}
	if err := measureMini(ctx, img, l, run, res, rounds); err != nil {
		return err
	}
	if _, err := os.Stat(ipxeISO); err == nil {
		for i := range ipxeBoots {
			d, err := ipxeLatency(ctx, l, run, i)
			if err != nil {
				return fmt.Errorf("ipxe: %w", err)
			}
			res.ipxeDHCP = append(res.ipxeDHCP, d)
		}
	} else if ipxeBoots > 0 {
		fmt.Fprintf(os.Stderr, "bench/lan: %s missing (package ipxe): no iPXE latency\n", ipxeISO)
	}
	report(res)
	if keep {
		fmt.Printf("\nRun directory: %s\n", dir)
	}
	return nil
}

// measureMini boots one mini guest with a NIC on l and one on user
// networking, and measures its DHCP exchange and the TCP throughput of both.
func measureMini(ctx context.Context, img *lab.Image, l *lan.LAN, run *journal.Run, res *results, rounds int) error {
	spec := machine.Spec{Lab: img, NICs: []machine.NIC{{LAN: l}, {User: true}},
		QEMU: qemu.Config{Name: "mini", Memory: "512M", Run: run, Forwards: []qemu.Forward{{GuestPort: guestPort}}}}
	t0 := time.Now()
	m, err := machine.Boot(ctx, spec)
	if err != nil {
		return err
	}
	defer m.Stop(5 * time.Second)
	lease, err := l.DHCP().WaitLease(ctx, m.VM.MAC())
	if err != nil {
		return err
	}
	res.bootToLease = lease.At.Sub(t0)
	if res.miniDHCP, err = discoverToAck(l, m.VM.MAC()); err != nil {
		return err
	}
	if err := startSink(ctx, m); err != nil {
		return err
	}
	for _, f := range m.VM.Forwards() {
		if f.GuestPort == guestPort {
			res.fwd = f.HostPort
		}
	}
	dialLAN := func(ctx context.Context) (net.Conn, error) {
		return l.DialTCP(ctx, lease.IP.String(), guestPort)
	}
	dialUser := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(res.fwd))
	}
	if err := measureRates(ctx, res, rounds, dialLAN, dialUser); err != nil {
		return err
	}
	if measureUp {
		if err := measureUpload(ctx, m, l, res, rounds); err != nil {
			return fmt.Errorf("guest→host: %w", err)
		}
		if err := measureGuestToGuest(ctx, img, m, l, run, res, rounds); err != nil {
			return fmt.Errorf("guest→guest: %w", err)
		}
	}
	var dl []string
	for _, p := range l.Ports() {
		dl = append(dl, fmt.Sprintf("%s %d", p.Name(), p.Stats().Dropped))
	}
	res.drops = strings.Join(dl, ", ")
	res.accel = m.VM.Accel()
	return nil
}

// startSink waits for the mini guest and starts the nc sink on guestPort.
func startSink(ctx context.Context, m *machine.Machine) error {
	if err := waitReady(ctx, m); err != nil {
		return err
	}
	// eth1 is the user-mode NIC: QEMU's hostfwd delivers to 10.0.2.15.
	setup := fmt.Sprintf("ip link set eth1 up; ip addr add 10.0.2.15/24 dev eth1; nc -ll -p %d -e sh -c 'cat >/dev/null; echo done' & echo setup-$((6*7))", guestPort)
	return sendExpect(ctx, m, setup, "setup-42")
}

// waitReady waits for the mini guest's shell.
func waitReady(ctx context.Context, m *machine.Machine) error {
	_, err := m.Console.Expect(ctx, []console.Pattern{{Text: "vmscript-mini: ready"}}, console.ExpectOptions{Timeout: 3 * time.Minute})
	return err
}

// measureRates transfers the payload over both paths in turns, after one
// warm-up transfer each (TCP slow start, page cache, TCG's translation).
func measureRates(ctx context.Context, res *results, rounds int, dialLAN, dialUser func(context.Context) (net.Conn, error)) error {
	payload := make([]byte, res.sizeMB<<20)
	rand.Read(payload)
	for _, d := range []func(context.Context) (net.Conn, error){dialLAN, dialUser} {
		if _, err := transfer(ctx, d, payload[:4<<20]); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	for i := range rounds {
		order := []string{"lan", "user"}
		if i%2 == 1 {
			order = []string{"user", "lan"}
		}
		for _, which := range order {
			d, rates := dialLAN, &res.lanRates
			if which == "user" {
				d, rates = dialUser, &res.userRates
			}
			dur, err := transfer(ctx, d, payload)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", which, i+1, err)
			}
			*rates = append(*rates, float64(len(payload))/(1<<20)/dur.Seconds())
		}
	}
	return nil
}

// measureUp: measure guest→host and guest→guest too (flag -up).
var measureUp bool

// upPort is where the host listens for the guest's uploads.
const upPort = 5002

// measureUpload has the guest send the payload size of zeros to the host,
// over the LAN (to a listener on the gateway's stack) and over user
// networking (to 10.0.2.2, QEMU's alias of the host's loopback), in turns.
// The clock runs from the host's accept to the last byte.
func measureUpload(ctx context.Context, m *machine.Machine, l *lan.LAN, res *results, rounds int) error {
	lanLn, err := l.ListenTCP(upPort)
	if err != nil {
		return err
	}
	defer lanLn.Close()
	userLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer userLn.Close()
	userPort := userLn.Addr().(*net.TCPAddr).Port
	for i := range rounds + 1 { // round 0 warms up
		order := []string{"lan", "user"}
		if i%2 == 1 {
			order = []string{"user", "lan"}
		}
		for _, which := range order {
			ln, target, rates := lanLn, fmt.Sprintf("%s %d", l.Gateway(), upPort), &res.upLAN
			if which == "user" {
				ln, target, rates = userLn, fmt.Sprintf("10.0.2.2 %d", userPort), &res.upUser
			}
			size := res.sizeMB
			if i == 0 {
				size = 4
			}
			rate, err := upload(ctx, m, ln, target, size)
			if err != nil {
				return fmt.Errorf("%s round %d: %w", which, i, err)
			}
			if i > 0 {
				*rates = append(*rates, rate)
			}
		}
	}
	return nil
}

// upload runs one guest→host transfer of sizeMB and returns MB/s.
func upload(ctx context.Context, m *machine.Machine, ln net.Listener, target string, sizeMB int) (float64, error) {
	type result struct {
		rate float64
		err  error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
		start := time.Now()
		n, err := io.CopyN(io.Discard, c, int64(sizeMB)<<20)
		if err != nil {
			got <- result{err: fmt.Errorf("after %d bytes: %w", n, err)}
			return
		}
		got <- result{rate: float64(sizeMB) / time.Since(start).Seconds()}
	}()
	cmd := fmt.Sprintf("nc %s -e sh -c 'dd if=/dev/zero bs=65536 count=%d 2>/dev/null'", target, sizeMB*16)
	if err := m.Console.SendLine(ctx, cmd); err != nil {
		return 0, err
	}
	select {
	case r := <-got:
		return r.rate, r.err
	case <-time.After(5 * time.Minute):
		return 0, fmt.Errorf("no upload within 5 minutes (%s)", cmd)
	}
}

// measureGuestToGuest boots a second mini guest on the LAN with a sink
// that reads exactly the payload size, and has the first send it zeros:
// the clock runs from the command to the sink's "done" on the sender's
// console.
func measureGuestToGuest(ctx context.Context, img *lab.Image, a *machine.Machine, l *lan.LAN, run *journal.Run, res *results, rounds int) error {
	b, err := machine.Boot(ctx, machine.Spec{Lab: img, NICs: []machine.NIC{{LAN: l}},
		QEMU: qemu.Config{Name: "mini2", Memory: "512M", Run: run}})
	if err != nil {
		return err
	}
	defer b.Stop(5 * time.Second)
	lease, err := l.DHCP().WaitLease(ctx, b.VM.MAC())
	if err != nil {
		return err
	}
	if err := waitReady(ctx, b); err != nil {
		return err
	}
	for i := range rounds + 1 { // round 0 warms up
		size := res.sizeMB
		if i == 0 {
			size = 4
		}
		// The sink reports on its own console (stderr; nc -e gives the
		// program only stdin and stdout).
		sink := fmt.Sprintf("nc -l -p %d -e sh -c 'head -c %d >/dev/null; echo g2g-done-$((%d*1)) >&2' & echo sink-%d-$((6*7))", guestPort+2, size<<20, i, i)
		if err := sendExpect(ctx, b, sink, fmt.Sprintf("sink-%d-42", i)); err != nil {
			return err
		}
		mark := b.Console.Mark()
		send := fmt.Sprintf("nc %s %d -e sh -c 'dd if=/dev/zero bs=65536 count=%d 2>/dev/null'", lease.IP, guestPort+2, size*16)
		start := time.Now()
		if err := a.Console.SendLine(ctx, send); err != nil {
			return err
		}
		if _, err := b.Console.Expect(ctx, []console.Pattern{{Text: fmt.Sprintf("g2g-done-%d", i)}}, console.ExpectOptions{Timeout: 5 * time.Minute, From: &mark}); err != nil {
			return err
		}
		if i > 0 {
			res.g2g = append(res.g2g, float64(size)/time.Since(start).Seconds())
		}
		// The sender's nc may wait for the other side: end it.
		_ = a.Console.Send(ctx, "\x03")
	}
	return nil
}

// sendExpect sends a command line to a guest and waits for want after it.
func sendExpect(ctx context.Context, m *machine.Machine, line, want string) error {
	mark := m.Console.Mark()
	if err := m.Console.SendLine(ctx, line); err != nil {
		return err
	}
	_, err := m.Console.Expect(ctx, []console.Pattern{{Text: want}}, console.ExpectOptions{Timeout: 5 * time.Minute, From: &mark})
	return err
}

// report prints the results as bench/REPORT.md's LAN section.
func report(res *results) {
	lanMed, userMed := median(res.lanRates), median(res.userRates)
	fmt.Printf("## Virtual LAN (bench/lan)\n\n")
	fmt.Printf("%s, %d CPUs, accel %s; one mini guest (eth0 on the LAN, eth1 on user networking with a hostfwd), same run.\n\n",
		time.Now().Format("2006-01-02"), runtime.NumCPU(), res.accel)
	fmt.Printf("### TCP throughput host→guest (%d MB, busybox nc → `cat >/dev/null`, until the guest's reply)\n\n", res.sizeMB)
	fmt.Printf("| path | runs (MB/s) | median MB/s |\n|---|---|---|\n")
	fmt.Printf("| LAN (gVisor stack → switch → socketpair → QEMU) | %s | %.1f |\n", list(res.lanRates), lanMed)
	fmt.Printf("| user networking (hostfwd 127.0.0.1:%d → slirp) | %s | %.1f |\n\n", res.fwd, list(res.userRates), userMed)
	fmt.Printf("Ratio LAN / user networking: **%.2f** (goal ≥ 1.0).\n\n", lanMed/userMed)
	if len(res.upLAN) > 0 {
		reportUp(res)
	}
	fmt.Printf("### DHCP DISCOVER→ACK on the LAN (from the DHCP log)\n\n")
	fmt.Printf("| client | runs | median |\n|---|---|---|\n")
	fmt.Printf("| mini (busybox udhcpc) | %s | %s |\n", durList([]time.Duration{res.miniDHCP}), ms(res.miniDHCP))
	if len(res.ipxeDHCP) > 0 {
		fmt.Printf("| iPXE (ipxe.iso) | %s | %s |\n", durList(res.ipxeDHCP), ms(medianDur(res.ipxeDHCP)))
	}
	fmt.Printf("\nmini: QEMU start → lease %.1fs. Switch port drops (queue full) during the transfers: %s.\n", res.bootToLease.Seconds(), res.drops)
}

// reportUp prints guest→host and guest→guest.
func reportUp(res *results) {
	upLAN, upUser := median(res.upLAN), median(res.upUser)
	fmt.Printf("### TCP throughput guest→host and guest→guest (%d MB of zeros, busybox nc -e dd)\n\n", res.sizeMB)
	fmt.Printf("| path | runs (MB/s) | median MB/s |\n|---|---|---|\n")
	fmt.Printf("| guest→host, LAN (to a listener on the gateway's stack) | %s | %.1f |\n", list(res.upLAN), upLAN)
	fmt.Printf("| guest→host, user networking (to 10.0.2.2 → the host's loopback) | %s | %.1f |\n", list(res.upUser), upUser)
	fmt.Printf("| guest→guest, LAN (two mini guests, through the switch) | %s | %.1f |\n\n", list(res.g2g), median(res.g2g))
	fmt.Printf("Ratio guest→host LAN / user networking: **%.2f** (goal ≥ 1.0). Guest→guest has no user-networking peer (slirp does not connect guests).\n\n", upLAN/upUser)
}

// transfer sends payload on a new connection, half-closes, and waits for
// the guest's "done" (sent once cat has read everything).
func transfer(ctx context.Context, dial func(context.Context) (net.Conn, error), payload []byte) (time.Duration, error) {
	var c net.Conn
	var err error
	// The listener (nc -ll) forks per connection; retry a refused dial.
	for i := 0; ; i++ {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err = dial(dctx)
		cancel()
		if err == nil || i == 20 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	start := time.Now()
	if _, err := c.Write(payload); err != nil {
		return 0, err
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return 0, err
		}
	} else {
		return 0, fmt.Errorf("%T cannot half-close", c)
	}
	reply, err := io.ReadAll(c)
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if !strings.Contains(string(reply), "done") {
		return 0, fmt.Errorf("guest replied %q, want done", reply)
	}
	return d, nil
}

// discoverToAck is the time from a client's first DISCOVER to the first ACK
// sent to it.
func discoverToAck(l *lan.LAN, mac string) (time.Duration, error) {
	var disc time.Time
	for _, e := range l.DHCP().Events(mac) {
		switch {
		case e.Dir == "in" && e.Type == lan.Discover && disc.IsZero():
			disc = e.At
		case e.Dir == "out" && e.Type == lan.Ack && !disc.IsZero():
			return e.At.Sub(disc), nil
		}
	}
	return 0, fmt.Errorf("no DISCOVER→ACK for %s in the DHCP log", mac)
}

// ipxeLatency boots ipxe.iso on the LAN and returns its DISCOVER→ACK.
func ipxeLatency(ctx context.Context, l *lan.LAN, run *journal.Run, i int) (time.Duration, error) {
	name := fmt.Sprintf("ipxe%d", i+1)
	m, err := machine.Boot(ctx, machine.Spec{NICs: []machine.NIC{{LAN: l}},
		QEMU: qemu.Config{Name: name, Memory: "256M", ISO: ipxeISO, Boot: "d", Run: run}})
	if err != nil {
		return 0, err
	}
	defer m.Stop(5 * time.Second)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := l.DHCP().WaitLease(wctx, m.VM.MAC()); err != nil {
		return 0, err
	}
	return discoverToAck(l, m.VM.MAC())
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func medianDur(xs []time.Duration) time.Duration {
	s := append([]time.Duration(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func list(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(parts, ", ")
}

func durList(xs []time.Duration) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = ms(x)
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
