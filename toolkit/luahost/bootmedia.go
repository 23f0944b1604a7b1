package luahost

import (
	iofs "io/fs"
	"os"
	"time"

	"github.com/vmscript/vmscript/toolkit/blobcache"
	"github.com/vmscript/vmscript/toolkit/bootmenu"
	"github.com/vmscript/vmscript/toolkit/initramfs"
	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// bootMediaTimeout bounds indexing an initramfs and extracting a file.
const bootMediaTimeout = 10 * time.Minute

// The Lua types of boot menus.
var (
	bootEntryType   = record.LuaType(bootmenu.Entry{})
	bootWarningType = record.LuaType(bootmenu.Warning{})
	bootConfigType  = record.LuaType(bootmenu.Config{})
	blobType        = record.LuaType(blobcache.Blob{})
)

// bootEntriesDoc is the shared doc of iso.boot_entries and
// iso_image:boot_entries.
const bootEntriesDoc = "The boot menu entries (isolinux/syslinux/pxelinux and GRUB configs, found where the loaders look, or opts.config read as opts.loader): " +
	"{label, kernel, initrd, append, loader, source=file:line, kind, default, ...}, then the warnings (what only the boot decides, or the loader skips, with file:line) and the configs read. " +
	"A config the loader could not read either (an include loop, a binary file, too many entries) is an error."

func initramfsClass() Class {
	return Class{
		Name: "initramfs",
		Doc:  "An initrd opened in place (cpio newc, uncompressed or gzip/xz/zstd/lzma/lz4/bzip2, several archives concatenated, an early-microcode archive in front), read like an iso_image.",
		Fields: []Field{
			{Name: "path", Type: "string", Doc: "The initrd's name (\"iso:/path\" inside an ISO)."},
			{Name: "compression", Type: "string", Doc: "Its segments' formats, e.g. \"cpio+zstd\" for a microcode archive in front of a zstd one."},
			{Name: "segments", Type: record.LuaType(initramfs.Segment{}) + "[]", Doc: "The concatenated archives: offset, length, format, size (uncompressed), members."},
		},
		Get: (*Host).initramfsField,
		Methods: []Func{
			{Name: "list", Params: "dir?: string", Returns: record.LuaType(iso.Entry{}) + "[]", Fn: (*Host).isoList,
				Doc: "The entries of a directory (default \"/\"), sorted by name, like ls -l."},
			{Name: "walk", Params: "fn?: fun(entry: table): boolean?", Returns: "table[]?", Fn: (*Host).isoWalk,
				Doc: "Every entry, depth first in name order; with fn, call it for each (return false to stop), else return the list."},
			{Name: "stat", Params: "path: string", Returns: record.LuaType(iso.Entry{}), Fn: (*Host).isoStat,
				Doc: "The entry at path (a symlink itself); kind=\"notfound\" when missing."},
			{Name: "exists", Params: "path: string", Returns: "boolean", Fn: (*Host).isoExists,
				Doc: "Whether path exists."},
			{Name: "read", Params: "path: string, opts?: {max?: integer}", Returns: "string, boolean", Fn: (*Host).isoRead,
				Doc: "A file's content (symlinks followed inside the archive), at most max bytes (default 16 MiB); second result: truncated."},
		},
	}
}

// bootMediaFuncs are the iso module's functions on host files and trees.
func bootMediaFuncs() []Func {
	return []Func{
		{Name: "boot_entries", Params: "dir: string, opts?: {config?: string, loader?: \"isolinux\"|\"syslinux\"|\"pxelinux\"|\"grub\"}",
			Returns: bootEntryType + "[], " + bootWarningType + "[], " + bootConfigType + "[]", Fn: (*Host).isoDirBootEntries,
			Doc: "For a directory such as a netboot tree (symlinks stay inside it). " + bootEntriesDoc},
		{Name: "initramfs", Params: "path: string", Returns: "vmscript.Initramfs", Fn: (*Host).isoHostInitramfs,
			Doc: "Open an initrd file on the host in place."},
	}
}

// bootMediaMethods are iso_image's methods on boot media.
func bootMediaMethods() []Func {
	return []Func{
		{Name: "boot_entries", Params: "opts?: {config?: string, loader?: \"isolinux\"|\"syslinux\"|\"pxelinux\"|\"grub\"}",
			Returns: bootEntryType + "[], " + bootWarningType + "[], " + bootConfigType + "[]", Fn: (*Host).isoBootEntries,
			Doc: bootEntriesDoc},
		{Name: "initramfs", Params: "path: string", Returns: "vmscript.Initramfs", Fn: (*Host).isoInitramfs,
			Doc: "Open the initrd at path inside this image in place (e.g. an entry's initrd[1])."},
		{Name: "extract", Params: "path: string", Returns: blobType, Fn: (*Host).isoExtract,
			Doc: "Copy a file out of the image into the content-addressed blob cache (~/.cache/vmscript/blobs), once: {path, sha256, size, reused}."},
	}
}

func (h *Host) isoBootEntries(L *lua.LState) int {
	return h.pushBootEntries(L, h.checkImage(L).FS(), 2)
}

func (h *Host) isoDirBootEntries(L *lua.LState) int {
	dir := L.CheckString(1)
	root, err := os.OpenRoot(dir)
	if err != nil {
		h.Raise(L, vmerr.Wrap(vmerr.NotFound, err, "boot menu directory %s", dir))
	}
	defer root.Close()
	return h.pushBootEntries(L, root.FS(), 2)
}

// pushBootEntries parses the menus of fsys (options at argument n) and
// returns entries, warnings and configs.
func (h *Host) pushBootEntries(L *lua.LState, fsys iofs.FS, n int) int {
	o := h.Opts(L, n, "boot_entries")
	cfg := o.String("config", "")
	loader := ""
	if o.Has("loader") {
		loader = o.OneOf("loader", "", bootmenu.Isolinux, bootmenu.Syslinux, bootmenu.Pxelinux, bootmenu.Grub)
	}
	o.Done()
	var res *bootmenu.Result
	var err error
	switch {
	case cfg != "" && loader != "":
		res, err = bootmenu.Parse(fsys, cfg, bootmenu.Options{Loader: loader})
	case cfg != "" || loader != "":
		h.Errorf(L, vmerr.Usage, "boot_entries: config and loader go together (the config is read as that loader's)")
	default:
		res, err = bootmenu.Find(fsys)
	}
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, res.Entries))
	L.Push(ToLua(L, res.Warnings))
	L.Push(ToLua(L, res.Configs))
	return 3
}

