package lab

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// tree is an in-memory file tree written as an initramfs (mini).
type tree struct {
	entries map[string]*treeEntry
}

type treeEntry struct {
	mode   uint32 // type | perm
	data   []byte // file content or symlink target
	source string // file content comes from this host path when data is nil
}

func newTree() *tree { return &tree{entries: map[string]*treeEntry{}} }

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

func (t *tree) mkdirAll(p string) {
	p = clean(p)
	for p != "" && p != "." {
		if _, ok := t.entries[p]; !ok {
			t.entries[p] = &treeEntry{mode: modeDir | 0o755}
		}
		p = path.Dir(p)
	}
}

func (t *tree) dir(p string, perm uint32) {
	t.mkdirAll(p)
	t.entries[clean(p)].mode = modeDir | perm
}

func (t *tree) file(p string, perm uint32, data []byte) {
	p = clean(p)
	t.mkdirAll(path.Dir(p))
	t.entries[p] = &treeEntry{mode: modeRegular | perm, data: data}
}

func (t *tree) hostFile(p string, perm uint32, src string) {
	p = clean(p)
	t.mkdirAll(path.Dir(p))
	t.entries[p] = &treeEntry{mode: modeRegular | perm, source: src}
}

func (t *tree) symlink(p, target string) {
	p = clean(p)
	t.mkdirAll(path.Dir(p))
	t.entries[p] = &treeEntry{mode: modeSymlink | 0o777, data: []byte(target)}
}

func (t *tree) has(p string) bool { _, ok := t.entries[clean(p)]; return ok }

// writeCpioGz writes the tree as a gzip'ed newc cpio, owned by root, in
// sorted order (parents first), with a fixed mtime.
func (t *tree) writeCpioGz(w io.Writer, mtime uint32) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	cw := newCpioWriter(zw)
	var names []string
	for n := range t.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		e := t.entries[n]
		data := e.data
		if e.mode&modeTypeMask == modeRegular && data == nil && e.source != "" {
			data, err = os.ReadFile(e.source)
			if err != nil {
				return err
			}
		}
		h := &cpioEntry{Name: n, Mode: e.mode, Mtime: mtime, Size: uint32(len(data))}
		if e.mode&modeTypeMask == modeDir {
			h.Size = 0
		}
		if err := cw.writeHeader(h); err != nil {
			return fmt.Errorf("cpio %s: %w", n, err)
		}
		if h.Size > 0 {
			if err := cw.write(data); err != nil {
				return err
			}
			if err := cw.pad(); err != nil {
				return err
			}
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
