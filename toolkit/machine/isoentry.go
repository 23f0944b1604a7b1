package machine

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vmscript/vmscript/toolkit/blobcache"
	"github.com/vmscript/vmscript/toolkit/bootmenu"
	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// EntrySpec chooses an entry of the ISO's own boot menus (Spec.QEMU.ISO)
// to boot directly: its kernel and initrds are taken out of the ISO into
// the blob cache and booted with its command line, and the ISO stays
// attached as a CD-ROM, so a live system finds its root by label as it
// would after the menu.
type EntrySpec struct {
	// Label picks the entry whose label is exactly Label, else the one
	// whose label contains it, ignoring case. More than one match is an
	// error that lists them.
	Label string
	// Index picks the Index-th bootable entry (1-based) of the firmware's
	// loader when Label is "": isolinux/syslinux under BIOS, GRUB under
	// UEFI, in menu order (the list an unknown entry's error shows).
	Index int
	// BlobDir is the blob cache's directory ("" for blobcache.DefaultDir).
	BlobDir string
}

// BootedEntry is the boot menu entry a machine booted directly: the entry,
// the files taken out of the ISO and the command line QEMU was given.
type BootedEntry struct {
	ISO    string           `json:"iso"`
	Entry  bootmenu.Entry   `json:"entry"`
	Kernel blobcache.Blob   `json:"kernel"`
	Initrd []blobcache.Blob `json:"initrd,omitempty"`
	// Initramfs is the file QEMU loads: the initrd, or the initrds joined
	// (a concatenation of cpio archives is what the kernel unpacks).
	Initramfs string `json:"initramfs,omitempty"`
	Append    string `json:"append"`
}

// Record is the entry's timeline and Lua form.
func (b *BootedEntry) Record() any {
	return map[string]any{"iso": b.ISO, "entry": b.Entry.Record(), "kernel": b.Kernel,
		"initrd": b.Initrd, "initramfs": b.Initramfs, "append": b.Append}
}

func (s EntrySpec) String() string {
	if s.Label != "" {
		return fmt.Sprintf("%q", s.Label)
	}
	return fmt.Sprintf("#%d", s.Index)
}

// resolveEntry boots the chosen entry of the spec's ISO directly: it adds
// the entry's kernel, initramfs and command line (plus AppendExtra) as a
// DirectBoot device of cfg.
func (s Spec) resolveEntry(ctx context.Context, cfg *qemu.Config) (*BootedEntry, error) {
	if cfg.ISO == "" {
		return nil, usage("entry", "needs iso (the ISO whose boot menu names the entry)")
	}
	if cfg.Kernel != "" || cfg.Initrd != "" || cfg.Append != "" {
		return nil, usage("entry", "boots the entry's kernel, initrd and command line; do not also give kernel, initrd or append (use append_extra)")
	}
	im, err := iso.Open(cfg.ISO)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	e, err := s.Entry.pick(im, cfg.Firmware)
	if err != nil {
		return nil, err
	}
	b, err := extractEntry(ctx, im, e, s.Entry.BlobDir)
	if err != nil {
		return nil, err
	}
	b.ISO = cfg.ISO
	b.Append = strings.TrimSpace(e.Append + " " + s.AppendExtra)
	cfg.Devices = append([]qemu.Device{qemu.DirectBoot{Kernel: b.Kernel.Path, Initrd: b.Initramfs, Append: b.Append}}, cfg.Devices...)
	if cfg.Run != nil {
		cfg.Run.Event("vm:"+cfg.Name, "iso-entry", map[string]any{"entry": b.Record()})
	}
	return b, nil
}

// pick finds the entry in the image's boot menus.
func (s EntrySpec) pick(im *iso.Image, firmware string) (bootmenu.Entry, error) {
	res, err := bootmenu.Find(im.FS())
	if err != nil {
		return bootmenu.Entry{}, vmerr.Wrap(vmerr.KindOf(err), err, "entry %s: reading the boot menus of %s", s, im.Name())
	}
	entries := bootable(res.Entries, firmware)
	if len(entries) == 0 {
		return bootmenu.Entry{}, vmerr.New(vmerr.NotFound, "entry %s: %s has no boot menu entry that boots a Linux kernel from the ISO (%d entries in all)",
			s, im.Name(), len(res.Entries)).With("option", "entry")
	}
	if s.Label == "" {
		if s.Index < 1 || s.Index > len(entries) {
			return bootmenu.Entry{}, unknownEntry(s, im.Name(), entries)
		}
		return entries[s.Index-1], nil
	}
	var matches []bootmenu.Entry
	for _, e := range entries {
		if e.Label == s.Label {
			return e, nil
		}
		if strings.Contains(strings.ToLower(e.Label), strings.ToLower(s.Label)) {
			matches = append(matches, e)
		}
	}
	if len(matches) == 1 {
		return matches[0], nil
	}
	if len(matches) > 1 {
		return bootmenu.Entry{}, vmerr.New(vmerr.Usage, "entry %s matches %d entries of %s; give more of the label or a number:\n%s",
			s, len(matches), im.Name(), listEntries(matches)).With("option", "entry")
	}
	return bootmenu.Entry{}, unknownEntry(s, im.Name(), entries)
}

