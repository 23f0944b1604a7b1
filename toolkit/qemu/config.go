// Package qemu starts and owns QEMU processes: it builds the command line
// from a Config, starts QEMU paused (-S) with its serial console on pipes
// (its stdin and stdout) and QMP on a unix socket in a short private
// directory, speaks QMP with its own client
// (any reply size, ids, deadlines, every event kept and written to the run's
// timeline), and makes sure no QEMU outlives vmscript (process group plus
// Pdeathsig from a locked OS thread).
//
// The life of a VM:
//
//	vm, err := qemu.Start(ctx, cfg)   // QEMU runs paused; serial and QMP connected
//	con.Attach(vm.Serial())           // the console holds byte 0
//	err = vm.Cont(ctx)                // the guest starts
//	…
//	vm.Stop(10 * time.Second)         // quit via QMP, SIGKILL after the grace
package qemu

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Defaults applied to an empty Config field.
const (
	// DefaultMemory is the guest RAM when Config.Memory is empty.
	DefaultMemory = "1G"
	// DefaultMachine is the machine type when Config.Machine is empty.
	DefaultMachine = "pc"
	// DefaultBinary is the QEMU program when Config.Binary is empty.
	DefaultBinary = "qemu-system-x86_64"
	// DefaultName is the VM name when Config.Name is empty.
	DefaultName = "vm"
)

// Firmware files of Debian's ovmf package. OVMFCode and OVMFVars in Config
// override them.
var (
	// DefaultOVMFCode is the firmware code, attached read-only.
	DefaultOVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	// DefaultOVMFVars is the variable store template; each VM gets a
	// private copy in its Dir.
	DefaultOVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// maxSocketPath is the longest unix socket path the kernel accepts
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

// Disk is one disk image attached to the VM.
type Disk struct {
	// Path is the image file. It must exist.
	Path string
	// Format is the image format ("raw", "qcow2", …). Empty means: qcow2 if
	// the file starts with the qcow2 magic, else raw.
	Format string
	// Interface is "virtio" (default) or "ide".
	Interface string
	// Snapshot, when nil or true, attaches the image with snapshot=on so that
	// the guest's writes go to a temporary layer and the image is never
	// written. Set it to false explicitly to let the guest write the image.
	Snapshot *bool
}

// Forward is a host-to-guest port forward of user-mode networking.
type Forward struct {
	// Proto is "tcp" (default) or "udp".
	Proto string `json:"proto"`
	// HostAddr is the host address to listen on; default 127.0.0.1.
	HostAddr string `json:"host_addr"`
	// HostPort is the host port; 0 lets QEMU bind an ephemeral port, which
	// Start reads back (VM.Forwards reports it).
	HostPort int `json:"host"`
	// GuestPort is the guest port the forward reaches on 10.0.2.15.
	GuestPort int `json:"guest"`
}

// Config describes one VM. The zero value of every field has a sensible
// default; see Validate for the combinations that are refused.
type Config struct {
	// Name names the VM in the timeline and in file names in the run
	// directory; letters, digits, '.', '_' and '-'. Default "vm".
	Name string
	// Memory is the guest RAM: "1G", "512M", "2048" (MiB). Default 1G.
	Memory string
	// CPUs is the number of virtual CPUs; default 1.
	CPUs int
	// Machine is the QEMU machine type. Default "pc" (i440FX): QEMU's own
	// default, so the command line matches what a person runs by hand, with
	// the IDE controller -cdrom and legacy boot media expect; "q35" is fine
	// too.
	Machine string
	// Accel is "auto" (default: KVM when /dev/kvm is usable and fast, else
	// TCG), "kvm" or "tcg".
	Accel string
	// Firmware is "bios" (SeaBIOS, default) or "uefi" (OVMF).
	Firmware string
	// OVMFCode and OVMFVars override the OVMF files for firmware "uefi".
	OVMFCode, OVMFVars string
	// ISO is attached as an IDE CD-ROM.
	ISO string
	// Kernel, Initrd and Append boot a kernel directly (-kernel, -initrd,
	// -append).
	Kernel, Initrd, Append string
	// Disks are attached in order.
	Disks []Disk
	// Boot is the boot order of the firmware: letters c (disk), d (CD-ROM),
	// n (network), e.g. "dc". Empty leaves QEMU's default.
	Boot string
	// Net is "user" (default: QEMU user-mode networking on a virtio NIC) or
	// "none".
	Net string
	// Forwards are host-to-guest port forwards (user networking only).
	Forwards []Forward
	// NetUserExtra is appended to the -netdev user option, e.g.
	// "bootfile=tftp://10.0.2.2:PORT/pxelinux.0".
	NetUserExtra string
	// MAC is the NIC's address; default derived stably from Name (see
	// DeriveMAC). With Net "none" it is the address of NICs[0].
	MAC string
	// NICs are more network cards (LAN ports, a user-mode NIC at a chosen
	// place), after the one of Net "user". With NICs, an empty Net means
	// "none". See NIC.
	NICs []NIC
	// SerialBIOS mirrors the text output of SeaBIOS and option ROMs (iPXE)
	// to the serial port (fw_cfg etc/sercon-port), so boot-loader messages
	// reach the console log. BIOS firmware only.
	SerialBIOS bool
	// Agent adds a virtio-serial port named org.qemu.guest_agent.0 for
	// qemu-guest-agent, its host side a socket in the private directory
	// (VM.AgentSocket).
	Agent bool
	// Console is the device the console is on: "serial" (the 16550 UART,
	// ttyS0; default) or "virtio" (a virtio console, hvc0: the guest
	// kernel needs virtio_console, and "console=hvc0" is added to the
	// command line of a directly booted kernel). Under TCG a UART costs the
	// guest an I/O exit per byte; a virtio console hands over whole buffers.
	Console string
	// SerialLog, if set, is a file QEMU itself writes every serial byte to
	// (chardev logfile=), a second safety net beside the console's log.
	SerialLog string
	// Devices add themselves to the command line after the fields above
	// (see Device): a lab image's kernel, a netboot server's boot file.
	Devices []Device
	// QEMUArgs are appended to the command line as they are.
	QEMUArgs []string
	// Binary is the QEMU program; default qemu-system-x86_64.
	Binary string
	// Dir is the private directory for sockets and the OVMF variable store.
	// Unix socket paths are limited to 107 bytes, so it must be short; Start
	// makes a fresh one under /tmp when it is empty and removes it when QEMU
	// has exited.
	Dir string
	// Run is the run whose timeline and directory receive the VM's events,
	// command line and stderr. It may be nil (then stderr goes to Dir).
	Run *journal.Run
}

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	memRE     = regexp.MustCompile(`^([0-9]+)\s*([KMGT]?)(I?B)?$`)
	macRE     = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
	formatRE  = regexp.MustCompile(`^[a-z0-9]+$`)
	machineRE = regexp.MustCompile(`^[A-Za-z0-9._,=-]+$`)
)

