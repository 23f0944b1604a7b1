package machine

import (
	"context"
	"regexp"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/machine/guest"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// guestAddressPoll is how often RenewLease looks whether the guest carries
// its new address.
const guestAddressPoll = 250 * time.Millisecond

// etherLinkRE picks "2: lan: <…> … link/ether 52:54:00:…" lines of `ip -o link`.
var etherLinkRE = regexp.MustCompile(`(?m)^\d+:\s+([^:@\s]+)[:@].*\slink/ether\s+([0-9a-f:]{17})`)

// RenewOptions configure RenewLease.
type RenewOptions struct {
	// Runner runs the commands in the guest; nil takes over the shell at
	// the serial console's prompt (a fork resumes at the checkpoint's).
	Runner command.Runner
	// Iface is the guest's interface; "" means its only Ethernet one.
	Iface string
}

// Lease is a renewed lease and the guest interface that carries it.
type Lease struct {
	lan.Lease
	// Iface is the guest's interface.
	Iface string `json:"iface"`
}

// RenewLease gives a fork on a vmscript LAN its own MAC inside the guest (a
// restored guest keeps the checkpoint's, see guest/renew-mac.sh), and waits,
// bounded by ctx, until the LAN leased the new MAC an address and the
// guest's interface carries it. Its errors name the VM and carry the
// console's tail.
func (m *Machine) RenewLease(ctx context.Context, opt RenewOptions) (Lease, error) {
	if len(m.ports) == 0 {
		return Lease{}, vmerr.New(vmerr.Usage, "%s has no NIC on a vmscript LAN (fork it with net = lan)", m.Name()).With("vm", m.Name())
	}
	port := m.ports[0]
	r := opt.Runner
	if r == nil {
		sh, err := m.Shell(ctx, shell.Options{Timeout: shell.DefaultAttachTimeout})
		if err != nil {
			return Lease{}, err
		}
		r = sh
	}
	iface := opt.Iface
	if iface == "" {
		var err error
		if iface, err = guestEtherLink(ctx, r); err != nil {
			return Lease{}, m.withVM(err, "")
		}
	}
	cmd := guest.Command("renew-mac.sh", iface, port.MAC)
	res, err := r.Run(ctx, cmd, command.Options{})
	if err != nil {
		return Lease{}, err
	}
	if res.Code != 0 {
		return Lease{}, vmerr.New(vmerr.Refused, "setting %s's MAC to %s in the guest failed (exit %d): %s", iface, port.MAC, res.Code, strings.TrimSpace(res.Output)).
			With("vm", m.Name()).With("command", cmd).With("output", res.Output)
	}
	lease, err := port.LAN.DHCP().WaitLease(ctx, port.MAC)
	if err != nil {
		return Lease{}, m.withVM(err, "")
	}
	if err := waitGuestAddress(ctx, r, iface, lease.IP.String()); err != nil {
		return Lease{}, m.withVM(err, "")
	}
	return Lease{Lease: lease, Iface: iface}, nil
}

// waitGuestAddress polls the guest until iface carries ip: the LAN's ACK is
// half of a lease, the guest's client must also configure the address (and
// a client that starts over after the ACK would show here).
func waitGuestAddress(ctx context.Context, r command.Runner, iface, ip string) error {
	cmd := "ip -4 -o addr show dev " + shellquote.Quote(iface)
	t0 := time.Now()
	res, err := command.Poll(ctx, r, cmd, command.Options{}, guestAddressPoll, func(res command.Result) bool {
		return strings.Contains(res.Output, " "+ip+"/")
	})
	if err != nil && ctx.Err() != nil {
		return vmerr.New(vmerr.DoneKind(ctx), "the LAN leased %s, but the guest's %s did not carry it %.1fs after the ACK (last `%s`: %q)",
			ip, iface, time.Since(t0).Seconds(), cmd, strings.TrimSpace(res.Output)).With("ip", ip).With("iface", iface)
	}
	return err
}

// guestEtherLink returns the guest's only Ethernet interface, or an error
// naming them all when there is not exactly one.
func guestEtherLink(ctx context.Context, r command.Runner) (string, error) {
	res, err := r.Run(ctx, "ip -o link show", command.Options{})
	if err != nil {
		return "", err
	}
	var names []string
	for _, m := range etherLinkRE.FindAllStringSubmatch(res.Output, -1) {
		names = append(names, m[1])
	}
	switch len(names) {
	case 1:
		return names[0], nil
	case 0:
		return "", vmerr.New(vmerr.NotFound, "the guest shows no Ethernet interface (ip -o link: %q)", strings.TrimSpace(res.Output))
	}
	return "", vmerr.New(vmerr.Usage, "the guest has several Ethernet interfaces (%s): say which with iface=", strings.Join(names, ", "))
}
