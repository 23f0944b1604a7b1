package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// ManifestFile names the description of a checkpoint in its directory,
// written by Take, read by Open.
const ManifestFile = "checkpoint.json"

// manifest is what Open needs to fork from a checkpoint directory made in
// another process: file names are relative to the directory, so it may be
// moved (into a cache) as a whole.
type manifest struct {
	Name       string          `json:"name"`
	State      string          `json:"state"`
	StateBytes int64           `json:"state_bytes"`
	Layers     []manifestLayer `json:"layers"`
	MAC        string          `json:"mac"`
	UseFile    bool            `json:"use_file"`
	Took       time.Duration   `json:"took_ns"`
	Created    time.Time       `json:"created"`
}

type manifestLayer struct {
	Index   int    `json:"index"`
	File    string `json:"file"`
	Sync    string `json:"sync"`
	Backing string `json:"backing,omitempty"`
}

// writeManifest records the checkpoint in its directory.
func (c *Checkpoint) writeManifest() error {
	m := manifest{Name: c.name, State: filepath.Base(c.state), StateBytes: c.stateSize, MAC: c.mac,
		UseFile: c.useFile, Took: c.took, Created: time.Now().UTC()}
	for _, l := range c.layers {
		m.Layers = append(m.Layers, manifestLayer{Index: l.Index, File: filepath.Base(l.Path), Sync: l.Sync, Backing: l.Backing})
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return vmerr.Wrap(vmerr.Internal, err, "checkpoint: manifest")
	}
	if err := os.WriteFile(filepath.Join(c.dir, ManifestFile), append(data, '\n'), 0o444); err != nil {
		return vmerr.Wrap(vmerr.IO, err, "checkpoint: manifest")
	}
	return nil
}

// Open returns the checkpoint saved in dir (by Take, in this process or
// another), for forks started from cfg: the configuration of the machine
// that was checkpointed, as given to it (the device model must match). The
// files stay where they are: Close and Remove leave them alone.
func Open(dir string, cfg qemu.Config) (*Checkpoint, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, vmerr.Wrap(vmerr.NotFound, err, "checkpoint: %s has no %s", dir, ManifestFile)
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil || m.State == "" {
		return nil, vmerr.New(vmerr.Protocol, "checkpoint: %s: %s is not a checkpoint manifest", dir, ManifestFile)
	}
	c := &Checkpoint{name: m.Name, dir: dir, state: filepath.Join(dir, m.State), cfg: cfg, mac: m.MAC, run: cfg.Run,
		keep: true, useFile: m.UseFile, stateSize: m.StateBytes, took: m.Took, names: map[string]bool{}, opened: true}
	for _, l := range m.Layers {
		c.layers = append(c.layers, Layer{Index: l.Index, Path: filepath.Join(dir, l.File), Sync: l.Sync, Backing: l.Backing})
	}
	if len(c.layers) != len(cfg.Disks) {
		return nil, vmerr.New(vmerr.Usage, "checkpoint: %s has %d disk layers, the configuration %d disks", dir, len(c.layers), len(cfg.Disks))
	}
	return c, nil
}
