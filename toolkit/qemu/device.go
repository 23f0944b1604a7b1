package qemu

import (
	"path/filepath"
	"strconv"
	"strings"
)

// Device is a part of a VM that puts itself on QEMU's command line — a
// kernel booted directly (a lab image's, an ISO entry's), a netboot server's
// boot file, a console on a virtio port — instead of something else editing
// the Config's fields for it (the u-root qemu package's Devices are the
// model). Config.Devices are applied in order, after the Config's own
// fields; what they ask for is then checked together with those fields.
type Device interface {
	// AddTo adds the device to the command line under construction; an
	// error (a vmerr usage error naming the option) refuses the VM.
	AddTo(b *Builder) error
}

// DirectBoot is a kernel that QEMU loads itself (-kernel, -initrd,
// -append), bypassing firmware and boot loaders. Config.Kernel, Initrd and
// Append are one; a lab image or an ISO's boot entry give theirs as a Device.
type DirectBoot struct {
	Kernel, Initrd, Append string
}

// AddTo implements Device: a VM boots at most one kernel directly.
func (k DirectBoot) AddTo(b *Builder) error {
	if err := k.validate(); err != nil {
		return err
	}
	if b.kernel.Kernel != "" {
		return usage("kernel", "%s and %s: a VM boots one kernel directly", b.kernel.Kernel, k.Kernel)
	}
	b.kernel = k
	return nil
}

// validate checks the files and that initrd and append come with a kernel.
func (k DirectBoot) validate() error {
	if k.Kernel != "" {
		if err := regularFile(k.Kernel); err != nil {
			return notFound("kernel", k.Kernel, err)
		}
	}
	if k.Initrd != "" {
		if k.Kernel == "" {
			return usage("initrd", "needs kernel (an initrd is only loaded with a directly booted kernel)")
		}
		if err := regularFile(k.Initrd); err != nil {
			return notFound("initrd", k.Initrd, err)
		}
	}
	if k.Append != "" && k.Kernel == "" {
		return usage("append", "needs kernel (the command line is only passed to a directly booted kernel)")
	}
	return nil
}

// Builder is a VM's command line while its devices add themselves: the
// Config (defaulted and checked) plus what the devices asked for, each kind
// in its own slot, so that the order of the command line does not depend on
// the order of the devices.
type Builder struct {
	cfg        Config
	kernel     DirectBoot
	kernelArgs []string
	userNet    []string
	bootFirst  string
	serialBIOS bool
	args       []string
}

// Name is the VM's name.
func (b *Builder) Name() string { return b.cfg.Name }

// Config returns the VM's Config with its defaults filled in, for devices
// to decide by (a copy: devices change the command line only through the
// Builder's methods).
func (b *Builder) Config() Config { return b.cfg }

// Firmware is "bios" or "uefi".
func (b *Builder) Firmware() string { return b.cfg.Firmware }

// HasUserNet reports whether the VM has a user-mode NIC.
func (b *Builder) HasUserNet() bool { return b.cfg.hasUserNIC() }

// BootsKernel reports whether a kernel is booted directly (so firmware boot
// order and boot loaders never run).
func (b *Builder) BootsKernel() bool { return b.kernel.Kernel != "" }

// UserNetOptions returns the options of the user-mode network so far.
func (b *Builder) UserNetOptions() []string { return append([]string(nil), b.userNet...) }

// AddUserNetOption appends an option ("bootfile=URL") to the -netdev user
// of the VM's user-mode NIC.
func (b *Builder) AddUserNetOption(opt string) {
	b.userNet = append(b.userNet, opt)
}

// AddKernelArgs appends words to the directly booted kernel's command line.
func (b *Builder) AddKernelArgs(words ...string) {
	b.kernelArgs = append(b.kernelArgs, words...)
}

// BootFirst puts firmware boot devices (letters c, d, n) first in the boot
// order.
func (b *Builder) BootFirst(letters string) {
	b.bootFirst += letters
}