// bootable keeps the entries that boot a Linux kernel on the medium, those
// of the firmware's loader first choice: isolinux and syslinux under BIOS,
// GRUB under UEFI (all of them when the medium has none of that loader).
func bootable(all []bootmenu.Entry, firmware string) []bootmenu.Entry {
	var linux, preferred []bootmenu.Entry
	for _, e := range all {
		if e.Kind != bootmenu.KindLinux || !strings.HasPrefix(e.Kernel, "/") {
			continue
		}
		linux = append(linux, e)
		if (e.Loader == bootmenu.Grub) == (firmware == "uefi") {
			preferred = append(preferred, e)
		}
	}
	if len(preferred) > 0 {
		return preferred
	}
	return linux
}

func unknownEntry(s EntrySpec, name string, entries []bootmenu.Entry) error {
	return vmerr.New(vmerr.NotFound, "entry %s: no such boot menu entry in %s; it has:\n%s", s, name, listEntries(entries)).
		With("option", "entry")
}

// listEntries numbers entries as EntrySpec.Index counts them.
func listEntries(entries []bootmenu.Entry) string {
	var b strings.Builder
	for i, e := range entries {
		def := ""
		if e.Default {
			def = " (default)"
		}
		fmt.Fprintf(&b, "  %d. %q%s — %s %s\n", i+1, e.Label, def, e.Loader, e.Source)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// extractEntry takes the entry's kernel and initrds out of the image into
// the blob cache; several initrds are joined into one blob.
func extractEntry(ctx context.Context, im *iso.Image, e bootmenu.Entry, dir string) (*BootedEntry, error) {
	if dir == "" {
		d, err := blobcache.DefaultDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	cache, err := blobcache.Open(dir)
	if err != nil {
		return nil, err
	}
	b := &BootedEntry{Entry: e}
	if b.Kernel, err = cache.FromImage(ctx, im, e.Kernel); err != nil {
		return nil, vmerr.Wrap(vmerr.KindOf(err), err, "entry %q (%s): its kernel", e.Label, e.Source)
	}
	for _, p := range e.Initrd {
		if strings.HasPrefix(p, "/") {
			blob, err := cache.FromImage(ctx, im, p)
			if err != nil {
				return nil, vmerr.Wrap(vmerr.KindOf(err), err, "entry %q (%s): its initrd", e.Label, e.Source)
			}
			b.Initrd = append(b.Initrd, blob)
			continue
		}
		return nil, vmerr.New(vmerr.Usage, "entry %q (%s): its initrd %s is not on the ISO", e.Label, e.Source, p).With("option", "entry")
	}
	if b.Initramfs, err = joinInitrds(ctx, cache, b.Initrd); err != nil {
		return nil, err
	}
	return b, nil
}

// joinInitrds returns the one file QEMU loads: "" for none, the blob for
// one, else a blob of the concatenation (keyed by the parts' digests).
func joinInitrds(ctx context.Context, cache *blobcache.Cache, parts []blobcache.Blob) (string, error) {
	switch len(parts) {
	case 0:
		return "", nil
	case 1:
		return parts[0].Path, nil
	}
	var key, names []string
	var size int64
	for _, p := range parts {
		key = append(key, p.SHA256)
		names = append(names, p.Path)
		size += p.Size
	}
	blob, err := cache.Fetch(ctx, blobcache.Source{
		Key: "concat:" + strings.Join(key, ","), Name: strings.Join(names, "+"), Size: size,
		Open: func() (io.ReadCloser, error) { return openAll(names) },
	})
	return blob.Path, err
}

// openAll reads the files one after the other.
func openAll(paths []string) (io.ReadCloser, error) {
	var readers []io.Reader
	var files multiCloser
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			files.Close()
			return nil, err
		}
		files = append(files, f)
		readers = append(readers, f)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(readers...), files}, nil
}

type multiCloser []*os.File

func (m multiCloser) Close() error {
	for _, f := range m {
		f.Close()
	}
	return nil
}
