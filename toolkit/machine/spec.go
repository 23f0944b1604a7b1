package machine

import (
	"context"
	"os"
	"strconv"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Spec is what a guest is made of: its own QEMU configuration and what it
// is wired to. Boot turns it into the QEMU command line, each source adding
// itself (a lab image's kernel, a netboot server's boot file, LAN ports).
type Spec struct {
	// QEMU is the VM's own configuration: memory, firmware, ISO, disks,
	// user networking (Net, Forwards), extra arguments. Its Name is chosen
	// by the Pool when empty; its Run defaults to the Pool's.
	QEMU qemu.Config
	// Lab boots a lab image's kernel and initramfs, with AppendExtra added
	// to its command line (knobs such as "lab.storage=missing"). It does
	// not go with QEMU.Kernel, Initrd or ISO.
	Lab *lab.Image
	// Entry boots an entry of QEMU.ISO's own boot menus directly (its
	// kernel and initrds out of the ISO, with the ISO attached), with
	// AppendExtra added to its command line.
	Entry *EntrySpec
	// AppendExtra needs Lab or Entry.
	AppendExtra string
	// NICs are the VM's network cards in guest order (eth0, eth1, …), each
	// user networking or a port of a vmscript LAN. With NICs and no
	// QEMU.Net, the VM has no other NIC.
	NICs []NIC
	// Netboot boots the VM from this server; Bootfile is the file it hands
	// out first ("" for its default). A server on a LAN needs one of NICs
	// on that LAN.
	Netboot  *netboot.Server
	Bootfile string
	// KeepIPXEPrompt leaves iPXE's "Press Ctrl-B" prompt to wait its 2 s.
	// Without it, a VM whose BIOS text is on the serial console (a BIOS
	// network boot) answers the prompt with a space at once.
	KeepIPXEPrompt bool
	// ExpectTimeout is the console's default wait bound (0: the console's
	// default).
	ExpectTimeout time.Duration
	// Failures change the console's failure patterns from its first byte:
	// console.DefaultFailures, then these (a default's name with another
	// action or console.Off; a new name with a pattern).
	Failures []console.Failure
}

// NIC is one network card: user networking (User) or a port of a LAN.
type NIC struct {
	// User makes the card QEMU user networking (forwards apply to it).
	User bool
	// LAN is the LAN whose switch the card is plugged into.
	LAN *lan.LAN
	// MAC is the card's address; "" derives one from the VM's name.
	MAC string
	// Model is the QEMU device; "" means virtio-net-pci.
	Model string
}

// Port is a machine's NIC on a vmscript LAN.
type Port struct {
	// LAN is the LAN.
	LAN *lan.LAN
	// MAC is the NIC's address on it.
	MAC string
}

// usage is a usage error naming the option it is about.
func usage(option, format string, a ...any) error {
	return vmerr.New(vmerr.Usage, "machine: "+option+": "+format, a...).With("option", option)
}

// QEMUConfig returns the QEMU configuration Boot would start: the spec's
// own with each source added as a device and the NICs converted (a LAN port
// attaches to its switch only when QEMU starts).
// An Entry is taken out of the ISO (or found in the blob cache) here.
func (s Spec) QEMUConfig(ctx context.Context) (qemu.Config, error) {
	p, err := s.plan(ctx)
	return p.cfg, err
}

// bootPlan is what Boot starts: QEMU's configuration, the LAN ports it
// collects as QEMU opens them, and the ISO entry it boots.
type bootPlan struct {
	cfg   qemu.Config
	ports *[]Port
	entry *BootedEntry
}

// plan turns the spec into QEMU's configuration.
func (s Spec) plan(ctx context.Context) (bootPlan, error) {
	p := bootPlan{cfg: s.QEMU, ports: &[]Port{}}
	cfg := &p.cfg
	cfg.Devices = append([]qemu.Device(nil), cfg.Devices...)
	if err := console.CheckFailures(s.Failures); err != nil {
		return p, err
	}
	if err := s.addSource(ctx, &p); err != nil {
		return p, err
	}
	for i, n := range s.NICs {
		if n.User == (n.LAN != nil) {
			return p, usage("nics["+itoa(i+1)+"]", "must be either user networking or a LAN")
		}
	}
	cfg.NICs = append(cfg.NICs, qemuNICs(s.NICs, p.ports)...)
	if s.Netboot != nil {
		if err := s.checkNetbootLAN(); err != nil {
			return p, err
		}
		cfg.Devices = append(cfg.Devices, s.Netboot.BootDevice(s.Bootfile))
	} else if s.Bootfile != "" {
		return p, usage("bootfile", "needs netboot")
	}
	return p, nil
}

// addSource adds what the VM boots from Lab or Entry, with AppendExtra.
func (s Spec) addSource(ctx context.Context, p *bootPlan) error {
	cfg := &p.cfg
	switch {
	case s.Lab != nil && s.Entry != nil:
		return usage("entry", "boots an ISO's entry; do not also give lab")
	case s.Lab != nil:
		if cfg.Kernel != "" || cfg.Initrd != "" || cfg.ISO != "" {
			return usage("lab", "boots the lab's kernel and initramfs; do not also give kernel, initrd or iso")
		}
		cfg.Devices = append([]qemu.Device{s.Lab.DirectBoot(s.AppendExtra)}, cfg.Devices...)
		if s.Lab.HasAgent() {
			cfg.Agent = true // its qemu-guest-agent starts when the port appears
		}
	case s.Entry != nil:
		b, err := s.resolveEntry(ctx, cfg)
		if err != nil {
			return err
		}
		p.entry = b
	case s.AppendExtra != "":
		return usage("append_extra", "needs lab or entry")
	}
	return nil
}

// qemuNICs converts NICs; a LAN port attaches to its switch when QEMU
// starts (under the VM's settled name and MAC) and is recorded in ports.
func qemuNICs(nics []NIC, ports *[]Port) []qemu.NIC {
	if len(nics) == 0 {
		return nil
	}
	out := make([]qemu.NIC, len(nics))
	for i, n := range nics {
		if n.User {
			out[i] = qemu.NIC{User: true, MAC: n.MAC, Model: n.Model}
			continue
		}
		l := n.LAN
		out[i] = qemu.NIC{MAC: n.MAC, Model: n.Model, Open: func(vm, mac string) (*os.File, error) {
			f, _, err := l.Attach(vm, mac)
			if err == nil {
				*ports = append(*ports, Port{LAN: l, MAC: mac})
			}
			return f, err
		}}
	}
	return out
}

// checkNetbootLAN refuses a netboot server on a LAN the VM is not on.
func (s Spec) checkNetbootLAN() error {
	l := s.Netboot.LAN()
	if l == nil {
		return nil
	}
	for _, n := range s.NICs {
		if n.LAN == l {
			return nil
		}
	}
	return vmerr.New(vmerr.Usage, "machine: netboot server %s serves lan %s; start the VM on it (net = that lan, or nics = {that lan, …})",
		s.Netboot.Name(), l.Name()).With("option", "netboot")
}

func itoa(n int) string { return strconv.Itoa(n) }
