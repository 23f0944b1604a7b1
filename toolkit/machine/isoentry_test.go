package machine

import (
	"context"
	"strings"
	"testing"

	"github.com/vmscript/vmscript/toolkit/bootmenu"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func TestBootableByFirmware(t *testing.T) {
	all := []bootmenu.Entry{
		{Label: "iso default", Kind: bootmenu.KindLinux, Loader: bootmenu.Isolinux, Kernel: "/boot/vmlinuz"},
		{Label: "help", Kind: bootmenu.KindConfig, Loader: bootmenu.Isolinux},
		{Label: "grub default", Kind: bootmenu.KindLinux, Loader: bootmenu.Grub, Kernel: "/boot/vmlinuz"},
		{Label: "other disk", Kind: bootmenu.KindLinux, Loader: bootmenu.Grub, Kernel: "(hd0,msdos1)/vmlinuz"},
	}
	labels := func(es []bootmenu.Entry) string {
		var out []string
		for _, e := range es {
			out = append(out, e.Label)
		}
		return strings.Join(out, ",")
	}
	if got := labels(bootable(all, "bios")); got != "iso default" {
		t.Errorf("bios: %s", got)
	}
	if got := labels(bootable(all, "uefi")); got != "grub default" {
		t.Errorf("uefi: %s", got)
	}
	if got := labels(bootable(all[2:], "bios")); got != "grub default" {
		t.Errorf("bios without isolinux: %s (want the GRUB entries)", got)
	}
	list := listEntries(all[:1])
	if !strings.Contains(list, `1. "iso default" — isolinux`) {
		t.Errorf("list: %q", list)
	}
}

func TestEntryUsage(t *testing.T) {
	for name, spec := range map[string]Spec{
		"no iso":      {Entry: &EntrySpec{Label: "x"}},
		"with kernel": {Entry: &EntrySpec{Label: "x"}, QEMU: qemu.Config{ISO: "/x.iso", Kernel: "/k"}},
		"with lab":    {Entry: &EntrySpec{Label: "x"}, Lab: nil, QEMU: qemu.Config{ISO: "/x.iso", Append: "quiet"}},
		"extra alone": {AppendExtra: "quiet"},
	} {
		_, err := spec.QEMUConfig(context.Background())
		if !vmerr.Is(err, vmerr.Usage) {
			t.Errorf("%s: %v, want a usage error", name, err)
		}
	}
	_, err := Spec{Entry: &EntrySpec{Index: 1}, QEMU: qemu.Config{ISO: "/does/not/exist.iso"}}.QEMUConfig(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exist.iso") {
		t.Errorf("missing ISO: %v", err)
	}
}
