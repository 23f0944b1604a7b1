package netboot

import (
	"bytes"
	"errors"
	"net"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Well-known ports a server attached to a LAN listens on, on the gateway.
const (
	// LANTFTPPort is TFTP's port on the LAN gateway (single-port mode: the
	// whole transfer runs on it).
	LANTFTPPort = 69
	// LANHTTPPort is HTTP's port on the LAN gateway.
	LANHTTPPort = 80
)

// IPXEUserClass is the DHCP user class (option 77) iPXE sends.
const IPXEUserClass = "iPXE"

// ServeLAN starts a server on a virtual LAN: TFTP on the gateway's UDP port
// 69 (single-port mode on the gateway's network stack), HTTP on
// its TCP port 80, clients told to reach it at the gateway address, and the
// LAN's DHCP server advertising it (see SetLANBootfile). opt.TFTPConn,
// opt.HTTPListener, opt.TFTPAddr, opt.HTTPAddr and opt.ClientHost must be
// empty. bootfile is what DHCP advertises; "" means DefaultBootfile. Close
// stops the advertising.
func ServeLAN(l *lan.LAN, opt Options, bootfile string) (_ *Server, err error) {
	if l == nil {
		return nil, vmerr.New(vmerr.Usage, "netboot: ServeLAN needs a LAN")
	}
	if opt.TFTPConn != nil || opt.HTTPListener != nil || opt.TFTPAddr != "" || opt.HTTPAddr != "" || opt.ClientHost != "" {
		return nil, vmerr.New(vmerr.Usage, "netboot: a server on lan %s listens on its gateway %s; do not also give listening addresses or a client host", l.Name(), l.Gateway())
	}
	if opt.NoTFTP && opt.NoHTTP {
		return nil, vmerr.New(vmerr.Usage, "netboot: both TFTP and HTTP are off")
	}
	if l.DHCP().Booting() {
		return nil, vmerr.New(vmerr.Usage, "netboot: lan %s already has a netboot server (its DHCP advertises one boot server)", l.Name())
	}
	closeOnErr := func(c interface{ Close() error }) {
		if err != nil && c != nil {
			c.Close()
		}
	}
	if !opt.NoTFTP {
		if opt.TFTPConn, err = l.ListenUDP(LANTFTPPort); err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "netboot: TFTP on lan %s (is another server attached?)", l.Name())
		}
		defer closeOnErr(opt.TFTPConn)
	}
	if !opt.NoHTTP {
		if opt.HTTPListener, err = l.ListenTCP(LANHTTPPort); err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "netboot: HTTP on lan %s (is another server attached?)", l.Name())
		}
		defer closeOnErr(opt.HTTPListener)
	}
	opt.ClientHost = l.Gateway().String()
	s, err := Serve(opt)
	if err != nil {
		return nil, err
	}
	s.lan = l
	if bootfile == "" {
		bootfile = DefaultBootfile
	}
	if err = s.SetLANBootfile(bootfile); err != nil {
		s.Close()
		return nil, err
	}
	l.DHCP().SetBootFunc(s.dhcpBoot)
	return s, nil
}

// LAN returns the LAN the server is attached to (nil for a server on
// loopback).
func (s *Server) LAN() *lan.LAN { return s.lan }

// LANBootfile returns the boot file the LAN's DHCP server advertises (""
// for a server not on a LAN).
func (s *Server) LANBootfile() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lanBootfile
}

