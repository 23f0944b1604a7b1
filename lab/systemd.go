package lab

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/vmscript/vmscript/toolkit/shellquote"
)

// SystemdAppend is the default kernel command line of the systemd image's
// direct kernel boot: every regression knob in its good position.
const SystemdAppend = "console=ttyS0,115200 lab.storage=ok lab.lan=match lab.shutdown=clean"

// Kernel command-line knobs of the systemd image's ISOs.
const (
	// RegressionKnobs reproduce the regression: pre-nixos waits forever for
	// its storage status, "lan" matches no NIC, poweroff asks to confirm.
	RegressionKnobs = "lab.storage=hang lab.lan=mismatch lab.shutdown=confirm"
	// GoodKnobs are the same knobs in their good position.
	GoodKnobs = "lab.storage=ok lab.lan=match lab.shutdown=clean"
)

// systemdInclude is the package list given to mmdebstrap --include.
var systemdInclude = []string{
	"systemd", "systemd-sysv", "udev", "openssh-server", "iproute2", "kmod", "dbus",
	"libpam-systemd", "sudo", "procps", "iputils-ping", "netbase", "qemu-guest-agent",
}

// systemdModules are copied (with their dependencies) into the rootfs;
// udev loads them by modalias. Every virtio module is added too.
var systemdModules = []string{
	"button", "evdev", "failover", "net_failover", "e1000", "e1000e",
	"ahci", "ata_piix", "sd_mod", "sr_mod", "cdrom", "isofs", "ext4", "vfat", "nls_cp437", "nls_ascii",
	"crc32c_generic", "crc32c_intel", "9p", "9pnet_virtio", "efivarfs", "qemu_fw_cfg", "autofs4",
	"vmw_vsock_virtio_transport", "virtiofs", "fuse",
}

type systemdBuilder struct{}

func (systemdBuilder) outputs() map[string]string {
	return map[string]string{
		"vmlinuz": "vmlinuz", "initramfs": "initramfs",
		"iso": "lab.iso", "good-iso": "lab-good.iso", "netboot": "netboot",
		"live-iso": "live.iso", "live-good-iso": "live-good.iso",
		"ssh-key": "ssh-key", "ssh-key.pub": "ssh-key.pub",
	}
}

func (systemdBuilder) recipe() string {
	return fmt.Sprintf("include=%v modules=%v append=%q bad=%q good=%q live=%q live-modules=%v menu=%ds",
		systemdInclude, systemdModules, SystemdAppend, RegressionKnobs, GoodKnobs, LiveAppend, liveModules, LiveMenuSeconds)
}

func (systemdBuilder) resolve(ctx context.Context, b *build) (map[string]string, error) {
	kpkg, kver, err := kernelPackage(ctx, b)
	if err != nil {
		return nil, err
	}
	ess, err := aptEssential(ctx, b)
	if err != nil {
		return nil, err
	}
	deps, err := aptDependsRecurse(ctx, b, append(append([]string(nil), systemdInclude...), ess...))
	if err != nil {
		return nil, err
	}
	deps = append(deps, "mmdebstrap", "grub-pc-bin", "grub-efi-amd64-bin", "pxelinux", "syslinux-common",
		"isolinux", "squashfs-tools-ng", "xorriso", "mtools", "busybox-static")
	pkgs, err := aptCandidates(ctx, b, deps)
	if err != nil {
		return nil, err
	}
	pkgs[kpkg] = kver
	return pkgs, nil
}

// debianCodename reads VERSION_CODENAME from /etc/os-release.
func debianCodename() (string, error) {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok {
			if v = strings.Trim(v, `"'`); v != "" {
				return v, nil
			}
		}
	}
	return "", fmt.Errorf("/etc/os-release: no VERSION_CODENAME")
}

// writeEmbeddedTree copies files/<src> from the embedded files into dst;
// scripts (generators, bin, sbin) get mode 0755.
func writeEmbeddedTree(src, dst string) error {
	return fs.WalkDir(embedded, src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, src), "/")
		out := filepath.Join(dst, filepath.FromSlash(rel))
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		data, err := fs.ReadFile(embedded, p)
		if err != nil {
			return err
		}
		perm := os.FileMode(0o644)
		if strings.Contains(rel, "/bin/") || strings.Contains(rel, "/sbin/") || strings.Contains(rel, "-generators/") ||
			strings.HasSuffix(p, ".sh") {
			perm = 0o755
		}
		if err := os.WriteFile(out, data, perm); err != nil {
			return err
		}
		return os.Chmod(out, perm)
	})
}

