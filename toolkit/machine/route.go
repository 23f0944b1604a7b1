package machine

import (
	"context"
	"errors"
	"net"
	"strconv"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// route is where a guest's TCP port is reached from the host: a forward on
// user networking (host, port), or, when port is 0, the address one of the
// LAN ports leased, dialled through its LAN's stack.
type route struct {
	host  string
	port  int
	ports []Port
}

// route settles how the host reaches guestPort (0 means 22): via "forward"
// (the user network's forward to it), "lan" (a LAN NIC's leased address) or
// "" (the forward when there is one, else the LAN). The error says what to
// add to qemu.start when there is no way.
func (m *Machine) route(guestPort int, via string) (route, error) {
	r := route{host: "127.0.0.1"}
	if guestPort == 0 {
		guestPort = 22
	}
	name := m.Name()
	switch {
	case guestPort < 1 || guestPort > 65535:
		return r, usage("port", "%d out of range", guestPort)
	case via != "" && via != "forward" && via != "lan":
		return r, usage("via", "%q: want \"forward\" or \"lan\"", via)
	}
	if via != "lan" {
		for _, f := range m.VM.Forwards() {
			if f.GuestPort == guestPort && f.Proto == "tcp" {
				r.port = f.HostPort
				if f.HostAddr != "" && f.HostAddr != "0.0.0.0" {
					r.host = f.HostAddr
				}
			}
		}
	}
	switch {
	case r.port != 0:
	case via == "forward":
		return r, vmerr.New(vmerr.Usage, "vm %s has no forward to guest port %d; start it with forwards = {%d} in qemu.start", name, guestPort, guestPort)
	case len(m.ports) == 0 && via == "lan":
		return r, vmerr.New(vmerr.Usage, "vm %s has no NIC on a lan; start it with net = lan (or nics = {lan, …}) in qemu.start", name)
	case len(m.ports) == 0:
		return r, vmerr.New(vmerr.Usage, "vm %s has neither a forward to guest port %d nor a NIC on a lan; start it with forwards = {%d} (user networking) or net = lan in qemu.start", name, guestPort, guestPort)
	}
	r.ports = m.Ports()
	return r, nil
}

// untilExit returns ctx, also cancelled (with an "exited" cause naming
// what was going on) when QEMU exits.
func (m *Machine) untilExit(ctx context.Context, what string) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-m.VM.Exited():
			cancel(vmerr.New(vmerr.Exited, "vm %s exited while %s", m.Name(), what))
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// DialOptions configure Machine.DialTCP.
type DialOptions struct {
	// Port is the guest's TCP port; 0 means 22.
	Port int
	// Via is "forward", "lan" or "" (the forward when there is one, else
	// the LAN), as for SSHOptions.
	Via string
}

// DialTCP connects to a TCP port of the guest by the route SSH takes: the
// forward to it on user networking, or the address a LAN NIC leased,
// dialled through the LAN's stack (the lease is waited for, bounded by
// ctx). One attempt: a guest whose server does not listen yet refuses
// (kind "refused"). A VM that exits ends the wait at once.
func (m *Machine) DialTCP(ctx context.Context, opt DialOptions) (net.Conn, error) {
	r, err := m.route(opt.Port, opt.Via)
	if err != nil {
		return nil, err
	}
	guestPort := opt.Port
	if guestPort == 0 {
		guestPort = 22
	}
	select {
	case <-m.VM.Exited():
		return nil, vmerr.New(vmerr.Exited, "vm %s has exited; nothing to dial", m.Name()).With("vm", m.Name())
	default:
	}
	ctx, cancel := m.untilExit(ctx, "dialling its port "+strconv.Itoa(guestPort))
	defer cancel(nil)
	if r.port != 0 {
		addr := net.JoinHostPort(r.host, strconv.Itoa(r.port))
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, m.dialErr(ctx, err, "vm %s: dial the forward %s to guest port %d", m.Name(), addr, guestPort)
		}
		return c, nil
	}
	p, lease, err := waitAnyLease(ctx, r.ports)
	if err != nil {
		return nil, m.dialErr(ctx, err, "vm %s: no lease to dial port %d at", m.Name(), guestPort)
	}
	c, err := p.LAN.DialTCP(ctx, lease.IP.String(), guestPort)
	if err != nil {
		return nil, m.dialErr(ctx, err, "vm %s: dial %s:%d on lan %s", m.Name(), lease.IP, guestPort, p.LAN.Name())
	}
	return c, nil
}

// dialErr explains a failed dial: the VM's exit when that ended it, a
// timeout or cancel when ctx did, else a refusal.
func (m *Machine) dialErr(ctx context.Context, err error, format string, a ...any) error {
	if cause := context.Cause(ctx); cause != nil {
		var ve *vmerr.Error
		if errors.As(cause, &ve) && ve.Kind == vmerr.Exited {
			return ve.With("vm", m.Name())
		}
		return vmerr.Wrap(vmerr.DoneKind(ctx), err, format, a...).With("vm", m.Name())
	}
	kind := vmerr.Refused
	if k := vmerr.KindOf(err); k != "" {
		kind = k
	}
	return vmerr.Wrap(kind, err, format, a...).With("vm", m.Name())
}

// Lab returns the lab image the guest boots (nil when it boots something
// else): its files include the SSH key that logs in as root.
func (m *Machine) Lab() *lab.Image { return m.spec.Lab }
