package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// files makes empty files in a temp dir and returns the dir.
func files(t *testing.T, names ...string) string {
	t.Helper()
	d := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(d, n), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestArgs(t *testing.T) {
	d := files(t, "a.iso", "vmlinuz", "initrd.gz", "disk.raw", "disk,with,commas.img")
	qcow := filepath.Join(d, "disk.img")
	os.WriteFile(qcow, []byte("QFI\xfb\x00\x00\x00\x03"), 0o644)
	no := false
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"defaults", Config{Dir: "/tmp/vms-x", Accel: "tcg"},
			"qemu-system-x86_64 -name vm -nodefaults -no-user-config -S -machine pc -accel tcg -m 1024 -smp 1 -display none -vga std " +
				"-chardev stdio,id=ser0,signal=off -serial chardev:ser0 " +
				"-qmp unix:/tmp/vms-x/qmp.sock,server=on,wait=off " +
				"-netdev user,id=n0 -device virtio-net-pci,netdev=n0,mac=" + DeriveMAC("vm")},
		{"auto accel, iso boot, forwards, extra", Config{Name: "base", Dir: "/tmp/vms-x", Memory: "2G", CPUs: 2, ISO: d + "/a.iso", Boot: "d",
			Forwards:     []Forward{{GuestPort: 22}, {Proto: "udp", HostAddr: "127.0.0.2", HostPort: 5353, GuestPort: 53}},
			NetUserExtra: "bootfile=tftp://10.0.2.2:6969/pxelinux.0", MAC: "52:54:00:AA:bb:cc",
			QEMUArgs: []string{"-no-reboot"}},
			"qemu-system-x86_64 -name base -nodefaults -no-user-config -S -machine pc -accel kvm -accel tcg -m 2048 -smp 2 -display none -vga std " +
				"-chardev stdio,id=ser0,signal=off -serial chardev:ser0 " +
				"-qmp unix:/tmp/vms-x/qmp.sock,server=on,wait=off " +
				"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:0-:22,hostfwd=udp:127.0.0.2:5353-:53,bootfile=tftp://10.0.2.2:6969/pxelinux.0 " +
				"-device virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc " +
				"-drive file=$D/a.iso,format=raw,if=ide,index=2,media=cdrom,readonly=on -boot order=d -no-reboot"},
		{"kernel, uefi, disks, no net", Config{Name: "k", Dir: "/tmp/vms-k", Accel: "kvm", Firmware: "uefi", Machine: "q35", Net: "none",
			Kernel: d + "/vmlinuz", Initrd: d + "/initrd.gz", Append: "console=ttyS0 quiet",
			Disks: []Disk{{Path: d + "/disk.raw"}, {Path: qcow, Interface: "ide", Snapshot: &no}, {Path: d + "/disk,with,commas.img", Format: "raw"}}},
			"qemu-system-x86_64 -name k -nodefaults -no-user-config -S -machine q35 -accel kvm -m 1024 -smp 1 -display none -vga std " +
				"-drive if=pflash,format=raw,unit=0,readonly=on,file=" + DefaultOVMFCode + " " +
				"-drive if=pflash,format=raw,unit=1,file=/tmp/vms-k/OVMF_VARS.fd " +
				"-chardev stdio,id=ser0,signal=off -serial chardev:ser0 " +
				"-qmp unix:/tmp/vms-k/qmp.sock,server=on,wait=off " +
				"-drive file=$D/disk.raw,format=raw,if=virtio,snapshot=on " +
				"-drive file=$D/disk.img,format=qcow2,if=ide " +
				"-drive file=$D/disk,,with,,commas.img,format=raw,if=virtio,snapshot=on " +
				"-kernel $D/vmlinuz -initrd $D/initrd.gz -append console=ttyS0 quiet"},
		{"netboot with sercon and serial log", Config{Name: "pxe", Dir: "/tmp/vms-p", Accel: "tcg", Boot: "n", SerialBIOS: true, SerialLog: "/tmp/pxe.serial"},
			"qemu-system-x86_64 -name pxe -nodefaults -no-user-config -S -machine pc -accel tcg -m 1024 -smp 1 -display none -vga std " +
				"-fw_cfg name=etc/sercon-port,file=/tmp/vms-p/sercon-port.bin " +
				"-chardev stdio,id=ser0,signal=off,logfile=/tmp/pxe.serial,logappend=on -serial chardev:ser0 " +
				"-qmp unix:/tmp/vms-p/qmp.sock,server=on,wait=off " +
				"-netdev user,id=n0 -device virtio-net-pci,netdev=n0,mac=" + DeriveMAC("pxe") + " -boot order=n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.Firmware == "uefi" {
				if _, err := os.Stat(DefaultOVMFCode); err != nil {
					t.Skip("no OVMF")
				}
			}
			a, err := tt.cfg.Args()
			if err != nil {
				t.Fatal(err)
			}
			got := strings.ReplaceAll(strings.Join(a, " "), d, "$D")
			if got != tt.want {
				t.Errorf("Args:\n got %s\nwant %s", got, tt.want)
			}
			// Deterministic.
			b, _ := tt.cfg.Args()
			if strings.Join(a, "\x00") != strings.Join(b, "\x00") {
				t.Error("Args differs between calls")
			}
		})
	}
}