func (h *Host) isoInitramfs(L *lua.LState) int {
	im := h.checkImage(L)
	p := L.CheckString(2)
	e, err := im.Resolve(p)
	if err != nil {
		h.Raise(L, err)
	}
	f, err := im.Open(e.Path)
	if err != nil {
		h.Raise(L, err)
	}
	ctx, cancel := h.withTimeout(bootMediaTimeout)
	defer cancel()
	a, err := initramfs.Open(ctx, f, f.Size(), im.Name()+":"+e.Path, nil)
	if err != nil {
		f.Close()
		h.Raise(L, err)
	}
	h.OnClose("close "+a.Name(), func() { a.Close(); f.Close() })
	L.Push(h.NewObject(L, "initramfs", a))
	return 1
}

func (h *Host) isoHostInitramfs(L *lua.LState) int {
	ctx, cancel := h.withTimeout(bootMediaTimeout)
	defer cancel()
	a, err := initramfs.OpenFile(ctx, L.CheckString(1), nil)
	if err != nil {
		h.Raise(L, err)
	}
	h.OnClose("close "+a.Name(), func() { a.Close() })
	L.Push(h.NewObject(L, "initramfs", a))
	return 1
}

func (h *Host) initramfsField(L *lua.LState, self any, name string) lua.LValue {
	a := self.(*initramfs.Archive)
	switch name {
	case "path":
		return lua.LString(a.Name())
	case "compression":
		return lua.LString(a.Compression())
	case "segments":
		return ToLua(L, a.Segments())
	}
	return nil
}

func (h *Host) isoExtract(L *lua.LState) int {
	im := h.checkImage(L)
	p := L.CheckString(2)
	dir, err := blobcache.DefaultDir()
	if err != nil {
		h.Raise(L, err)
	}
	cache, err := blobcache.Open(dir)
	if err != nil {
		h.Raise(L, err)
	}
	ctx, cancel := h.withTimeout(bootMediaTimeout)
	defer cancel()
	blob, err := cache.FromImage(ctx, im, p)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, blob))
	return 1
}

// bootedEntryType documents vm.entry.
func bootedEntryType() TypeDoc {
	return TypeDoc{
		Name: "vmscript.BootedEntry",
		Doc:  "The ISO boot menu entry a VM booted directly (qemu.start{iso=, entry=}).",
		Fields: []Field{
			{Name: "iso", Type: "string", Doc: "The ISO, attached as a CD-ROM."},
			{Name: "entry", Type: bootEntryType, Doc: "The menu entry as iso_image:boot_entries gives it."},
			{Name: "kernel", Type: blobType, Doc: "The kernel taken out of the ISO (blob cache)."},
			{Name: "initrd", Type: blobType + "[]", Doc: "The initrds taken out of the ISO."},
			{Name: "initramfs", Type: "string", Doc: "The file QEMU loaded: the initrd, or the initrds joined."},
			{Name: "append", Type: "string", Doc: "The kernel command line QEMU passed: the entry's, then append_extra."},
		},
	}
}
