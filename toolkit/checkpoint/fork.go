package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// ForkOptions configure ForkConfig.
type ForkOptions struct {
	// Name names the fork (its logs in the run directory); default
	// "<checkpoint>-<n>".
	Name string
	// NICs replace the original's extra NICs (Config.NICs), e.g. a port on
	// another LAN. They must be as many and of the same models as the
	// original's, or QEMU refuses the state. nil reuses the original's:
	// a LAN port given by Open gets a new port with a MAC derived from the
	// fork's name; one given as a File cannot be reused (its descriptor
	// belongs to the original) and is refused.
	NICs []qemu.NIC
	// Run receives the fork's logs and events; default the original's.
	Run *journal.Run
	// OverlayDir is where the fork's disk overlays go; default "forks" in
	// the checkpoint's directory (give another for a checkpoint that must
	// not be written, such as a cached one).
	OverlayDir string
}

// Reserve settles a fork's name: the given one if no fork of this
// checkpoint has it, else (for "") the next "<checkpoint>-<n>".
func (c *Checkpoint) Reserve(name string) (string, error) { return c.reserve(name) }

// ForkConfig returns the QEMU configuration that restores the checkpoint as
// the fork opt.Name (a name from Reserve): the original's command line with
// the fork's name, a new private directory, console and QMP, forwards on new
// ephemeral ports, a private qcow2 overlay on each frozen disk layer, and
// -incoming from the state file. Start QEMU from it, then call WaitRestored.
func (c *Checkpoint) ForkConfig(ctx context.Context, opt ForkOptions) (qemu.Config, error) {
	cfg, err := c.forkConfig(ctx, opt)
	if err != nil {
		return cfg, c.ForkFailed(opt.Name, err)
	}
	return cfg, nil
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

// Forked records in the timeline that the fork name restored in since
// (its forwards are the fork's, on new ports).
func (c *Checkpoint) Forked(name string, vm *qemu.VM, since time.Time) {
	c.event("fork", map[string]any{"vm": name, "ms": time.Since(since).Milliseconds(), "forwards": forwardList(vm.Forwards())})
}

func forwardList(fs []qemu.Forward) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = fmt.Sprintf("%s:%s:%d->%d", f.Proto, f.HostAddr, f.HostPort, f.GuestPort)
	}
	return out
}

// ForkFailed records that fork name did not restore and returns err saying
// so, with the checkpoint's and the fork's names.
func (c *Checkpoint) ForkFailed(name string, err error) error {
	e := vmerr.Wrap(vmerr.KindOf(err), err, "checkpoint %s: fork %s did not restore", c.name, name).With("vm", name).With("checkpoint", c.name)
	c.event("fork_failed", map[string]any{"vm": name, "error": err.Error()})
	return e
}

// WaitRestored waits until a fork's guest runs: the state is loaded and
// QEMU's autostart resumed it. Its cont comes while QEMU is still in state
// "inmigrate"; QEMU 7.2 then stays paused once the state is loaded
// (measured), so WaitRestored sends cont again when it sees "paused".
func WaitRestored(ctx context.Context, vm *qemu.VM) error {
	for {
		st, err := vm.Status(ctx)
		if err != nil {
			return err
		}
		switch st {
		case "running":
			return nil
		case "paused", "postmigrate":
			if err := vm.Cont(ctx); err != nil {
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
		case <-vm.Exited():
			st, _ := vm.Wait(context.Background())
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
		fdir := opt.OverlayDir
		if fdir == "" {
			fdir = filepath.Join(c.dir, "forks")
		}
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
