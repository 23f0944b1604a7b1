// Command screen measures the screen as a console on real boot media: the
// characters read wrong from GRUB's text-mode menu (grub-rescue-cdrom.iso
// under SeaBIOS), OCR's characters right per graphics screen (GRUB under
// OVMF, the Debian installer's vesamenu PXE menu, iPXE under OVMF) for each
// preprocessing, scale and page segmentation mode, the time one OCR takes,
// the keys GRUB drops at each typing pace, and how long after text appears
// on the screen a wait for it returns. It prints a markdown section.
//
//	go run ./bench/screen -rounds 10
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/screen"
)

const (
	grubRescueISO = "/usr/lib/grub-rescue/grub-rescue-cdrom.iso"
	ipxeISO       = "/usr/lib/ipxe/ipxe.iso"
	debianNetboot = "/usr/lib/debian-installer/images/12/amd64/text"
)

func main() {
	rounds := flag.Int("rounds", 10, "screen waits to time in text mode")
	paces := flag.String("paces", "0,5,10,20,30,50", "typing paces to try, in ms")
	keys := flag.Int("keys", 60, "characters typed per pace (GRUB's command line holds 73)")
	keysOnly := flag.Bool("keys-only", false, "measure text mode and typing only, no OCR")
	flag.Parse()
	if err := run(*rounds, *paces, *keys, *keysOnly); err != nil {
		fmt.Fprintln(os.Stderr, "bench/screen:", err)
		os.Exit(1)
	}
}

// vmEnv is one booted guest with its screen.
type vmEnv struct {
	vm  *qemu.VM
	scr *screen.Screen
	con *console.Console
	dir string
}

// boot starts a guest paused, attaches a screen and lets it run.
func boot(ctx context.Context, dir string, cfg qemu.Config) (*vmEnv, func(), error) {
	run, err := journal.New(filepath.Join(dir, cfg.Name), time.Now())
	if err != nil {
		return nil, nil, err
	}
	cfg.Run = run
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		run.Close()
		return nil, nil, err
	}
	con, err := console.New(console.Options{Name: cfg.Name, Run: run, EOFGrace: -1})
	if err == nil {
		err = con.Attach(vm.Serial())
	}
	var s *screen.Screen
	if err == nil {
		s, err = screen.New(vm, screen.Options{Name: cfg.Name, Run: run})
	}
	stop := func() {
		if s != nil {
			s.Close()
		}
		vm.Stop(5 * time.Second)
		if con != nil {
			con.Close(nil)
		}
		run.Close()
	}
	if err == nil {
		err = vm.Cont(ctx)
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	return &vmEnv{vm: vm, scr: s, con: con, dir: run.Dir()}, stop, nil
}

func run(rounds int, paces string, keys int, keysOnly bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "bench-screen")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	text, err := textMode(ctx, dir, rounds, paces, keys)
	if err != nil {
		return fmt.Errorf("text mode: %w", err)
	}
	if text.uefiDrops, err = uefiKeys(ctx, dir, paces, keys); err != nil {
		return fmt.Errorf("keys under OVMF: %w", err)
	}
	if keysOnly {
		return report(ctx, dir, text, nil)
	}
	var shots []*capture
	for _, c := range []func(context.Context, string) (*capture, error){grubUEFI, vesamenu, ipxeUEFI} {
		shot, err := c(ctx, dir)
		if err != nil {
			return err
		}
		shots = append(shots, shot)
	}
	return report(ctx, dir, text, shots)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

// dpkgVersion returns an installed package's version.
func dpkgVersion(pkg string) string {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
