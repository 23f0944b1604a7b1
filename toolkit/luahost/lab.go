package luahost

import (
	"strings"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

func labModule() Module {
	return Module{
		Name: "lab",
		Doc: "The lab guests built by `vmscript lab build` (mini, systemd). Their kernel command-line knobs " +
			"(`vmscript lab --help` lists them with their values): " + knobNames() + ".",
		Funcs: []Func{{
			Name: "image", Params: "name: \"mini\"|\"systemd\"", Returns: "vmscript.LabImage", Fn: (*Host).labImage,
			Doc: "Paths of a built lab guest: dir, vmlinuz, initramfs, append, ssh_key, and iso, good_iso, netboot for systemd.",
		}},
	}
}

// knobNames lists the lab's knobs as "lab.storage=ok|hang, …".
func knobNames() string {
	var names []string
	for _, k := range lab.Knobs {
		names = append(names, k.Name+"="+k.Values)
	}
	return strings.Join(names, ", ")
}

func (h *Host) labImage(L *lua.LState) int {
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
}

// labImageType documents lab.image's result.
func labImageType() TypeDoc {
	return TypeDoc{
		Name: "vmscript.LabImage",
		Doc:  "A built lab guest as lab.image returns it: its directory and the paths of its files.",
		Fields: []Field{
			{Name: "name", Type: "string", Doc: "The lab's name (\"mini\" or \"systemd\")."},
			{Name: "dir", Type: "string", Doc: "The cache directory of the build."},
			{Name: "kernel_release", Type: "string", Doc: "The Debian kernel's release."},
			{Name: "append", Type: "string", Doc: "The kernel command line the lab boots with."},
			{Name: "vmlinuz", Type: "string", Doc: "Path of the kernel."},
			{Name: "initramfs", Type: "string", Doc: "Path of the initramfs."},
			{Name: "ssh_key", Type: "string?", Doc: "Path of the private SSH key that logs in as root."},
			{Name: "iso", Type: "string?", Doc: "systemd: the bootable ISO with the regression's knobs."},
			{Name: "good_iso", Type: "string?", Doc: "systemd: the known-good ISO."},
			{Name: "netboot", Type: "string?", Doc: "systemd: the netboot tree."},
			{Name: "live_iso", Type: "string?", Doc: "systemd: the NixOS-shaped live ISO (system in /nix-store.squashfs, isolinux/GRUB menus, default entry without a serial console) with the regression's knobs."},
			{Name: "live_good_iso", Type: "string?", Doc: "systemd: the known-good live ISO."},
		},
	}
}
