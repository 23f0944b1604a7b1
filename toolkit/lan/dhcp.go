package lan

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vmscript/vmscript/toolkit/eventlog"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Message types as they appear in events, the DHCP log and scripts.
const (
	Discover = "DISCOVER"
	Offer    = "OFFER"
	Request  = "REQUEST"
	Ack      = "ACK"
	Nak      = "NAK"
	Release  = "RELEASE"
	Decline  = "DECLINE"
	Inform   = "INFORM"
)

// Event is one DHCP message, received ("in") or sent ("out").
type Event struct {
	// At is when the message was received or sent.
	At time.Time `json:"at"`
	// Dir is "in" (from a client) or "out" (the server's reply).
	Dir string `json:"dir"`
	// Type is DISCOVER, OFFER, REQUEST, ACK, NAK, RELEASE, DECLINE or
	// INFORM (or the number of an unknown type).
	Type string `json:"type"`
	// MAC is the client's hardware address.
	MAC string `json:"mac"`
	// XID is the transaction id, "0x1234abcd".
	XID string `json:"xid"`
	// Hostname is the client's host name option (12), if any.
	Hostname string `json:"hostname,omitempty"`
	// Requested is the address the client asked for (option 50 or ciaddr).
	Requested string `json:"requested,omitempty"`
	// Offered is the address in an OFFER or ACK (yiaddr).
	Offered string `json:"offered,omitempty"`
	// Bootfile is the boot file name of an OFFER or ACK (option 67) when a
	// netboot server is attached.
	Bootfile string `json:"bootfile,omitempty"`
	// Note says what the server did about it when that is not the obvious:
	// "not answered: DHCP paused", "NAK injected", "for server 10.0.3.9", …
	Note string `json:"note,omitempty"`
}

// String renders the event as one line of the DHCP log.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-3s %-8s mac=%s xid=%s", e.At.Format("15:04:05.000"), e.Dir, e.Type, e.MAC, e.XID)
	if e.Hostname != "" {
		fmt.Fprintf(&b, " hostname=%q", e.Hostname)
	}
	if e.Requested != "" {
		fmt.Fprintf(&b, " requested=%s", e.Requested)
	}
	if e.Offered != "" {
		fmt.Fprintf(&b, " offered=%s", e.Offered)
	}
	if e.Bootfile != "" {
		fmt.Fprintf(&b, " bootfile=%s", e.Bootfile)
	}
	if e.Note != "" {
		fmt.Fprintf(&b, " (%s)", e.Note)
	}
	return b.String()
}

// Lease is an address the server acknowledged.
type Lease struct {
	// IP is the leased address.
	IP netip.Addr `json:"ip"`
	// MAC is the client's hardware address.
	MAC string `json:"mac"`
	// Hostname is the client's host name option, if it sent one.
	Hostname string `json:"hostname"`
	// At is when the ACK was sent.
	At time.Time `json:"at"`
	// Expires is when the lease runs out unless renewed.
	Expires time.Time `json:"expires"`
}

// DHCP is the LAN's DHCP server: pool, static leases, PXE options, events,
// and fault injection (Pause, Delay, NAK) to reproduce "no lease".
type DHCP struct {
	lan       *LAN
	statics   map[string]netip.Addr
	dns       []net.IP
	poolFirst netip.Addr
	poolLast  netip.Addr

	srv *server4.Server
	log *os.File

	mu       sync.Mutex
	bindings map[string]netip.Addr // MAC → address offered or leased (stable)
	owners   map[netip.Addr]string
	declined map[netip.Addr]bool
	leases   map[string]Lease
	// events are every DHCP message in and out; each append wakes
	// WaitLease, and writes the DHCP log and the timeline (publish).
	events   *eventlog.Log[Event]
	paused   bool
	delay    time.Duration
	naks     map[string]bool
	next     net.IP
	bootfile string
	bootFn   func(m *dhcpv4.DHCPv4) (net.IP, string)
}

func newDHCP(l *LAN, statics map[string]netip.Addr, dns []net.IP) *DHCP {
	d := &DHCP{lan: l, statics: statics, dns: dns,
		bindings: map[string]netip.Addr{}, owners: map[netip.Addr]string{}, declined: map[netip.Addr]bool{},
		leases: map[string]Lease{}, naks: map[string]bool{}, events: eventlog.New[Event]()}
	d.events.Subscribe(d.publish)
	d.poolFirst = l.gw.Next()
	d.poolLast = l.broadcast().Prev()
	// Leave the low addresses for static assignments when there is room.
	if l.prefix.Bits() <= 24 {
		a := l.prefix.Addr()
		for i := 0; i < 100; i++ {
			a = a.Next()
		}
		d.poolFirst = a
	}
	for mac, ip := range statics {
		d.owners[ip] = mac
	}
	return d
}

