// Command netboot-bench measures vmscript's netboot server against its peers
// in one run, and prints markdown tables with ratios.
//
//  1. TFTP throughput: a 64 MB file over loopback, fetched with the same
//     client at blksize 1468 from vmscript's TFTP (in this process) and from
//     tftpd-hpa (`in.tftpd -L -s DIR -a 127.0.0.1:PORT`, package tftpd-hpa),
//     alternating, -pairs times. The client is curl (`--tftp-blksize 1468`):
//     tftp-hpa's own client (5.2) negotiates no options at all, so it can
//     only do 512-byte blocks; it runs as a second, smaller table.
//
//  2. PXE boot of the Debian installer (debian-installer-12-netboot-amd64)
//     to "Select a language" on the serial console: QEMU's built-in TFTP
//     (`-netdev user,tftp=DIR,bootfile=pxelinux.0`) vs vmscript's TFTP vs
//     vmscript's iPXE script chaining to HTTP, on user networking and on a
//     vmscript LAN, against the direct kernel boot of the same kernel and
//     initrd (the floor), -pxe-rounds times, interleaved; with each path's
//     phases from the server's request log.
//
//     go run ./bench/netboot                  # both
//     go run ./bench/netboot -pxe-rounds 0    # TFTP throughput only
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

const debianNetboot = "/usr/lib/debian-installer/images/12/amd64/text"

const pxeConfig = `serial 0 115200
default install
prompt 0
timeout 0
label install
	kernel debian-installer/amd64/linux
	append vga=788 initrd=debian-installer/amd64/initrd.gz console=ttyS0,115200 --- quiet
`

const ipxeScript = `#!ipxe
kernel debian-installer/amd64/linux initrd=initrd.gz vga=788 console=ttyS0,115200 --- quiet
initrd debian-installer/amd64/initrd.gz
boot
`

func main() {
	pairs := flag.Int("pairs", 6, "alternating pairs of 64 MB TFTP transfers")
	sizeMB := flag.Int("size", 64, "file size in MB")
	hpaPairs := flag.Int("hpa-pairs", 3, "pairs with tftp-hpa's client (512-byte blocks, no options)")
	rounds := flag.Int("pxe-rounds", 1, "rounds of the three PXE boots (0: skip)")
	flag.Parse()
	if err := run(*pairs, *sizeMB, *hpaPairs, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "netboot-bench:", err)
		os.Exit(1)
	}
}

func run(pairs, sizeMB, hpaPairs, rounds int) error {
	fmt.Printf("# netboot benchmark\n\n%s, %d CPUs, %s\n\n", time.Now().Format(time.RFC3339), numCPU(), hostname())
	if pairs > 0 {
		if err := benchTFTP(pairs, sizeMB, hpaPairs); err != nil {
			return err
		}
	}
	if rounds > 0 {
		if err := benchPXE(rounds); err != nil {
			return err
		}
	}
	return nil
}

func numCPU() int { return runtime.NumCPU() }

func hostname() string { h, _ := os.Hostname(); return h }

// --- TFTP throughput ---

func freePort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// tftpdHPA runs in.tftpd in the foreground on a free loopback port.
type tftpdHPA struct {
	cmd  *exec.Cmd
	port int
}

