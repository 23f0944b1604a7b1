// Package checkpoint saves a running VM's state — device state and RAM by
// migration to a file, disks as read-only qcow2 layers — and derives the
// QEMU configuration of forks restored from it (-incoming, a disk overlay of
// their own, a new name and private directory). Booting a fork, waiting for
// its restore and giving it a console is the guest's business:
// machine.Checkpoint and Checkpoint.Fork use this package.
//
//	cp, err := checkpoint.Take(ctx, vm, cfg, checkpoint.Options{Name: "booted", Continue: true})
//	forkCfg, name, err := cp.ForkConfig(ctx, checkpoint.ForkOptions{})
//	… start QEMU from forkCfg, then checkpoint.WaitRestored(ctx, forkVM) …
//	cp.Close() // removes the files unless Keep
//
// What a fork inherits and what it does not:
//
//   - The guest's RAM, CPU and device state, so its processes, shells at
//     their prompts and uptime continue from the checkpoint. The QEMU
//     command line is the original's with a new name, new private directory,
//     new disk overlays and an -incoming option: the device model must match
//     exactly or QEMU refuses the state.
//   - A fresh serial port and console log (<fork>.console.log) starting at
//     the restore: nothing is printed by the guest until something happens,
//     so a shell is resumed by typing (machine.ResumeShell).
//   - Its own user-mode network (slirp) with new ephemeral forward ports:
//     SSH must be re-dialled on the fork's VM.Forwards(). Connections open at
//     the checkpoint are dead on the host side.
//   - A NIC's MAC is part of the migrated device state: virtio-net restores
//     the checkpoint's MAC whatever the fork's command line says, and the
//     guest keeps it in RAM too. On user networking that is harmless (every
//     fork has its own slirp). On a LAN two forks would share a MAC:
//     machine.RenewLease sets a new one inside the guest and waits for the
//     LAN's lease (in Lua, vm:renew_lease).
package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Defaults.
const (
	// DefaultMigrateTimeout bounds saving the state when Options.Timeout is 0.
	DefaultMigrateTimeout = 2 * time.Minute
	// DefaultRestoreTimeout bounds a fork's restore (QEMU start to running)
	// when ForkOptions.Timeout is 0.
	DefaultRestoreTimeout = 2 * time.Minute
	// StateFile is the name of the saved device state in a checkpoint's
	// directory.
	StateFile = "state.bin"
	// pollInterval is how often query-migrate is asked.
	pollInterval = 20 * time.Millisecond
)

// maxBandwidth lifts QEMU's 32 MiB/s default migration speed limit: the
// destination is a local file. A variable for the timeout test.
var maxBandwidth int64 = 8 << 30

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Options configure Take.
type Options struct {
	// Name names the checkpoint (its directory and timeline events);
	// default "<vm>-cp".
	Name string
	// Dir is the parent of the checkpoint's directory (a --state-dir).
	// Default: "checkpoints" in the run directory of the machine, or a new
	// temporary directory without a run.
	Dir string
	// Keep leaves the files in place on Close (Remove still removes them).
	Keep bool
	// Continue lets the original machine run on after the checkpoint; by
	// default it is stopped (QMP quit).
	Continue bool
	// Timeout bounds saving the disks and the device state; 0 means
	// DefaultMigrateTimeout. On expiry the migration is cancelled and Take
	// fails with kind "timeout" (the original machine is resumed if it was
	// running).
	Timeout time.Duration
}

// Layer is a frozen disk of a checkpoint.
type Layer struct {
	// Index is the disk's place in Config.Disks.
	Index int
	// Path is the read-only qcow2 file holding the disk's state at the
	// checkpoint. Forks put their own overlay on top of it.
	Path string
	// Sync is how it was made: "top" (only the guest's writes, backed by
	// the original image, which stays untouched) for a disk attached with
	// snapshot=on, "full" (a complete copy) for a disk the guest writes
	// directly.
	Sync string
	// Backing is the file Path is backed by ("" for a full copy).
	Backing string
}

// Checkpoint is a saved machine state that forks start from. Its methods
// are safe for concurrent use.
type Checkpoint struct {
	name      string
	dir       string
	state     string
	layers    []Layer
	cfg       qemu.Config
	mac       string
	run       *journal.Run
	keep      bool
	useFile   bool
	stateSize int64
	took      time.Duration
	// wasRunning is whether the guest ran when Take paused it.
	wasRunning bool
	// opened is set for a checkpoint read by Open: its files are not ours
	// to remove.
	opened bool

	mu      sync.Mutex
	forks   int
	names   map[string]bool
	removed bool
}