func (d *DHCP) start() error {
	l := d.lan
	if l.run != nil {
		f, err := os.OpenFile(l.run.Path(l.name+".dhcp.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_TRUNC, 0o644)
		if err != nil {
			return vmerr.Wrap(vmerr.IO, err, "lan %s: dhcp log", l.name)
		}
		d.log = f
	}
	// Bound to 0.0.0.0:67: bound to the gateway address the endpoint never
	// sees a broadcast DISCOVER. Broadcast must be allowed for the replies.
	pc, err := l.udpEndpoint(67)
	if err != nil {
		return vmerr.Wrap(vmerr.IO, err, "lan %s: dhcp socket", l.name)
	}
	srv, err := server4.NewServer("", nil, d.handle, server4.WithConn(pc))
	if err != nil {
		pc.Close()
		return vmerr.Wrap(vmerr.IO, err, "lan %s: dhcp server", l.name)
	}
	d.srv = srv
	l.wg.Add(1)
	go func() { defer l.wg.Done(); srv.Serve() }()
	return nil
}

func (d *DHCP) stop() {
	if d.srv != nil {
		d.srv.Close()
	}
	d.mu.Lock()
	if d.log != nil {
		d.log.Close()
		d.log = nil
	}
	d.mu.Unlock()
}

// record appends an event: it wakes the waiters, and publish writes it.
func (d *DHCP) record(ev Event) { d.events.Append(ev) }

// publish writes an event to the DHCP log and, as the same record the
// script sees, to the timeline.
func (d *DHCP) publish(_ int, ev Event) {
	d.mu.Lock()
	if d.log != nil {
		d.log.Write([]byte(ev.String() + "\n"))
	}
	d.mu.Unlock()
	d.lan.event("dhcp", record.Map(ev))
}

// Pause stops answering: messages are still received and logged ("not
// answered: DHCP paused"), as with a server that is down.
func (d *DHCP) Pause() {
	d.mu.Lock()
	d.paused = true
	d.mu.Unlock()
	d.lan.event("dhcp-fault", map[string]any{"fault": "pause"})
}

// Resume answers again after Pause.
func (d *DHCP) Resume() {
	d.mu.Lock()
	d.paused = false
	d.mu.Unlock()
	d.lan.event("dhcp-fault", map[string]any{"fault": "resume"})
}

// Delay holds every reply for dur before sending it (0: no delay).
func (d *DHCP) Delay(dur time.Duration) {
	d.mu.Lock()
	d.delay = dur
	d.mu.Unlock()
	d.lan.event("dhcp-fault", map[string]any{"fault": "delay", "ms": dur.Milliseconds()})
}

// NAK answers every REQUEST from mac with a NAK until ClearNAK(mac).
func (d *DHCP) NAK(mac string) error {
	m, err := NormalizeMAC(mac)
	if err != nil {
		return usage("mac", "%v", err)
	}
	d.mu.Lock()
	d.naks[m] = true
	d.mu.Unlock()
	d.lan.event("dhcp-fault", map[string]any{"fault": "nak", "mac": m})
	return nil
}

// ClearNAK ends NAK(mac).
func (d *DHCP) ClearNAK(mac string) error {
	m, err := NormalizeMAC(mac)
	if err != nil {
		return usage("mac", "%v", err)
	}
	d.mu.Lock()
	delete(d.naks, m)
	d.mu.Unlock()
	d.lan.event("dhcp-fault", map[string]any{"fault": "clear-nak", "mac": m})
	return nil
}

// SetBoot sets the PXE options of OFFER and ACK: next-server (siaddr and
// option 66) and the boot file name (option 67). An empty bootfile removes
// them. A netboot server attached to the LAN calls it.
func (d *DHCP) SetBoot(nextServer net.IP, bootfile string) {
	d.mu.Lock()
	d.next, d.bootfile = nextServer, bootfile
	d.mu.Unlock()
	d.lan.event("dhcp-boot", map[string]any{"next_server": nextServer.String(), "bootfile": bootfile})
}

// SetBootFunc lets a netboot server choose the PXE options per request (for
// example a bootfile for the firmware's PXE ROM and an HTTP URL for iPXE,
// whose requests carry user class "iPXE"). It overrides SetBoot; nil
// removes it.
func (d *DHCP) SetBootFunc(fn func(req *dhcpv4.DHCPv4) (nextServer net.IP, bootfile string)) {
	d.mu.Lock()
	d.bootFn = fn
	d.mu.Unlock()
}

// Booting reports whether a boot function (SetBootFunc) is set: a netboot
// server is attached to the LAN.
func (d *DHCP) Booting() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bootFn != nil
}

// Events returns the DHCP events, all of them for mac "" or those of one
// client.
func (d *DHCP) Events(mac string) []Event {
	if mac != "" {
		if m, err := NormalizeMAC(mac); err == nil {
			mac = m
		}
	}
	var out []Event
	for _, e := range d.events.All() {
		if mac == "" || e.MAC == mac {
			out = append(out, e)
		}
	}
	return out
}

// Leases returns the current leases ordered by address.
func (d *DHCP) Leases() []Lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Lease, 0, len(d.leases))
	for _, l := range d.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

