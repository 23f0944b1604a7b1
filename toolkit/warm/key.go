package warm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Input is one thing a warm state depends on: a file's content, QEMU's
// binary, the VM's options, the source of what brought the guest to its
// state. Any change of any input is another state.
type Input struct {
	// Kind is "file", "qemu", "options", "ready", "module" or "values".
	Kind string `json:"kind"`
	// Name says which: a path, a module name, "argv".
	Name string `json:"name"`
	// Hash is the input's SHA-256 (hex).
	Hash string `json:"hash"`
	// Detail is a short readable form, for --explain ("QEMU emulator
	// version 7.2.19", the command line).
	Detail string `json:"detail,omitempty"`
}

// Key identifies a warm state.
type Key struct {
	// Name labels the state for people: the VM's name.
	Name string `json:"name"`
	// Hash covers every input.
	Hash string `json:"hash"`
	// Inputs are sorted by kind and name.
	Inputs []Input `json:"inputs"`
}

// NewKey makes the key of a named state from its inputs.
func NewKey(name string, inputs []Input) Key {
	in := append([]Input(nil), inputs...)
	sort.Slice(in, func(i, j int) bool {
		if in[i].Kind != in[j].Kind {
			return in[i].Kind < in[j].Kind
		}
		return in[i].Name < in[j].Name
	})
	h := sha256.New()
	for _, x := range in {
		io.WriteString(h, x.Kind+"\x00"+x.Name+"\x00"+x.Hash+"\n")
	}
	return Key{Name: name, Hash: hex.EncodeToString(h.Sum(nil)), Inputs: in}
}

// Text hashes a text input.
func Text(kind, name, text string) Input {
	sum := sha256.Sum256([]byte(text))
	detail := text
	if len(detail) > 200 {
		detail = detail[:200] + "…"
	}
	return Input{Kind: kind, Name: name, Hash: hex.EncodeToString(sum[:]), Detail: detail}
}

// placeholderDir stands for the private directory in the command line that
// is hashed (each run's is another).
const placeholderDir = "/vmscript-warm"

// KeyFor computes the key of spec brought to a state by ready: the VM's
// command line (accelerator resolved, private directory left out), the
// content of every file it names, the QEMU binary and its version, and
// ready's inputs.
func (c *Cache) KeyFor(ctx context.Context, spec machine.Spec, ready []Input) (Key, error) {
	cfg, err := spec.QEMUConfig(ctx)
	if err != nil {
		return Key{}, err
	}
	cfg.Dir = placeholderDir
	cfg.SerialLog = "" // a second copy of the console: not the guest's state
	if cfg.Accel == "" || cfg.Accel == "auto" {
		cfg.Accel = qemu.ResolveAccel(ctx, cfg.Binary).Accel
	}
	argv, err := cfg.Args()
	if err != nil {
		return Key{}, err
	}
	inputs := append([]Input(nil), ready...)
	inputs = append(inputs, Text("options", "argv", strings.Join(argv[1:], " ")))
	qin, err := c.qemuInput(argv[0])
	if err != nil {
		return Key{}, err
	}
	inputs = append(inputs, qin)
	for _, p := range filesOf(argv) {
		sum, err := c.sums.file(p)
		if err != nil {
			return Key{}, vmerr.Wrap(vmerr.IO, err, "warm: hashing %s", p)
		}
		inputs = append(inputs, Input{Kind: "file", Name: p, Hash: sum})
	}
	return NewKey(cfg.Name, inputs), nil
}

// filesOf returns the existing regular files a command line names, as
// arguments or as values in QEMU's option lists (file=…,…), once each.
func filesOf(argv []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range argv[1:] {
		for _, part := range strings.Split(strings.ReplaceAll(a, ",,", "\x00"), ",") {
			part = strings.ReplaceAll(part, "\x00", ",")
			if _, v, ok := strings.Cut(part, "="); ok {
				part = v
			}
			if !filepath.IsAbs(part) || seen[part] || strings.HasPrefix(part, placeholderDir+"/") {
				continue
			}
			if st, err := os.Stat(part); err == nil && st.Mode().IsRegular() {
				seen[part] = true
				out = append(out, part)
			}
		}
	}
	sort.Strings(out)
	return out
}

// qemuInput is the QEMU binary's content and version.
func (c *Cache) qemuInput(binary string) (Input, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return Input{}, vmerr.Wrap(vmerr.NotFound, err, "warm: QEMU binary %s", binary)
	}
	sum, err := c.sums.file(path)
	if err != nil {
		return Input{}, vmerr.Wrap(vmerr.IO, err, "warm: hashing %s", path)
	}
	out, _ := exec.Command(path, "-version").Output()
	version, _, _ := strings.Cut(string(out), "\n")
	return Input{Kind: "qemu", Name: path, Hash: sum, Detail: strings.TrimSpace(version)}, nil
}

// sumCache remembers file hashes by path, size, modification time and
// inode (sums.json in the cache), so a 1 GB ISO is not read at every run.
type sumCache struct {
	path string
	mu   sync.Mutex
	m    map[string]fileSum
}

type fileSum struct {
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime_ns"`
	Inode uint64 `json:"inode"`
	Hash  string `json:"sha256"`
}

func (s *sumCache) load() {
	s.m = map[string]fileSum{}
	if data, err := os.ReadFile(s.path); err == nil {
		_ = json.Unmarshal(data, &s.m)
	}
}

// file returns the SHA-256 of path, from the cache when its size, time and
// inode are unchanged.
func (s *sumCache) file(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.load()
	}
	if f, ok := s.m[path]; ok && f.Size == st.Size() && f.MTime == st.ModTime().UnixNano() && f.Inode == ino {
		return f.Hash, nil
	}
	sum, err := hashFile(path)
	if err != nil {
		return "", err
	}
	s.m[path] = fileSum{Size: st.Size(), MTime: st.ModTime().UnixNano(), Inode: ino, Hash: sum}
	if data, err := json.Marshal(s.m); err == nil {
		tmp := s.path + ".tmp-" + itoa(os.Getpid())
		if os.WriteFile(tmp, data, 0o644) == nil {
			os.Rename(tmp, s.path)
		}
	}
	return sum, nil
}

// hashFile returns a file's SHA-256.
func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
