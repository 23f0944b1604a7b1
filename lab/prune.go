package lab

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// Pruned is a cache entry Prune removed (or, on a dry run, would remove).
type Pruned struct {
	// Path is the directory.
	Path string
	// Bytes is the size of the files under it.
	Bytes int64
	// Why says what it was: "stale image" (built from other inputs) or
	// "interrupted build".
	Why string
}

// imageDirRE matches the cache directory of a built image: <name>-<16 hex>.
var imageDirRE = regexp.MustCompile(`^([a-z]+)-[0-9a-f]{16}$`)

// Prune removes from the cache every image built from inputs that are no
// longer current (an older recipe, embedded file or package version) and
// the leftovers of interrupted builds. The current image of each lab is kept
// whether it is built or not, and so are the downloaded packages (debs/) and
// the resolved package sets. Each lab's build lock is held while its entries
// go, so a build running meanwhile is neither disturbed nor pruned. With
// dryRun nothing is removed.
func Prune(ctx context.Context, opt Options, dryRun bool) ([]Pruned, error) {
	cache, err := cacheDir(opt)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(cache)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Pruned
	for _, name := range Names() {
		bl, err := builderFor(name)
		if err != nil {
			return out, err
		}
		dir, err := currentDir(ctx, name, bl, opt, cache)
		if err != nil {
			return out, err
		}
		current := filepath.Base(dir)
		unlock, err := lockImage(ctx, cache, name)
		if err != nil {
			return out, err
		}
		for _, e := range entries {
			why := ""
			if m := imageDirRE.FindStringSubmatch(e.Name()); m != nil && m[1] == name && e.Name() != current {
				why = "stale image"
			} else if matched, _ := filepath.Match(".tmp-"+name+"-*", e.Name()); matched {
				why = "interrupted build"
			}
			if why == "" || !e.IsDir() {
				continue
			}
			p := filepath.Join(cache, e.Name())
			out = append(out, Pruned{Path: p, Bytes: treeSize(p), Why: why})
			if !dryRun {
				if err := os.RemoveAll(p); err != nil {
					unlock()
					return out, err
				}
			}
		}
		unlock()
	}
	return out, nil
}

// treeSize is the total size of the regular files under dir (0 on errors).
func treeSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
