package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// ForkOptions configure Fork.
type ForkOptions struct {
	// Name names the fork (its logs in the run directory); default
	// "<checkpoint>-<n>".
	Name string
	// NICs replace the original's extra NICs (Config.NICs), e.g. a port on
	// another LAN. They must be as many and of the same models as the
	// original's, or QEMU refuses the state. nil reuses the original's:
	// a LAN port given by Open gets a new port with a MAC derived from the
	// fork's name; one given as a File cannot be reused (its descriptor
	// belongs to the original) and makes Fork fail.
	NICs []qemu.NIC
	// Run receives the fork's logs and events; default the original's.
	Run *journal.Run
	// Timeout bounds the restore, from starting QEMU to the guest running;
	// 0 means DefaultRestoreTimeout.
	Timeout time.Duration
	// ExpectTimeout is the fork console's default wait bound.
	ExpectTimeout time.Duration
}

// Fork starts a new machine from the checkpoint: QEMU with the original's
// command line (new name, private directory, console, QMP, forwards on new
// ephemeral ports), a private qcow2 overlay on each frozen disk layer, and
// -incoming from the state file; then it lets the guest run and waits until
// it does. The guest continues where the checkpoint left it.
func (c *Checkpoint) Fork(ctx context.Context, opt ForkOptions) (*machine.Machine, error) {
	name, err := c.reserve(opt.Name)
	if err != nil {
		return nil, err
	}
	opt.Name = name
	return c.fork(ctx, opt)
}

// reserve settles a fork's name: the given one if it is free, else the next
// "<checkpoint>-<n>".
func (c *Checkpoint) reserve(name string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return "", vmerr.New(vmerr.Usage, "checkpoint %s: removed; no more forks", c.name)
	}
	if name == "" {
		for name == "" || c.names[name] {
			c.forks++
			name = fmt.Sprintf("%s-%d", c.name, c.forks)
		}
	}
	if c.names[name] {
		return "", vmerr.New(vmerr.Usage, "checkpoint %s: a fork named %q exists already (its logs would collide)", c.name, name).With("option", "name")
	}
	c.names[name] = true
	return name, nil
}

// fork starts a fork whose name is reserved.
func (c *Checkpoint) fork(ctx context.Context, opt ForkOptions) (*machine.Machine, error) {
	t0 := time.Now()
	cfg, err := c.forkConfig(ctx, opt)
	if err != nil {
		return nil, err
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultRestoreTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Boot's cont comes while QEMU is still in state "inmigrate"; QEMU 7.2
	// then stays paused once the state is loaded (measured), so waitRunning
	// sends cont again when it sees "paused".
	m, err := machine.Boot(rctx, cfg, machine.Options{ExpectTimeout: opt.ExpectTimeout})
	if err != nil {
		return nil, c.restoreErr(opt.Name, err)
	}
	if err := waitRunning(rctx, m); err != nil {
		m.Stop(machine.DefaultStopGrace)
		return nil, c.restoreErr(opt.Name, err)
	}
	m.Config = cfg
	c.event("fork", map[string]any{"vm": opt.Name, "ms": time.Since(t0).Milliseconds(), "forwards": forwardList(m.VM.Forwards())})
	return m, nil
}

func forwardList(fs []qemu.Forward) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = fmt.Sprintf("%s:%s:%d->%d", f.Proto, f.HostAddr, f.HostPort, f.GuestPort)
	}
	return out
}

func (c *Checkpoint) restoreErr(name string, err error) error {
	e := vmerr.Wrap(vmerr.KindOf(err), err, "checkpoint %s: fork %s did not restore", c.name, name).With("vm", name).With("checkpoint", c.name)
	c.event("fork_failed", map[string]any{"vm": name, "error": err.Error()})
	return e
}

// waitRunning waits until the restored guest runs: the state is loaded and
// QEMU's autostart resumed it.
func waitRunning(ctx context.Context, m *machine.Machine) error {
	for {
		st, err := m.VM.Status(ctx)
		if err != nil {
			return err
		}
		switch st {
		case "running":
			return nil
		case "paused", "postmigrate":
			if err := m.VM.Cont(ctx); err != nil {
				return err
			}
			continue
		case "inmigrate", "prelaunch", "restore-vm":
		default:
			return vmerr.New(vmerr.Exited, "the restored guest is in state %q, not running", st)
		}
		select {
		case <-ctx.Done():
			return vmerr.Wrap(vmerr.Timeout, ctx.Err(), "the state was not loaded in time (status %s)", st)
		case <-m.VM.Exited():
			st, _ := m.VM.Wait(context.Background())
			return vmerr.New(vmerr.Exited, "QEMU exited while loading the state: %s", st).With("stderr", st.Stderr)
		case <-time.After(pollInterval):
		}
	}
}

