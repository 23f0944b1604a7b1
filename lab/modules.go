package lab

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// kmod is one kernel module found in an extracted kernel package.
type kmod struct {
	name string // normalised: '-' -> '_'
	rel  string // path relative to lib/modules/KVER
	deps []string
}

func modName(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if strings.HasSuffix(base, ext) {
			base = strings.TrimSuffix(base, ext)
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

// kernelModules indexes every module under modDir (lib/modules/KVER).
func kernelModules(modDir string) (map[string]*kmod, error) {
	mods := map[string]*kmod{}
	err := filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.Contains(d.Name(), ".ko") {
			return nil
		}
		rel, _ := filepath.Rel(modDir, p)
		mods[modName(p)] = &kmod{name: modName(p), rel: filepath.ToSlash(rel)}
		return nil
	})
	return mods, err
}

// moduleDeps reads the "depends=" field of a module's .modinfo section.
// Compressed modules are decompressed with the host's xz/zstd/gzip.
func moduleDeps(ctx context.Context, b *build, modDir string, m *kmod) ([]string, error) {
	data, err := moduleBytes(ctx, b, filepath.Join(modDir, m.rel))
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", m.rel, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d = strings.TrimSpace(d); d != "" {
					deps = append(deps, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// moduleBytes returns a module's uncompressed content.
func moduleBytes(ctx context.Context, b *build, p string) ([]byte, error) {
	var dec []string
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		dec = []string{"xz", "-dc", p}
	case strings.HasSuffix(p, ".ko.zst"):
		dec = []string{"zstd", "-dcq", p}
	case strings.HasSuffix(p, ".ko.gz"):
		dec = []string{"gzip", "-dc", p}
	default:
		return os.ReadFile(p)
	}
	return tool{ctx: ctx, log: b.log()}.run(dec[0], dec[1:]...)
}

// moduleClosure returns the wanted modules that exist plus everything they
// depend on, in load order (dependencies first). Wanted names that the
// kernel does not have as modules (built in, or absent) are skipped.
func moduleClosure(ctx context.Context, b *build, modDir string, mods map[string]*kmod, want []string) ([]*kmod, error) {
	var order []*kmod
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string) error
	visit = func(name string) error {
		m := mods[name]
		if m == nil {
			return nil
		}
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		state[name] = 1
		deps, err := moduleDeps(ctx, b, modDir, m)
		if err != nil {
			return err
		}
		m.deps = deps
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, w := range want {
		if err := visit(strings.ReplaceAll(w, "-", "_")); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// modulesMatching returns the names of modules whose name has one of the
// prefixes, sorted.
func modulesMatching(mods map[string]*kmod, prefixes ...string) []string {
	var res []string
	for n := range mods {
		for _, p := range prefixes {
			if strings.HasPrefix(n, p) {
				res = append(res, n)
				break
			}
		}
	}
	sort.Strings(res)
	return res
}

// kernelFromDeb finds the kernel release and vmlinuz in an extracted
// linux-image package.
func kernelFromDeb(root string) (kver, vmlinuz string, err error) {
	m, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(m) != 1 {
		return "", "", fmt.Errorf("kernel package: want one boot/vmlinuz-*, found %d", len(m))
	}
	kver = strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-")
	return kver, m[0], nil
}

// kernelModDir returns lib/modules/KVER inside an extracted kernel package
// (usr/lib/modules on merged-/usr packages).
func kernelModDir(root, kver string) (string, error) {
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		p := filepath.Join(root, d, kver)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("kernel package: no lib/modules/%s", kver)
}