// SetLANBootfile changes the boot file the LAN's DHCP server advertises,
// for every client. A name must exist in the overlay or the root; a URL
// ("http://…") is advertised as is. The DHCP answer depends on the client:
//
//   - iPXE (user class "iPXE") asking for a name ending in ".ipxe" gets the
//     HTTP URL http://GATEWAY/NAME (when HTTP is on), so the script and
//     every relative name in it come over HTTP;
//   - anyone else gets next-server GATEWAY and the name, fetched over TFTP
//     (or, with TFTP off, the HTTP URL).
func (s *Server) SetLANBootfile(bootfile string) error {
	if s.lan == nil {
		return vmerr.New(vmerr.Usage, "netboot: server %s is not attached to a LAN", s.name)
	}
	if !strings.Contains(bootfile, "://") {
		name, err := CleanName(bootfile)
		if err != nil {
			return vmerr.New(vmerr.Usage, "netboot: bootfile %q: %v", bootfile, err).With("option", "bootfile")
		}
		c, err := s.open(name)
		if err != nil {
			kind := vmerr.Usage
			if errors.Is(err, errNotFound) {
				kind = vmerr.NotFound
			}
			return vmerr.New(kind, "netboot: bootfile %s: %v", name, err).With("option", "bootfile")
		}
		c.close()
		bootfile = name
	}
	s.mu.Lock()
	s.lanBootfile = bootfile
	s.mu.Unlock()
	s.event("lan-bootfile", map[string]any{"lan": s.lan.Name(), "bootfile": bootfile,
		"ipxe": s.lanBoot(true), "pxe": s.lanBoot(false)})
	return nil
}

// lanBoot returns the DHCP boot file for an iPXE client or another one.
func (s *Server) lanBoot(ipxe bool) string {
	s.mu.Lock()
	file := s.lanBootfile
	s.mu.Unlock()
	switch {
	case file == "" || strings.Contains(file, "://"):
		return file
	case s.clientHTTPURL != "" && (s.clientTFTPURL == "" || ipxe && strings.HasSuffix(file, ".ipxe")):
		return s.httpBase() + "/" + file
	}
	return file
}

// httpBase is the client HTTP URL without the default port.
func (s *Server) httpBase() string {
	return strings.TrimSuffix(s.clientHTTPURL, ":80")
}

// dhcpBoot is the LAN DHCP server's boot function.
func (s *Server) dhcpBoot(req *dhcpv4.DHCPv4) (net.IP, string) {
	if s.closing.Load() {
		return nil, ""
	}
	ipxe := bytes.Contains(req.Options.Get(dhcpv4.OptionUserClassInformation), []byte(IPXEUserClass))
	return net.IP(s.lan.Gateway().AsSlice()), s.lanBoot(ipxe)
}

// addLAN boots a VM from a server on a LAN: the VM must have a NIC that is
// a LAN port (net = lan); a bootfile becomes the LAN's.
func (d *bootDevice) addLAN(b *qemu.Builder) error {
	s := d.s
	cfg := b.Config()
	ports := 0
	for _, n := range cfg.NICs {
		if !n.User && (n.File != nil || n.Open != nil) {
			ports++
		}
	}
	if ports == 0 {
		return usage("server %s is on lan %s: start the VM on that LAN (net = lan), not on %q", s.name, s.lan.Name(), cfg.Net)
	}
	for _, opt := range b.UserNetOptions() {
		if strings.Contains(opt, "bootfile=") {
			return usage("net_user_extra sets bootfile= but the server is on lan %s, whose DHCP names the boot file", s.lan.Name())
		}
	}
	uefi := cfg.Firmware == "uefi"
	if d.bootfile != "" {
		if err := s.SetLANBootfile(d.bootfile); err != nil {
			return err
		}
	} else if uefi && !strings.HasSuffix(s.LANBootfile(), ".ipxe") && !strings.HasSuffix(s.LANBootfile(), ".efi") {
		return usage("firmware uefi needs a bootfile (an iPXE script or an EFI program); lan %s advertises %s", s.lan.Name(), s.LANBootfile())
	}
	if _, err := nicROM(); err != nil {
		return err
	}
	bootFromNetwork(b, uefi)
	s.event("configure", map[string]any{"vm": cfg.Name, "lan": s.lan.Name(), "bootfile": s.LANBootfile(), "boot": "n", "firmware": cfg.Firmware})
	return nil
}
