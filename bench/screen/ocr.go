package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/screen"
)

// capture is one graphics screen and the text it shows.
type capture struct {
	name  string
	w, h  int
	rgb   []byte
	truth []string
}

// setting is one OCR configuration and its score on a capture.
type setting struct {
	opt          screen.OCROptions
	right, total int
	took         time.Duration
}

// grabScreen saves the screen as PPM and reads it.
func grabScreen(ctx context.Context, env *vmEnv, name string, truth []string) (*capture, error) {
	f := filepath.Join(env.dir, name+".ppm")
	if _, err := env.vm.QMPQuiet(ctx, "screendump", map[string]any{"filename": f}); err != nil {
		return nil, err
	}
	fh, err := os.Open(f)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	br := bufio.NewReader(fh)
	var magic string
	var w, h, maxval int
	if _, err := fmt.Fscan(br, &magic, &w, &h, &maxval); err != nil || magic != "P6" || maxval != 255 {
		return nil, fmt.Errorf("%s: not a PPM (%v)", f, err)
	}
	br.ReadByte()
	rgb := make([]byte, w*h*3)
	if _, err := io.ReadFull(br, rgb); err != nil {
		return nil, err
	}
	return &capture{name: name, w: w, h: h, rgb: rgb, truth: truth}, nil
}

// grubUEFI: the rescue ISO's grub.cfg in a UEFI-bootable ISO, under OVMF,
// its countdown stopped by a key.
func grubUEFI(ctx context.Context, dir string) (*capture, error) {
	tree := filepath.Join(dir, "grub-tree")
	cfg := filepath.Join(tree, "boot", "grub", "grub.cfg")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		return nil, err
	}
	iso := filepath.Join(dir, "grub-uefi.iso")
	for _, c := range [][]string{
		{"xorriso", "-osirrox", "on", "-indev", grubRescueISO, "-extract", "/boot/grub/grub.cfg", cfg},
		{"grub-mkrescue", "-o", iso, tree},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v\n%s", c[0], err, out)
		}
	}
	env, stop, err := boot(ctx, dir, qemu.Config{Name: "grub-uefi", ISO: iso, Firmware: "uefi", Net: "none"})
	if err != nil {
		return nil, err
	}
	defer stop()
	if _, err := env.scr.Expect(ctx, []console.Pattern{{Text: "GNU GRUB"}}, screen.ExpectOptions{Timeout: 4 * time.Minute}); err != nil {
		return nil, err
	}
	if err := env.scr.Key(ctx, "down", "up"); err != nil {
		return nil, err
	}
	time.Sleep(2 * time.Second)
	truth := append([]string{"GNU GRUB  version " + dpkgVersion("grub-rescue-pc"), "*" + grubEntries[0]}, grubEntries[1:]...)
	truth = append(truth, "Use the ▲ and ▼ keys to select which entry is highlighted.",
		"Press enter to boot the selected OS, `e' to edit the commands before booting or `c' for",
		"a command-line.")
	return grabScreen(ctx, env, "grub-uefi", truth)
}

// vesamenu: the Debian installer's PXE menu (syslinux vesamenu.c32).
func vesamenu(ctx context.Context, dir string) (*capture, error) {
	srv, err := netboot.Serve(netboot.Options{Root: debianNetboot})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	cfg := qemu.Config{Name: "vesamenu"}
	cfg.Devices = append(cfg.Devices, srv.BootDevice("pxelinux.0"))
	env, stop, err := boot(ctx, dir, cfg)
	if err != nil {
		return nil, err
	}
	defer stop()
	if _, err := env.scr.Expect(ctx, []console.Pattern{{Text: "Advanced options"}}, screen.ExpectOptions{Timeout: 4 * time.Minute}); err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	return grabScreen(ctx, env, "vesamenu", []string{"debian 12", "Debian GNU/Linux installer menu (BIOS mode)",
		"Install", "Advanced options >", "Accessible dark contrast installer menu >", "Help"})
}

