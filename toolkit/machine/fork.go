package machine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Checkpoint is a saved guest that forks start from: the saved state (see
// package checkpoint) and the original's spec, whose LAN ports each fork
// gets anew.
type Checkpoint struct {
	*checkpoint.Checkpoint
	spec Spec  // the checkpointed guest's
	pool *Pool // where forks go (nil: no pool)
	// entry is the ISO entry the guest booted, if any.
	entry *BootedEntry
}

// ForkOptions configure Fork.
type ForkOptions struct {
	// Name names the fork; default the first "<checkpoint>-<n>" no VM of
	// the run has.
	Name string
	// NICs replace the original's NICs (as many, of the same models: the
	// device model must match). nil gives the fork the original's: user
	// networking as it was, a new port with a new MAC on each of its LANs.
	NICs []NIC
	// Run receives the fork's logs and events; default the original's.
	Run *journal.Run
	// Timeout bounds the restore, from starting QEMU to the guest running;
	// 0 means checkpoint.DefaultRestoreTimeout.
	Timeout time.Duration
	// ExpectTimeout is the fork console's default wait bound.
	ExpectTimeout time.Duration
	// OverlayDir is where the fork's disk overlays go (see
	// checkpoint.ForkOptions); default the checkpoint's directory.
	OverlayDir string
}

// Checkpoint saves the guest's state (see checkpoint.Take); the guest then
// stops unless opt.Continue.
func (m *Machine) Checkpoint(ctx context.Context, opt checkpoint.Options) (*Checkpoint, error) {
	cp, err := checkpoint.Take(ctx, m.VM, m.config, opt)
	if err != nil {
		return nil, err
	}
	if !opt.Continue {
		m.Stop(DefaultStopGrace)
	}
	return &Checkpoint{Checkpoint: cp, spec: m.spec, pool: m.pool, entry: m.entry}, nil
}

// OpenCheckpoint gives the pool a checkpoint read from disk
// (checkpoint.Open) of a guest made from spec, to fork from.
func (p *Pool) OpenCheckpoint(cp *checkpoint.Checkpoint, spec Spec) *Checkpoint {
	if spec.QEMU.Run == nil {
		spec.QEMU.Run = p.run
	}
	return &Checkpoint{Checkpoint: cp, spec: spec, pool: p}
}

// Fork starts a new guest restored from the checkpoint, with its own disk
// overlay, console, QMP, forwards and LAN ports; it returns once the guest
// runs. The guest continues where the checkpoint left it.
func (c *Checkpoint) Fork(ctx context.Context, opt ForkOptions) (*Machine, error) {
	name, err := c.forkName(opt.Name)
	if err != nil {
		return nil, err
	}
	opt.Name = name
	m, err := c.fork(ctx, opt)
	if err != nil && c.pool != nil {
		c.pool.release(name) // no guest: the name is free again (the timeline keeps why)
	}
	return m, err
}

// forkName settles a fork's name in the run (with a pool) and among the
// checkpoint's forks: the given one if it is free, else the first free
// "<checkpoint>-<n>".
func (c *Checkpoint) forkName(name string) (string, error) {
	p := c.pool
	if p == nil {
		return c.Reserve(name)
	}
	if name != "" {
		if _, err := p.reserve(name, "", "", 0); err != nil {
			return "", err
		}
	} else {
		for i := 1; name == ""; i++ {
			n := fmt.Sprintf("%s-%d", c.Name(), i)
			if _, err := p.reserve(n, "", "", 0); err == nil {
				name = n
			}
		}
	}
	if _, err := c.Reserve(name); err != nil {
		p.release(name)
		return "", err
	}
	return name, nil
}

// fork boots a fork whose name is settled.
func (c *Checkpoint) fork(ctx context.Context, opt ForkOptions) (*Machine, error) {
	t0 := time.Now()
	spec := c.spec
	spec.ExpectTimeout = opt.ExpectTimeout
	nics, err := c.forkNICs(opt.NICs)
	if err != nil {
		return nil, err
	}
	ports := &[]Port{}
	name := opt.Name
	cfg, err := c.ForkConfig(ctx, checkpoint.ForkOptions{Name: name, NICs: qemuNICs(nics, ports), Run: opt.Run, OverlayDir: opt.OverlayDir})
	if err != nil {
		return nil, err
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = checkpoint.DefaultRestoreTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := start(rctx, spec, cfg, ports)
	if err != nil {
		return nil, c.ForkFailed(name, err)
	}
	if err := checkpoint.WaitRestored(rctx, m.VM); err != nil {
		m.Stop(DefaultStopGrace)
		return nil, c.ForkFailed(name, err)
	}
	spec.NICs = nics
	m.spec = spec
	m.entry = c.entry
	if p := c.pool; p != nil {
		p.add(m)
	}
	c.Forked(name, m.VM, t0)
	return m, nil
}

// forkNICs are the fork's NICs: the given ones (as many as the original's),
// or the original's with each LAN port's MAC left to be derived anew.
func (c *Checkpoint) forkNICs(given []NIC) ([]NIC, error) {
	orig := c.spec.NICs
	if given != nil {
		if len(given) != len(orig) {
			return nil, vmerr.New(vmerr.Usage, "checkpoint %s: %d NICs given, the checkpoint has %d (the device model must match)", c.Name(), len(given), len(orig)).With("option", "nics")
		}
		return given, nil
	}
	out := make([]NIC, len(orig))
	for i, n := range orig {
		if n.LAN != nil {
			n.MAC = "" // a new port, a new MAC derived from the fork's name
		}
		out[i] = n
	}
	return out, nil
}

// ForkMany starts len(names) forks at once ("" picks the next free name; see
// Fork) and returns them in order. If any fails, the others are stopped and
// the first error is returned. opt.Name is ignored; NICs cannot be shared.
func (c *Checkpoint) ForkMany(ctx context.Context, names []string, opt ForkOptions) ([]*Machine, error) {
	if opt.NICs != nil && len(names) > 1 {
		return nil, vmerr.New(vmerr.Usage, "checkpoint %s: %d forks cannot share the same NICs; fork one at a time", c.Name(), len(names)).With("option", "nics")
	}
	out := make([]*Machine, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		o := opt
		// Names in order, before any fork starts.
		if o.Name, errs[i] = c.forkName(name); errs[i] != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = c.fork(ctx, o)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			for _, m := range out {
				if m != nil {
					m.Stop(DefaultStopGrace)
				}
			}
			return nil, err
		}
	}
	return out, nil
}
