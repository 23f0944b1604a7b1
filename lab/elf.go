package lab

import (
	"debug/elf"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
)

// libDirs are searched, inside an extracted package root, for libraries.
var libDirs = []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib"}

// sharedLibs returns the transitive shared-library needs of the binaries
// (paths inside root): a map from the path the dynamic loader will look for
// ("lib/x86_64-linux-gnu/libc.so.6", "lib64/ld-linux-x86-64.so.2") to the
// host path of the real file in root (symlinks resolved).
func sharedLibs(root string, bins []string) (map[string]string, error) {
	out := map[string]string{}
	queue := append([]string(nil), bins...)
	seen := map[string]bool{}
	for len(queue) > 0 {
		rel := queue[0]
		queue = queue[1:]
		if seen[rel] {
			continue
		}
		seen[rel] = true
		host, err := resolveIn(root, rel)
		if err != nil {
			return nil, err
		}
		f, err := elf.Open(host)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		needed, err := f.DynString(elf.DT_NEEDED)
		var interp string
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b := make([]byte, p.Filesz)
				if _, err := p.ReadAt(b, 0); err == nil {
					interp = string(b[:len(b)-1])
				}
			}
		}
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		if interp != "" {
			ip := clean(interp)
			h, err := resolveIn(root, ip)
			if err != nil {
				return nil, fmt.Errorf("%s: interpreter %s: %w", rel, interp, err)
			}
			out[ip] = h
		}
		sort.Strings(needed)
		for _, n := range needed {
			found := false
			for _, d := range libDirs {
				p := path.Join(d, n)
				if h, err := resolveIn(root, p); err == nil {
					if _, ok := out[path.Join("lib/x86_64-linux-gnu", n)]; !ok {
						out[path.Join("lib/x86_64-linux-gnu", n)] = h
					}
					queue = append(queue, p)
					found = true
					break
				}
			}
			if !found {
				return nil, fmt.Errorf("%s needs %s, not found in the extracted packages", rel, n)
			}
		}
	}
	return out, nil
}

// resolveIn resolves a path inside root, following symlinks relative to
// root (absolute link targets stay inside root).
func resolveIn(root, rel string) (string, error) {
	cur := clean(rel)
	for i := 0; i < 40; i++ {
		host := filepath.Join(root, cur)
		// Resolve the parents first.
		dir, base := path.Split(cur)
		if dir != "" {
			hd, err := resolveIn(root, dir)
			if err != nil {
				return "", err
			}
			r, _ := filepath.Rel(root, hd)
			cur = path.Join(filepath.ToSlash(r), base)
			host = filepath.Join(root, cur)
		}
		st, err := os.Lstat(host)
		if err != nil {
			return "", err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			return host, nil
		}
		t, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if path.IsAbs(t) {
			cur = clean(t)
		} else {
			cur = clean(path.Join(path.Dir(cur), t))
		}
	}
	return "", fmt.Errorf("%s: too many symlinks", rel)
}
