package luahost

import (
	"errors"
	"time"

	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// defaultReadMax bounds iso image:read when no max is given.
const defaultReadMax = 16 << 20

func isoEntry(L *lua.LState, e iso.Entry) *lua.LTable {
	t := L.CreateTable(0, 10)
	t.RawSetString("path", lua.LString(e.Path))
	t.RawSetString("name", lua.LString(e.Name))
	t.RawSetString("type", lua.LString(e.Type()))
	t.RawSetString("mode", lua.LString(e.ModeString()))
	t.RawSetString("perm", lua.LNumber(e.Mode.Perm()))
	t.RawSetString("size", lua.LNumber(e.Size))
	t.RawSetString("mtime", lua.LString(e.ModTime.UTC().Format(time.RFC3339)))
	if e.Target != "" {
		t.RawSetString("target", lua.LString(e.Target))
	}
	t.RawSetString("uid", lua.LNumber(e.UID))
	t.RawSetString("gid", lua.LNumber(e.GID))
	t.RawSetString("line", lua.LString(e.String()))
	return t
}

// isoImageArg accepts an image object or a path (opened as an ISO, or as a
// squashfs when it is one).
func (h *Host) isoImageArg(L *lua.LState, n int) *iso.Image {
	if s, ok := L.Get(n).(lua.LString); ok {
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
	return h.CheckObject(L, n, "iso_image").(*iso.Image)
}

func (h *Host) openImage(L *lua.LState, im *iso.Image, err error) int {
	if err != nil {
		h.Raise(L, err)
	}
	h.OnClose("close "+im.Name(), func() { im.Close() })
	L.Push(h.NewObject(L, "iso_image", im))
	return 1
}

func init() {
	Register(Module{
		Name: "iso",
		Doc:  "Inspect ISO 9660 images and squashfs filesystems without root, loop devices or extraction.",
		Funcs: []Func{
			{
				Name: "open", Params: "path: string", Returns: "vmscript.IsoImage",
				Doc: "Open an ISO 9660 image read-only (Rock Ridge, Joliet, El Torito).",
				Fn: func(h *Host, L *lua.LState) int {
					im, err := iso.Open(L.CheckString(1))
					return h.openImage(L, im, err)
				},
			},
			{
				Name: "open_squashfs", Params: "path: string", Returns: "vmscript.IsoImage",
				Doc: "Open a bare squashfs file read-only (gzip, xz, zstd, lzo, lzma; not lz4).",
				Fn: func(h *Host, L *lua.LState) int {
					im, err := iso.OpenSquashfs(L.CheckString(1))
					return h.openImage(L, im, err)
				},
			},
			{
				Name: "diff", Params: "a: vmscript.IsoImage|string, b: vmscript.IsoImage|string", Returns: "{path: string, op: string, what: string[], a?: table, b?: table}[]",
				Doc: "List what two images differ in: op \"added\", \"removed\" or \"changed\" (what: type, size, mode, target, content).",
				Fn: func(h *Host, L *lua.LState) int {
					a, b := h.isoImageArg(L, 1), h.isoImageArg(L, 2)
					changes, err := iso.Diff(a, b)
					if err != nil {
						h.Raise(L, err)
					}
					out := L.CreateTable(len(changes), 0)
					for _, c := range changes {
						t := L.CreateTable(0, 5)
						t.RawSetString("path", lua.LString(c.Path))
						t.RawSetString("op", lua.LString(c.Op))
						t.RawSetString("what", ToLua(L, c.What))
						if c.A != nil {
							t.RawSetString("a", isoEntry(L, *c.A))
						}
						if c.B != nil {
							t.RawSetString("b", isoEntry(L, *c.B))
						}
						t.RawSetString("line", lua.LString(c.String()))
						out.Append(t)
					}
					L.Push(out)
					return 1
				},
			},
		},
	})
	self := func(h *Host, L *lua.LState) *iso.Image { return h.CheckObject(L, 1, "iso_image").(*iso.Image) }
	RegisterClass(Class{
		Name: "iso_image",
		Doc:  "An opened ISO 9660 image or squashfs; paths may start with \"/\" or not.",
		Fields: []Field{
			{Name: "path", Type: "string", Doc: "The image's path (\"iso:/path/in/iso\" for a squashfs inside an ISO)."},
			{Name: "kind", Type: "string", Doc: "\"iso9660\" or \"squashfs\"."},
			{Name: "label", Type: "string", Doc: "The ISO volume label (\"\" for squashfs)."},
			{Name: "compression", Type: "string", Doc: "The squashfs compressor (\"\" for an ISO)."},
		},
		Get: func(h *Host, L *lua.LState, v any, name string) lua.LValue {
			im := v.(*iso.Image)
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
		},
		Methods: []Func{
			{
				Name: "list", Params: "dir?: string", Returns: "{path: string, name: string, type: string, mode: string, perm: integer, size: integer, mtime: string, target?: string, uid: integer, gid: integer, line: string}[]",
				Doc: "The entries of a directory (default \"/\"), sorted by name, like ls -l (line is the ls -l line).",
				Fn: func(h *Host, L *lua.LState) int {
					list, err := self(h, L).List(L.OptString(2, "/"))
					if err != nil {
						h.Raise(L, err)
					}
					t := L.CreateTable(len(list), 0)
					for _, e := range list {
						t.Append(isoEntry(L, e))
					}
					L.Push(t)
					return 1
				},
			},
			{
				Name: "walk", Params: "fn?: fun(entry: table): boolean?", Returns: "table[]?",
				Doc: "Every entry, depth first in name order; with fn, call it for each (return false to stop), else return the list.",
				Fn: func(h *Host, L *lua.LState) int {
					im := self(h, L)
					fn, hasFn := L.Get(2).(*lua.LFunction)
					if !hasFn && L.Get(2) != lua.LNil {
						h.ArgError(L, 2, "function expected, got %s", L.Get(2).Type())
					}
					out := L.NewTable()
					var luaErr lua.LValue
					err := im.Walk(func(e iso.Entry) error {
						if !hasFn {
							out.Append(isoEntry(L, e))
							return nil
						}
						if err := L.CallByParam(lua.P{Fn: fn, NRet: 1, Protect: true}, isoEntry(L, e)); err != nil {
							var apiErr *lua.ApiError
							if errors.As(err, &apiErr) {
								luaErr = apiErr.Object
							} else {
								luaErr = lua.LString(err.Error())
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
				},
			},
			{
				Name: "stat", Params: "path: string", Returns: "table",
				Doc: "The entry at path (a symlink itself, not its target); kind=\"notfound\" when missing.",
				Fn: func(h *Host, L *lua.LState) int {
					e, err := self(h, L).Stat(L.CheckString(2))
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(isoEntry(L, e))
					return 1
				},
			},
			{
				Name: "exists", Params: "path: string", Returns: "boolean",
				Doc: "Whether path exists (a dangling symlink exists).",
				Fn: func(h *Host, L *lua.LState) int {
					ok, err := self(h, L).Exists(L.CheckString(2))
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LBool(ok))
					return 1
				},
			},
			{
				Name: "read", Params: "path: string, opts?: {max?: integer}", Returns: "string, boolean",
				Doc: "A file's content (symlinks followed inside the image), at most max bytes (default 16 MiB); second result: truncated.",
				Fn: func(h *Host, L *lua.LState) int {
					im := self(h, L)
					p := L.CheckString(2)
					o := h.Opts(L, 3, "iso_image:read")
					max := o.Int("max", defaultReadMax)
					o.Done()
					data, truncated, err := im.Read(p, int64(max))
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LString(data))
					L.Push(lua.LBool(truncated))
					return 2
				},
			},
			{
				Name: "boot", Returns: "{platform: string, bootable: boolean, emulation: string, path?: string, size: integer, lba: integer, sectors: integer, note?: string}[]",
				Doc: "The El Torito boot entries (platform \"BIOS\" or \"UEFI\", boot image path and size); empty when not bootable.",
				Fn: func(h *Host, L *lua.LState) int {
					entries, err := self(h, L).Boot()
					if err != nil {
						h.Raise(L, err)
					}
					t := L.CreateTable(len(entries), 0)
					for _, b := range entries {
						e := L.CreateTable(0, 9)
						e.RawSetString("platform", lua.LString(b.Platform))
						e.RawSetString("bootable", lua.LBool(b.Bootable))
						e.RawSetString("emulation", lua.LString(b.Emulation))
						if b.Path != "" {
							e.RawSetString("path", lua.LString(b.Path))
						}
						e.RawSetString("size", lua.LNumber(b.Size))
						e.RawSetString("lba", lua.LNumber(b.LBA))
						e.RawSetString("sectors", lua.LNumber(b.Sectors))
						e.RawSetString("load_segment", lua.LNumber(b.LoadSegment))
						if b.Note != "" {
							e.RawSetString("note", lua.LString(b.Note))
						}
						t.Append(e)
					}
					L.Push(t)
					return 1
				},
			},
			{
				Name: "squashfs", Params: "path: string", Returns: "vmscript.IsoImage",
				Doc: "Open the squashfs file at path inside this ISO in place, with the same methods (the unsquashfs -ll of split 3).",
				Fn: func(h *Host, L *lua.LState) int {
					im, err := self(h, L).Squashfs(L.CheckString(2))
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(h.NewObject(L, "iso_image", im))
					return 1
				},
			},
		},
	})
}
