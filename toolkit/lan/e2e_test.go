package lan_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// requireQEMU skips the test when QEMU is missing, unless
// VMSCRIPT_REQUIRE_QEMU is set (CI), in which case it fails.
func requireQEMU(t *testing.T) {
	t.Helper()
	testenv.RequireQEMU(t)
}

func newRun(t *testing.T) *journal.Run {
	t.Helper()
	r, err := journal.New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func labImage(t *testing.T, ctx context.Context, name string) *lab.Image {
	t.Helper()
	img, err := lab.Build(ctx, name, lab.Options{})
	if err != nil {
		t.Fatalf("lab %s: %v", name, err)
	}
	return img
}

// boot starts a VM whose only NIC is a port of l.
func boot(t *testing.T, ctx context.Context, l *lan.LAN, run *journal.Run, cfg qemu.Config) *machine.Machine {
	t.Helper()
	cfg.Run = run
	cfg.Accel = "tcg"
	cfg.NICs = []qemu.NIC{{Open: func(vm, mac string) (*os.File, error) {
		f, _, err := l.Attach(vm, mac)
		return f, err
	}}}
	m, err := machine.Boot(ctx, machine.Spec{QEMU: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(5 * time.Second) })
	return m
}

func expect(t *testing.T, ctx context.Context, m *machine.Machine, re string, d time.Duration) *console.Match {
	t.Helper()
	match, err := m.Console.Expect(ctx, []console.Pattern{{Regex: re}}, console.ExpectOptions{Timeout: d})
	if err != nil {
		t.Fatalf("%s: %v", m.VM.Name(), err)
	}
	return match
}

func send(t *testing.T, ctx context.Context, m *machine.Machine, line string) {
	t.Helper()
	if err := m.Console.SendLine(ctx, line); err != nil {
		t.Fatal(err)
	}
}

// subsequence reports whether want occurs in order (not necessarily
// adjacent) in the "dir:TYPE" list of evs.
func subsequence(evs []lan.Event, want ...string) bool {
	i := 0
	for _, e := range evs {
		if i < len(want) && e.Dir+":"+e.Type == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestE2EMiniLAN: two mini guests on one LAN with DHCP paused at first.
// Their DISCOVERs are logged and unanswered; after Resume each gets a lease
// that matches what the guest says; they ping each other; the host reaches
// one over the stack (dropbear's banner); a guest reaches a host service on
// 127.0.0.1 through NAT; the link can be pulled; the pcap reads in tshark.
func TestE2EMiniLAN(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img := labImage(t, ctx, "mini")
	run := newRun(t)
	l, err := lan.New(ctx, lan.Config{Name: "lan", DHCP: true, NAT: true, Pcap: true, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.DHCP().Pause()
	// A host service on loopback only, for NAT.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello-from-host\n") }))
	port := ln.Addr().(*net.TCPAddr).Port

	cfg := func(name string) qemu.Config {
		return qemu.Config{Name: name, Memory: "256M", Devices: []qemu.Device{img.DirectBoot()}}
	}
	t0 := time.Now()
	a := boot(t, ctx, l, run, cfg("mini-a"))
	b := boot(t, ctx, l, run, cfg("mini-b"))
	macA, macB := a.VM.MAC(), b.VM.MAC()

	// Paused: DISCOVERs arrive, nothing answers.
	for len(l.DHCP().Events(macA)) < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("fewer than 2 DISCOVERs from %s: %v", macA, l.DHCP().Events(macA))
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("2 DISCOVERs from mini-a while paused after %v", time.Since(t0).Round(time.Millisecond))
	for _, e := range l.DHCP().Events("") {
		if e.Dir == "out" {
			t.Fatalf("the paused server answered: %v", e)
		}
		if !strings.Contains(e.Note, "paused") {
			t.Fatalf("paused event without note: %v", e)
		}
	}
	l.DHCP().Resume()

	leaseA, err := l.DHCP().WaitLease(ctx, macA)
	if err != nil {
		t.Fatal(err)
	}
	leaseB, err := l.DHCP().WaitLease(ctx, macB)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leases after %v: a %s, b %s", time.Since(t0).Round(time.Millisecond), leaseA.IP, leaseB.IP)
	for _, mac := range []string{macA, macB} {
		evs := l.DHCP().Events(mac)
		if !subsequence(evs, "in:DISCOVER", "out:OFFER", "in:REQUEST", "out:ACK") {
			t.Fatalf("%s: DHCP events out of order: %v", mac, evs)
		}
		var disc, ack time.Time
		for _, e := range evs {
			if e.Type == lan.Discover && e.Note == "" {
				disc = e.At
			}
			if e.Type == lan.Ack && e.Dir == "out" {
				ack = e.At
			}
		}
		t.Logf("%s: last DISCOVER→ACK %v", mac, ack.Sub(disc).Round(time.Microsecond))
	}

	// What the guest says.
	expect(t, ctx, a, `mini# `, 60*time.Second)
	send(t, ctx, a, "while ! test -s /run/ipv4; do sleep 0.2; done; ip -4 -o addr show eth0")
	m := expect(t, ctx, a, `inet ([0-9.]+)/`, 30*time.Second)
	if m.Captures[0] != leaseA.IP.String() {
		t.Fatalf("guest says %s, lease says %s", m.Captures[0], leaseA.IP)
	}

	// VM to VM.
	send(t, ctx, a, "ping -c 2 -W 5 "+leaseB.IP.String())
	expect(t, ctx, a, `2 packets received`, 30*time.Second)

	// Host into a guest over the stack: dropbear's banner.
	expect(t, ctx, b, `mini# `, 60*time.Second)
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	c, err := l.DialTCP(dctx, leaseB.IP.String(), 22)
	dcancel()
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	banner := make([]byte, 16)
	_, err = io.ReadFull(c, banner)
	c.Close()
	if err != nil || !strings.HasPrefix(string(banner), "SSH-2.0-dropbear") {
		t.Fatalf("banner %q: %v", banner, err)
	}

	// Guest to a host service through NAT (gateway address → 127.0.0.1).
	send(t, ctx, a, fmt.Sprintf("wget -q -O - http://%s:%d/", l.Gateway(), port))
	expect(t, ctx, a, `hello-from-host`, 30*time.Second)

	// Pull the cable: no ping; plug it back: ping.
	lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
	if err := a.VM.SetLink(lctx, "", false); err != nil {
		t.Fatal(err)
	}
	lcancel()
	send(t, ctx, a, "ping -c 1 -W 2 "+leaseB.IP.String()+"; echo link-down-done")
	expect(t, ctx, a, `0 packets received`, 30*time.Second)
	expect(t, ctx, a, `link-down-done`, 30*time.Second)
	lctx, lcancel = context.WithTimeout(ctx, 10*time.Second)
	if err := a.VM.SetLink(lctx, "", true); err != nil {
		t.Fatal(err)
	}
	lcancel()
	send(t, ctx, a, "sleep 1; ping -c 1 -W 5 "+leaseB.IP.String())
	expect(t, ctx, a, `1 packets received`, 30*time.Second)

	// The log file and the pcap.
	log, _ := os.ReadFile(l.DHCPLogPath())
	if !strings.Contains(string(log), "DISCOVER mac="+macA) || !strings.Contains(string(log), "not answered: DHCP paused") {
		t.Fatalf("dhcp log:\n%s", log)
	}
	a.Stop(5 * time.Second)
	b.Stop(5 * time.Second)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if tshark, err := exec.LookPath("tshark"); err == nil {
		out, err := exec.CommandContext(ctx, tshark, "-r", l.PcapPath(), "-Y", "dhcp && eth.src == "+macB, "-T", "fields", "-e", "dhcp.option.dhcp").Output()
		if err != nil {
			t.Fatalf("tshark: %v", err)
		}
		if got := strings.Join(strings.Fields(string(out)), ","); !strings.Contains(got, "1,3") {
			t.Fatalf("pcap: DHCP types from %s: %q", macB, got)
		}
	} else if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
		t.Fatal("tshark is missing (apt-get install tshark)")
	}
}

// TestE2ESystemdMatchMismatch boots the systemd lab twice at once: with
// lab.lan=match the "lan" interface gets a lease; with lab.lan=mismatch
// wait_lease times out saying nothing came from that MAC, while the guest
// says `Interface "lan" not found` — the two sides of the seed's split.
func TestE2ESystemdMatchMismatch(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	img := labImage(t, ctx, "systemd")
	run := newRun(t)
	l, err := lan.New(ctx, lan.Config{Name: "lan", DHCP: true, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := func(name, knob string) qemu.Config {
		kernel := img.DirectBoot()
		kernel.Append = strings.Replace(kernel.Append, "lab.lan=match", "lab.lan="+knob, 1)
		return qemu.Config{Name: name, Memory: "1G", Devices: []qemu.Device{kernel}}
	}
	t0 := time.Now()
	good := boot(t, ctx, l, run, cfg("sd-match", "match"))
	bad := boot(t, ctx, l, run, cfg("sd-mismatch", "mismatch"))

	lease, err := l.DHCP().WaitLease(ctx, good.VM.MAC())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("match: lease %s for %q after %v", lease.IP, lease.Hostname, time.Since(t0).Round(time.Millisecond))

	expect(t, ctx, bad, `login: `, 3*time.Minute)
	send(t, ctx, bad, "root")
	expect(t, ctx, bad, `root@lab:`, time.Minute)
	send(t, ctx, bad, "networkctl status lan; ip -o link | grep -c ens")
	expect(t, ctx, bad, `Interface "lan" not found`, time.Minute)
	t.Logf("mismatch: guest at its shell after %v", time.Since(t0).Round(time.Millisecond))

	wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = l.DHCP().WaitLease(wctx, bad.VM.MAC())
	wcancel()
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "nothing was seen") {
		t.Fatalf("mismatch: %v", err)
	}
	t.Logf("mismatch: %v", err)

	// The matching guest agrees with the server.
	expect(t, ctx, good, `login: `, 3*time.Minute)
	send(t, ctx, good, "root")
	expect(t, ctx, good, `root@lab:`, time.Minute)
	send(t, ctx, good, "ip -4 -o addr show lan")
	m := expect(t, ctx, good, `inet ([0-9.]+)/`, time.Minute)
	if m.Captures[0] != lease.IP.String() {
		t.Fatalf("guest says %s, lease says %s", m.Captures[0], lease.IP)
	}
}

// TestE2EIPXE boots Debian's ipxe.iso on the LAN: its DISCOVER is seen
// host-side.
func TestE2EIPXE(t *testing.T) {
	requireQEMU(t)
	const iso = "/usr/lib/ipxe/ipxe.iso"
	if _, err := os.Stat(iso); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("%s missing (package ipxe)", iso)
		}
		t.Skipf("%s missing (package ipxe)", iso)
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := newRun(t)
	l, err := lan.New(ctx, lan.Config{Name: "lan", DHCP: true, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t0 := time.Now()
	vm := boot(t, ctx, l, run, qemu.Config{Name: "ipxe", Memory: "256M", ISO: iso, Boot: "d", SerialBIOS: true})
	lease, err := l.DHCP().WaitLease(ctx, vm.VM.MAC())
	if err != nil {
		t.Fatal(err)
	}
	evs := l.DHCP().Events(vm.VM.MAC())
	if len(evs) == 0 || evs[0].Type != lan.Discover {
		t.Fatalf("events %v", evs)
	}
	t.Logf("iPXE: first DISCOVER %v after start, lease %s after %v, DISCOVER→ACK %v",
		evs[0].At.Sub(t0).Round(time.Millisecond), lease.IP, time.Since(t0).Round(time.Millisecond),
		lease.At.Sub(evs[0].At).Round(time.Millisecond))
	// iPXE's configuration ends with its IPv6 one, which the LAN's router
	// advert answers (without it, ~13 s of router solicitations).
	expect(t, ctx, vm, `Configuring \(net0 [0-9a-f:]+\)\.* ok`, time.Minute)
	t.Logf("iPXE: configured %v after its lease", time.Since(lease.At).Round(time.Millisecond))
	b, err := os.ReadFile(filepath.Join(run.Dir(), "timeline.jsonl"))
	if err != nil || !strings.Contains(string(b), `"kind":"router-advert","fields":{"port":"ipxe"`) {
		t.Fatalf("no router advert to ipxe in the timeline (%v)", err)
	}
}