// forkConfig derives the fork's configuration from the original's.
func (c *Checkpoint) forkConfig(ctx context.Context, opt ForkOptions) (qemu.Config, error) {
	cfg := c.cfg
	cfg.Name = opt.Name
	cfg.Dir = ""       // a fresh private directory (sockets)
	cfg.SerialLog = "" // the original's file is the original's
	if opt.Run != nil {
		cfg.Run = opt.Run
	}
	// The migrated virtio-net state carries the MAC anyway; keeping the
	// original's on the command line keeps the device model identical.
	if cfg.Net == "" && len(cfg.NICs) == 0 || cfg.Net == "user" {
		cfg.MAC = c.mac
	}
	fw := make([]qemu.Forward, len(cfg.Forwards))
	for i, f := range cfg.Forwards {
		f.HostPort = 0 // the original holds its ports
		fw[i] = f
	}
	cfg.Forwards = fw
	if opt.NICs != nil {
		if len(opt.NICs) != len(c.cfg.NICs) {
			return cfg, vmerr.New(vmerr.Usage, "checkpoint %s: fork %s: %d NICs given, the checkpoint has %d (the device model must match)", c.name, opt.Name, len(opt.NICs), len(c.cfg.NICs)).With("option", "nics")
		}
		cfg.NICs = opt.NICs
		if cfg.Net != "user" {
			cfg.MAC = "" // the first NIC's, from the new NICs
		}
	} else if len(cfg.NICs) > 0 {
		nics := make([]qemu.NIC, len(cfg.NICs))
		for i, n := range cfg.NICs {
			if !n.User && n.Open == nil {
				return cfg, vmerr.New(vmerr.Usage, "checkpoint %s: fork %s: NIC %d was given to the original as an open file; give the fork its own NICs", c.name, opt.Name, i+1).With("option", "nics")
			}
			if n.Open != nil {
				n.MAC = "" // a new port, a new MAC derived from the fork's name
				if i == 0 && cfg.Net != "user" {
					cfg.MAC = ""
				}
			}
			nics[i] = n
		}
		cfg.NICs = nics
	}
	// Disks: a private overlay on each frozen layer.
	if len(c.layers) > 0 {
		fdir := filepath.Join(c.dir, "forks")
		if err := os.MkdirAll(fdir, 0o755); err != nil {
			return cfg, vmerr.Wrap(vmerr.IO, err, "checkpoint: forks directory")
		}
		disks := append([]qemu.Disk(nil), cfg.Disks...)
		off := false
		for _, l := range c.layers {
			ov := filepath.Join(fdir, fmt.Sprintf("%s-disk%d.qcow2", opt.Name, l.Index+1))
			if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", l.Path, ov); err != nil {
				return cfg, err
			}
			d := disks[l.Index]
			d.Path, d.Format, d.Snapshot = ov, "qcow2", &off
			disks[l.Index] = d
		}
		cfg.Disks = disks
	}
	src := "exec:cat " + shellquote.Quote(c.state)
	if c.useFile {
		src = "file:" + c.state
	}
	cfg.QEMUArgs = append(append([]string(nil), cfg.QEMUArgs...), "-incoming", src)
	return cfg, nil
}

// ForkMany starts n forks at once, named "<checkpoint>-<i>" (or
// "<opt.Name>-<i>"), and returns them in order. If any fails, the others are
// stopped and the first error is returned.
func (c *Checkpoint) ForkMany(ctx context.Context, n int, opt ForkOptions) ([]*machine.Machine, error) {
	if n < 1 {
		return nil, vmerr.New(vmerr.Usage, "checkpoint %s: fork_many: n = %d, want at least 1", c.name, n)
	}
	names := make([]string, n)
	for i := range names {
		if opt.Name != "" {
			names[i] = fmt.Sprintf("%s-%d", opt.Name, i+1)
		}
	}
	return c.ForkNamed(ctx, names, opt)
}