// MirrorBIOSToSerial sends SeaBIOS's and option ROMs' text to the serial
// port too (Config.SerialBIOS).
func (b *Builder) MirrorBIOSToSerial() { b.serialBIOS = true }

// AddArgs appends arguments to QEMU's command line (after the boot order,
// before Config.QEMUArgs).
func (b *Builder) AddArgs(args ...string) { b.args = append(b.args, args...) }

// bootOrder is the Config's boot order with the devices' letters first.
func (b *Builder) bootOrder() string {
	order := b.cfg.Boot
	for _, l := range b.bootFirst {
		order = strings.ReplaceAll(order, string(l), "")
	}
	return b.bootFirst + order
}

// appendLine is the kernel command line with the devices' words.
func (b *Builder) appendLine() string {
	args := append([]string{b.kernel.Append}, b.kernelArgs...)
	if b.cfg.Console == "virtio" {
		// The last console= is /dev/console; ttyS0 has no UART behind it.
		args = append(args, "console=hvc0")
	}
	return strings.TrimSpace(strings.Join(args, " "))
}

// check refuses combinations the devices and the Config make together.
func (b *Builder) check() error {
	if len(b.kernelArgs) > 0 && !b.BootsKernel() {
		return usage("append", "needs kernel (the command line is only passed to a directly booted kernel)")
	}
	if len(b.userNet) > 0 && !b.HasUserNet() {
		return usage("net_user_extra", "needs net user (net is %s)", b.cfg.Net)
	}
	return b.checkBootOrder(b.bootOrder())
}

// checkBootOrder refuses a boot order naming media the VM does not have.
func (b *Builder) checkBootOrder(order string) error {
	c := b.cfg
	if order == "" {
		return nil
	}
	if b.BootsKernel() {
		return usage("boot", "has no effect when kernel is set (the kernel is booted directly)")
	}
	for _, l := range order {
		switch l {
		case 'c':
			if len(c.Disks) == 0 {
				return usage("boot", "%q: c (disk) but no disks", order)
			}
		case 'd':
			if c.ISO == "" {
				return usage("boot", "%q: d (CD-ROM) but no iso", order)
			}
		case 'n':
			if c.Net == "none" && len(c.NICs) == 0 {
				return usage("boot", "%q: n (network) but net is none", order)
			}
		default:
			return usage("boot", "%q: letter %q; want c (disk), d (CD-ROM) or n (network)", order, l)
		}
	}
	return nil
}

// plan defaults nothing (c is defaulted): it checks c, applies its own
// kernel and then its devices, and checks what they made together.
func (c Config) plan(checkBinary bool) (*Builder, error) {
	if err := c.validate(checkBinary); err != nil {
		return nil, err
	}
	b := &Builder{cfg: c, serialBIOS: c.SerialBIOS}
	if c.NetUserExtra != "" {
		b.userNet = append(b.userNet, c.NetUserExtra)
	}
	if c.Kernel != "" {
		b.kernel = DirectBoot{Kernel: c.Kernel, Initrd: c.Initrd, Append: c.Append}
	}
	for _, d := range c.Devices {
		if err := d.AddTo(b); err != nil {
			return nil, err
		}
	}
	if err := b.check(); err != nil {
		return nil, err
	}
	return b, nil
}

// Args returns QEMU's command line for c, starting with the binary. It is
// deterministic: Start resolves accel "auto" to kvm or tcg and forwards with
// host port 0 stay 0 (QEMU binds an ephemeral port that Start reads back).
// An unresolved "auto" becomes "-accel kvm -accel tcg" (QEMU's own fallback,
// which does not notice a KVM too slow to use). Dir must be set.
func (c Config) Args() ([]string, error) {
	c = c.withDefaults()
	if c.Dir == "" {
		return nil, usage("dir", "is empty; Args needs the directory of the sockets (Start makes one)")
	}
	b, err := c.plan(false)
	if err != nil {
		return nil, err
	}
	return b.argv(), nil
}