func TestValidateNamesTheOption(t *testing.T) {
	d := files(t, "a.iso", "vmlinuz", "disk.img")
	tests := []struct {
		cfg    Config
		option string
		kind   string
	}{
		{Config{Name: "a b"}, "name", vmerr.Usage},
		{Config{Memory: "1X"}, "memory", vmerr.Usage},
		{Config{Memory: "4"}, "memory", vmerr.Usage},
		{Config{CPUs: -1}, "cpus", vmerr.Usage},
		{Config{Accel: "hvf"}, "accel", vmerr.Usage},
		{Config{Firmware: "coreboot"}, "firmware", vmerr.Usage},
		{Config{Firmware: "uefi", Memory: "512M"}, "memory", vmerr.Usage},
		{Config{Firmware: "uefi", OVMFCode: d + "/nope.fd"}, "ovmf_code", vmerr.NotFound},
		{Config{Firmware: "uefi", SerialBIOS: true}, "serial_bios", vmerr.Usage},
		{Config{ISO: d + "/missing.iso"}, "iso", vmerr.NotFound},
		{Config{Kernel: d + "/missing"}, "kernel", vmerr.NotFound},
		{Config{Initrd: d + "/vmlinuz"}, "initrd", vmerr.Usage},
		{Config{Append: "console=ttyS0"}, "append", vmerr.Usage},
		{Config{Disks: []Disk{{Path: d + "/disk.img"}, {Path: d + "/gone.img"}}}, "disks[2].path", vmerr.NotFound},
		{Config{Disks: []Disk{{Path: d}}}, "disks[1].path", vmerr.NotFound},
		{Config{Disks: []Disk{{Path: d + "/disk.img", Interface: "scsi"}}}, "disks[1].interface", vmerr.Usage},
		{Config{Disks: []Disk{{Path: d + "/disk.img", Format: "Q C"}}}, "disks[1].format", vmerr.Usage},
		{Config{Net: "tap"}, "net", vmerr.Usage},
		{Config{Net: "none", Forwards: []Forward{{GuestPort: 22}}}, "forwards", vmerr.Usage},
		{Config{Net: "none", MAC: "52:54:00:00:00:01"}, "mac", vmerr.Usage},
		{Config{MAC: "52:54:00:00:00"}, "mac", vmerr.Usage},
		{Config{MAC: "53:54:00:00:00:01"}, "mac", vmerr.Usage},
		{Config{Forwards: []Forward{{Proto: "sctp", GuestPort: 22}}}, "forwards[1].proto", vmerr.Usage},
		{Config{Forwards: []Forward{{GuestPort: 0}}}, "forwards[1].guest_port", vmerr.Usage},
		{Config{Forwards: []Forward{{GuestPort: 22, HostAddr: "localhost"}}}, "forwards[1].host_addr", vmerr.Usage},
		{Config{Boot: "d"}, "boot", vmerr.Usage},
		{Config{Boot: "c"}, "boot", vmerr.Usage},
		{Config{Boot: "x", ISO: d + "/a.iso"}, "boot", vmerr.Usage},
		{Config{Boot: "n", Net: "none"}, "boot", vmerr.Usage},
		{Config{Boot: "d", ISO: d + "/a.iso", Kernel: d + "/vmlinuz"}, "boot", vmerr.Usage},
		{Config{Dir: "/tmp/" + strings.Repeat("d", 100)}, "dir", vmerr.Usage},
		{Config{Binary: "qemu-system-nonexistent-arch"}, "binary", vmerr.NotFound},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if err == nil {
			t.Errorf("%+v: no error", tt.cfg)
			continue
		}
		if !strings.HasPrefix(err.Error(), "qemu: "+tt.option) {
			t.Errorf("%+v: error %q does not start with the option %q", tt.cfg, err, tt.option)
		}
		if k := vmerr.KindOf(err); k != tt.kind {
			t.Errorf("%+v: kind %q, want %q (%v)", tt.cfg, k, tt.kind, err)
		}
	}
	// Fine combinations: an ISO with a direct kernel (an installer reading
	// its CD), a kernel alone, a netboot.
	if _, err := (Config{Dir: "/tmp/x", ISO: d + "/a.iso", Kernel: d + "/vmlinuz", Append: "x"}).Args(); err != nil {
		t.Errorf("iso+kernel: %v", err)
	}
	if _, err := (Config{Dir: "/tmp/x", Boot: "n", Memory: "512"}).Args(); err != nil {
		t.Errorf("netboot: %v", err)
	}
}

