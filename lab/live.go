package lab

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The systemd image's live ISOs, shaped like a NixOS installer ISO: the
// root filesystem is a squashfs inside the ISO, a small stage 1 finds the
// ISO by its label and mounts it, and the firmware's menu (isolinux under
// BIOS, GRUB under UEFI) boots an entry without a serial console by default.
const (
	// LiveLabel is the live ISOs' volume label (stage 1 looks for it).
	LiveLabel = "VMSCRIPT_LIVE"
	// LiveSquashfs is where the root filesystem sits in the live ISOs
	// (NixOS's name).
	LiveSquashfs = "/nix-store.squashfs"
	// LiveAppend is the kernel command line the live ISOs' entries share;
	// the serial entry adds console=ttyS0,115200n8, each ISO its knobs.
	LiveAppend = "root=live:LABEL=" + LiveLabel + " live.squashfs=" + LiveSquashfs + " loglevel=4"
	// LiveMenuSeconds is how long the menus wait before the default entry.
	LiveMenuSeconds = 5
)

// liveModules are what stage 1 needs to reach the squashfs on the CD-ROM
// (IDE on pc, AHCI on q35), loaded with their dependencies.
var liveModules = []string{"ata_piix", "ahci", "sr_mod", "isofs", "loop", "squashfs", "overlay"}

// liveBootFiles are the BIOS boot loader's files, from the host's isolinux
// and syslinux-common packages (their versions are in the image's key).
var liveBootFiles = map[string]string{
	"/usr/lib/ISOLINUX/isolinux.bin":              "isolinux/isolinux.bin",
	"/usr/lib/syslinux/modules/bios/ldlinux.c32":  "isolinux/ldlinux.c32",
	"/usr/lib/syslinux/modules/bios/vesamenu.c32": "isolinux/vesamenu.c32",
	"/usr/lib/syslinux/modules/bios/libcom32.c32": "isolinux/libcom32.c32",
	"/usr/lib/syslinux/modules/bios/libutil.c32":  "isolinux/libutil.c32",
}

// isohybridMBR makes the ISO bootable from a disk too (isolinux package).
const isohybridMBR = "/usr/lib/ISOLINUX/isohdpfx.bin"

// writeLiveISOs makes live.iso (the regression's knobs) and live-good.iso
// from the root filesystem's tar: one squashfs, one stage 1, one EFI image
// shared by both.
func writeLiveISOs(ctx context.Context, b *build, k *kernelInfo, tarPath string, pub []byte) error {
	sq, err := writeSquashfs(ctx, b, tarPath)
	if err != nil {
		return err
	}
	b.progress("live", "stage 1: busybox, "+fmt.Sprint(liveModules))
	initrd, err := writeLiveStage1(ctx, b, k)
	if err != nil {
		return err
	}
	efi, err := writeEFIImage(ctx, b)
	if err != nil {
		return err
	}
	for _, iso := range []struct{ file, title, knobs string }{
		{"live.iso", "(regression knobs on)", RegressionKnobs},
		{"live-good.iso", "(good)", GoodKnobs},
	} {
		b.progress("live", iso.file)
		d := filepath.Join(b.work, "live-"+iso.file)
		files := map[string]string{sq: LiveSquashfs, initrd: "boot/initrd", efi: "boot/efi.img",
			filepath.Join(b.dir, "vmlinuz"): "boot/bzImage"}
		for src, dst := range files {
			if err := linkOrCopy(src, filepath.Join(d, dst)); err != nil {
				return err
			}
		}
		if err := writeLiveTree(d, iso.title, LiveAppend+" "+iso.knobs, pub); err != nil {
			return err
		}
		if err := makeHybridISO(ctx, b, d, filepath.Join(b.dir, iso.file)); err != nil {
			return err
		}
	}
	return nil
}

// writeSquashfs converts the root filesystem's tar into a squashfs
// without root: owners, modes and devices kept; mtimes set to the epoch, so
// equal inputs give equal images; extended attributes left out (squashfs
// cannot store the POSIX ACLs systemd puts on /var/log/journal, and nothing
// the lab runs needs a file capability).
func writeSquashfs(ctx context.Context, b *build, tarPath string) (string, error) {
	b.progress("squashfs", "rootfs.tar -> squashfs (zstd)")
	in, err := os.Open(tarPath)
	if err != nil {
		return "", err
	}
	defer in.Close()
	sq := filepath.Join(b.work, "nix-store.squashfs")
	t := tool{ctx: ctx, log: b.log(), logOut: true, stdin: in}
	if _, err := t.run("tar2sqfs", "--quiet", "--no-skip", "--no-xattr", "--force", "--compressor", "zstd",
		"--num-jobs", "2", "--defaults", "mtime=0", sq); err != nil {
		return "", fmt.Errorf("tar2sqfs (package squashfs-tools-ng): %w", err)
	}
	return sq, nil
}

