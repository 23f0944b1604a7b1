package machine

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/ssh"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// SSHOptions configure Machine.SSH.
type SSHOptions struct {
	// Config holds the login (User, Password, KeyFiles, HostKey, NoSFTP);
	// SSH sets Host, Port, Name, Dial and Run.
	Config ssh.Config
	// Via is "forward" (the user network's port forward to the guest),
	// "lan" (the address a LAN NIC leased, dialled through the LAN's
	// stack) or "" (the forward when there is one, else the LAN).
	Via string
	// Port is the guest's SSH port; 0 means 22.
	Port int
}

// SSH logs in to the guest and returns the client, waiting (bounded by ctx)
// until the guest's server lets us in: through the forward to the guest's
// port on user networking, or to the address a LAN NIC leased (the lease is
// waited for within the same bound). A VM that exits ends the wait at once
// with its exit reason; a timeout error carries the console's tail.
func (m *Machine) SSH(ctx context.Context, opt SSHOptions) (*ssh.Client, error) {
	cfg, ports, err := m.sshRoute(opt)
	if err != nil {
		return nil, err
	}
	ctx, cancel := m.untilExit(ctx, "waiting for SSH")
	defer cancel(nil)
	if cfg.Port == 0 {
		p, lease, err := waitAnyLease(ctx, ports)
		if err != nil {
			var ve *vmerr.Error
			if errors.As(err, &ve) && ve.Kind == vmerr.Timeout {
				ve.Message += " (SSH over the LAN dials the guest's leased address)"
			}
			return nil, m.sshErr(ctx, err)
		}
		guestPort := opt.Port
		if guestPort == 0 {
			guestPort = 22
		}
		cfg.Host, cfg.Port = lease.IP.String(), guestPort
		cfg.Dial = lanDialer(p, guestPort)
	}
	c, err := ssh.Wait(ctx, cfg)
	if err != nil {
		return nil, m.sshErr(ctx, err)
	}
	return c, nil
}

// sshRoute settles where SSH dials: the forward's host port, or (Port 0)
// the LAN ports whose lease it will dial.
func (m *Machine) sshRoute(opt SSHOptions) (ssh.Config, []Port, error) {
	cfg := opt.Config
	cfg.Host, cfg.Port, cfg.Run = "127.0.0.1", 0, m.run
	r, err := m.route(opt.Port, opt.Via)
	if err != nil {
		return cfg, nil, err
	}
	if r.port != 0 {
		cfg.Host, cfg.Port = r.host, r.port
	}
	cfg.Name = m.Name()
	if cfg.User != "" && cfg.User != "root" {
		cfg.Name = m.Name() + "-" + cfg.User
	}
	return cfg, r.ports, nil
}

// sshErr explains a failed SSH wait: the VM's exit when that ended it, the
// console's tail on a timeout.
func (m *Machine) sshErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil {
		if ve, ok := cause.(*vmerr.Error); ok && ve.Kind == vmerr.Exited {
			return ve.With("tail", m.Console.Tail(20))
		}
	}
	var ve *vmerr.Error
	if errors.As(err, &ve) && ve.Kind == vmerr.Timeout {
		ve.With("tail", m.Console.Tail(20)).With("vm", m.Name())
	}
	return err
}

// waitAnyLease waits until one of the ports holds a lease and returns that
// port and lease. On timeout the error is the first port's (it says what
// its DHCP server saw from that MAC).
func waitAnyLease(ctx context.Context, ports []Port) (Port, lan.Lease, error) {
	for _, p := range ports {
		if l, ok := p.LAN.DHCP().Lease(p.MAC); ok {
			return p, l, nil
		}
	}
	if len(ports) == 1 {
		l, err := ports[0].LAN.DHCP().WaitLease(ctx, ports[0].MAC)
		return ports[0], l, err
	}
	type result struct {
		i     int
		lease lan.Lease
		err   error
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan result, len(ports))
	for i, p := range ports {
		go func() {
			l, err := p.LAN.DHCP().WaitLease(wctx, p.MAC)
			ch <- result{i, l, err}
		}()
	}
	errs := make([]error, len(ports))
	for range ports {
		r := <-ch
		if r.err == nil {
			return ports[r.i], r.lease, nil
		}
		errs[r.i] = r.err
	}
	return ports[0], lan.Lease{}, errs[0]
}

// lanDialer dials the guest's current lease (looked up at every attempt, so
// a guest that rebooted and leased again is found) through the LAN's stack.
// Its errors are plain, so that ssh.Wait retries them (a guest whose server
// does not listen yet refuses the connection).
func lanDialer(p Port, port int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		lease, ok := p.LAN.DHCP().Lease(p.MAC)
		if !ok {
			return nil, fmt.Errorf("lan %s: %s holds no DHCP lease", p.LAN.Name(), p.MAC)
		}
		c, err := p.LAN.DialTCP(ctx, lease.IP.String(), port)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
			return nil, errors.New(err.Error())
		}
		return c, nil
	}
}