// withDefaults returns c with every empty field set to its default.
func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = DefaultName
	}
	if c.Memory == "" {
		c.Memory = DefaultMemory
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.Machine == "" {
		c.Machine = DefaultMachine
	}
	if c.Accel == "" {
		c.Accel = "auto"
	}
	if c.Firmware == "" {
		c.Firmware = "bios"
	}
	if c.Console == "" {
		c.Console = "serial"
	}
	if c.Net == "" {
		c.Net = "user"
		if len(c.NICs) > 0 {
			c.Net = "none"
		}
	}
	if c.Binary == "" {
		c.Binary = DefaultBinary
	}
	if c.OVMFCode == "" {
		c.OVMFCode = DefaultOVMFCode
	}
	if c.OVMFVars == "" {
		c.OVMFVars = DefaultOVMFVars
	}
	if c.MAC == "" && c.Net == "user" {
		c.MAC = DeriveMAC(c.Name)
	}
	c = c.withNICDefaults()
	fw := make([]Forward, len(c.Forwards))
	for i, f := range c.Forwards {
		if f.Proto == "" {
			f.Proto = "tcp"
		}
		if f.HostAddr == "" {
			f.HostAddr = "127.0.0.1"
		}
		fw[i] = f
	}
	c.Forwards = fw
	disks := make([]Disk, len(c.Disks))
	for i, d := range c.Disks {
		if d.Interface == "" {
			d.Interface = "virtio"
		}
		disks[i] = d
	}
	c.Disks = disks
	return c
}

// DeriveMAC returns the MAC address Start gives a VM of this name when none is
// set: 52:54:00 (QEMU's prefix) followed by three bytes of SHA-256(name). The
// same name always gets the same address.
func DeriveMAC(name string) string {
	h := sha256.Sum256([]byte(name))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
}

