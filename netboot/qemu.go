package netboot

import (
	"errors"
	"net"
	"os"
	"strings"

	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultBootfile is the boot file for BIOS guests when none is named.
const DefaultBootfile = "pxelinux.0"

// NICROMs are where Debian's ipxe-qemu package puts the iPXE ROM that QEMU
// loads by default for virtio-net-pci (efi-virtio.rom: a BIOS and a UEFI
// image in one ROM).
var NICROMs = []string{"/usr/lib/ipxe/qemu/efi-virtio.rom", "/usr/share/qemu/efi-virtio.rom"}

// BootDevice returns the device that makes a VM boot from this server
// (see qemu.Device). Over QEMU user networking QEMU answers UDP to
// 10.0.2.2:69 itself, so the server is named with its port in the DHCP boot
// file: bootfile=tftp://10.0.2.2:PORT/NAME (any port but 69 is forwarded to
// the host's 127.0.0.1:PORT). A bootfile ending in ".ipxe" is handed out as
// http://10.0.2.2:HTTPPORT/NAME instead when HTTP is on, so iPXE fetches the
// script, and every relative name in it, over HTTP. A bootfile with a scheme
// ("http://…") is passed as is. "" means DefaultBootfile for BIOS; UEFI
// needs a name. Under UEFI (OVMF) the iPXE EFI driver in efi-virtio.rom
// boots the URL, so "boot.ipxe" → HTTP works (measured: the Debian
// installer's "Select a language" in ~50 s). The installer's shim
// (bootnetx64.efi) is fetched over TFTP but refuses the grubx64.efi iPXE
// hands it ("Malformed binary after Attribute Certificate Table"); OVMF's own
// PXE then sends the whole URL as a file name to QEMU's port 69 and fails:
// use an iPXE script under UEFI.
//
// A server on a LAN (ServeLAN) needs a VM with a NIC on that LAN instead:
// nothing is added to user networking, the LAN's DHCP server names the boot
// file, and a bootfile given here becomes the one it advertises (for every
// client; see SetLANBootfile).
//
// The device puts the network first in the boot order, keeps QEMU's default
// iPXE NIC ROM for virtio-net-pci (efi-virtio.rom from ipxe-qemu) and, for
// BIOS, mirrors SeaBIOS and iPXE text to the serial console.
func (s *Server) BootDevice(bootfile string) qemu.Device {
	return &bootDevice{s: s, bootfile: bootfile}
}

// bootDevice is a VM's network boot from a Server.
type bootDevice struct {
	s        *Server
	bootfile string
}

// usage is a usage error of the netboot option.
func usage(format string, a ...any) error {
	return vmerr.New(vmerr.Usage, "netboot: "+format, a...).With("option", "netboot")
}

// AddTo implements qemu.Device.
func (d *bootDevice) AddTo(b *qemu.Builder) error {
	s := d.s
	if s.closing.Load() {
		return usage("server %s is closed", s.name)
	}
	if b.BootsKernel() {
		return usage("kernel is set: a directly booted kernel never reaches the network boot")
	}
	if s.lan != nil {
		return d.addLAN(b)
	}
	return d.addUserNet(b)
}

// addUserNet names the server in the user network's DHCP boot file.
func (d *bootDevice) addUserNet(b *qemu.Builder) error {
	s := d.s
	cfg := b.Config()
	if cfg.Net != "user" {
		return usage("booting from this server needs net \"user\" (got %q)", cfg.Net)
	}
	for _, opt := range b.UserNetOptions() {
		if strings.Contains(opt, "bootfile=") || strings.Contains(opt, "tftp=") {
			return usage("net_user_extra already sets bootfile= or tftp= (%q)", opt)
		}
	}
	uefi := cfg.Firmware == "uefi"
	url, err := s.userNetURL(d.bootfile, uefi)
	if err != nil {
		return err
	}
	rom, err := nicROM()
	if err != nil {
		return err
	}
	b.AddUserNetOption("bootfile=" + url)
	bootFromNetwork(b, uefi)
	s.event("configure", map[string]any{"vm": cfg.Name, "bootfile": url, "boot": "n", "firmware": cfg.Firmware, "rom": rom})
	return nil
}

// userNetURL is the URL the user network's DHCP hands out for bootfile.
func (s *Server) userNetURL(bootfile string, uefi bool) (string, error) {
	if bootfile == "" {
		if uefi {
			return "", usage("firmware uefi needs a bootfile (an EFI program such as debian-installer/amd64/bootnetx64.efi or iPXE's snponly.efi)")
		}
		bootfile = DefaultBootfile
	}
	url := bootfile
	if !strings.Contains(bootfile, "://") {
		name, err := s.checkBootfile(bootfile)
		if err != nil {
			return "", err
		}
		switch {
		case strings.HasSuffix(name, ".ipxe") && s.clientHTTPURL != "":
			url = s.clientHTTPURL + "/" + name
		case s.clientTFTPURL != "":
			url = s.clientTFTPURL + "/" + name
		default:
			url = s.clientHTTPURL + "/" + name
		}
	}
	if strings.ContainsAny(url, ", \t\n") {
		return "", usage("bootfile URL %q contains a comma or white space", url)
	}
	return url, nil
}

// checkBootfile checks that the server has bootfile and listens where user
// networking reaches it.
func (s *Server) checkBootfile(bootfile string) (string, error) {
	name, err := CleanName(bootfile)
	if err != nil {
		return "", usage("bootfile %q: %v", bootfile, err)
	}
	c, err := s.open(name)
	if err != nil {
		kind := vmerr.Usage
		if errors.Is(err, errNotFound) {
			kind = vmerr.NotFound
		}
		return "", vmerr.New(kind, "netboot: bootfile %s: %v", name, err).With("option", "bootfile")
	}
	c.close()
	for _, a := range []net.Addr{s.TFTPAddr(), s.HTTPAddr()} {
		if a == nil {
			continue
		}
		h, _, _ := net.SplitHostPort(a.String())
		if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
			return "", usage("the server listens on %s; QEMU user networking reaches only the host's loopback (as %s)", a, UserNetHost)
		}
	}
	return name, nil
}

// nicROM returns the iPXE ROM QEMU loads for virtio-net-pci.
func nicROM() (string, error) {
	for _, p := range NICROMs {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", vmerr.New(vmerr.NotFound, "netboot: no iPXE ROM for virtio-net-pci (%s); install package ipxe-qemu", strings.Join(NICROMs, " or "))
}

// bootFromNetwork puts the network first in the boot order and, for BIOS,
// mirrors SeaBIOS and iPXE text to the serial console.
func bootFromNetwork(b *qemu.Builder, uefi bool) {
	b.BootFirst("n")
	if !uefi {
		b.MirrorBIOSToSerial()
	}
}