// Name returns the checkpoint's name.
func (c *Checkpoint) Name() string { return c.name }

// Path returns the checkpoint's directory.
func (c *Checkpoint) Path() string { return c.dir }

// StatePath returns the file holding the saved device state.
func (c *Checkpoint) StatePath() string { return c.state }

// StateSize returns the size of the saved device state in bytes.
func (c *Checkpoint) StateSize() int64 { return c.stateSize }

// Layers returns the frozen disk layers, one per disk of the machine.
func (c *Checkpoint) Layers() []Layer { return append([]Layer(nil), c.layers...) }

// Took returns how long Take took from pausing the guest to the saved state.
func (c *Checkpoint) Took() time.Duration { return c.took }

// Keep reports whether Close leaves the files in place.
func (c *Checkpoint) Keep() bool { return c.keep }

func (c *Checkpoint) event(kind string, f map[string]any) {
	if c.run != nil {
		c.run.Event("checkpoint:"+c.name, kind, f)
	}
}

// Take saves the state of vm, started from cfg: it pauses the guest,
// freezes every disk as a read-only qcow2 layer (drive-backup while
// paused), saves the device state and RAM by migration to a file, and then
// resumes the guest (Continue) or leaves it paused for the caller to stop
// (machine.Checkpoint stops it). A VM that QEMU cannot migrate (a mounted
// 9p share, a device with a migration blocker) is refused with kind
// "refused" and QEMU's reason before anything is paused; a save that does
// not finish within the timeout fails with kind "timeout".
func Take(ctx context.Context, vm *qemu.VM, cfg qemu.Config, opt Options) (*Checkpoint, error) {
	t0 := time.Now()
	if opt.Name == "" {
		opt.Name = vm.Name() + "-cp"
	}
	if !nameRE.MatchString(opt.Name) {
		return nil, vmerr.New(vmerr.Usage, "checkpoint: name %q: use letters, digits, '.', '_' and '-'", opt.Name).With("option", "name")
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultMigrateTimeout
	}
	useFile, err := checkMigratable(ctx, vm)
	if err != nil {
		return nil, err
	}
	dir, err := makeDir(opt, cfg)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{
		name: opt.Name, dir: dir, state: filepath.Join(dir, StateFile), cfg: cfg, mac: vm.MAC(),
		run: cfg.Run, keep: opt.Keep, useFile: useFile, names: map[string]bool{},
	}
	mctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.save(mctx, vm); err != nil {
		os.RemoveAll(dir)
		c.event("failed", map[string]any{"error": err.Error()})
		return nil, err
	}
	if opt.Continue && c.wasRunning {
		if err := vm.Cont(ctx); err != nil {
			return c, vmerr.Wrap(vmerr.KindOf(err), err, "checkpoint: %s saved, but resuming %s failed", c.name, vm.Name())
		}
	}
	layers := make([]string, len(c.layers))
	for i, l := range c.layers {
		layers[i] = l.Path
	}
	c.event("taken", map[string]any{
		"vm": vm.Name(), "dir": dir, "state": c.state, "state_bytes": c.stateSize, "layers": layers,
		"paused_ms": c.took.Milliseconds(), "ms": time.Since(t0).Milliseconds(), "continue": opt.Continue,
		"transport": map[bool]string{true: "file", false: "exec"}[useFile],
	})
	return c, nil
}

// checkMigratable refuses what cannot be migrated, before anything is
// paused, and says whether QEMU migrates to "file:" URIs.
func checkMigratable(ctx context.Context, vm *qemu.VM) (bool, error) {
	info, err := queryMigrate(ctx, vm)
	if err != nil {
		return false, err
	}
	if len(info.BlockedReasons) > 0 {
		return false, refused(vm.Name(), strings.Join(info.BlockedReasons, "; "))
	}
	if info.Status == "active" || info.Status == "setup" {
		return false, vmerr.New(vmerr.Refused, "checkpoint: %s: a migration is already %s", vm.Name(), info.Status).With("vm", vm.Name())
	}
	return supportsFileURI(ctx, vm)
}