func startHPA(dir string) (*tftpdHPA, error) {
	bin, err := exec.LookPath("in.tftpd")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/in.tftpd"); err2 != nil {
			return nil, fmt.Errorf("in.tftpd not found (package tftpd-hpa): %v", err)
		}
		bin = "/usr/sbin/in.tftpd"
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-L", "-s", dir, "-a", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// Wait until it answers (a request for a missing file gets an ERROR).
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			break
		}
		c.WriteTo([]byte("\x00\x01probe-missing\x00octet\x00"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _, err = c.ReadFrom(make([]byte, 600))
		c.Close()
		if err == nil {
			return &tftpdHPA{cmd: cmd, port: port}, nil
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	return nil, fmt.Errorf("in.tftpd did not answer on 127.0.0.1:%d", port)
}

func (h *tftpdHPA) stop() {
	h.cmd.Process.Kill() // our own child, by PID
	h.cmd.Wait()
}

// fetch runs one client download and returns the seconds it took.
func fetch(client string, port int, name, dst string) (float64, error) {
	var cmd *exec.Cmd
	switch client {
	case "curl":
		cmd = exec.Command("curl", "-sS", "--fail", "--tftp-blksize", "1468", "-o", dst, fmt.Sprintf("tftp://127.0.0.1:%d/%s", port, name))
	case "tftp-hpa":
		cmd = exec.Command("tftp", "-m", "binary", "127.0.0.1", strconv.Itoa(port), "-c", "get", name, dst)
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start).Seconds()
	if err != nil || (client == "tftp-hpa" && len(out) > 0) {
		return 0, fmt.Errorf("%s: %v %s", client, err, out)
	}
	return d, nil
}

func fileSum(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", sha256.Sum256(b)), nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func benchTFTP(pairs, sizeMB, hpaPairs int) error {
	dir, err := os.MkdirTemp("", "netboot-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	// in.tftpd drops privileges to "nobody": the tree must be world-readable.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	data := make([]byte, sizeMB<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(root, "big.bin"), data, 0o644); err != nil {
		return err
	}
	want := fmt.Sprintf("%x", sha256.Sum256(data))
	data = nil

	srv, err := netboot.Serve(netboot.Options{Root: root, NoHTTP: true})
	if err != nil {
		return err
	}
	defer srv.Close()
	vmPort := srv.TFTPAddr().(*net.UDPAddr).Port
	hpa, err := startHPA(root)
	if err != nil {
		return err
	}
	defer hpa.stop()

	table := func(client string, n int, size float64) error {
		var vm, ref []float64
		for i := 0; i < n; i++ {
			order := []string{"vmscript", "tftpd-hpa"}
			if i%2 == 1 {
				order = []string{"tftpd-hpa", "vmscript"}
			}
			for _, who := range order {
				port := vmPort
				if who == "tftpd-hpa" {
					port = hpa.port
				}
				dst := filepath.Join(dir, "out-"+who)
				d, err := fetch(client, port, "big.bin", dst)
				if err != nil {
					return fmt.Errorf("%s from %s: %v", client, who, err)
				}
				if got, err := fileSum(dst); err != nil || got != want {
					return fmt.Errorf("%s from %s: sha256 differs (%v)", client, who, err)
				}
				os.Remove(dst)
				if who == "vmscript" {
					vm = append(vm, size/d)
				} else {
					ref = append(ref, size/d)
				}
			}
		}
		fmt.Printf("| client | server | runs | median MB/s | min | max |\n|---|---|---|---|---|---|\n")
		for _, row := range []struct {
			who string
			xs  []float64
		}{{"vmscript", vm}, {"tftpd-hpa 5.2 (in.tftpd -L -s)", ref}} {
			s := append([]float64(nil), row.xs...)
			sort.Float64s(s)
			fmt.Printf("| %s | %s | %d | %.1f | %.1f | %.1f |\n", client, row.who, len(s), median(s), s[0], s[len(s)-1])
		}
		fmt.Printf("\n**Throughput ratio vmscript / tftpd-hpa (%s): %.2f×** (goal ≥ 1.2×; medians; per pair: ", client, median(vm)/median(ref))
		for i := range vm {
			if i > 0 {
				fmt.Print(", ")
			}
			fmt.Printf("%.2f", vm[i]/ref[i])
		}
		fmt.Print(")\n\n")
		return nil
	}
	mb := float64(sizeMB) * 1.048576
	fmt.Printf("## TFTP: %d MB file over loopback, alternating pairs\n\n", sizeMB)
	fmt.Printf("curl %s at `--tftp-blksize 1468` (tsize requested too); every copy's sha256 checked.\n\n", curlVersion())
	if err := table("curl", pairs, mb); err != nil {
		return err
	}
	if hpaPairs > 0 {
		fmt.Printf("tftp-hpa's client: no option negotiation in 5.2, so 512-byte blocks (~%d blocks, with block-number rollover).\n\n", (sizeMB<<20)/512)
		if err := table("tftp-hpa", hpaPairs, mb); err != nil {
			return err
		}
	}
	return nil
}

func curlVersion() string {
	out, _ := exec.Command("curl", "--version").Output()
	f := strings.Fields(string(out))
	if len(f) > 1 {
		return f[1]
	}
	return "?"
}

// --- PXE boot ---

// pxeResult is one boot's phases, in seconds from QEMU's start (-1:
// unknown, e.g. QEMU's built-in TFTP keeps no log).
type pxeResult struct {
	total       float64 // "Select a language" on the console
	init        float64 // the installer's init started syslogd (initMark)
	first       float64 // the first request reached the server (firmware, DHCP)
	kernelStart float64 // the kernel's request arrived
	initrdEnd   float64 // the initrd was fetched completely
}

func benchPXE(rounds int) error {
	if _, err := os.Stat(debianNetboot); err != nil {
		return fmt.Errorf("package debian-installer-12-netboot-amd64: %v", err)
	}
	dir, err := os.MkdirTemp("", "netboot-pxe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// QEMU's built-in TFTP serves a directory as is: stage the installer
	// tree with our pxelinux.cfg/default (symlinks into the package).
	stage := filepath.Join(dir, "stage")
	for _, l := range []struct{ link, target string }{
		{"debian-installer", filepath.Join(debianNetboot, "debian-installer")},
		{"pxelinux.0", filepath.Join(debianNetboot, "debian-installer/amd64/pxelinux.0")},
		{"ldlinux.c32", filepath.Join(debianNetboot, "debian-installer/amd64/boot-screens/ldlinux.c32")},
	} {
		if err := os.MkdirAll(stage, 0o755); err != nil {
			return err
		}
		if err := os.Symlink(l.target, filepath.Join(stage, l.link)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(stage, "pxelinux.cfg"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stage, "pxelinux.cfg/default"), []byte(pxeConfig), 0o644); err != nil {
		return err
	}
	kinds := []string{"qemu built-in tftp=", "vmscript TFTP", "vmscript iPXE+HTTP", lanKind, "direct kernel boot"}
	res := map[string][]pxeResult{}
	for r := 0; r < rounds; r++ {
		for i := range kinds {
			k := kinds[(i+r)%len(kinds)]
			fmt.Fprintf(os.Stderr, "round %d: %s …\n", r+1, k)
			pr, err := pxeOnce(dir, stage, k, fmt.Sprintf("r%d-%d", r, i))
			if err != nil {
				return fmt.Errorf("%s: %v", k, err)
			}
			fmt.Fprintf(os.Stderr, "  %.1fs\n", pr.total)
			res[k] = append(res[k], pr)
		}
	}
	printPXE(kinds, rounds, res)
	return nil
}

// printPXE prints the totals against QEMU's built-in TFTP and against the
// direct kernel boot (the floor), and each path's phases.
func printPXE(kinds []string, rounds int, res map[string][]pxeResult) {
	fmt.Printf("## PXE boot of the Debian installer to \"Select a language\" (TCG, BIOS, iPXE NIC ROM)\n\n")
	fmt.Printf("Seconds from QEMU start; median of %d round(s), order rotated per round. The direct kernel boot "+
		"(`-kernel linux -initrd initrd.gz`, same append line) is the floor for any network boot.\n\n", rounds)
	med := func(k string, f func(pxeResult) float64) float64 {
		var xs []float64
		for _, p := range res[k] {
			if v := f(p); v >= 0 {
				xs = append(xs, v)
			}
		}
		if len(xs) == 0 {
			return -1
		}
		return median(xs)
	}
	total := func(p pxeResult) float64 { return p.total }
	init := func(p pxeResult) float64 { return p.init }
	builtin, direct := med(kinds[0], total), med("direct kernel boot", total)
	builtinInit, directInit := med(kinds[0], init), med("direct kernel boot", init)
	fmt.Printf("| path | runs | to the prompt s | ratio to built-in | over direct boot s | to the installer's init s | ratio to built-in | over direct boot s | goal |\n|---|---|---|---|---|---|---|---|---|\n")
	goals := map[string]string{"vmscript TFTP": "≤ built-in", "vmscript iPXE+HTTP": "≤ 3 s over direct", lanKind: "≤ 3 s over direct"}
	for _, k := range kinds {
		m, mi := med(k, total), med(k, init)
		fmt.Printf("| %s | %d | %.1f | %.2f× | %+.1f | %.1f | %.2f× | %+.1f | %s |\n", k, len(res[k]), m, m/builtin, m-direct, mi, mi/builtinInit, mi-directInit, goals[k])
	}
	fmt.Printf("\nThe installer's init (%q on the console) comes after the firmware, every fetch and the kernel's boot, "+
		"but before the installer's own start-up, which spreads by ±2 s between boots of the same kernel: "+
		"compare the paths there.\n", initMark)
	fmt.Printf("\nPhases (medians, seconds; from the server's request log and the console):\n\n")
	fmt.Printf("| path | first request (firmware, DHCP) | boot loader, config | kernel + initrd fetched | kernel to the installer's init | init to the prompt | total |\n|---|---|---|---|---|---|---|\n")
	for _, k := range kinds[1:4] {
		first, ks, ie := med(k, func(p pxeResult) float64 { return p.first }), med(k, func(p pxeResult) float64 { return p.kernelStart }), med(k, func(p pxeResult) float64 { return p.initrdEnd })
		fmt.Printf("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", k, first, ks-first, ie-ks, med(k, init)-ie, med(k, total)-med(k, init), med(k, total))
	}
	fmt.Printf("| direct kernel boot | – | – | – | %.1f | %.1f | %.1f |\n", directInit, direct-directInit, direct)
}

// initMark is the installer's first console line after the kernel's boot
// (with "quiet"): its init starting syslogd.
const initMark = "Starting system log daemon"

// lanKind boots over a vmscript LAN instead of QEMU user networking: the
// LAN's own DHCP server hands iPXE the boot.ipxe URL and tells it not to
// wait for ProxyDHCP offers (option 175.176), which slirp's cannot.
const lanKind = "vmscript iPXE+HTTP, vmscript LAN"

func pxeOnce(dir, stage, kind, tag string) (pxeResult, error) {
	run, err := journal.New(filepath.Join(dir, "run-"+tag), time.Now())
	if err != nil {
		return pxeResult{}, err
	}
	defer run.Close()
	cfg := qemu.Config{Name: "pxe-" + tag, Memory: "1G", Run: run}
	var srv *netboot.Server
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	switch kind {
	case "qemu built-in tftp=":
		cfg.NetUserExtra = "tftp=" + stage + ",bootfile=pxelinux.0"
		cfg.Boot = "n"
		cfg.SerialBIOS = true
	case "vmscript TFTP":
		srv, err = netboot.Serve(netboot.Options{Root: debianNetboot, Files: map[string]string{"pxelinux.cfg/default": pxeConfig}, Run: run})
		cfg.Devices = []qemu.Device{srv.BootDevice("pxelinux.0")}
	case "vmscript iPXE+HTTP":
		srv, err = netboot.Serve(netboot.Options{Root: debianNetboot, Files: map[string]string{"boot.ipxe": ipxeScript}, Run: run})
		cfg.Devices = []qemu.Device{srv.BootDevice("boot.ipxe")}
	case lanKind:
		var l *lan.LAN
		if l, err = lan.New(ctx, lan.Config{Name: "pxe" + tag, DHCP: true, Run: run}); err != nil {
			return pxeResult{}, err
		}
		defer l.Close()
		srv, err = netboot.ServeLAN(l, netboot.Options{Root: debianNetboot, Files: map[string]string{"boot.ipxe": ipxeScript}, Run: run}, "boot.ipxe")
		cfg.NICs = []qemu.NIC{{Open: func(vm, mac string) (*os.File, error) {
			f, _, err := l.Attach(vm, mac)
			return f, err
		}}}
		if err == nil {
			cfg.Devices = []qemu.Device{srv.BootDevice("")}
		}
	case "direct kernel boot":
		cfg.Kernel = filepath.Join(debianNetboot, "debian-installer/amd64/linux")
		cfg.Initrd = filepath.Join(debianNetboot, "debian-installer/amd64/initrd.gz")
		cfg.Append = "vga=788 console=ttyS0,115200 --- quiet"
	}
	if srv != nil {
		defer srv.Close()
	}
	if err != nil {
		return pxeResult{}, err
	}
	start := time.Now()
	m, err := machine.Boot(ctx, machine.Spec{QEMU: cfg})
	if err != nil {
		return pxeResult{}, err
	}
	defer m.Stop(5 * time.Second)
	if _, err := m.Console.Expect(ctx, []console.Pattern{{Text: initMark}}, console.ExpectOptions{Timeout: 5 * time.Minute}); err != nil {
		return pxeResult{}, err
	}
	initAt := time.Since(start).Seconds()
	if _, err := m.Console.Expect(ctx, []console.Pattern{{Text: "Select a language"}}, console.ExpectOptions{Timeout: 5 * time.Minute}); err != nil {
		return pxeResult{}, err
	}
	pr := pxeResult{total: time.Since(start).Seconds(), init: initAt, first: -1, kernelStart: -1, initrdEnd: -1}
	if srv != nil {
		at := func(t time.Time) float64 { return t.Sub(start).Seconds() }
		for i, r := range srv.Requests(netboot.Filter{}) {
			if i == 0 {
				pr.first = at(r.Start)
			}
			if r.Outcome == netboot.Served && strings.HasSuffix(r.File, "amd64/linux") {
				pr.kernelStart = at(r.Start)
			}
			if r.Outcome == netboot.Served && strings.HasSuffix(r.File, "initrd.gz") {
				pr.initrdEnd = at(r.Start.Add(r.Duration))
			}
		}
	}
	return pr, nil
}
