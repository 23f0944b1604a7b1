package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// miniModules are loaded by the mini image's /init, with their
// dependencies, in dependency order. Missing ones are skipped.
var miniModules = []string{
	"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"failover", "net_failover", "virtio_net", "virtio_blk", "virtio_console", "virtio_rng",
}

// MiniAppend is the default kernel command line of the mini image.
const MiniAppend = "console=ttyS0,115200 quiet"

// miniMtime is the fixed mtime of every file in the mini initramfs
// (2024-01-01), so that equal inputs give equal archives.
const miniMtime = 1704067200

type miniBuilder struct{}

func (miniBuilder) outputs() map[string]string {
	return map[string]string{
		"vmlinuz": "vmlinuz", "initramfs": "initramfs",
		"ssh-key": "ssh-key", "ssh-key.pub": "ssh-key.pub",
	}
}

func (miniBuilder) recipe() string {
	return fmt.Sprintf("modules=%v append=%q mtime=%d", miniModules, MiniAppend, miniMtime)
}

func (miniBuilder) resolve(ctx context.Context, b *build) (map[string]string, error) {
	kpkg, kver, err := kernelPackage(ctx, b)
	if err != nil {
		return nil, err
	}
	deps, err := aptDependsRecurse(ctx, b, []string{"busybox-static", "dropbear-bin"})
	if err != nil {
		return nil, err
	}
	pkgs, err := aptCandidates(ctx, b, deps)
	if err != nil {
		return nil, err
	}
	pkgs[kpkg] = kver
	return pkgs, nil
}

// kernelInfo is the extracted kernel package.
type kernelInfo struct {
	pkg, version string
	kver         string // uname -r
	vmlinuz      string // host path
	modDir       string // host path of lib/modules/KVER
	mods         map[string]*kmod
}

// fetchKernel downloads and extracts the kernel package among b.packages.
func fetchKernel(ctx context.Context, b *build) (*kernelInfo, error) {
	var k kernelInfo
	for p, v := range b.packages {
		if strings.HasPrefix(p, "linux-image-") && p != "linux-image-amd64" {
			k.pkg, k.version = p, v
		}
	}
	if k.pkg == "" {
		return nil, fmt.Errorf("no kernel package resolved")
	}
	b.progress("download", k.pkg+"="+k.version)
	debs, err := aptDownload(ctx, b, map[string]string{k.pkg: k.version})
	if err != nil {
		return nil, err
	}
	b.progress("extract", k.pkg)
	root := filepath.Join(b.work, "kernel")
	if err := debExtract(ctx, b, debs[k.pkg], root); err != nil {
		return nil, err
	}
	if k.kver, k.vmlinuz, err = kernelFromDeb(root); err != nil {
		return nil, err
	}
	if k.modDir, err = kernelModDir(root, k.kver); err != nil {
		return nil, err
	}
	if k.mods, err = kernelModules(k.modDir); err != nil {
		return nil, err
	}
	b.man.Kernel = k.kver
	return &k, nil
}

// genClientKey writes the image's ed25519 client key pair (ssh-key,
// ssh-key.pub) into b.dir with ssh-keygen.
func genClientKey(ctx context.Context, b *build) (pub []byte, err error) {
	b.progress("keys", "ssh-keygen -t ed25519")
	key := filepath.Join(b.dir, "ssh-key")
	_, err = tool{ctx: ctx, log: b.log()}.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmscript-lab-"+b.name, "-f", key)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(key + ".pub")
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func (miniBuilder) build(ctx context.Context, b *build) error {
	k, err := fetchKernel(ctx, b)
	if err != nil {
		return err
	}
	b.man.Append = MiniAppend
	root, err := extractUserPackages(ctx, b)
	if err != nil {
		return err
	}
	pub, err := genClientKey(ctx, b)
	if err != nil {
		return err
	}
	hostKey := filepath.Join(b.work, "dropbear_ed25519_host_key")
	if _, err := (tool{ctx: ctx, log: b.log()}).run("dropbearkey", "-t", "ed25519", "-f", hostKey); err != nil {
		return err
	}
	b.progress("initramfs", "modules, busybox, dropbear")
	t := baseTree()
	if err := addModules(ctx, b, t, k, miniModules); err != nil {
		return err
	}
	if err := addBusybox(ctx, b, t, root); err != nil {
		return err
	}
	if err := addMiniFiles(t); err != nil {
		return err
	}
	if err := addDropbear(t, root, hostKey, pub); err != nil {
		return err
	}
	if err := writeTreeCpioGz(t, filepath.Join(b.dir, "initramfs")); err != nil {
		return err
	}
	return copyFile(k.vmlinuz, filepath.Join(b.dir, "vmlinuz"), 0o644)
}

// extractUserPackages downloads the image's packages other than the kernel
// and extracts them into work/root, which it returns.
func extractUserPackages(ctx context.Context, b *build) (string, error) {
	user := map[string]string{}
	for p, v := range b.packages {
		if !strings.HasPrefix(p, "linux-image-") {
			user[p] = v
		}
	}
	debs, err := aptDownload(ctx, b, user)
	if err != nil {
		return "", err
	}
	b.progress("extract", "busybox-static, dropbear-bin and libraries")
	root := filepath.Join(b.work, "root")
	var names []string
	for p := range debs {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		if err := debExtract(ctx, b, debs[p], root); err != nil {
			return "", fmt.Errorf("package %s: %w", p, err)
		}
	}
	return root, nil
}

// baseTree is an initramfs's directories.
func baseTree() *tree {
	t := newTree()
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "root", "etc/dropbear", "etc/vmscript",
		"usr/sbin", "usr/bin", "sbin", "bin", "mnt", "var"} {
		t.dir(d, 0o755)
	}
	t.dir("tmp", 0o1777)
	t.dir("root", 0o700)
	t.symlink("var/run", "/run")
	t.symlink("var/log", "/run")
	return t
}