// makeDir makes the checkpoint's directory: opt.Dir/NAME, by default
// checkpoints/NAME in the run directory, or a new temporary directory
// without a run.
func makeDir(opt Options, cfg qemu.Config) (string, error) {
	parent := opt.Dir
	if parent == "" && cfg.Run != nil {
		parent = cfg.Run.Path("checkpoints")
	}
	var dir string
	if parent == "" {
		d, err := os.MkdirTemp("", "vmscript-cp-"+opt.Name+"-")
		if err != nil {
			return "", vmerr.Wrap(vmerr.IO, err, "checkpoint: directory")
		}
		dir = d
	} else {
		dir = filepath.Join(parent, opt.Name)
		if _, err := os.Stat(dir); err == nil {
			return "", vmerr.New(vmerr.Usage, "checkpoint: %s exists already (a checkpoint of that name was taken in this directory); pick another name", dir).With("option", "name")
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", vmerr.Wrap(vmerr.IO, err, "checkpoint: directory")
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", vmerr.Wrap(vmerr.IO, err, "checkpoint: directory")
	}
	return abs, nil
}

// save pauses the guest, freezes its disks and migrates its state to the
// state file; on failure a running guest is resumed.
func (c *Checkpoint) save(ctx context.Context, vm *qemu.VM) error {
	status, err := vm.Status(ctx)
	if err != nil {
		return err
	}
	c.wasRunning = status == "running"
	resume := func() {
		if c.wasRunning {
			rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer rcancel()
			vm.Cont(rctx)
		}
	}
	tPause := time.Now()
	if c.wasRunning {
		if _, err := vm.QMP(ctx, "stop", nil); err != nil {
			return err
		}
	}
	// Disks first: after a completed migration QEMU hands its images over
	// (inactivates them) until cont, so block jobs must run before.
	if len(c.cfg.Disks) > 0 {
		layers, err := freezeDisks(ctx, vm, c.cfg, c.dir)
		if err != nil {
			resume()
			return err
		}
		c.layers = layers
	}
	if err := migrate(ctx, vm, c.state, c.useFile); err != nil {
		resume()
		return err
	}
	c.took = time.Since(tPause)
	if st, err := os.Stat(c.state); err == nil {
		c.stateSize = st.Size()
	}
	for _, l := range c.layers {
		os.Chmod(l.Path, 0o444)
	}
	os.Chmod(c.state, 0o444)
	return c.writeManifest()
}

// migrationInfo is the part of query-migrate's reply Take reads.
type migrationInfo struct {
	Status         string   `json:"status"`
	ErrorDesc      string   `json:"error-desc"`
	BlockedReasons []string `json:"blocked-reasons"`
	RAM            *struct {
		Transferred int64 `json:"transferred"`
		Total       int64 `json:"total"`
	} `json:"ram"`
}

func queryMigrate(ctx context.Context, vm *qemu.VM) (migrationInfo, error) {
	var info migrationInfo
	raw, err := vm.QMP(ctx, "query-migrate", nil)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		return info, vmerr.Wrap(vmerr.Protocol, err, "checkpoint: query-migrate reply")
	}
	return info, nil
}

func refused(vm, reason string) error {
	return vmerr.New(vmerr.Refused, "checkpoint: QEMU cannot save the state of %s: %s", vm, reason).
		With("vm", vm).With("reason", reason)
}