// ForkNamed starts one fork per name at once ("" picks the next
// "<checkpoint>-<n>") and returns them in order. If any fails, the others
// are stopped and the first error is returned. opt.Name is ignored.
func (c *Checkpoint) ForkNamed(ctx context.Context, names []string, opt ForkOptions) ([]*machine.Machine, error) {
	n := len(names)
	if opt.NICs != nil && n > 1 {
		return nil, vmerr.New(vmerr.Usage, "checkpoint %s: %d forks cannot share the same NICs; fork one at a time", c.name, n).With("option", "nics")
	}
	out := make([]*machine.Machine, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		o := opt
		name, err := c.reserve(names[i])
		if err != nil {
			errs[i] = err
			continue
		}
		o.Name = name
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = c.fork(ctx, o)
		}()
	}
	wg.Wait()
	var first error
	for _, err := range errs {
		if err != nil {
			first = err
			break
		}
	}
	if first != nil {
		for _, m := range out {
			if m != nil {
				m.Stop(machine.DefaultStopGrace)
			}
		}
		return nil, first
	}
	return out, nil
}

// MACCommand returns the shell command that gives the guest's interface
// iface a new MAC address and gets it a new DHCP lease, for a fork on a LAN
// (the restored guest still uses the checkpoint's MAC). The MAC change must
// succeed; getting the lease is best effort, the LAN's lease is the proof:
//
//   - a link that systemd-networkd manages needs nothing more: networkd
//     stops its DHCP client when the hardware address changes and starts it
//     afresh when the link comes back up;
//   - a busybox udhcpc running for iface (-i IFACE, --interface=IFACE, or
//     no -i at all for eth0) is killed before the change with SIGKILL, so
//     that it sends no RELEASE (that would name the checkpoint's MAC and
//     free the original VM's address) and renews nothing in between, then
//     started again with the same arguments, its output appended where its
//     standard output went; a fresh udhcpc reads the new MAC. SIGUSR1 is not
//     enough: it renews the old lease, and two of them can merge;
//   - otherwise a one-shot `udhcpc -n -q`, then dhclient. A dhclient
//     already running keeps the old MAC's lease: not handled.
//
// networkd is deliberately not poked over D-Bus. `networkctl renew` that
// lands between its OFFER and its REQUEST (systemd 252) moves the client to
// RENEWING with an address it never configured, so it unicasts to nobody and
// waits for T2, half an hour; `networkctl reconfigure` that lands after the
// ACK releases the fresh lease and starts over, after the host already saw
// it. Whether networkd manages the link is asked before the change.
func MACCommand(iface, mac string) string {
	q := shellquote.Quote(iface)
	change := strings.Join([]string{
		"ip link set dev " + q + " down",
		"ip link set dev " + q + " address " + shellquote.Quote(mac),
		"ip link set dev " + q + " up",
	}, " && ")
	// The udhcpc's arguments are kept \001-separated, so that arguments
	// with spaces survive the restart; everything runs in a subshell so
	// that no variable or option reaches the user's shell, and the restart
	// in one of its own so that an interactive shell reports no job.
	dhcp := "( a=; out=/dev/null; for p in $(pidof udhcpc 2>/dev/null); do " +
		"c=$(tr '\\0' '\\001' </proc/$p/cmdline 2>/dev/null) || continue; " +
		"case \" $(printf %s \"$c\" | tr '\\001' ' ') \" in " +
		"*\" -i \"" + q + "\" \"*|*\" -i\"" + q + "\" \"*|*\" --interface=\"" + q + "\" \"*|*\" --interface \"" + q + "\" \"*) ;; " +
		"*\" -i\"*|*\" --interface\"*) continue ;; " +
		"*) [ " + q + " = eth0 ] || continue ;; esac; " +
		"o=$(readlink /proc/$p/fd/1 2>/dev/null); case \"$o\" in *\" (deleted)\") ;; /*) out=$o ;; esac; " +
		"kill -9 $p && a=$c; break; done; " +
		change + "; rc=$?; " +
		"if [ -n \"$a\" ]; then ( set -f; IFS=$(printf '\\001'); set -- $a; \"$@\" </dev/null >>\"$out\" 2>&1 & ); " +
		"elif [ $rc -eq 0 ]; then udhcpc -n -q -i " + q + " 2>/dev/null || dhclient " + q + " 2>/dev/null || true; fi; exit $rc )"
	return "if networkctl list --no-legend " + q + " 2>/dev/null | grep -qv unmanaged; then " + change + "; else " + dhcp + "; fi"
}