// addModules adds the modules want and what they depend on, uncompressed,
// and their load order as etc/vmscript/modules.
func addModules(ctx context.Context, b *build, t *tree, k *kernelInfo, want []string) error {
	order, err := moduleClosure(ctx, b, k.modDir, k.mods, want)
	if err != nil {
		return err
	}
	var list bytes.Buffer
	for _, m := range order {
		rel := m.rel
		data, err := moduleBytes(ctx, b, filepath.Join(k.modDir, rel))
		if err != nil {
			return err
		}
		for _, ext := range []string{".xz", ".zst", ".gz"} {
			rel = strings.TrimSuffix(rel, ext)
		}
		t.file(path.Join("lib/modules", k.kver, rel), 0o644, data)
		fmt.Fprintln(&list, rel)
	}
	t.file("etc/vmscript/modules", 0o644, list.Bytes())
	return nil
}

// addBusybox adds busybox and a link for each of its applets (but
// poweroff, reboot and halt, which the lab's own script replaces).
func addBusybox(ctx context.Context, b *build, t *tree, root string) error {
	bb := filepath.Join(root, "bin", "busybox")
	t.hostFile("bin/busybox", 0o755, bb)
	out, err := tool{ctx: ctx, log: b.log()}.run(bb, "--list-full")
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		a := clean(sc.Text())
		if a == "" || a == "bin/busybox" {
			continue
		}
		switch path.Base(a) {
		case "poweroff", "reboot", "halt":
			continue
		}
		t.symlink(a, "/bin/busybox")
	}
	if !t.has("bin/sh") {
		t.symlink("bin/sh", "/bin/busybox")
	}
	return nil
}

// addMiniFiles adds the mini lab's guest-side files (files/mini/).
func addMiniFiles(t *tree) error {
	files := map[string]struct {
		dst  string
		perm uint32
	}{
		"init":          {"init", 0o755},
		"profile":       {"etc/profile", 0o644},
		"udhcpc.script": {"etc/udhcpc.script", 0o755},
		"poweroff":      {"sbin/poweroff", 0o755},
		"passwd":        {"etc/passwd", 0o644},
		"shadow":        {"etc/shadow", 0o600},
		"group":         {"etc/group", 0o644},
		"shells":        {"etc/shells", 0o644},
	}
	for src, f := range files {
		data, err := fs.ReadFile(embedded, "files/mini/"+src)
		if err != nil {
			return err
		}
		t.file(f.dst, f.perm, data)
	}
	t.symlink("sbin/reboot", "poweroff")
	t.symlink("sbin/halt", "poweroff")
	t.file("etc/hostname", 0o644, []byte("mini\n"))
	return nil
}

// addDropbear adds dropbear, its libraries, its host key and root's
// authorized key.
func addDropbear(t *tree, root, hostKey string, pub []byte) error {
	bins := []string{"usr/sbin/dropbear", "usr/bin/dropbearkey", "usr/bin/dbclient"}
	for _, bin := range bins {
		h, err := resolveIn(root, bin)
		if err != nil {
			return fmt.Errorf("dropbear-bin: %w", err)
		}
		t.hostFile(bin, 0o755, h)
	}
	libs, err := sharedLibs(root, bins)
	if err != nil {
		return err
	}
	for dst, src := range libs {
		t.hostFile(dst, 0o755, src)
	}
	t.hostFile("etc/dropbear/dropbear_ed25519_host_key", 0o600, hostKey)
	t.dir("root/.ssh", 0o700)
	t.file("root/.ssh/authorized_keys", 0o600, pub)
	return nil
}

// writeTreeCpioGz writes t as a gzip'ed newc cpio at path.
func writeTreeCpioGz(t *tree, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := t.writeCpioGz(bw, miniMtime); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