func renderTemplate(name string, data any) ([]byte, error) {
	src, err := fs.ReadFile(embedded, "files/systemd/"+name)
	if err != nil {
		return nil, err
	}
	t, err := template.New(name).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// linkOrCopy hard-links src to dst, or copies when linking fails.
func linkOrCopy(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copyFile(src, dst, 0o644)
}

func (systemdBuilder) build(ctx context.Context, b *build) error {
	k, err := fetchKernel(ctx, b)
	if err != nil {
		return err
	}
	b.man.Append = SystemdAppend
	b.progress("modules", "virtio, button, evdev, ... + depmod")
	if _, err := installModules(ctx, b, k, append(modulesMatching(k.mods, "virtio"), systemdModules...), "modroot"); err != nil {
		return err
	}
	pub, err := prepareSystemdRootfs(ctx, b)
	if err != nil {
		return err
	}
	tarPath, err := mmdebstrapSystemd(ctx, b)
	if err != nil {
		return err
	}
	b.progress("initramfs", "rootfs.tar -> newc cpio + gzip")
	installed, err := tarToCpioGz(tarPath, filepath.Join(b.dir, "initramfs"))
	if err != nil {
		return err
	}
	if len(installed) > 0 {
		b.man.Packages = installed
		b.man.Packages[k.pkg] = k.version
	}
	if err := copyFile(k.vmlinuz, filepath.Join(b.dir, "vmlinuz"), 0o644); err != nil {
		return err
	}
	if err := writeLiveISOs(ctx, b, k, tarPath, pub); err != nil {
		return err
	}
	os.Remove(tarPath)
	if err := writeSystemdISOs(ctx, b, pub); err != nil {
		return err
	}
	return writeSystemdNetboot(b)
}

// installModules copies the modules want (with what they depend on) of
// kernel k into work/dir/lib/modules/VERSION, runs depmod there, and
// returns that root.
func installModules(ctx context.Context, b *build, k *kernelInfo, want []string, dir string) (string, error) {
	order, err := moduleClosure(ctx, b, k.modDir, k.mods, want)
	if err != nil {
		return "", err
	}
	modroot := filepath.Join(b.work, dir)
	mdst := filepath.Join(modroot, "lib", "modules", k.kver)
	for _, m := range order {
		if err := linkOrCopy(filepath.Join(k.modDir, m.rel), filepath.Join(mdst, m.rel)); err != nil {
			return "", err
		}
	}
	for _, f := range []string{"modules.order", "modules.builtin", "modules.builtin.modinfo"} {
		if _, err := os.Stat(filepath.Join(k.modDir, f)); err == nil {
			if err := copyFile(filepath.Join(k.modDir, f), filepath.Join(mdst, f), 0o644); err != nil {
				return "", err
			}
		}
	}
	if _, err := (tool{ctx: ctx, log: b.log()}).run("depmod", "-b", modroot, k.kver); err != nil {
		return "", err
	}
	return modroot, nil
}

// prepareSystemdRootfs makes the root's SSH key and writes the overlay
// tree and the customize script the root filesystem is finished with; it
// returns the public key.
func prepareSystemdRootfs(ctx context.Context, b *build) ([]byte, error) {
	pub, err := genClientKey(ctx, b)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(b.work, "ssh-key.pub"), pub, 0o644); err != nil {
		return nil, err
	}
	if err := writeEmbeddedTree("files/systemd/rootfs", filepath.Join(b.work, "overlay")); err != nil {
		return nil, err
	}
	if err := writeEmbeddedTree("files/systemd/customize.sh", filepath.Join(b.work, "customize.sh")); err != nil {
		return nil, err
	}
	return pub, nil
}

// mmdebstrapSystemd builds the root filesystem as work/rootfs.tar: a
// minbase Debian with systemd and the lab's packages, customized by the
// overlay and script of prepareSystemdRootfs (which reads the modules from
// work/modroot).
func mmdebstrapSystemd(ctx context.Context, b *build) (string, error) {
	codename, err := debianCodename()
	if err != nil {
		return "", err
	}
	b.progress("rootfs", "mmdebstrap --variant=minbase "+codename)
	tarPath := filepath.Join(b.work, "rootfs.tar")
	args := []string{
		"--variant=minbase",
		"--include=" + strings.Join(systemdInclude, ","),
		"--dpkgopt=path-exclude=/usr/share/man/*",
		"--dpkgopt=path-exclude=/usr/share/info/*",
		"--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-include=/usr/share/locale/locale.alias",
		"--customize-hook=sh " + shellquote.Quote(filepath.Join(b.work, "customize.sh")) + ` "$1" ` + shellquote.Quote(b.work),
		codename, tarPath,
	}
	if _, err := (tool{ctx: ctx, log: b.log(), dir: b.work, logOut: true}).run("mmdebstrap", args...); err != nil {
		return "", err
	}
	return tarPath, nil
}