// ParseMemory converts a memory size ("1G", "512M", "2048" MiB, "1GiB") to
// MiB.
func ParseMemory(s string) (int, error) {
	m := memRE.FindStringSubmatch(strings.ToUpper(strings.TrimSpace(s)))
	if m == nil {
		return 0, fmt.Errorf("bad size %q (want e.g. 512M or 2G)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q: %v", s, err)
	}
	var mib int64
	switch m[2] {
	case "K":
		if n%1024 != 0 {
			return 0, fmt.Errorf("bad size %q: not a whole number of MiB", s)
		}
		mib = n / 1024
	case "", "M":
		mib = n
	case "G":
		mib = n * 1024
	case "T":
		mib = n * 1024 * 1024
	}
	if mib < 16 || mib > 1<<22 {
		return 0, fmt.Errorf("size %q out of range (16M to 4T)", s)
	}
	return int(mib), nil
}

// usage returns a vmerr usage error whose message starts with the option.
func usage(option, format string, a ...any) error {
	return vmerr.New(vmerr.Usage, "qemu: %s: %s", option, fmt.Sprintf(format, a...)).With("option", option)
}

func notFound(option, path string, err error) error {
	return vmerr.Wrap(vmerr.NotFound, err, "qemu: %s", option).With("option", option).With("path", path)
}

// Validate checks the configuration and reports the first problem as a
// vmerr error (kind "usage", or "notfound" for missing files) whose message
// names the option: an unknown value, an option that needs another
// (initrd or append without kernel, forwards without user networking, a
// boot order naming media that are not there), a missing file, a bad
// memory size, or UEFI firmware that is not installed. Devices are applied
// as Start applies them, so what they ask for is checked too.
func (c Config) Validate() error {
	_, err := c.withDefaults().plan(true)
	return err
}

// validate checks the fields of a defaulted configuration, phase by phase;
// the boot order is checked on the command line the devices leave (see
// Builder.check).
func (c Config) validate(checkBinary bool) error {
	for _, phase := range []func() error{
		c.validateMachine, c.validateFirmware, c.validateMedia, c.validateDisks,
		c.validateNet, c.validateNICs, c.validateForwards, c.validateDir,
	} {
		if err := phase(); err != nil {
			return err
		}
	}
	if checkBinary {
		if _, err := exec.LookPath(c.Binary); err != nil {
			return notFound("binary", c.Binary, err)
		}
	}
	return nil
}

// validateMachine checks the name and the virtual hardware.
func (c Config) validateMachine() error {
	if !nameRE.MatchString(c.Name) {
		return usage("name", "%q: use letters, digits, '.', '_' and '-'", c.Name)
	}
	if _, err := ParseMemory(c.Memory); err != nil {
		return usage("memory", "%v", err)
	}
	if c.CPUs < 1 || c.CPUs > 64 {
		return usage("cpus", "%d: want 1 to 64", c.CPUs)
	}
	if !machineRE.MatchString(c.Machine) {
		return usage("machine", "%q is not a machine type", c.Machine)
	}
	switch c.Accel {
	case "auto", "kvm", "tcg":
	default:
		return usage("accel", "%q: want auto, kvm or tcg", c.Accel)
	}
	switch c.Console {
	case "serial":
	case "virtio":
		if c.SerialBIOS {
			return usage("serial_bios", "mirrors the firmware to the serial port, and console virtio has none")
		}
	default:
		return usage("console", "%q: want serial or virtio", c.Console)
	}
	return nil
}

// validateFirmware checks the firmware and, for UEFI, its files and memory.
func (c Config) validateFirmware() error {
	switch c.Firmware {
	case "bios":
		return nil
	case "uefi":
	default:
		return usage("firmware", "%q: want bios or uefi", c.Firmware)
	}
	if mib, _ := ParseMemory(c.Memory); mib < 1024 {
		return usage("memory", "%s is too little for firmware uefi: OVMF needs at least 1G (GRUB under OVMF fails with 256M)", c.Memory)
	}
	if c.SerialBIOS {
		return usage("serial_bios", "works only with firmware bios (SeaBIOS), not uefi")
	}
	for _, f := range []struct{ opt, path string }{{"ovmf_code", c.OVMFCode}, {"ovmf_vars", c.OVMFVars}} {
		if _, err := os.Stat(f.path); err != nil {
			return vmerr.Wrap(vmerr.NotFound, err, "qemu: %s: firmware uefi needs %s (package ovmf)", f.opt, f.path).With("option", f.opt).With("path", f.path)
		}
	}
	return nil
}

