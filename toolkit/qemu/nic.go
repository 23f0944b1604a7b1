package qemu

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultNICModel is the QEMU device of a NIC whose Model is empty.
const DefaultNICModel = "virtio-net-pci"

var modelRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// NIC is one network card in Config.NICs, beyond (or, with Net "none",
// instead of) the user-mode NIC of Config.Net. A NIC is one of:
//
//   - a port of a userspace LAN: File (or Open) is QEMU's end of a
//     SOCK_STREAM socketpair carrying Ethernet frames, each after a 4-byte
//     big-endian length; Start passes it to QEMU as `-netdev socket,fd=N`;
//   - User: QEMU user-mode networking (Forwards and NetUserExtra apply), so
//     that its place among the NICs (eth0, eth1, …) can be chosen.
type NIC struct {
	// User makes this NIC QEMU user-mode networking. Only one user-mode NIC
	// is allowed in a VM (counting Net "user").
	User bool
	// File is QEMU's end of the socketpair. Start hands it to QEMU and
	// closes it in this process once QEMU has started (or failed to).
	File *os.File
	// Open, used when File is nil and User is false, is called by Start with
	// the VM's name and this NIC's MAC to get File — so that a LAN port can
	// be named after a VM whose name or MAC is only settled in Start.
	Open func(vm, mac string) (*os.File, error)
	// MAC is the NIC's address. Default: the first NIC of the VM gets
	// Config.MAC (itself derived from the name when empty), the others
	// DeriveMAC(name + "/nicN").
	MAC string
	// Model is the QEMU device, default virtio-net-pci.
	Model string
}

// netdevID returns the -netdev id of NICs[i]: n1, n2, … (n0 is Net "user").
func netdevID(i int) string { return "n" + strconv.Itoa(i+1) }

// withNICDefaults fills in the NICs' MACs and models, and with Net "none"
// sets MAC to the first NIC's (c.Name and Net are already defaulted). A MAC
// given both ways and different is left for validateNICs to refuse.
func (c Config) withNICDefaults() Config {
	if len(c.NICs) == 0 {
		return c
	}
	if c.Net != "user" && c.MAC == "" {
		c.MAC = c.NICs[0].MAC
		if c.MAC == "" {
			c.MAC = DeriveMAC(c.Name)
		}
	}
	out := make([]NIC, len(c.NICs))
	for i, n := range c.NICs {
		if n.MAC == "" {
			if i == 0 && c.Net != "user" {
				n.MAC = c.MAC
			} else {
				n.MAC = DeriveMAC(c.Name + "/nic" + strconv.Itoa(i+1))
			}
		}
		if n.Model == "" {
			n.Model = DefaultNICModel
		}
		out[i] = n
	}
	c.NICs = out
	return c
}

// hasUserNIC reports whether the VM has a user-mode NIC.
func (c Config) hasUserNIC() bool {
	if c.Net == "user" {
		return true
	}
	for _, n := range c.NICs {
		if n.User {
			return true
		}
	}
	return false
}

func (c Config) validateNICs() error {
	users := 0
	if c.Net == "user" {
		users++
	}
	seen := map[string]string{}
	if c.Net == "user" {
		seen[strings.ToLower(c.MAC)] = "mac"
	}
	if c.Net != "user" && len(c.NICs) > 0 && !strings.EqualFold(c.MAC, c.NICs[0].MAC) {
		return usage("mac", "%s differs from nics[1].mac %s (with net none, mac is the first NIC's)", c.MAC, c.NICs[0].MAC)
	}
	for i, n := range c.NICs {
		opt := fmt.Sprintf("nics[%d]", i+1)
		kinds := 0
		if n.User {
			kinds++
			users++
		}
		if n.File != nil || n.Open != nil {
			kinds++
		}
		if kinds != 1 {
			return usage(opt, "must be either user-mode networking or a LAN port (File or Open)")
		}
		if !macRE.MatchString(n.MAC) {
			return usage(opt+".mac", "%q: want six hex bytes like 52:54:00:12:34:56", n.MAC)
		}
		if b, _ := strconv.ParseUint(n.MAC[:2], 16, 8); b&1 != 0 {
			return usage(opt+".mac", "%q is a multicast address (the first byte must be even)", n.MAC)
		}
		if other, dup := seen[strings.ToLower(n.MAC)]; dup {
			return usage(opt+".mac", "%s is also the MAC of %s", n.MAC, other)
		}
		seen[strings.ToLower(n.MAC)] = opt
		if !modelRE.MatchString(n.Model) {
			return usage(opt+".model", "%q is not a QEMU device name", n.Model)
		}
	}
	if users > 1 {
		return usage("nics", "only one user-mode NIC per VM (its forwards would be ambiguous)")
	}
	return nil
}

