package lab

import (
	"fmt"
	"strings"
)

// Knob is a kernel command-line word a lab guest reads: the regression's
// switches in the systemd image, and the live ISOs' stage 1 settings.
type Knob struct {
	// Name is the word before "=" ("lab.storage").
	Name string
	// Values lists the values ("ok|hang") or names the value ("MAC").
	Values string
	// Default is the value when the word is absent ("" when none).
	Default string
	// Doc says what each value does.
	Doc string
}

// Knobs are every knob the lab guests read, in the order a user meets them.
var Knobs = []Knob{
	{"lab.storage", "ok|hang", "ok", "hang: pre-nixos.service waits forever for /run/pre-nixos/storage-status " +
		"instead of writing it (storage detection itself still runs); ok: it writes \"ok\" there."},
	{"lab.lan", "match|mismatch", "match", "match: a .link renames a NIC to \"lan\", so 20-lan.network runs DHCP on it; " +
		"mismatch: the NIC keeps its ens* name, `lan` does not exist and gets no lease."},
	{"lab.lan_mac", "MAC", "", "with lab.lan=match, the NIC to rename to \"lan\" (default the first NIC, eth0). " +
		"A guest with two NICs needs it: the MAC of the one on the vmscript LAN."},
	{"lab.shutdown", "clean|confirm", "clean", "confirm: poweroff, reboot and halt ask \"Really power off? [y/N]\" on their terminal; " +
		"`systemctl poweroff` is not affected."},
	{"root", "live:LABEL=LABEL", "", "live ISOs' stage 1: the volume holding the squashfs (the ISO's label, " + LiveLabel + ")."},
	{"live.squashfs", "PATH", LiveSquashfs, "live ISOs' stage 1: the root file system's squashfs on that volume."},
	{"live.timeout", "SECONDS", "30", "live ISOs' stage 1: how long to wait for the volume to appear."},
	{"live.panic", "0|1", "0", "live ISOs' stage 1: on a failure, 1 lets the kernel panic; 0 says why on the console and starts a shell."},
}

// KnobsText is Knobs as aligned text, one knob per paragraph, for help
// texts.
func KnobsText(indent string) string {
	var b strings.Builder
	for _, k := range Knobs {
		def := ""
		if k.Default != "" {
			def = " (default " + k.Default + ")"
		}
		fmt.Fprintf(&b, "%s%s=%s%s\n%s    %s\n", indent, k.Name, k.Values, def, indent, k.Doc)
	}
	return b.String()
}