func TestDeriveMAC(t *testing.T) {
	a, b := DeriveMAC("baseline"), DeriveMAC("baseline")
	if a != b {
		t.Errorf("unstable: %s %s", a, b)
	}
	if a == DeriveMAC("candidate") {
		t.Error("two names give one MAC")
	}
	if !macRE.MatchString(a) || !strings.HasPrefix(a, "52:54:00:") {
		t.Errorf("bad MAC %s", a)
	}
	// Pinned, so that a change of the derivation is noticed (leases and
	// pcaps of earlier runs name these addresses).
	if a != "52:54:00:8b:a8:49" || DeriveMAC("vm") != "52:54:00:5b:ce:98" {
		t.Errorf("DeriveMAC changed: baseline %s, vm %s", a, DeriveMAC("vm"))
	}
}

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int{"1G": 1024, "512M": 512, "2048": 2048, "1GiB": 1024, "512m": 512, "1048576K": 1024, "1T": 1 << 20} {
		got, err := ParseMemory(in)
		if err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "1X", "-1G", "1.5G", "8", "G"} {
		if _, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q): no error", in)
		}
	}
}

func TestParseKeys(t *testing.T) {
	got, err := ParseKeys("Ctrl-Alt-Del")
	if err != nil || strings.Join(got, ",") != "ctrl,alt,delete" {
		t.Errorf("got %v %v", got, err)
	}
	if got, _ := ParseKeys("shift-minus"); strings.Join(got, ",") != "shift,minus" {
		t.Errorf("got %v", got)
	}
	if _, err := ParseKeys("ctrl--"); !vmerr.Is(err, vmerr.Usage) {
		t.Errorf("ctrl--: %v", err)
	}
}

func TestMatchForwards(t *testing.T) {
	text := "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
		"  TCP[HOST_FORWARD]   8               * 44091       10.0.2.15    22     0     0\r\n" +
		"  TCP[HOST_FORWARD]  10       127.0.0.1  2222       10.0.2.15    22     0     0\r\n" +
		"  TCP[HOST_FORWARD]  11       127.0.0.1 40000       10.0.2.15    22     0     0\r\n" +
		"  UDP[HOST_FORWARD]   9       127.0.0.1 36724       10.0.2.15    53     0     0\r\n"
	fs := []Forward{
		{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 0, GuestPort: 22},
		{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: 2222, GuestPort: 22},
		{Proto: "udp", HostAddr: "127.0.0.1", GuestPort: 53},
		{Proto: "tcp", HostAddr: "0.0.0.0", GuestPort: 22},
	}
	got, err := matchForwards(fs, text)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].HostPort != 40000 || got[1].HostPort != 2222 || got[2].HostPort != 36724 || got[3].HostPort != 44091 {
		t.Errorf("got %+v", got)
	}
	if _, err := matchForwards([]Forward{{Proto: "tcp", HostAddr: "127.0.0.1", GuestPort: 80}}, text); err == nil {
		t.Error("missing forward: no error")
	}
}
