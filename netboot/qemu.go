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

// ConfigureNetboot makes cfg boot from this server over QEMU user
// networking. QEMU answers UDP to 10.0.2.2:69 itself, so the server is named
// with its port in the DHCP boot file: bootfile=tftp://10.0.2.2:PORT/NAME
// (any port but 69 is forwarded to the host's 127.0.0.1:PORT). A bootfile
// ending in ".ipxe" is handed out as http://10.0.2.2:HTTPPORT/NAME instead
// when HTTP is on, so iPXE fetches the script, and every relative name in
// it, over HTTP. A bootfile with a scheme ("http://…") is passed as is. ""
// means DefaultBootfile for BIOS; UEFI needs a name. Under UEFI (OVMF) the
// iPXE EFI driver in efi-virtio.rom boots the URL, so "boot.ipxe" → HTTP
// works (measured: the Debian installer's "Select a language" in ~50 s).
// The installer's shim (bootnetx64.efi) is fetched over TFTP but refuses the
// grubx64.efi iPXE hands it ("Malformed binary after Attribute Certificate
// Table"); OVMF's own PXE then sends the whole URL as a file name to QEMU's
// port 69 and fails: use an iPXE script under UEFI.
//
// A server on a LAN (ServeLAN) needs a VM with a NIC on that LAN instead:
// nothing is added to user networking, the LAN's DHCP server names the boot
// file, and a bootfile given here becomes the one it advertises (for every
// client; see SetLANBootfile).
//
// It sets boot order "n" (first), keeps QEMU's default iPXE NIC ROM for
// virtio-net-pci (efi-virtio.rom from ipxe-qemu) and, for BIOS, SerialBIOS so
// that SeaBIOS and iPXE text reaches the serial console. It satisfies
// luahost.NetbootSource.
func (s *Server) ConfigureNetboot(cfg *qemu.Config, bootfile string) error {
	usage := func(format string, a ...any) error {
		return vmerr.New(vmerr.Usage, "netboot: "+format, a...).With("option", "netboot")
	}
	if s.closing.Load() {
		return usage("server %s is closed", s.name)
	}
	if s.lan != nil {
		return s.configureLAN(cfg, bootfile)
	}
	if cfg.Net != "" && cfg.Net != "user" {
		return usage("booting from this server needs net \"user\" (got %q)", cfg.Net)
	}
	if cfg.Kernel != "" {
		return usage("kernel is set: a directly booted kernel never reaches the network boot")
	}
	if strings.Contains(cfg.NetUserExtra, "bootfile=") || strings.Contains(cfg.NetUserExtra, "tftp=") {
		return usage("net_user_extra already sets bootfile= or tftp= (%q)", cfg.NetUserExtra)
	}
	uefi := cfg.Firmware == "uefi"
	if bootfile == "" {
		if uefi {
			return usage("firmware uefi needs a bootfile (an EFI program such as debian-installer/amd64/bootnetx64.efi or iPXE's snponly.efi)")
		}
		bootfile = DefaultBootfile
	}
	var url string
	if strings.Contains(bootfile, "://") {
		url = bootfile
	} else {
		name, err := CleanName(bootfile)
		if err != nil {
			return usage("bootfile %q: %v", bootfile, err)
		}
		if c, err := s.open(name); err != nil {
			kind := vmerr.Usage
			if errors.Is(err, errNotFound) {
				kind = vmerr.NotFound
			}
			return vmerr.New(kind, "netboot: bootfile %s: %v", name, err).With("option", "bootfile")
		} else {
			c.close()
		}
		switch {
		case strings.HasSuffix(name, ".ipxe") && s.clientHTTPURL != "":
			url = s.clientHTTPURL + "/" + name
		case s.clientTFTPURL != "":
			url = s.clientTFTPURL + "/" + name
		default:
			url = s.clientHTTPURL + "/" + name
		}
		for _, a := range []net.Addr{s.TFTPAddr(), s.HTTPAddr()} {
			if a == nil {
				continue
			}
			h, _, _ := net.SplitHostPort(a.String())
			if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
				return usage("the server listens on %s; QEMU user networking reaches only the host's loopback (as %s)", a, UserNetHost)
			}
		}
	}
	if strings.ContainsAny(url, ", \t\n") {
		return usage("bootfile URL %q contains a comma or white space", url)
	}
	rom, err := nicROM()
	if err != nil {
		return err
	}
	if cfg.NetUserExtra != "" {
		cfg.NetUserExtra += ","
	}
	cfg.NetUserExtra += "bootfile=" + url
	setBootN(cfg, uefi)
	s.event("configure", map[string]any{"vm": cfg.Name, "bootfile": url, "boot": cfg.Boot, "firmware": cfg.Firmware, "rom": rom})
	return nil
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

// setBootN puts the network first in the boot order and, for BIOS, mirrors
// SeaBIOS and iPXE text to the serial console.
func setBootN(cfg *qemu.Config, uefi bool) {
	switch {
	case cfg.Boot == "":
		cfg.Boot = "n"
	case !strings.Contains(cfg.Boot, "n"):
		cfg.Boot = "n" + cfg.Boot
	}
	if !uefi {
		cfg.SerialBIOS = true
	}
}
