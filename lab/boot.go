package lab

import (
	"strings"

	"github.com/vmscript/vmscript/toolkit/qemu"
)

// DirectBoot is the image's kernel and initramfs booted directly, with the
// lab's default command line and extra words appended (knobs such as
// "lab.storage=missing"). It is a qemu.Device: a VM of this image is
// qemu.Config{…, Devices: []qemu.Device{img.DirectBoot()}}.
func (img *Image) DirectBoot(extra ...string) qemu.DirectBoot {
	line := img.Manifest.Append
	if more := strings.TrimSpace(strings.Join(extra, " ")); more != "" {
		line = strings.TrimSpace(line + " " + more)
	}
	return qemu.DirectBoot{Kernel: img.Files["vmlinuz"], Initrd: img.Files["initramfs"], Append: line}
}

// HasAgent reports whether the image runs qemu-guest-agent (the systemd
// image does; its unit starts when the guest agent's port appears).
func (img *Image) HasAgent() bool { return img.Manifest.Packages["qemu-guest-agent"] != "" }
