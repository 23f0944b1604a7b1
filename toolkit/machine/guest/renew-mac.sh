# renew-mac.sh IFACE MAC: give the guest's interface IFACE the address MAC
# and get it a new DHCP lease, for a fork on a LAN (a restored guest keeps
# the checkpoint's MAC in RAM). Exit status: that of the MAC change; the
# lease is best effort, the LAN's lease is the proof.
#
# - A link systemd-networkd manages needs nothing more: networkd stops its
#   DHCP client when the hardware address changes and starts it afresh when
#   the link comes back up. It is deliberately not poked over D-Bus:
#   `networkctl renew` landing between its OFFER and its REQUEST (systemd
#   252) moves the client to RENEWING with an address it never configured,
#   and it waits for T2, half an hour; `networkctl reconfigure` landing
#   after the ACK releases the fresh lease and starts over.
# - A busybox udhcpc running for IFACE (-i IFACE, --interface=IFACE, or no
#   -i at all for eth0) is killed with SIGKILL before the change, so that
#   it sends no RELEASE (that would name the checkpoint's MAC and free the
#   original VM's address), then started again with its own arguments
#   (kept \001-separated, so arguments with spaces survive), its output
#   appended where its standard output went. SIGUSR1 is not enough: it
#   renews the old lease, and two leases can merge in the kernel.
# - Otherwise a one-shot `udhcpc -n -q`, then dhclient. A dhclient already
#   running keeps the old MAC's lease: not handled.
iface=$1
mac=$2

change() {
	ip link set dev "$iface" down &&
		ip link set dev "$iface" address "$mac" &&
		ip link set dev "$iface" up
}

if networkctl list --no-legend "$iface" 2>/dev/null | grep -qv unmanaged; then
	change
	exit
fi

args=
out=/dev/null
for p in $(pidof udhcpc 2>/dev/null); do
	c=$(tr "\0" "\001" </proc/$p/cmdline 2>/dev/null) || continue
	case " $(printf %s "$c" | tr "\001" " ") " in
	*" -i $iface "* | *" -i$iface "* | *" --interface=$iface "* | *" --interface $iface "*) ;;
	*" -i"* | *" --interface"*) continue ;;
	*) [ "$iface" = eth0 ] || continue ;;
	esac
	o=$(readlink /proc/$p/fd/1 2>/dev/null)
	case "$o" in
	*" (deleted)") ;;
	/*) out=$o ;;
	esac
	kill -9 "$p" && args=$c
	break
done

change
rc=$?
if [ -n "$args" ]; then
	(
		set -f
		IFS=$(printf "\001")
		# shellcheck disable=SC2086 # split on \001 on purpose
		set -- $args
		"$@" </dev/null >>"$out" 2>&1 &
	)
elif [ $rc -eq 0 ]; then
	udhcpc -n -q -i "$iface" 2>/dev/null || dhclient "$iface" 2>/dev/null || true
fi
exit $rc