// supportsFileURI reports whether QEMU migrates to "file:" URIs (8.2 and
// later); older ones get "exec:cat > FILE".
func supportsFileURI(ctx context.Context, vm *qemu.VM) (bool, error) {
	raw, err := vm.QMP(ctx, "query-version", nil)
	if err != nil {
		return false, err
	}
	var v struct {
		QEMU struct{ Major, Minor int } `json:"qemu"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return false, vmerr.Wrap(vmerr.Protocol, err, "checkpoint: query-version reply")
	}
	return fileURIVersion(v.QEMU.Major, v.QEMU.Minor), nil
}

// fileURIVersion reports whether QEMU major.minor knows "file:" migration.
func fileURIVersion(major, minor int) bool { return major > 8 || major == 8 && minor >= 2 }

// migrate saves the device state of the paused vm to path and waits for
// the file to be complete.
func migrate(ctx context.Context, vm *qemu.VM, path string, useFile bool) error {
	if _, err := vm.QMP(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": maxBandwidth}); err != nil {
		return err
	}
	part := path + ".part"
	uri := "exec:cat > " + shellquote.Quote(part) + " && mv " + shellquote.Quote(part) + " " + shellquote.Quote(path)
	if useFile {
		uri = "file:" + part
	}
	// A QMP timeout can come a moment before ctx reports its deadline.
	timedOut := func(err error) bool { return ctx.Err() != nil || vmerr.Is(err, vmerr.Timeout) }
	if _, err := vm.QMP(ctx, "migrate", map[string]any{"uri": uri}); err != nil {
		if vmerr.Is(err, vmerr.Refused) {
			return refused(vm.Name(), strings.TrimPrefix(err.Error(), "qemu: "))
		}
		if timedOut(err) {
			return migrateTimeout(vm, ctx)
		}
		return err
	}
	for {
		info, err := queryMigrate(ctx, vm)
		if err != nil {
			if timedOut(err) {
				return migrateTimeout(vm, ctx)
			}
			return err
		}
		switch info.Status {
		case "completed":
			if useFile {
				if err := os.Rename(part, path); err != nil {
					return vmerr.Wrap(vmerr.IO, err, "checkpoint: state file")
				}
				return nil
			}
			return waitFile(ctx, vm, path)
		case "failed", "cancelled":
			why := info.ErrorDesc
			if why == "" {
				why = "migration " + info.Status
			}
			if strings.Contains(why, "blocker") || strings.Contains(why, "disallow") {
				return refused(vm.Name(), why)
			}
			return vmerr.New(vmerr.IO, "checkpoint: saving the state of %s failed: %s", vm.Name(), why).With("vm", vm.Name())
		}
		select {
		case <-ctx.Done():
			return migrateTimeout(vm, ctx)
		case <-vm.Exited():
			return vmerr.New(vmerr.Exited, "checkpoint: %s exited while its state was being saved", vm.Name()).With("vm", vm.Name())
		case <-time.After(pollInterval):
		}
	}
}

func migrateTimeout(vm *qemu.VM, ctx context.Context) error {
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vm.QMP(cctx, "migrate_cancel", nil)
	kind := vmerr.DoneKind(ctx)
	cause := ctx.Err()
	if cause == nil {
		cause = context.DeadlineExceeded // the QMP socket's deadline came first
	}
	return vmerr.Wrap(kind, cause, "checkpoint: saving the state of %s did not finish in time (migration cancelled)", vm.Name()).With("vm", vm.Name())
}

// waitFile waits for the exec: channel's "mv" to publish path: QEMU reports
// "completed" before its cat has necessarily flushed the last bytes.
func waitFile(ctx context.Context, vm *qemu.VM, path string) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return vmerr.Wrap(vmerr.Timeout, ctx.Err(), "checkpoint: QEMU reported the migration of %s complete, but %s never appeared", vm.Name(), path).With("vm", vm.Name())
		case <-time.After(pollInterval):
		}
	}
}

// blockInfo is the part of query-block's reply freezeDisks reads.
type blockInfo struct {
	Device   string `json:"device"`
	Inserted *struct {
		File  string `json:"file"`
		Image struct {
			Filename     string     `json:"filename"`
			VirtualSize  int64      `json:"virtual-size"`
			BackingImage *imageInfo `json:"backing-image"`
		} `json:"image"`
	} `json:"inserted"`
}

type imageInfo struct {
	Filename string `json:"filename"`
	Format   string `json:"format"`
}

// freezeDisks copies each disk's state into a qcow2 layer in dir while the
// guest is paused. The layer is created by qemu-img and attached as a node
// of its own (blockdev-add) for blockdev-backup: drive-backup of a drive
// with snapshot=on in QEMU 7.2 opens its target with the temporary overlay's
// flags, so the target is deleted when closed — and with mode
// absolute-paths it deleted the original image (measured).
func freezeDisks(ctx context.Context, vm *qemu.VM, cfg qemu.Config, dir string) ([]Layer, error) {
	raw, err := vm.QMP(ctx, "query-block", nil)
	if err != nil {
		return nil, err
	}
	var blocks []blockInfo
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, vmerr.Wrap(vmerr.Protocol, err, "checkpoint: query-block reply")
	}
	used := map[string]bool{}
	var layers []Layer
	for i, d := range cfg.Disks {
		abs, _ := filepath.Abs(d.Path)
		var blk *blockInfo
		snap := d.Snapshot == nil || *d.Snapshot
		for j, b := range blocks {
			if b.Inserted == nil || used[b.Device] {
				continue
			}
			var match bool
			if snap {
				bi := b.Inserted.Image.BackingImage
				match = bi != nil && (bi.Filename == d.Path || bi.Filename == abs)
			} else {
				match = b.Inserted.File == d.Path || b.Inserted.File == abs
			}
			if match {
				blk = &blocks[j]
				used[b.Device] = true
				break
			}
		}
		if blk == nil {
			return nil, vmerr.New(vmerr.Internal, "checkpoint: disk %d (%s) not found in query-block", i+1, d.Path).With("vm", vm.Name())
		}
		l := Layer{Index: i, Path: filepath.Join(dir, fmt.Sprintf("disk%d.qcow2", i+1)), Sync: "full"}
		size := strconv.FormatInt(blk.Inserted.Image.VirtualSize, 10)
		if snap {
			l.Sync, l.Backing = "top", abs
			err = qemuImg(ctx, "create", "-q", "-u", "-f", "qcow2", "-b", abs, "-F", blk.Inserted.Image.BackingImage.Format, l.Path, size)
		} else {
			err = qemuImg(ctx, "create", "-q", "-f", "qcow2", l.Path, size)
		}
		if err != nil {
			return nil, err
		}
		node := fmt.Sprintf("cp-disk%d", i+1)
		if _, err := vm.QMP(ctx, "blockdev-add", map[string]any{
			"driver": "qcow2", "node-name": node, "backing": nil,
			"file": map[string]any{"driver": "file", "filename": l.Path},
		}); err != nil {
			return nil, err
		}
		err := backup(ctx, vm, blk.Device, node, l.Sync)
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, derr := vm.QMP(dctx, "blockdev-del", map[string]any{"node-name": node})
		cancel()
		if err == nil {
			err = derr
		}
		if err != nil {
			return nil, vmerr.Wrap(vmerr.KindOf(err), err, "checkpoint: freezing disk %d (%s)", i+1, d.Path).With("vm", vm.Name())
		}
		layers = append(layers, l)
	}
	return layers, nil
}

// backup runs blockdev-backup from device to node and waits for the job.
func backup(ctx context.Context, vm *qemu.VM, device, node, sync string) error {
	job := node
	isJob := func(data json.RawMessage) bool {
		var e struct {
			Device string `json:"device"`
			Len    *int64 `json:"len"`
		}
		json.Unmarshal(data, &e)
		return e.Device == job && e.Len != nil // COMPLETED or CANCELLED
	}
	mark := vm.EventMark()
	if _, err := vm.QMP(ctx, "blockdev-backup", map[string]any{
		"job-id": job, "device": device, "target": node, "sync": sync, "auto-dismiss": true,
	}); err != nil {
		return err
	}
	ev, err := vm.WaitEvent(ctx, "", isJob, mark)
	if err != nil {
		return err
	}
	var done struct {
		Error string `json:"error"`
	}
	json.Unmarshal(ev.Data, &done)
	if ev.Name != "BLOCK_JOB_COMPLETED" || done.Error != "" {
		return vmerr.New(vmerr.IO, "block job %s: %s %s", job, ev.Name, done.Error)
	}
	return nil
}

// Remove stops nothing and deletes the checkpoint's files, Keep or not (but
// never those of a checkpoint read by Open).
// Running forks keep working: QEMU holds their files open.
func (c *Checkpoint) Remove() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed || c.opened {
		return nil
	}
	c.removed = true
	c.event("removed", map[string]any{"dir": c.dir})
	filepath.Walk(c.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			os.Chmod(p, 0o644)
		}
		return nil
	})
	if err := os.RemoveAll(c.dir); err != nil {
		return vmerr.Wrap(vmerr.IO, err, "checkpoint: removing %s", c.dir)
	}
	return nil
}

// Close removes the checkpoint's files unless Keep was set.
func (c *Checkpoint) Close() error {
	if c.keep {
		c.event("kept", map[string]any{"dir": c.dir})
		return nil
	}
	return c.Remove()
}

// qemuImg runs qemu-img and quotes its output on failure.
func qemuImg(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "qemu-img", args...).CombinedOutput()
	if err != nil {
		return vmerr.Wrap(vmerr.IO, err, "checkpoint: qemu-img %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
	return nil
}
