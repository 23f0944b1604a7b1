package luahost

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// defaultRenewTimeout bounds vm:renew_lease's wait for the new lease.
const defaultRenewTimeout = time.Minute

// etherLinkRE picks "2: lan: <…> … link/ether 52:54:00:…" lines of `ip -o link`.
var etherLinkRE = regexp.MustCompile(`(?m)^\d+:\s+([^:@\s]+)[:@].*\slink/ether\s+([0-9a-f:]{17})`)

func init() {
	ExtendClass("vm", Func{
		Name: "renew_lease", Params: "opts?: {shell?: vmscript.Shell, iface?: string, timeout?: duration}", Returns: "{ip: string, mac: string, iface: string, hostname: string, at: string, expires: string}",
		Doc: "On a fork on a vmscript LAN: give the guest's interface the fork's own MAC (a restored guest keeps the checkpoint's) through shell (default: the shell at the console's prompt) and wait until the LAN leased it an address and the guest carries it (default 1 min).",
		Fn:  func(h *Host, L *lua.LState) int { return h.renewLease(L) },
	})
}

func (h *Host) renewLease(L *lua.LState) int {
	const fn = "vm:renew_lease"
	v := h.checkVM(L)
	o := h.Opts(L, 2, fn)
	var sh *shell.Shell
	if given := o.Get("shell"); given != lua.LNil {
		ls, ok := h.objectOf(L, given, "shell").(*luaShell)
		if !ok {
			o.fail("shell", "must be a shell (from vm:login or vm:shell), got %s", given.Type())
		}
		sh = ls.s
	}
	iface := o.String("iface", "")
	timeout := o.Duration("timeout", defaultRenewTimeout)
	o.Done()
	ports := h.vmLANPorts(v.m.VM.Name())
	if len(ports) == 0 {
		h.Errorf(L, vmerr.Usage, "%s: %s has no NIC on a vmscript LAN (fork it with net = lan)", fn, v.m.VM.Name())
	}
	port := ports[0]
	ctx, cancel := h.withTimeout(timeout)
	defer cancel()
	if sh == nil {
		// A fork of a VM checkpointed at a shell prompt resumes at it.
		var err error
		if sh, err = shell.Attach(ctx, v.m.Console, shell.Options{Run: h.opt.Run, Timeout: min(timeout, shell.DefaultAttachTimeout)}); err != nil {
			h.Raise(L, err)
		}
	}
	// A failure below names the call, the VM and its console tail.
	fail := func(err error) {
		var ve *vmerr.Error
		if errors.As(err, &ve) {
			ve.Message = fn + ": " + ve.Message
			ve.With("vm", v.m.VM.Name()).With("tail", v.m.Console.Tail(console.TailLines))
		}
		h.Raise(L, err)
	}
	if iface == "" {
		var err error
		if iface, err = guestEtherLink(ctx, sh); err != nil {
			fail(err)
		}
	}
	cmd := checkpoint.MACCommand(iface, port.mac)
	r, err := sh.Run(ctx, cmd, shell.RunOptions{Timeout: timeout})
	if err != nil {
		h.Raise(L, err)
	}
	if r.Code != 0 {
		h.Raise(L, vmerr.New(vmerr.Refused, "%s: setting %s's MAC to %s in the guest failed (exit %d): %s", fn, iface, port.mac, r.Code, strings.TrimSpace(r.Output)).
			With("vm", v.m.VM.Name()).With("command", cmd).With("output", r.Output))
	}
	lease, err := port.l.DHCP().WaitLease(ctx, port.mac)
	if err != nil {
		fail(err)
	}
	if err := waitGuestAddress(ctx, sh, iface, lease.IP.String()); err != nil {
		fail(err)
	}
	t := leaseTable(L, lease)
	t.RawSetString("iface", lua.LString(iface))
	L.Push(t)
	return 1
}

// guestAddressPoll is how often waitGuestAddress looks again.
const guestAddressPoll = 250 * time.Millisecond

// waitGuestAddress polls the guest until iface carries ip: the LAN's ACK is
// half of a lease, the guest's client must also configure the address
// (and a client that starts over after the ACK would show here).
func waitGuestAddress(ctx context.Context, sh *shell.Shell, iface, ip string) error {
	cmd := "ip -4 -o addr show dev " + shellquote.Quote(iface)
	t0 := time.Now()
	var last string
	for {
		r, err := sh.Run(ctx, cmd, shell.RunOptions{})
		if err == nil {
			if strings.Contains(r.Output, " "+ip+"/") {
				return nil
			}
			last = strings.TrimSpace(r.Output)
		} else if ctx.Err() == nil {
			return err
		}
		select {
		case <-ctx.Done():
			kind := vmerr.DoneKind(ctx)
			return vmerr.New(kind, "the LAN leased %s, but the guest's %s did not carry it %.1fs after the ACK (last `%s`: %q)",
				ip, iface, time.Since(t0).Seconds(), cmd, last).With("ip", ip).With("iface", iface)
		case <-time.After(guestAddressPoll):
		}
	}
}

// guestEtherLink returns the guest's only Ethernet interface, or an error
// naming them all when there is not exactly one.
func guestEtherLink(ctx context.Context, sh *shell.Shell) (string, error) {
	r, err := sh.Run(ctx, "ip -o link show", shell.RunOptions{})
	if err != nil {
		return "", err
	}
	var names []string
	for _, m := range etherLinkRE.FindAllStringSubmatch(r.Output, -1) {
		names = append(names, m[1])
	}
	switch len(names) {
	case 1:
		return names[0], nil
	case 0:
		return "", vmerr.New(vmerr.NotFound, "the guest shows no Ethernet interface (ip -o link: %q)", strings.TrimSpace(r.Output))
	}
	return "", vmerr.New(vmerr.Usage, "the guest has several Ethernet interfaces (%s): say which with iface=", strings.Join(names, ", "))
}