// Lease returns mac's current lease, if it holds one.
func (d *DHCP) Lease(mac string) (Lease, bool) {
	m, err := NormalizeMAC(mac)
	if err != nil {
		return Lease{}, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.leases[m]
	return l, ok
}

// WaitLease waits until mac holds a lease (at once if it already does) and
// returns it. When ctx ends first the error has kind "timeout" (or
// "cancelled") and says what the server saw from that MAC: nothing, DISCOVERs
// only, an OFFER that was never requested, a NAK, …; its context carries
// "mac", "seen" (a summary) and "events" (the DHCP log lines of that MAC).
func (d *DHCP) WaitLease(ctx context.Context, mac string) (Lease, error) {
	m, err := NormalizeMAC(mac)
	if err != nil {
		return Lease{}, usage("mac", "%v", err)
	}
	t0 := time.Now()
	for {
		ch := d.events.Changed() // before the look: a lease made after it wakes us
		d.mu.Lock()
		l, ok := d.leases[m]
		d.mu.Unlock()
		if ok {
			return l, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			kind := vmerr.DoneKind(ctx)
			evs := d.Events(m)
			seen := describeSeen(evs, d.lan.cfg.DHCP)
			lines := make([]string, len(evs))
			for i, e := range evs {
				lines[i] = e.String()
			}
			if len(lines) > 20 {
				lines = lines[len(lines)-20:]
			}
			return Lease{}, vmerr.New(kind, "lan %q: no DHCP lease for %s after %.1fs: %s", d.lan.name, m, time.Since(t0).Seconds(), seen).
				With("mac", m).With("lan", d.lan.name).With("seen", seen).With("events", lines).
				With("waited_s", time.Since(t0).Seconds())
		}
	}
}

// describeSeen summarizes a client's DHCP conversation for a timeout error.
// A NAK sends the client back to DISCOVER, so after saying how many NAKs
// there were it describes what came after the last one: that is where the
// client stopped.
func describeSeen(evs []Event, enabled bool) string {
	if !enabled {
		return "the LAN has no DHCP server (dhcp = false)"
	}
	if len(evs) == 0 {
		return "nothing was seen from that MAC (no DISCOVER: the client never asked)"
	}
	lastNAK, naks := -1, 0
	var requested, nakFor, nakNote string
	for i, e := range evs {
		switch {
		case e.Dir == "in" && e.Type == Request:
			requested = e.Requested
		case e.Dir == "out" && e.Type == Nak:
			lastNAK, nakFor, nakNote = i, requested, e.Note
			naks++
		}
	}
	if naks == 0 {
		return describeConversation(evs)
	}
	s := fmt.Sprintf("its REQUEST (for %s) was answered with NAK %d time(s)", nakFor, naks)
	if nakNote != "" {
		s += " (" + nakNote + ")"
	}
	if rest := evs[lastNAK+1:]; len(rest) > 0 {
		return s + "; after the last NAK: " + describeConversation(rest)
	}
	return s + "; nothing came from it after the last NAK"
}

// describeConversation names where a conversation without NAKs stopped.
func describeConversation(evs []Event) string {
	count := map[string]int{}
	var lastOffer, lastReq string
	for _, e := range evs {
		count[e.Dir+" "+e.Type]++
		switch {
		case e.Dir == "out" && e.Type == Offer:
			lastOffer = e.Offered
		case e.Dir == "in" && e.Type == Request:
			lastReq = e.Requested
		}
	}
	switch {
	case count["in DISCOVER"] > 0 && count["out OFFER"] == 0:
		note := ""
		for _, e := range evs {
			if e.Note != "" {
				note = " (" + e.Note + ")"
			}
		}
		return fmt.Sprintf("DISCOVER only: %d DISCOVER(s), none answered%s", count["in DISCOVER"], note)
	case count["out OFFER"] > 0 && count["in REQUEST"] == 0:
		return fmt.Sprintf("OFFER not requested: %d DISCOVER(s), %d OFFER(s) of %s, but no REQUEST came back", count["in DISCOVER"], count["out OFFER"], lastOffer)
	case count["in REQUEST"] > 0 && count["out ACK"] == 0:
		return fmt.Sprintf("%d REQUEST(s) (for %s), none acknowledged", count["in REQUEST"], lastReq)
	case count["in RELEASE"] > 0:
		return "the client released its lease"
	}
	parts := make([]string, 0, len(count))
	for k, n := range count {
		parts = append(parts, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(parts)
	return "seen: " + strings.Join(parts, ", ")
}

func typeName(t dhcpv4.MessageType) string {
	switch t {
	case dhcpv4.MessageTypeDiscover:
		return Discover
	case dhcpv4.MessageTypeOffer:
		return Offer
	case dhcpv4.MessageTypeRequest:
		return Request
	case dhcpv4.MessageTypeAck:
		return Ack
	case dhcpv4.MessageTypeNak:
		return Nak
	case dhcpv4.MessageTypeRelease:
		return Release
	case dhcpv4.MessageTypeDecline:
		return Decline
	case dhcpv4.MessageTypeInform:
		return Inform
	}
	return fmt.Sprintf("TYPE-%d", uint8(t))
}

// requested returns the address a client asks for: option 50, else ciaddr.
func requested(m *dhcpv4.DHCPv4) netip.Addr {
	ip := m.RequestedIPAddress()
	if ip == nil || ip.IsUnspecified() {
		ip = m.ClientIPAddr
	}
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// handle serves one message (server4 calls it in a goroutine of its own).
func (d *DHCP) handle(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	if m.OpCode != dhcpv4.OpcodeBootRequest || len(m.ClientHWAddr) != 6 {
		return
	}
	in := inEvent(m)
	d.mu.Lock()
	paused, delay, nak := d.paused, d.delay, d.naks[in.MAC]
	d.mu.Unlock()
	if sid := m.ServerIdentifier(); sid != nil && !sid.IsUnspecified() && !sid.Equal(d.gwIP()) && in.Type != Inform {
		in.Note = "for server " + sid.String() + ": ignored"
		d.record(in)
		return
	}
	if paused {
		in.Note = "not answered: DHCP paused"
		d.record(in)
		return
	}
	out := Event{Dir: "out", MAC: in.MAC, XID: in.XID, Hostname: in.Hostname}
	reply, answered, err := d.answer(m, &in, &out, nak)
	if !answered {
		return
	}
	if err != nil || reply == nil {
		d.lan.event("dhcp-error", map[string]any{"mac": in.MAC, "error": fmt.Sprint(err)})
		return
	}
	d.send(conn, peer, reply, in, out, delay)
}

// inEvent is the record of a client's message.
func inEvent(m *dhcpv4.DHCPv4) Event {
	id := m.TransactionID
	in := Event{At: time.Now(), Dir: "in", Type: typeName(m.MessageType()), MAC: m.ClientHWAddr.String(),
		XID:      "0x" + fmt.Sprintf("%08x", uint32(id[0])<<24|uint32(id[1])<<16|uint32(id[2])<<8|uint32(id[3])),
		Hostname: m.HostName()}
	if r := requested(m); r.IsValid() {
		in.Requested = r.String()
	}
	return in
}

func (d *DHCP) gwIP() net.IP { return net.IP(d.lan.gw.AsSlice()) }

// answer records the client's message and builds the reply to it (nil
// and not answered for a message that gets none).
func (d *DHCP) answer(m *dhcpv4.DHCPv4, in, out *Event, nak bool) (reply *dhcpv4.DHCPv4, answered bool, err error) {
	switch in.Type {
	case Discover:
		ip, why, reclaimed := d.offer(in.MAC, requested(m), d.lan.presentMACs)
		if !ip.IsValid() {
			in.Note = "not answered: " + why
			d.record(*in)
			return nil, false, nil
		}
		d.record(*in)
		out.Type, out.Offered = Offer, ip.String()
		if reclaimed != "" {
			out.Note = "pool full: reclaimed from " + reclaimed + ", which left the LAN"
		}
		reply, err = d.reply(m, dhcpv4.MessageTypeOffer, ip)
		return reply, true, err
	case Request:
		reply, err = d.answerRequest(m, in, out, nak)
		return reply, true, err
	case Release:
		d.release(in.MAC)
	case Decline:
		d.decline(in.MAC, requested(m))
	case Inform:
		d.record(*in)
		out.Type = Ack
		reply, err = d.reply(m, dhcpv4.MessageTypeAck, netip.Addr{})
		return reply, true, err
	default:
		in.Note = "ignored"
	}
	d.record(*in)
	return nil, false, nil
}

// answerRequest answers a REQUEST: a NAK when one is injected or the
// address cannot be leased, else an ACK.
func (d *DHCP) answerRequest(m *dhcpv4.DHCPv4, in, out *Event, nak bool) (*dhcpv4.DHCPv4, error) {
	nakReply := func(why string) (*dhcpv4.DHCPv4, error) {
		out.Type, out.Note = Nak, why
		return dhcpv4.NewReplyFromRequest(m, dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
			dhcpv4.WithServerIP(nil), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(d.gwIP())),
			dhcpv4.WithOption(dhcpv4.OptMessage(why)))
	}
	if nak {
		in.Note = "NAK injected"
		d.record(*in)
		r, err := nakReply("NAK injected by vmscript")
		out.Note = "NAK injected"
		return r, err
	}
	lease, why := d.ack(in.MAC, requested(m))
	d.record(*in)
	if !lease.IsValid() {
		return nakReply(why)
	}
	out.Type, out.Offered = Ack, lease.String()
	return d.reply(m, dhcpv4.MessageTypeAck, lease)
}

// send holds the reply for the injected delay, commits an ACK's lease,
// records the reply (before sending: the client's answer to it must not be
// logged first) and sends it; a NAK is broadcast.
func (d *DHCP) send(conn net.PacketConn, peer net.Addr, reply *dhcpv4.DHCPv4, in, out Event, delay time.Duration) {
	if file := reply.BootFileNameOption(); file != "" && out.Type != Nak {
		out.Bootfile = file
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-d.lan.ctx.Done():
			return
		}
		out.Note = strings.TrimPrefix(out.Note+"; delayed "+delay.String(), "; ")
	}
	dst := peer
	if out.Type == Nak {
		dst = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	}
	out.At = time.Now()
	if in.Type == Request && out.Type == Ack {
		ip, _ := netip.ParseAddr(out.Offered)
		d.commit(out.MAC, ip, in.Hostname, out.At)
	}
	d.record(out)
	if _, err := conn.WriteTo(reply.ToBytes(), dst); err != nil {
		d.lan.event("dhcp-error", map[string]any{"mac": out.MAC, "error": err.Error(), "type": out.Type})
	}
}

// reply builds an OFFER or ACK with the LAN's options; ip is the yiaddr
// (invalid for INFORM).
func (d *DHCP) reply(req *dhcpv4.DHCPv4, t dhcpv4.MessageType, ip netip.Addr) (*dhcpv4.DHCPv4, error) {
	l := d.lan
	gw := net.IP(l.gw.AsSlice())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithServerIP(nil),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)),
		dhcpv4.WithNetmask(net.CIDRMask(l.prefix.Bits(), 32)),
		dhcpv4.WithOption(dhcpv4.OptBroadcastAddress(net.IP(l.broadcast().AsSlice()))),
		// iPXE: do not wait for a second (proxy) DHCP server.
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{176, 1, 1}),
	}
	if ip.IsValid() {
		mods = append(mods, dhcpv4.WithYourIP(net.IP(ip.AsSlice())),
			dhcpv4.WithLeaseTime(uint32(l.cfg.LeaseTime/time.Second)))
	}
	if l.cfg.NAT {
		mods = append(mods, dhcpv4.WithRouter(gw))
	}
	if len(d.dns) > 0 {
		mods = append(mods, dhcpv4.WithDNS(d.dns...))
	}
	d.mu.Lock()
	next, file, fn := d.next, d.bootfile, d.bootFn
	d.mu.Unlock()
	if fn != nil {
		next, file = fn(req)
	}
	if file != "" {
		if next == nil {
			next = gw
		}
		mods = append(mods, dhcpv4.WithServerIP(next),
			dhcpv4.WithOption(dhcpv4.OptTFTPServerName(next.String())),
			dhcpv4.WithOption(dhcpv4.OptBootFileName(file)))
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

func (d *DHCP) inPool(ip netip.Addr) bool {
	return ip.IsValid() && ip.Compare(d.poolFirst) >= 0 && ip.Compare(d.poolLast) <= 0
}

// offer picks mac's address: its static one, its binding, the one it asks
// for when free, else the lowest free one in the pool. When the pool is
// full, the lowest address bound to a MAC that is not on the switch any
// more (present, asked only then) is reclaimed — a script that quits many
// forks must not run the pool dry — and reclaimed names that MAC. (The
// switch's lock is never held while d.mu is taken, so present may lock it.)
func (d *DHCP) offer(mac string, want netip.Addr, present func() map[string]bool) (ip netip.Addr, why, reclaimed string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ip, ok := d.statics[mac]; ok {
		return ip, "", ""
	}
	if ip, ok := d.bindings[mac]; ok && !d.declined[ip] {
		return ip, "", ""
	}
	free := func(ip netip.Addr) bool {
		o, taken := d.owners[ip]
		return d.inPool(ip) && !d.declined[ip] && (!taken || o == mac)
	}
	ip = want
	if !free(ip) {
		ip = netip.Addr{}
		for a := d.poolFirst; a.Compare(d.poolLast) <= 0; a = a.Next() {
			if free(a) {
				ip = a
				break
			}
		}
	}
	if !ip.IsValid() {
		on := present()
		for a := d.poolFirst; a.Compare(d.poolLast) <= 0; a = a.Next() {
			o := d.owners[a]
			if _, static := d.statics[o]; static || d.declined[a] || on[o] {
				continue
			}
			delete(d.bindings, o)
			delete(d.leases, o)
			ip, reclaimed = a, o
			break
		}
	}
	if !ip.IsValid() {
		return ip, "pool exhausted", ""
	}
	d.bindings[mac] = ip
	d.owners[ip] = mac
	return ip, "", reclaimed
}

// ack acknowledges a REQUEST for want, or says why not.
func (d *DHCP) ack(mac string, want netip.Addr) (netip.Addr, string) {
	if !want.IsValid() {
		return netip.Addr{}, "REQUEST names no address"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if ip, ok := d.statics[mac]; ok && ip != want {
		return netip.Addr{}, fmt.Sprintf("%s is not %s's static address %s", want, mac, ip)
	}
	if _, static := d.statics[mac]; !static {
		if !d.inPool(want) {
			return netip.Addr{}, fmt.Sprintf("%s is not in the pool %s-%s", want, d.poolFirst, d.poolLast)
		}
		if o, taken := d.owners[want]; taken && o != mac {
			return netip.Addr{}, fmt.Sprintf("%s belongs to %s", want, o)
		}
		if d.declined[want] {
			return netip.Addr{}, fmt.Sprintf("%s was declined", want)
		}
		if old, ok := d.bindings[mac]; ok && old != want {
			delete(d.owners, old)
		}
		d.bindings[mac] = want
		d.owners[want] = mac
	}
	return want, ""
}

// commit records mac's lease once its ACK is sent.
func (d *DHCP) commit(mac string, ip netip.Addr, hostname string, at time.Time) {
	d.mu.Lock()
	d.leases[mac] = Lease{IP: ip, MAC: mac, Hostname: hostname, At: at, Expires: at.Add(d.lan.cfg.LeaseTime)}
	d.mu.Unlock()
}

func (d *DHCP) release(mac string) {
	d.mu.Lock()
	delete(d.leases, mac)
	d.mu.Unlock()
}

func (d *DHCP) decline(mac string, ip netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.leases, mac)
	if ip.IsValid() {
		if _, static := d.statics[mac]; !static {
			d.declined[ip] = true
			if d.bindings[mac] == ip {
				delete(d.bindings, mac)
			}
		}
	}
}

// Record is the event as vmscript reports it (to Lua, the timeline): its
// fields and its line in the DHCP log.
func (e Event) Record() any {
	type fields Event
	return struct {
		fields
		Line string `json:"line"`
	}{fields(e), e.String()}
}