// validateMedia checks the ISO and the directly booted kernel.
func (c Config) validateMedia() error {
	if c.ISO != "" {
		if err := regularFile(c.ISO); err != nil {
			return notFound("iso", c.ISO, err)
		}
	}
	return DirectBoot{Kernel: c.Kernel, Initrd: c.Initrd, Append: c.Append}.validate()
}

// validateDisks checks every disk's file, format and interface.
func (c Config) validateDisks() error {
	for i, d := range c.Disks {
		opt := fmt.Sprintf("disks[%d]", i+1)
		if d.Path == "" {
			return usage(opt+".path", "is empty")
		}
		if err := regularFile(d.Path); err != nil {
			return notFound(opt+".path", d.Path, err)
		}
		if d.Format != "" && !formatRE.MatchString(d.Format) {
			return usage(opt+".format", "%q is not an image format", d.Format)
		}
		switch d.Interface {
		case "virtio", "ide":
		default:
			return usage(opt+".interface", "%q: want virtio or ide", d.Interface)
		}
	}
	return nil
}

// validateNet checks the network kind and what depends on it.
func (c Config) validateNet() error {
	switch c.Net {
	case "user":
		if !macRE.MatchString(c.MAC) {
			return usage("mac", "%q: want six hex bytes like 52:54:00:12:34:56", c.MAC)
		}
		if b, _ := strconv.ParseUint(c.MAC[:2], 16, 8); b&1 != 0 {
			return usage("mac", "%q is a multicast address (the first byte must be even)", c.MAC)
		}
	case "none":
		if len(c.Forwards) > 0 && !c.hasUserNIC() {
			return usage("forwards", "need net user (net is none)")
		}
		if c.NetUserExtra != "" && !c.hasUserNIC() {
			return usage("net_user_extra", "needs net user (net is none)")
		}
		if c.MAC != "" && len(c.NICs) == 0 {
			return usage("mac", "needs a NIC (net is none)")
		}
	default:
		return usage("net", "%q: want user or none", c.Net)
	}
	if strings.ContainsAny(c.NetUserExtra, " \t\n") {
		return usage("net_user_extra", "%q contains white space; it is a comma-separated -netdev user option list", c.NetUserExtra)
	}
	return nil
}

// validateForwards checks each port forward.
func (c Config) validateForwards() error {
	for i, f := range c.Forwards {
		opt := fmt.Sprintf("forwards[%d]", i+1)
		if f.Proto != "tcp" && f.Proto != "udp" {
			return usage(opt+".proto", "%q: want tcp or udp", f.Proto)
		}
		if ip := net.ParseIP(f.HostAddr); ip == nil || ip.To4() == nil {
			return usage(opt+".host_addr", "%q is not an IPv4 address", f.HostAddr)
		}
		if f.HostPort < 0 || f.HostPort > 65535 {
			return usage(opt+".host_port", "%d: want 0 (ephemeral) to 65535", f.HostPort)
		}
		if f.GuestPort < 1 || f.GuestPort > 65535 {
			return usage(opt+".guest_port", "%d: want 1 to 65535", f.GuestPort)
		}
	}
	return nil
}

// validateDir checks that the private directory's socket paths fit.
func (c Config) validateDir() error {
	if c.Dir != "" {
		if p := filepath.Join(c.Dir, qmpSocket); len(p) > maxSocketPath {
			return usage("dir", "%q is too long for unix sockets (%d bytes with %s; the limit is %d)", c.Dir, len(p), qmpSocket, maxSocketPath)
		}
	}
	return nil
}

func regularFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return errors.New("is a directory")
	}
	return nil
}

// Names of the files Start creates in Dir.
const (
	qmpSocket  = "qmp.sock"
	varsFile   = "OVMF_VARS.fd"
	serconFile = "sercon-port.bin"
)

// qemuEscape doubles commas, which QEMU's option syntax uses as separators.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// diskFormat returns d's format, sniffing the qcow2 magic when it is empty.
func diskFormat(d Disk) string {
	if d.Format != "" {
		return d.Format
	}
	f, err := os.Open(d.Path)
	if err != nil {
		return "raw"
	}
	defer f.Close()
	magic := make([]byte, 4)
	if n, _ := f.Read(magic); n == 4 && string(magic) == "QFI\xfb" {
		return "qcow2"
	}
	return "raw"
}
