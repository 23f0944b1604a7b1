package bootmenu

import (
	"fmt"
	iofs "io/fs"
	"path"
	"strings"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Parse reads the config at cfg (absolute, or relative to the root of
// fsys) for opt.Loader and returns its entries.
func Parse(fsys iofs.FS, cfg string, opt Options) (*Result, error) {
	res := &Result{Entries: []Entry{}, Warnings: []Warning{}, Configs: []Config{}}
	if err := parseInto(res, fsys, cfg, opt); err != nil {
		return nil, err
	}
	return res, nil
}

func parseInto(res *Result, fsys iofs.FS, cfg string, opt Options) error {
	cfg = path.Clean("/" + cfg)
	s := newSession(fsys, opt.Limits, res)
	s.cfg = &Config{Path: cfg, Loader: opt.Loader, Files: []string{}}
	var err error
	switch opt.Loader {
	case Isolinux, Syslinux, Pxelinux:
		err = parseSyslinux(s, cfg, opt)
	case Grub:
		err = parseGrub(s, cfg, opt)
	default:
		return vmerr.New(vmerr.Usage, "bootmenu: unknown loader %q (want %s, %s, %s or %s)", opt.Loader, Isolinux, Syslinux, Pxelinux, Grub)
	}
	if err != nil {
		return err
	}
	res.Configs = append(res.Configs, *s.cfg)
	return nil
}

// Where the loaders look for their configs. Within a group only the first
// existing file counts (the loader stops there); every GRUB file found is
// parsed (an ISO's BIOS and EFI GRUB read different files, and
// loopback.cfg is read by a GRUB booting the ISO from a disk).
var syslinuxGroups = []struct {
	loader string
	paths  []string
}{
	{Isolinux, []string{"boot/isolinux/isolinux.cfg", "isolinux/isolinux.cfg", "isolinux.cfg"}},
	{Syslinux, []string{"boot/syslinux/syslinux.cfg", "syslinux/syslinux.cfg", "syslinux.cfg"}},
	{Pxelinux, []string{"pxelinux.cfg/default"}},
}

// grubPatterns match case-insensitively; "*" is any one directory. The
// last one is a netboot tree's layout (debian-installer/amd64/grub).
var grubPatterns = []string{"boot/grub/grub.cfg", "boot/grub2/grub.cfg", "grub/grub.cfg", "efi/*/grub.cfg",
	"boot/grub/loopback.cfg", "*/*/grub/grub.cfg"}

// maxListings bounds the directories Find lists.
const maxListings = 256

// Find parses every boot config at the usual places of a medium: isolinux
// (/boot/isolinux, /isolinux, /), syslinux (/boot/syslinux, /syslinux, /),
// pxelinux (/pxelinux.cfg/default, paths relative to the root) and GRUB
// (/boot/grub/grub.cfg, /boot/grub2, /grub, /EFI/*/grub.cfg,
// /boot/grub/loopback.cfg, a netboot tree's */*/grub/grub.cfg). An entry
// that two configs reach (an EFI grub.cfg sourcing the main one) is
// listed once. No config at all is not an error: the result is empty,
// with a warning.
func Find(fsys iofs.FS) (*Result, error) {
	res := &Result{Entries: []Entry{}, Warnings: []Warning{}, Configs: []Config{}}
	g := &globber{fsys: fsys}
	for _, grp := range syslinuxGroups {
		for _, p := range grp.paths {
			if !isFile(fsys, p) {
				continue
			}
			loader := grp.loader
			if loader == Syslinux && isFile(fsys, path.Join(path.Dir(p), "isolinux.bin")) {
				loader = Isolinux
			}
			if err := parseInto(res, fsys, p, Options{Loader: loader}); err != nil {
				return nil, err
			}
			break
		}
	}
	done := map[string]bool{}
	for _, pat := range grubPatterns {
		for _, p := range g.glob(pat) {
			if done[p] || !isFile(fsys, p) {
				continue
			}
			done[p] = true
			if err := parseInto(res, fsys, p, Options{Loader: Grub}); err != nil {
				return nil, err
			}
		}
	}
	if g.truncated {
		res.Warnings = append(res.Warnings, Warning{Source: "/", Message: fmt.Sprintf("stopped looking for GRUB configs after listing %d directories", maxListings)})
	}
	if len(res.Configs) == 0 {
		res.Warnings = append(res.Warnings, Warning{Source: "/", Message: "no isolinux, syslinux, pxelinux or GRUB config at the usual places"})
	}
	res.Entries = dedupe(res.Entries)
	return res, nil
}

func isFile(fsys iofs.FS, p string) bool {
	st, err := iofs.Stat(fsys, p)
	return err == nil && !st.IsDir()
}

// dedupe drops entries identical to an earlier one (same loader, source,
// menu, label and boot files), keeping the first.
func dedupe(in []Entry) []Entry {
	seen := map[string]bool{}
	out := in[:0]
	for _, e := range in {
		k := strings.Join([]string{e.Loader, e.Source, strings.Join(e.Menu, "\x00"), e.Label, e.Kernel,
			strings.Join(e.Initrd, "\x00"), e.Append, e.Config, e.Condition}, "\x01")
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, e)
	}
	return out
}

// globber expands the patterns of Find within a listing budget.
type globber struct {
	fsys      iofs.FS
	listings  int
	truncated bool
}

func (g *globber) glob(pattern string) []string {
	dirs := []string{"."}
	elems := strings.Split(pattern, "/")
	for i, elem := range elems {
		last := i == len(elems)-1
		var next []string
		for _, d := range dirs {
			if g.listings >= maxListings {
				g.truncated = true
				return nil
			}
			g.listings++
			list, err := iofs.ReadDir(g.fsys, d)
			if err != nil {
				continue
			}
			for _, de := range list {
				if (elem == "*" || strings.EqualFold(de.Name(), elem)) && (last || de.IsDir() || de.Type()&iofs.ModeSymlink != 0) {
					next = append(next, path.Join(d, de.Name()))
				}
			}
		}
		dirs = next
	}
	return dirs
}