// userNetdev returns the -netdev option of a user-mode NIC with id.
func (b *Builder) userNetdev(id string) string {
	nd := "user,id=" + id
	for _, f := range b.cfg.Forwards {
		nd += fmt.Sprintf(",hostfwd=%s:%s:%d-:%d", f.Proto, f.HostAddr, f.HostPort, f.GuestPort)
	}
	for _, opt := range b.userNet {
		nd += "," + opt
	}
	return nd
}

// nicArgs returns the -netdev/-device pairs of c.NICs. LAN ports get file
// descriptors 3, 4, … in order: Start passes their files as
// exec.Cmd.ExtraFiles in the same order.
func (b *Builder) nicArgs() []string {
	var a []string
	fd := 3
	for i, n := range b.cfg.NICs {
		id := netdevID(i)
		if n.User {
			a = append(a, "-netdev", b.userNetdev(id))
		} else {
			a = append(a, "-netdev", "socket,id="+id+",fd="+strconv.Itoa(fd))
			fd++
		}
		a = append(a, "-device", n.Model+",netdev="+id+",mac="+strings.ToLower(n.MAC))
	}
	return a
}

// openNICs returns the files of the LAN-port NICs in fd order, calling Open
// where File is nil. On error the files already opened are closed.
func (c Config) openNICs() ([]*os.File, error) {
	var files []*os.File
	for i, n := range c.NICs {
		if n.User {
			continue
		}
		f := n.File
		if f == nil {
			var err error
			f, err = n.Open(c.Name, strings.ToLower(n.MAC))
			if err != nil {
				closeFiles(files)
				kind := vmerr.KindOf(err)
				if kind == "" {
					kind = vmerr.IO
				}
				return nil, vmerr.Wrap(kind, err, "qemu: nics[%d]", i+1)
			}
		}
		files = append(files, f)
	}
	return files, nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// closeNICFiles closes the Files given in c.NICs (not those from Open, which
// openNICs returned): Start owns them whether or not it gets to use them.
func (c Config) closeNICFiles() {
	for _, n := range c.NICs {
		if n.File != nil {
			n.File.Close()
		}
	}
}

// Netdevs returns the -netdev ids of the VM's NICs in command-line order
// ("n0" for Net "user", then "n1", "n2", … for Config.NICs).
func (v *VM) Netdevs() []string {
	var ids []string
	argv := v.Argv()
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] != "-netdev" {
			continue
		}
		for _, kv := range strings.Split(argv[i+1], ",") {
			if id, ok := strings.CutPrefix(kv, "id="); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// SetLink sets the link state of a NIC (QMP set_link): up false pulls the
// virtual cable, the guest sees the carrier go down. netdev is an id from
// Netdevs; "" means every NIC.
func (v *VM) SetLink(ctx context.Context, netdev string, up bool) error {
	ids := v.Netdevs()
	if netdev != "" {
		found := false
		for _, id := range ids {
			found = found || id == netdev
		}
		if !found {
			return vmerr.New(vmerr.Usage, "qemu: %s has no NIC %q (it has %s)", v.name, netdev, strings.Join(ids, ", ")).With("vm", v.name)
		}
		ids = []string{netdev}
	}
	if len(ids) == 0 {
		return vmerr.New(vmerr.Usage, "qemu: %s has no NIC", v.name).With("vm", v.name)
	}
	for _, id := range ids {
		if _, err := v.QMP(ctx, "set_link", map[string]any{"name": id, "up": up}); err != nil {
			return err
		}
	}
	v.event("link", map[string]any{"netdevs": ids, "up": up})
	return nil
}
