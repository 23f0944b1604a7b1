package machine

import (
	"context"
	"fmt"
	"sync"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Pool holds the guests of one run: it names them uniquely (their files in
// the run directory would collide otherwise), boots and forks them into the
// run, and lists and stops them.
type Pool struct {
	run *journal.Run

	mu       sync.Mutex
	names    map[string]bool
	machines []*Machine
}

// NewPool returns an empty pool whose guests write to run (nil: none).
func NewPool(run *journal.Run) *Pool {
	return &Pool{run: run, names: map[string]bool{}}
}

// Boot boots a guest into the pool. An empty name becomes "vm", "vm2", …; a
// name already taken in the run is refused (kind "usage").
func (p *Pool) Boot(ctx context.Context, spec Spec) (*Machine, error) {
	name, err := p.reserve(spec.QEMU.Name, qemu.DefaultName, "%s%d", 2)
	if err != nil {
		return nil, err
	}
	spec.QEMU.Name = name
	if spec.QEMU.Run == nil {
		spec.QEMU.Run = p.run
	}
	m, err := Boot(ctx, spec)
	if err != nil {
		p.release(name)
		return nil, err
	}
	p.add(m)
	return m, nil
}

// reserve takes name, or when it is empty the first free of def, then
// pattern(def, first), pattern(def, first+1), ….
func (p *Pool) reserve(name, def, pattern string, first int) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if name == "" {
		name = def
		for i := first; p.names[name]; i++ {
			name = fmt.Sprintf(pattern, def, i)
		}
	} else if p.names[name] {
		return "", vmerr.New(vmerr.Usage, "a VM named %q already exists in this run (its logs would collide); pick another name", name).With("option", "name")
	}
	p.names[name] = true
	return name, nil
}

// release gives a name back after a failed boot.
func (p *Pool) release(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.names, name)
}

func (p *Pool) add(m *Machine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m.pool = p
	p.machines = append(p.machines, m)
}

// Machines returns the pool's guests in the order they started (stopped
// ones included).
func (p *Pool) Machines() []*Machine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Machine(nil), p.machines...)
}

// Discard stops a guest the pool does not want after all (a restore whose
// state turned out broken) and frees its name for another.
func (p *Pool) Discard(m *Machine) {
	m.Stop(DefaultStopGrace)
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.names, m.Name())
	for i, x := range p.machines {
		if x == m {
			p.machines = append(p.machines[:i], p.machines[i+1:]...)
			break
		}
	}
}

// Close stops every guest of the pool, newest first.
func (p *Pool) Close() {
	ms := p.Machines()
	for i := len(ms) - 1; i >= 0; i-- {
		ms[i].Stop(DefaultStopGrace)
	}
}
