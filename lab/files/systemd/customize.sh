#!/bin/sh
# mmdebstrap --customize-hook for the vmscript lab "systemd" image.
# Usage: customize.sh ROOTDIR WORKDIR
# WORKDIR holds overlay/ (files copied over the root), modroot/lib/modules
# (the depmod'ed kernel modules) and ssh-key.pub (the build's client key).
set -eu
root="$1"
work="$2"

cp -a "$work/overlay/." "$root/"
mkdir -p "$root/lib/modules"
cp -a "$work/modroot/lib/modules/." "$root/lib/modules/"

# The poweroff/reboot/halt shims (lab.shutdown=confirm asks first).
for c in reboot halt; do ln -sf poweroff "$root/usr/local/sbin/$c"; done

# Users: root with an empty password (serial getty), nixos/nixos in sudo.
chroot "$root" passwd -d root
chroot "$root" useradd -m -s /bin/bash -G sudo nixos
echo 'nixos:nixos' | chroot "$root" chpasswd

# The build's SSH key for root and nixos, and as pre-nixos' root key.
install -d -m 700 "$root/root/.ssh"
install -m 600 "$work/ssh-key.pub" "$root/root/.ssh/authorized_keys"
chroot "$root" install -d -m 700 -o nixos -g nixos /home/nixos/.ssh
install -m 600 "$work/ssh-key.pub" "$root/home/nixos/.ssh/authorized_keys"
chroot "$root" chown nixos:nixos /home/nixos/.ssh/authorized_keys
install -d -m 755 "$root/etc/pre_nixos"
install -m 644 "$work/ssh-key.pub" "$root/etc/pre_nixos/root_key.pub"

echo lab >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	lab
::1	localhost ip6-localhost ip6-loopback
HOSTS
: >"$root/etc/fstab"

chroot "$root" systemctl enable systemd-networkd.service pre-nixos.service

# The kernel starts /init from the initramfs.
ln -sf /lib/systemd/systemd "$root/init"
