package netboot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

// DebianNetboot is the unmodified installer netboot tree of package
// debian-installer-12-netboot-amd64.
const DebianNetboot = "/usr/lib/debian-installer/images/12/amd64/text"

// DebianPXEConfig replaces pxelinux.cfg/default to add the serial console.
const DebianPXEConfig = `serial 0 115200
default install
prompt 0
timeout 0
label install
	kernel debian-installer/amd64/linux
	append vga=788 initrd=debian-installer/amd64/initrd.gz console=ttyS0,115200 --- quiet
`

// DebianIPXEScript boots the same kernel and initrd over HTTP; the names are
// relative to the script's URL.
const DebianIPXEScript = `#!ipxe
kernel debian-installer/amd64/linux initrd=initrd.gz vga=788 console=ttyS0,115200 --- quiet
initrd debian-installer/amd64/initrd.gz
boot
`

func needQEMU(t *testing.T) {
	t.Helper()
	testenv.RequireQEMU(t)
}

// pxeBoot serves root (plus overlay), boots a BIOS VM from it and waits for
// want on the console.
// It is safe to call from several goroutines of one test.
func pxeBoot(t *testing.T, name, root string, files map[string]string, bootfile, want string, timeout time.Duration) (*netboot.Server, error) {
	return pxeBootCfg(t, qemu.Config{Name: name, Memory: "1G"}, root, files, bootfile, want, timeout)
}

// pxeBootCfg is pxeBoot with a base configuration (firmware, name, memory).
func pxeBootCfg(t *testing.T, cfg qemu.Config, root string, files map[string]string, bootfile, want string, timeout time.Duration) (*netboot.Server, error) {
	name := cfg.Name
	run, err := journal.New(filepath.Join(t.TempDir(), "run"), time.Now())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { run.Close() })
	srv, err := netboot.Serve(netboot.Options{Root: root, Files: files, Run: run})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { srv.Close() })
	cfg.Run = run
	cfg.Devices = append(cfg.Devices, srv.BootDevice(bootfile))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	m, err := machine.Boot(ctx, machine.Spec{QEMU: cfg})
	if err != nil {
		return nil, err
	}
	defer m.Stop(5 * time.Second)
	if _, err := m.Console.Expect(ctx, []console.Pattern{{Text: want}}, console.ExpectOptions{Timeout: timeout}); err != nil {
		return nil, fmt.Errorf("%v\nrequests:\n%s", err, summaries(srv))
	}
	t.Logf("%s: %q after %.1fs; run dir %s\nrequests:\n%s", name, want, time.Since(start).Seconds(), run.Dir(), summaries(srv))
	return srv, nil
}

func summaries(s *netboot.Server) string {
	var b strings.Builder
	for _, r := range s.Requests(netboot.Filter{}) {
		b.WriteString("  " + r.Summary() + "\n")
	}
	return b.String()
}

// inOrder checks that served requests include names, in this order.
func inOrder(s *netboot.Server, names ...string) error {
	i := 0
	for _, r := range s.Requests(netboot.Filter{Outcome: netboot.Served}) {
		if i < len(names) && r.File == names[i] {
			i++
		}
	}
	if i < len(names) {
		return fmt.Errorf("served files lack %q in order %q:\n%s", names[i], names, summaries(s))
	}
	return nil
}

// TestE2EPXE boots three guests at once (each takes ~50 s under TCG), in
// goroutines rather than parallel subtests so that -parallel (GOMAXPROCS, 2
// here) does not serialise them: the Debian installer through pxelinux over
// vmscript's TFTP, the same through iPXE and HTTP, and the systemd lab's
// netboot tree; and UEFI (OVMF), where the iPXE EFI driver of
// efi-virtio.rom takes the bootfile URL and chains to HTTP.
func TestE2EPXE(t *testing.T) {
	needQEMU(t)
	if _, err := os.Stat(DebianNetboot); err != nil {
		t.Skipf("package debian-installer-12-netboot-amd64: %v", err)
	}
	var wg sync.WaitGroup
	boot := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	boot("debian-installer-tftp", func() error {
		srv, err := pxeBoot(t, "di-tftp", DebianNetboot, map[string]string{"pxelinux.cfg/default": DebianPXEConfig},
			"pxelinux.0", "Select a language", 8*time.Minute)
		if err != nil {
			return err
		}
		if err := inOrder(srv, "pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default", "debian-installer/amd64/linux", "debian-installer/amd64/initrd.gz"); err != nil {
			return err
		}
		for _, r := range srv.Requests(netboot.Filter{Outcome: netboot.Served}) {
			if r.Proto != "tftp" {
				return fmt.Errorf("not TFTP: %s", r.Summary())
			}
		}
		return nil
	})
	boot("debian-installer-ipxe-http", func() error {
		srv, err := pxeBoot(t, "di-http", DebianNetboot, map[string]string{"boot.ipxe": DebianIPXEScript},
			"boot.ipxe", "Select a language", 8*time.Minute)
		if err != nil {
			return err
		}
		if err := inOrder(srv, "boot.ipxe", "debian-installer/amd64/linux", "debian-installer/amd64/initrd.gz"); err != nil {
			return err
		}
		for _, r := range srv.Requests(netboot.Filter{Outcome: netboot.Served}) {
			if r.Proto != "http" {
				return fmt.Errorf("not HTTP: %s", r.Summary())
			}
		}
		return nil
	})
	boot("lab-systemd", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		img, err := lab.Build(ctx, "systemd", lab.Options{})
		if err != nil {
			return err
		}
		srv, err := pxeBoot(t, "lab-pxe", img.Files["netboot"], nil, "pxelinux.0", "login:", 8*time.Minute)
		if err != nil {
			return err
		}
		return inOrder(srv, "pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default", "vmlinuz", "initramfs")
	})
	boot("debian-installer-uefi-ipxe-http", func() error {
		if _, err := os.Stat(qemu.DefaultOVMFCode); err != nil {
			t.Logf("UEFI case skipped: %v", err)
			return nil
		}
		srv, err := pxeBootCfg(t, qemu.Config{Name: "di-uefi", Memory: "1G", Firmware: "uefi"}, DebianNetboot,
			map[string]string{"boot.ipxe": DebianIPXEScript}, "boot.ipxe", "Select a language", 8*time.Minute)
		if err != nil {
			return err
		}
		return inOrder(srv, "boot.ipxe", "debian-installer/amd64/linux", "debian-installer/amd64/initrd.gz")
	})
	wg.Wait()
}
