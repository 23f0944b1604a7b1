package luahost

import (
	"errors"

	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// defaultReadMax bounds iso image:read when no max is given.
const defaultReadMax = 16 << 20

func isoModule() Module {
	return Module{
		Name: "iso",
		Doc:  "Inspect ISO 9660 images and squashfs filesystems without root, loop devices or extraction.",
		Funcs: append([]Func{
			{Name: "open", Params: "path: string", Returns: "vmscript.IsoImage", Fn: (*Host).isoOpen,
				Doc: "Open an ISO 9660 image read-only (Rock Ridge, Joliet, El Torito)."},
			{Name: "open_squashfs", Params: "path: string", Returns: "vmscript.IsoImage", Fn: (*Host).isoOpenSquashfs,
				Doc: "Open a bare squashfs file read-only (gzip, xz, zstd, lzo, lzma; not lz4)."},
			{Name: "diff", Params: "a: vmscript.IsoImage|string, b: vmscript.IsoImage|string", Returns: record.LuaType(iso.Change{}) + "[]", Fn: (*Host).isoDiff,
				Doc: "List what two images differ in: op \"added\", \"removed\" or \"changed\" (what: type, size, mode, target, content)."},
		}, bootMediaFuncs()...),
	}
}

func isoImageClass() Class {
	entry := record.LuaType(iso.Entry{})
	return Class{
		Name: "iso_image",
		Doc:  "An opened ISO 9660 image or squashfs; paths may start with \"/\" or not.",
		Fields: []Field{
			{Name: "path", Type: "string", Doc: "The image's path (\"iso:/path/in/iso\" for a squashfs inside an ISO)."},
			{Name: "kind", Type: "string", Doc: "\"iso9660\" or \"squashfs\"."},
			{Name: "label", Type: "string", Doc: "The ISO volume label (\"\" for squashfs)."},
			{Name: "compression", Type: "string", Doc: "The squashfs compressor (\"\" for an ISO)."},
		},
		Get: (*Host).isoField,
		Methods: append([]Func{
			{Name: "list", Params: "dir?: string", Returns: entry + "[]", Fn: (*Host).isoList,
				Doc: "The entries of a directory (default \"/\"), sorted by name, like ls -l (line is the ls -l line)."},
			{Name: "walk", Params: "fn?: fun(entry: table): boolean?", Returns: "table[]?", Fn: (*Host).isoWalk,
				Doc: "Every entry, depth first in name order; with fn, call it for each (return false to stop), else return the list."},
			{Name: "stat", Params: "path: string", Returns: entry, Fn: (*Host).isoStat,
				Doc: "The entry at path (a symlink itself, not its target); kind=\"notfound\" when missing."},
			{Name: "exists", Params: "path: string", Returns: "boolean", Fn: (*Host).isoExists,
				Doc: "Whether path exists (a dangling symlink exists)."},
			{Name: "read", Params: "path: string, opts?: {max?: integer}", Returns: "string, boolean", Fn: (*Host).isoRead,
				Doc: "A file's content (symlinks followed inside the image), at most max bytes (default 16 MiB); second result: truncated."},
			{Name: "boot", Returns: record.LuaType(iso.BootEntry{}) + "[]", Fn: (*Host).isoBoot,
				Doc: "The El Torito boot entries (platform \"BIOS\" or \"UEFI\", boot image path and size); empty when not bootable."},
			{Name: "squashfs", Params: "path: string", Returns: "vmscript.IsoImage", Fn: (*Host).isoSquashfs,
				Doc: "Open the squashfs file at path inside this ISO in place, with the same methods (the unsquashfs -ll of split 3)."},
		}, bootMediaMethods()...),
	}
}

// imageObject is an opened image as a Lua `iso_image`, closed when the host
// closes.
func (h *Host) imageObject(L *lua.LState, im *iso.Image, err error) int {
	if err != nil {
		h.Raise(L, err)
	}
	h.OnClose("close "+im.Name(), func() { im.Close() })
	L.Push(h.NewObject(L, "iso_image", im))
	return 1
}

func (h *Host) isoOpen(L *lua.LState) int {
	im, err := iso.Open(L.CheckString(1))
	return h.imageObject(L, im, err)
}

func (h *Host) isoOpenSquashfs(L *lua.LState) int {
	im, err := iso.OpenSquashfs(L.CheckString(1))
	return h.imageObject(L, im, err)
}

// imageArg accepts an image object or a path (opened as an ISO, or as a
// squashfs when it is one).
func (h *Host) imageArg(L *lua.LState, n int) *iso.Image {
	s, ok := L.Get(n).(lua.LString)
	if !ok {
		return h.CheckObject(L, n, "iso_image").(*iso.Image)
	}
	im, err := iso.Open(string(s))
	if err != nil && vmerr.Is(err, vmerr.Usage) {
		if sq, serr := iso.OpenSquashfs(string(s)); serr == nil {
			im, err = sq, nil
		}
	}
	if err != nil {
		h.Raise(L, err)
	}
	h.OnClose("close "+im.Name(), func() { im.Close() })
	return im
}

func (h *Host) isoDiff(L *lua.LState) int {
	changes, err := iso.Diff(h.imageArg(L, 1), h.imageArg(L, 2))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, changes))
	return 1
}

