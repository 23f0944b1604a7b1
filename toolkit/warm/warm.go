package warm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Request asks for a guest in a state.
type Request struct {
	// Spec is the guest (its name names the state).
	Spec machine.Spec
	// Ready are the inputs of what brings the guest to its state: the
	// source of the script's ready function, the modules it uses, the
	// values it closes over.
	Ready []Input
	// Prepare brings a freshly booted guest to the state (on a miss) and
	// returns the shell at its prompt, or nil when the state has none.
	Prepare func(ctx context.Context, m *machine.Machine) (*shell.Shell, error)
}

// Result is a guest in the state asked for.
type Result struct {
	// Machine runs in the state: restored (a hit) or booted and prepared
	// (a miss, saved for the next run).
	Machine *machine.Machine
	// Shell is the shell at its prompt (nil when the state has none).
	Shell *shell.Shell
	// Hit says the state came from the cache.
	Hit bool
	// Entry is the cache entry (restored, or saved by this miss).
	Entry *Entry
	// Why says, on a miss, why no entry was used.
	Why []string
	// Took is how long Start took.
	Took time.Duration
}

// Start returns a guest in the state req asks for: restored from the cache
// when an entry of its key is there and whole, else booted, prepared and
// saved. Two runs that miss together build once: the second waits for the
// first and restores.
func (c *Cache) Start(ctx context.Context, pool *machine.Pool, req Request) (*Result, error) {
	t0 := time.Now()
	key, err := c.KeyFor(ctx, req.Spec, req.Ready)
	if err != nil {
		return nil, err
	}
	c.noteRequest(key)
	res, why, err := c.tryRestore(ctx, pool, req, key, false)
	if err != nil || res != nil {
		return withTook(res, t0), err
	}
	unlock, err := c.lock(ctx, key.Hash, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another run may have built it while this one waited.
	res, more, err := c.tryRestore(ctx, pool, req, key, true)
	if err != nil || res != nil {
		return withTook(res, t0), err
	}
	if len(more) > 0 {
		why = more
	}
	res, err = c.build(ctx, pool, req, key)
	if res != nil {
		res.Why = why
	}
	return withTook(res, t0), err
}

func withTook(r *Result, t0 time.Time) *Result {
	if r != nil {
		r.Took = time.Since(t0)
	}
	return r
}

// tryRestore restores the entry of key if it is there and whole (its sums
// are checked while QEMU loads it); a broken entry is removed, under the
// exclusive lock only (a run restoring it holds the shared one: Start takes
// the exclusive one next and looks again), and said why.
func (c *Cache) tryRestore(ctx context.Context, pool *machine.Pool, req Request, key Key, locked bool) (*Result, []string, error) {
	if !locked {
		unlock, err := c.lock(ctx, key.Hash, false)
		if err != nil {
			return nil, nil, err
		}
		defer unlock()
	}
	e, err := c.read(key.Hash)
	if err == nil && e == nil {
		return nil, c.Explain(key), nil
	}
	var res *Result
	if err == nil {
		res, err = c.restore(ctx, pool, req, e)
		if err == nil || !isBroken(err) {
			return res, nil, err
		}
	}
	if !locked {
		return nil, nil, nil
	}
	why := fmt.Sprintf("the entry %s was not whole (%v): removed, and built again", key.Hash[:12], err)
	c.event(req.Spec, "warm-broken", map[string]any{"key": key.Hash, "error": err.Error()})
	removeDir(c.entryDir(key.Hash))
	return nil, []string{why}, nil
}

// brokenError is an entry whose files do not match their sums.
type brokenError struct{ err error }

func (b brokenError) Error() string { return b.err.Error() }

func isBroken(err error) bool {
	_, ok := err.(brokenError)
	return ok
}

// build boots, prepares and saves the state; the machine goes on running.
func (c *Cache) build(ctx context.Context, pool *machine.Pool, req Request, key Key) (*Result, error) {
	t0 := time.Now()
	m, err := pool.Boot(ctx, req.Spec)
	if err != nil {
		return nil, err
	}
	sh, err := req.Prepare(ctx, m)
	if err != nil {
		return &Result{Machine: m}, err
	}
	took := time.Since(t0)
	tmp := filepath.Join(c.dir, buildDir, strconv.Itoa(os.Getpid())+"-"+key.Hash[:16])
	cp, err := m.Checkpoint(ctx, checkpoint.Options{Name: "state", Dir: tmp, Keep: true, Continue: true})
	if err != nil {
		return &Result{Machine: m, Shell: sh}, vmerr.Wrap(vmerr.KindOf(err), err, "warm: saving the state of %s", m.Name())
	}
	e := &Entry{Key: key, Created: time.Now().UTC(), Took: took, Shell: sh != nil, Leased: leased(m)}
	if sh != nil {
		e.User = sh.User()
	}
	if run := m.Run(); run != nil {
		e.Run = run.Dir()
	}
	if err := c.put(e, cp.Path()); err != nil {
		removeDir(tmp)
		return &Result{Machine: m, Shell: sh}, err
	}
	removeDir(tmp)
	c.event(req.Spec, "warm-saved", map[string]any{"key": key.Hash, "bytes": e.Bytes(), "took_s": took.Seconds()})
	if gone, err := c.Prune(ctx, 0); err == nil && len(gone) > 0 {
		c.event(req.Spec, "warm-pruned", map[string]any{"entries": len(gone)})
	}
	return &Result{Machine: m, Shell: sh, Entry: e}, nil
}

// put moves a checkpoint directory into the cache as the entry e: the sums
// first, entry.json last, so an entry without it is no entry.
func (c *Cache) put(e *Entry, cpDir string) error {
	des, err := os.ReadDir(cpDir)
	if err != nil {
		return vmerr.Wrap(vmerr.IO, err, "warm: reading the checkpoint")
	}
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		p := filepath.Join(cpDir, de.Name())
		st, err := os.Stat(p)
		if err != nil {
			return vmerr.Wrap(vmerr.IO, err, "warm: %s", p)
		}
		sum, err := hashFile(p)
		if err != nil {
			return vmerr.Wrap(vmerr.IO, err, "warm: %s", p)
		}
		e.Files = append(e.Files, FileSum{Name: de.Name(), Bytes: st.Size(), SHA256: sum})
	}
	dst := c.entryDir(e.Key.Hash)
	removeDir(dst)
	if err := os.Rename(cpDir, dst); err != nil {
		return vmerr.Wrap(vmerr.IO, err, "warm: moving the checkpoint into the cache")
	}
	e.dir = dst
	data, err := json.MarshalIndent(e, "", "  ")
	if err == nil {
		tmp := filepath.Join(dst, entryFile+".tmp")
		if err = os.WriteFile(tmp, append(data, '\n'), 0o644); err == nil {
			err = os.Rename(tmp, filepath.Join(dst, entryFile))
		}
	}
	if err != nil {
		return vmerr.Wrap(vmerr.IO, err, "warm: writing %s", entryFile)
	}
	e.touch()
	return nil
}