// writeSystemdISOs makes lab.iso (the regression's knobs on) and
// lab-good.iso: GRUB with a serial console, the kernel and initramfs, and
// pre_nixos/root_key.pub at the top.
func writeSystemdISOs(ctx context.Context, b *build, pub []byte) error {
	for _, iso := range []struct{ file, title, knobs string }{
		{"lab.iso", "(regression knobs on)", RegressionKnobs},
		{"lab-good.iso", "(good)", GoodKnobs},
	} {
		b.progress("iso", iso.file)
		d := filepath.Join(b.work, "iso-"+iso.file)
		if err := linkOrCopy(filepath.Join(b.dir, "vmlinuz"), filepath.Join(d, "boot", "vmlinuz")); err != nil {
			return err
		}
		if err := linkOrCopy(filepath.Join(b.dir, "initramfs"), filepath.Join(d, "boot", "initramfs")); err != nil {
			return err
		}
		if err := writeFileAll(filepath.Join(d, "pre_nixos", "root_key.pub"), pub); err != nil {
			return err
		}
		cfg, err := renderTemplate("grub.cfg", map[string]string{
			"Title": iso.title, "Append": "console=ttyS0,115200 " + iso.knobs})
		if err != nil {
			return err
		}
		if err := writeFileAll(filepath.Join(d, "boot", "grub", "grub.cfg"), cfg); err != nil {
			return err
		}
		if _, err := (tool{ctx: ctx, log: b.log(), logOut: true}).run("grub-mkrescue", "-o", filepath.Join(b.dir, iso.file), d,
			"--", "-volid", "VMSCRIPT_LAB"); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAll writes a file, making its directory first.
func writeFileAll(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// writeSystemdNetboot makes the netboot tree: pxelinux (copied from the
// host's packages, never hard-linked), an iPXE script, the kernel and the
// initramfs.
func writeSystemdNetboot(b *build) error {
	b.progress("netboot", "pxelinux, iPXE script, kernel, initramfs")
	nb := filepath.Join(b.dir, "netboot")
	for src, dst := range map[string]string{
		"/usr/lib/PXELINUX/pxelinux.0":               "pxelinux.0",
		"/usr/lib/syslinux/modules/bios/ldlinux.c32": "ldlinux.c32",
		filepath.Join(b.dir, "vmlinuz"):              "vmlinuz",
		filepath.Join(b.dir, "initramfs"):            "initramfs",
	} {
		link := linkOrCopy
		if !strings.HasPrefix(src, b.dir) {
			link = func(src, dst string) error {
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
					return err
				}
				return copyFile(src, dst, 0o644)
			}
		}
		if err := link(src, filepath.Join(nb, dst)); err != nil {
			return fmt.Errorf("netboot: %w (packages pxelinux and syslinux-common installed?)", err)
		}
	}
	appendData := map[string]string{"Append": SystemdAppend}
	for tmpl, dst := range map[string]string{"pxelinux.cfg": "pxelinux.cfg/default", "boot.ipxe": "boot.ipxe"} {
		data, err := renderTemplate(tmpl, appendData)
		if err != nil {
			return err
		}
		if err := writeFileAll(filepath.Join(nb, dst), data); err != nil {
			return err
		}
	}
	return nil
}

// tarToCpioGz converts a tar archive to a gzip'ed newc cpio, keeping
// modes, owners, mtimes, symlinks, device nodes and hard links. It returns
// the packages listed as installed in var/lib/dpkg/status.
func tarToCpioGz(tarPath, out string) (map[string]string, error) {
	links, status, err := scanTar(tarPath)
	if err != nil {
		return nil, err
	}
	f, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	c := &tarCpio{cw: newCpioWriter(zw), links: links, inodes: map[string]*cpioEntry{}}
	if err := readTar(tarPath, c.entry); err != nil {
		return nil, err
	}
	if err := c.cw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return dpkgInstalled(status), f.Close()
}

// scanTar is tarToCpioGz's first pass: which files are hard-link targets and
// how many names each has, and the dpkg status file.
func scanTar(tarPath string) (links map[string]uint32, status []byte, err error) {
	links = map[string]uint32{}
	err = readTar(tarPath, func(h *tar.Header, r io.Reader) error {
		if h.Typeflag == tar.TypeLink {
			t := tarName(h.Linkname)
			if links[t] == 0 {
				links[t] = 1
			}
			links[t]++
		}
		if tarName(h.Name) == "var/lib/dpkg/status" && h.Typeflag == tar.TypeReg {
			var err error
			status, err = io.ReadAll(r)
			return err
		}
		return nil
	})
	return links, status, err
}

// tarCpio writes tar entries as cpio entries (tarToCpioGz's second pass).
type tarCpio struct {
	cw     *cpioWriter
	links  map[string]uint32     // hard-link targets → names
	inodes map[string]*cpioEntry // hard-link targets written so far
}

// entry writes one tar entry; extended headers are handled by archive/tar.
func (c *tarCpio) entry(h *tar.Header, r io.Reader) error {
	name := tarName(h.Name)
	if name == "" {
		return nil
	}
	e := &cpioEntry{Name: name, UID: uint32(h.Uid), GID: uint32(h.Gid), Mtime: uint32(h.ModTime.Unix())}
	perm := uint32(h.Mode) & 0o7777
	switch h.Typeflag {
	case tar.TypeReg, 0: // 0 is the pre-POSIX regular file (TypeRegA)
		return c.regular(h, r, e, perm)
	case tar.TypeLink:
		t := c.inodes[tarName(h.Linkname)]
		if t == nil {
			return fmt.Errorf("%s: hard link to unknown %s", name, h.Linkname)
		}
		e.Mode, e.Ino, e.Nlink, e.UID, e.GID, e.Mtime = t.Mode, t.Ino, t.Nlink, t.UID, t.GID, t.Mtime
	case tar.TypeSymlink:
		e.Mode = modeSymlink | 0o777
		e.Size = uint32(len(h.Linkname))
		if err := c.cw.writeHeader(e); err != nil {
			return err
		}
		return c.cw.writeData(strings.NewReader(h.Linkname), e.Size)
	case tar.TypeDir:
		e.Mode = modeDir | perm
	case tar.TypeChar, tar.TypeBlock:
		e.Mode = modeChar | perm
		if h.Typeflag == tar.TypeBlock {
			e.Mode = modeBlock | perm
		}
		e.RdevMaj, e.RdevMin = uint32(h.Devmajor), uint32(h.Devminor)
	case tar.TypeFifo:
		e.Mode = modeFIFO | perm
	default:
		return nil
	}
	return c.cw.writeHeader(e)
}

// regular writes a regular file, numbering it when other names link to it.
func (c *tarCpio) regular(h *tar.Header, r io.Reader, e *cpioEntry, perm uint32) error {
	e.Mode = modeRegular | perm
	if h.Size > 1<<32-1 {
		return fmt.Errorf("%s: too big for newc", e.Name)
	}
	e.Size = uint32(h.Size)
	if n := c.links[e.Name]; n > 1 {
		e.Nlink = n
		e.Ino = c.cw.nextIno()
		c.inodes[e.Name] = e
	}
	if err := c.cw.writeHeader(e); err != nil {
		return err
	}
	return c.cw.writeData(r, e.Size)
}

func tarName(n string) string {
	n = strings.TrimPrefix(n, "./")
	n = strings.TrimPrefix(n, "/")
	n = strings.TrimSuffix(n, "/")
	if n == "." {
		return ""
	}
	return path.Clean(n)
}

func readTar(p string, fn func(*tar.Header, io.Reader) error) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := fn(h, tr); err != nil {
			return fmt.Errorf("%s: %s: %w", p, h.Name, err)
		}
	}
}

// dpkgInstalled parses a dpkg status file into package -> version for the
// installed packages.
func dpkgInstalled(status []byte) map[string]string {
	res := map[string]string{}
	for _, para := range strings.Split(string(status), "\n\n") {
		var pkg, ver string
		installed := false
		for _, l := range strings.Split(para, "\n") {
			switch {
			case strings.HasPrefix(l, "Package: "):
				pkg = strings.TrimSpace(l[len("Package: "):])
			case strings.HasPrefix(l, "Version: "):
				ver = strings.TrimSpace(l[len("Version: "):])
			case strings.HasPrefix(l, "Status: "):
				installed = strings.HasSuffix(strings.TrimSpace(l), " installed")
			}
		}
		if pkg != "" && installed {
			res[pkg] = ver
		}
	}
	if len(res) == 0 {
		return nil
	}
	return res
}