func (h *Host) checkImage(L *lua.LState) *iso.Image {
	return h.CheckObject(L, 1, "iso_image").(*iso.Image)
}

// fileTree is what iso_image and initramfs objects share: a read-only
// tree of files listed, read and walked the same way.
type fileTree interface {
	List(dir string) ([]iso.Entry, error)
	Stat(p string) (iso.Entry, error)
	Exists(p string) (bool, error)
	Read(p string, max int64) ([]byte, bool, error)
	Walk(fn func(iso.Entry) error) error
}

// checkTree returns the iso_image or initramfs object that is argument 1.
func (h *Host) checkTree(L *lua.LState) fileTree {
	if a, ok := h.objectOf(L, L.Get(1), "initramfs").(fileTree); ok {
		return a
	}
	return h.checkImage(L)
}

func (h *Host) isoField(L *lua.LState, self any, name string) lua.LValue {
	im := self.(*iso.Image)
	switch name {
	case "path":
		return lua.LString(im.Name())
	case "kind":
		return lua.LString(im.Kind())
	case "label":
		return lua.LString(im.Label())
	case "compression":
		return lua.LString(im.Compression())
	}
	return nil
}

func (h *Host) isoList(L *lua.LState) int {
	list, err := h.checkTree(L).List(L.OptString(2, "/"))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, list))
	return 1
}

func (h *Host) isoWalk(L *lua.LState) int {
	im := h.checkTree(L)
	fn, hasFn := L.Get(2).(*lua.LFunction)
	if !hasFn && L.Get(2) != lua.LNil {
		h.ArgError(L, 2, "function expected, got %s", L.Get(2).Type())
	}
	out := L.NewTable()
	var luaErr lua.LValue
	err := im.Walk(func(e iso.Entry) error {
		if !hasFn {
			out.Append(ToLua(L, e))
			return nil
		}
		if err := L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, ToLua(L, e)); err != nil {
			luaErr = lua.LString(err.Error())
			var apiErr *lua.ApiError
			if errors.As(err, &apiErr) {
				luaErr = apiErr.Object
			}
			return iso.ErrStop
		}
		ret := L.Get(-1)
		L.Pop(1)
		if ret == lua.LFalse {
			return iso.ErrStop
		}
		return nil
	})
	if luaErr != nil {
		L.Error(luaErr, 0)
	}
	if err != nil {
		h.Raise(L, err)
	}
	if hasFn {
		return 0
	}
	L.Push(out)
	return 1
}

func (h *Host) isoStat(L *lua.LState) int {
	e, err := h.checkTree(L).Stat(L.CheckString(2))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, e))
	return 1
}

func (h *Host) isoExists(L *lua.LState) int {
	ok, err := h.checkTree(L).Exists(L.CheckString(2))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LBool(ok))
	return 1
}

func (h *Host) isoRead(L *lua.LState) int {
	im := h.checkTree(L)
	p := L.CheckString(2)
	o := h.Opts(L, 3, "read")
	max := o.Int("max", defaultReadMax)
	o.Done()
	data, truncated, err := im.Read(p, int64(max))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LString(data))
	L.Push(lua.LBool(truncated))
	return 2
}

func (h *Host) isoBoot(L *lua.LState) int {
	entries, err := h.checkImage(L).Boot()
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, entries))
	return 1
}

func (h *Host) isoSquashfs(L *lua.LState) int {
	im, err := h.checkImage(L).Squashfs(L.CheckString(2))
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(h.NewObject(L, "iso_image", im))
	return 1
}