// ipxeUEFI: ipxe.iso under OVMF on user networking, up to the firmware's
// own PXE attempt after iPXE found nothing to boot.
func ipxeUEFI(ctx context.Context, dir string) (*capture, error) {
	env, stop, err := boot(ctx, dir, qemu.Config{Name: "ipxe-uefi", ISO: ipxeISO, Firmware: "uefi"})
	if err != nil {
		return nil, err
	}
	defer stop()
	if _, err := env.scr.Expect(ctx, []console.Pattern{{Text: "Start PXE over"}}, screen.ExpectOptions{Timeout: 4 * time.Minute}); err != nil {
		return nil, err
	}
	return grabScreen(ctx, env, "ipxe-uefi", ipxeTruth(env.vm.MAC()))
}

// ipxeTruth is the lower half of the iPXE-under-OVMF screen for a NIC
// with this MAC (the upper half is the NIC ROM's own iPXE, partly under
// the firmware's logo).
func ipxeTruth(mac string) []string {
	var b [6]byte
	fmt.Sscanf(mac, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5])
	eui := fmt.Sprintf("%x:%x:%x:%x", uint16(b[0]^2)<<8|uint16(b[1]), uint16(b[2])<<8|0xff, 0xfe00|uint16(b[3]), uint16(b[4])<<8|uint16(b[5]))
	hex := strings.ToUpper(strings.ReplaceAll(mac, ":", ""))
	bds := fmt.Sprintf(`BdsDxe: failed to load Boot0002 "UEFI PXEv4 (MAC:%s)" from PciRoot(0x0)/Pci(0x3,0x0)/MAC(%s,0x1): Not Found`, hex, hex)
	return []string{
		"iPXE " + dpkgVersion("ipxe") + " -- Open Source Network Boot Firmware -- http://ipxe.org",
		"Features: DNS HTTP iSCSI NFS TFTP AoE EFI Menu",
		"net0: " + mac + " using virtio-net on 0000:00:03.0 (open)",
		"[Link:up, TX:0 TXE:0 RX:0 RXE:0]",
		"Configuring (net0 " + mac + ")...... ok",
		"net0: 10.0.2.15/255.255.255.0 gw 10.0.2.2",
		"net0: fec0::" + eui + "/64 gw fe80::2",
		"net0: fe80::" + eui + "/64",
		"Nothing to boot: No such file or directory (http://ipxe.org/2d03e18e)",
		bds[:100], bds[100:], // the console is 100 columns wide
		">>Start PXE over IPv4.",
	}
}

// sweep runs OCR with every setting on a capture.
func sweep(ctx context.Context, c *capture, tmp string) ([]setting, error) {
	var out []setting
	for _, prep := range []string{"runs", "gray"} {
		for _, k := range []int{1, 2, 3} {
			for _, psm := range []int{3, 6, 11} {
				opt := screen.OCROptions{Prep: prep, Scale: k, PSM: psm}
				t0 := time.Now()
				lines, err := screen.OCR(ctx, opt, c.w, c.h, c.rgb, tmp)
				if err != nil {
					return nil, err
				}
				r, t := score(c.truth, lines)
				out = append(out, setting{opt: opt, right: r, total: t, took: time.Since(t0)})
			}
		}
	}
	return out, nil
}

// score matches each line of truth to the OCR line nearest to it (each
// used once) and counts the truth's characters right: its length less the
// edit distance, runs of blanks read as one.
func score(truth, got []string) (right, total int) {
	norm := func(s string) []rune { return []rune(strings.Join(strings.Fields(s), " ")) }
	used := make([]bool, len(got))
	for _, t := range truth {
		tr := norm(t)
		total += len(tr)
		best, bi := len(tr), -1
		for i, g := range got {
			if d := lev(tr, norm(g)); !used[i] && d < best {
				best, bi = d, i
			}
		}
		if bi >= 0 {
			used[bi] = true
		}
		right += len(tr) - best
	}
	return right, total
}