// restore forks the entry into the pool under the spec's name; with a shell
// in the state, it resumes it, sets the guest's clock and renews its LAN
// leases through it.
func (c *Cache) restore(ctx context.Context, pool *machine.Pool, req Request, e *Entry) (*Result, error) {
	spec := req.Spec
	cfg, err := spec.QEMUConfig(ctx)
	if err != nil {
		return nil, err
	}
	cp, err := checkpoint.Open(e.dir, cfg)
	if err != nil {
		return nil, err
	}
	overlays, err := overlayDir(spec.QEMU.Run)
	if err != nil {
		return nil, err
	}
	// The sums are checked while QEMU loads the state (both read it from
	// the page cache): a broken entry is never used, and costs no time.
	verified := make(chan error, 1)
	go func() { verified <- e.verify() }()
	m, err := pool.OpenCheckpoint(cp, spec).Fork(ctx, machine.ForkOptions{Name: spec.QEMU.Name, OverlayDir: overlays, ExpectTimeout: spec.ExpectTimeout})
	if verr := <-verified; verr != nil {
		if m != nil {
			pool.Discard(m)
		}
		return nil, brokenError{verr}
	}
	if err != nil {
		return nil, err
	}
	e.touch()
	c.event(spec, "warm-restored", map[string]any{"key": e.Key.Hash, "created": e.Created.Format(time.RFC3339),
		"console": "starts at the restore: the boot and ready are in the run " + e.Run})
	res := &Result{Machine: m, Hit: true, Entry: e}
	if !e.Shell {
		return res, nil
	}
	if res.Shell, err = m.ResumeShell(ctx, shell.Options{User: e.User}); err != nil {
		return res, err
	}
	return res, settle(ctx, m, res.Shell, len(e.Leased) > 0)
}

// leased returns the MACs of m's LAN ports that hold a lease.
func leased(m *machine.Machine) []string {
	var macs []string
	for _, p := range m.Ports() {
		if _, ok := p.LAN.DHCP().Lease(p.MAC); ok {
			macs = append(macs, p.MAC)
		}
	}
	return macs
}

// settle sets a restored guest's clock (it stood still in the cache) and,
// when it held a lease when saved, renews its LAN lease (it holds the old
// run's).
func settle(ctx context.Context, m *machine.Machine, sh *shell.Shell, renew bool) error {
	cmd := "date -u -s @" + strconv.FormatInt(time.Now().Unix()+1, 10) + " >/dev/null"
	if _, err := command.Check(ctx, sh, cmd, command.Options{}); err != nil {
		return vmerr.Wrap(vmerr.KindOf(err), err, "warm: setting the clock of %s", m.Name())
	}
	if renew && len(m.Ports()) > 0 {
		if _, err := m.RenewLease(ctx, machine.RenewOptions{Runner: sh}); err != nil {
			return err
		}
	}
	return nil
}

// overlayDir is where restored guests' disk overlays go: the run directory,
// or a temporary directory without one.
func overlayDir(run *journal.Run) (string, error) {
	if run != nil {
		return run.Path("warm-overlays"), nil
	}
	d, err := os.MkdirTemp("", "vmscript-warm-")
	if err != nil {
		return "", vmerr.Wrap(vmerr.IO, err, "warm: overlay directory")
	}
	return d, nil
}

func (c *Cache) event(spec machine.Spec, kind string, fields map[string]any) {
	if run := spec.QEMU.Run; run != nil {
		run.Event("warm:"+spec.QEMU.Name, kind, fields)
	}
}

// noteRequest remembers the newest key asked for under a name, for
// Explain and `vmscript warm ls --explain`.
func (c *Cache) noteRequest(key Key) {
	data, err := json.MarshalIndent(key, "", "  ")
	if err == nil {
		p := filepath.Join(c.dir, requestsDir, safeName(key.Name)+".json")
		tmp := p + ".tmp-" + strconv.Itoa(os.Getpid())
		if os.WriteFile(tmp, data, 0o644) == nil {
			os.Rename(tmp, p)
		}
	}
}

// Requests returns the newest key asked for under each name.
func (c *Cache) Requests() []Key {
	des, _ := os.ReadDir(filepath.Join(c.dir, requestsDir))
	var out []Key
	for _, de := range des {
		var k Key
		if data, err := os.ReadFile(filepath.Join(c.dir, requestsDir, de.Name())); err == nil && json.Unmarshal(data, &k) == nil {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