// argv renders the command line.
func (b *Builder) argv() []string {
	c := b.cfg
	mib, _ := ParseMemory(c.Memory)
	a := []string{c.Binary, "-name", c.Name, "-nodefaults", "-no-user-config", "-S", "-machine", c.Machine}
	if c.Accel == "auto" {
		a = append(a, "-accel", "kvm", "-accel", "tcg")
	} else {
		a = append(a, "-accel", c.Accel)
	}
	a = append(a, "-m", strconv.Itoa(mib), "-smp", strconv.Itoa(c.CPUs), "-display", "none", "-vga", "std")
	a = append(a, b.firmwareArgs()...)
	a = append(a, b.consoleArgs()...)
	if c.Net == "user" {
		a = append(a, "-netdev", b.userNetdev("n0"), "-device", "virtio-net-pci,netdev=n0,mac="+strings.ToLower(c.MAC))
	}
	a = append(a, b.nicArgs()...)
	a = append(a, b.mediaArgs()...)
	if order := b.bootOrder(); order != "" {
		a = append(a, "-boot", "order="+order)
	}
	a = append(a, b.args...)
	return append(a, c.QEMUArgs...)
}

// firmwareArgs are OVMF's flash drives and SeaBIOS's serial mirror.
func (b *Builder) firmwareArgs() []string {
	c := b.cfg
	var a []string
	if c.Firmware == "uefi" {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+qemuEscape(c.OVMFCode),
			"-drive", "if=pflash,format=raw,unit=1,file="+qemuEscape(filepath.Join(c.Dir, varsFile)),
		)
	}
	if b.serialBIOS {
		a = append(a, "-fw_cfg", "name=etc/sercon-port,file="+qemuEscape(filepath.Join(c.Dir, serconFile)))
	}
	return a
}

// consoleArgs are the serial console (QEMU's stdin and stdout, pipes to
// the console) and QMP's socket.
func (b *Builder) consoleArgs() []string {
	c := b.cfg
	ser := "stdio,id=ser0,signal=off"
	if c.SerialLog != "" {
		ser += ",logfile=" + qemuEscape(c.SerialLog) + ",logappend=on"
	}
	a := []string{"-chardev", ser}
	if c.Console == "virtio" {
		a = append(a, "-device", "virtio-serial-pci,id=vcon0", "-device", "virtconsole,bus=vcon0.0,chardev=ser0")
	} else {
		a = append(a, "-serial", "chardev:ser0")
	}
	a = append(a, "-qmp", "unix:"+qemuEscape(filepath.Join(c.Dir, qmpSocket))+",server=on,wait=off")
	if c.Agent {
		a = append(a, "-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=qga0,path="+qemuEscape(filepath.Join(c.Dir, AgentSocket))+",server=on,wait=off",
			"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0")
	}
	return a
}

// AgentSocket is the file name of the guest agent's socket in a VM's
// private directory (Config.Agent).
const AgentSocket = "qga.sock"

// mediaArgs are the CD-ROM, the disks and the directly booted kernel.
func (b *Builder) mediaArgs() []string {
	c := b.cfg
	var a []string
	if c.ISO != "" {
		a = append(a, "-drive", "file="+qemuEscape(c.ISO)+",format=raw,if=ide,index=2,media=cdrom,readonly=on")
	}
	for _, d := range c.Disks {
		opt := "file=" + qemuEscape(d.Path) + ",format=" + diskFormat(d) + ",if=" + d.Interface
		if d.Snapshot == nil || *d.Snapshot {
			opt += ",snapshot=on"
		}
		a = append(a, "-drive", opt)
	}
	if k := b.kernel; k.Kernel != "" {
		a = append(a, "-kernel", k.Kernel)
		if k.Initrd != "" {
			a = append(a, "-initrd", k.Initrd)
		}
		if line := b.appendLine(); line != "" {
			a = append(a, "-append", line)
		}
	}
	return a
}