// writeLiveStage1 writes the live ISOs' initrd: busybox, the modules and
// the stage 1 init.
func writeLiveStage1(ctx context.Context, b *build, k *kernelInfo) (string, error) {
	debs, err := aptDownload(ctx, b, map[string]string{"busybox-static": b.packages["busybox-static"]})
	if err != nil {
		return "", err
	}
	root := filepath.Join(b.work, "stage1-root")
	if err := debExtract(ctx, b, debs["busybox-static"], root); err != nil {
		return "", fmt.Errorf("package busybox-static: %w", err)
	}
	t := baseTree()
	if err := addModules(ctx, b, t, k, liveModules); err != nil {
		return "", err
	}
	if err := addBusybox(ctx, b, t, root); err != nil {
		return "", err
	}
	init, err := fs.ReadFile(embedded, "files/systemd/live-init")
	if err != nil {
		return "", err
	}
	t.file("init", 0o755, init)
	out := filepath.Join(b.work, "live-initrd")
	return out, writeTreeCpioGz(t, out)
}

// writeEFIImage makes the El Torito EFI image: a FAT file system holding
// EFI/BOOT/BOOTX64.EFI, a GRUB that finds the ISO by its grub.cfg and
// reads it.
func writeEFIImage(ctx context.Context, b *build) (string, error) {
	embed, err := fs.ReadFile(embedded, "files/systemd/live-grub-embed.cfg")
	if err != nil {
		return "", err
	}
	cfg := filepath.Join(b.work, "grub-embed.cfg")
	if err := os.WriteFile(cfg, embed, 0o644); err != nil {
		return "", err
	}
	efi := filepath.Join(b.work, "bootx64.efi")
	mods := "part_msdos part_gpt iso9660 search search_fs_file configfile linux normal echo test all_video boot fat gzio sleep"
	t := tool{ctx: ctx, log: b.log(), logOut: true}
	if _, err := t.run("grub-mkstandalone", "-O", "x86_64-efi", "--modules="+mods, "--install-modules="+mods,
		"--locales=", "--fonts=", "--themes=", "-o", efi, "boot/grub/grub.cfg="+cfg); err != nil {
		return "", err
	}
	img := filepath.Join(b.work, "efi.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Truncate(img, 4<<20); err != nil {
		return "", err
	}
	for _, args := range [][]string{
		{"mformat", "-i", img, "-v", "EFIBOOT", "::"},
		{"mmd", "-i", img, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI"},
	} {
		if _, err := t.run(args[0], args[1:]...); err != nil {
			return "", err
		}
	}
	return img, nil
}

// writeLiveTree adds the menus, the boot loader's files and the root key
// to the ISO tree at d.
func writeLiveTree(d, title, appendLine string, pub []byte) error {
	for src, dst := range liveBootFiles {
		if err := os.MkdirAll(filepath.Join(d, filepath.Dir(dst)), 0o755); err != nil {
			return err
		}
		if err := copyFile(src, filepath.Join(d, dst), 0o644); err != nil {
			return fmt.Errorf("%s (packages isolinux, syslinux-common): %w", src, err)
		}
	}
	data := map[string]any{"Title": title, "Append": appendLine,
		"Timeout": LiveMenuSeconds * 10, "TimeoutSeconds": LiveMenuSeconds}
	for tmpl, dst := range map[string]string{"live-isolinux.cfg": "isolinux/isolinux.cfg", "live-grub.cfg": "EFI/boot/grub.cfg"} {
		cfg, err := renderTemplate(tmpl, data)
		if err != nil {
			return err
		}
		if err := writeFileAll(filepath.Join(d, dst), cfg); err != nil {
			return err
		}
	}
	return writeFileAll(filepath.Join(d, "pre_nixos", "root_key.pub"), pub)
}

// makeHybridISO writes the tree at d as an ISO that boots isolinux under
// BIOS and GRUB under UEFI, from a CD-ROM or a disk.
func makeHybridISO(ctx context.Context, b *build, d, out string) error {
	_, err := (tool{ctx: ctx, log: b.log(), logOut: true}).run("xorriso", "-as", "mkisofs",
		"-o", out, "-V", LiveLabel, "-R", "-J", "-joliet-long",
		"-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
		"-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
		"-isohybrid-mbr", isohybridMBR,
		"-eltorito-alt-boot", "-e", "boot/efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat",
		d)
	return err
}
