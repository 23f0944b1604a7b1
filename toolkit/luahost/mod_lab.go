package luahost

import (
	"strings"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func init() {
	Register(Module{
		Name: "lab",
		Doc:  "The lab guests built by `vmscript lab build` (mini, systemd).",
		Funcs: []Func{{
			Name: "image", Params: "name: \"mini\"|\"systemd\"", Returns: "vmscript.LabImage",
			Doc: "Paths of a built lab guest: dir, vmlinuz, initramfs, append, ssh_key, and iso, good_iso, netboot for systemd.",
			Fn: func(h *Host, L *lua.LState) int {
				name := L.CheckString(1)
				valid := false
				for _, n := range lab.Names() {
					valid = valid || n == name
				}
				if !valid {
					h.ArgError(L, 1, "unknown lab %q (want %s)", name, strings.Join(lab.Names(), " or "))
				}
				img, err := lab.Lookup(name, lab.Options{})
				if err != nil {
					h.Raise(L, vmerr.Wrap(vmerr.NotFound, err, "lab image %s", name))
				}
				t := L.NewTable()
				t.RawSetString("name", lua.LString(img.Name))
				t.RawSetString("dir", lua.LString(img.Dir))
				t.RawSetString("kernel_release", lua.LString(img.Manifest.Kernel))
				t.RawSetString("append", lua.LString(img.Manifest.Append))
				for k, p := range img.Files {
					t.RawSetString(strings.NewReplacer("-", "_", ".", "_").Replace(k), lua.LString(p))
				}
				L.Push(t)
				return 1
			},
		}},
	})
}
