package lan

import (
	"net"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The LAN is IPv4 only, but clients still ask for IPv6 routers: iPXE waits
// ~13 s for a Router Advertisement before its `dhcp` is done (its IPv4
// lease is long there by then), and Linux guests solicit too. The switch
// answers every Router Solicitation with a minimal advertisement from the
// gateway: router lifetime 0 (not a default router), no prefix, no M or O
// flag (no DHCPv6), only the gateway's link-layer address. A client's IPv6
// autoconfiguration then ends at once with its link-local address alone.

// routerSolicitation reports whether frame is an ICMPv6 Router
// Solicitation (without IPv6 extension headers, as clients send them), and
// returns its IPv6 source address.
func routerSolicitation(frame []byte) (src tcpip.Address, ok bool) {
	const ipv6Start = header.EthernetMinimumSize
	if len(frame) < ipv6Start+header.IPv6MinimumSize+header.ICMPv6HeaderSize ||
		header.Ethernet(frame).Type() != header.IPv6ProtocolNumber {
		return tcpip.Address{}, false
	}
	ip := header.IPv6(frame[ipv6Start:])
	if !ip.IsValid(len(ip)) || tcpip.TransportProtocolNumber(ip.NextHeader()) != header.ICMPv6ProtocolNumber || ip.HopLimit() != 255 {
		return tcpip.Address{}, false
	}
	icmp := header.ICMPv6(ip.Payload())
	if len(icmp) < header.ICMPv6HeaderSize || icmp.Type() != header.ICMPv6RouterSolicit || icmp.Code() != 0 {
		return tcpip.Address{}, false
	}
	return ip.SourceAddress(), true
}

// routerAdvert builds the gateway's answer to a solicitation from the
// client with link-layer address to and IPv6 address src: unicast to it, or
// to all nodes when it has no address yet (RFC 4861 6.2.6).
func routerAdvert(gwMAC, to net.HardwareAddr, src tcpip.Address) []byte {
	gwLink := tcpip.LinkAddress(gwMAC)
	from := header.LinkLocalAddr(gwLink)
	dst, dstMAC := src, tcpip.LinkAddress(to)
	if src == header.IPv6Any {
		dst = header.IPv6AllNodesMulticastAddress
		dstMAC = header.EthernetAddressFromMulticastIPv6Address(dst)
	}
	// The only option: Source Link-Layer Address (type 1, 8 bytes).
	const optLen = 8
	icmpLen := header.ICMPv6HeaderSize + header.NDPRAMinimumSize + optLen
	frame := make([]byte, header.EthernetMinimumSize+header.IPv6MinimumSize+icmpLen)
	header.Ethernet(frame).Encode(&header.EthernetFields{SrcAddr: gwLink, DstAddr: dstMAC, Type: header.IPv6ProtocolNumber})
	ip := header.IPv6(frame[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(icmpLen),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          255,
		SrcAddr:           from,
		DstAddr:           dst,
	})
	icmp := header.ICMPv6(ip.Payload())
	icmp.SetType(header.ICMPv6RouterAdvert)
	icmp.SetCode(0)
	ra := icmp[header.ICMPv6HeaderSize:]
	ra[0] = 64 // current hop limit advised; flags, lifetime, timers stay 0
	opt := ra[header.NDPRAMinimumSize:]
	opt[0], opt[1] = 1, 1 // Source Link-Layer Address, 1 × 8 bytes
	copy(opt[2:], gwMAC)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: from, Dst: dst}))
	return frame
}

// answerRouterSolicitation queues a Router Advertisement to port src when
// frame is a Router Solicitation, and records it.
func (l *LAN) answerRouterSolicitation(src *Port, frame []byte) {
	solicitor, ok := routerSolicitation(frame)
	if !ok {
		return
	}
	ra := routerAdvert(l.gwMAC, net.HardwareAddr(frame[6:12]), solicitor)
	l.capture(ra)
	src.enqueue(ra)
	l.event("router-advert", map[string]any{"port": src.name, "to": net.HardwareAddr(frame[6:12]).String()})
}
