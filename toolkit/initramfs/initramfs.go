// Package initramfs opens a Linux initramfs (an initrd file) in place, the
// way the kernel unpacks it: a sequence of segments, each an uncompressed
// cpio archive ("newc" or its "crc" variant) or a compressed stream (gzip,
// xz, zstd, lzma, lz4 legacy, bzip2) of one or more cpio archives, with
// zero padding between them. Debian and Ubuntu initrds are an uncompressed
// early-microcode archive followed by the compressed main one.
//
// Open reads the file once, streaming, and keeps only an index: one entry
// per member (its iso.Entry — path, mode, size, times, owner, symlink
// target — and where its data starts), about 200 bytes plus the path per
// member; no file data is kept (the Debian installer's initrd.gz: 2 387
// members, 1.6 MiB of heap, 6 MB peak RSS while indexing). Reading a
// member of an uncompressed segment reads its bytes in place. Reading one
// of a compressed segment decompresses the segment up to it; the
// decompressor's position is kept, so reading members in archive order
// (Members) costs one pass in all, while reading backwards starts over
// from the segment's start. Decompressors are bounded: a dictionary or
// window above Limits.MaxWindow is refused.
//
// Entries are iso.Entry values, so an archive lists like an ISO image
// (same fields, mode strings and ls -l lines). Later members replace
// earlier ones with the same path, as the kernel's unpacker does; hard
// links share the data of the member that carries it. A directory the
// archive does not list but whose contents it has is listed as drwxr-xr-x
// root with time 0 (the kernel would fail to create its contents).
//
// Failures are *vmerr.Error values naming the archive: "notfound" for a
// missing path, "usage" for a path of the wrong type or an unsupported
// format (lzo, odc cpio), "io" for corrupt or truncated data.
package initramfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Segment is one part of the initramfs file.
type Segment struct {
	// Offset is where the segment starts in the file.
	Offset int64 `json:"offset"`
	// Length is how many bytes of the file it spans.
	Length int64 `json:"length"`
	// Format is FormatCpio for an uncompressed archive, else the
	// compression: FormatGzip, FormatXz, FormatZstd, FormatLzma, FormatLz4,
	// FormatBzip2.
	Format string `json:"format"`
	// Size is the number of uncompressed bytes.
	Size int64 `json:"size"`
	// Members is the number of cpio members (trailers not counted).
	Members int `json:"members"`
}

// Limits bound what a hostile initramfs can cost. Zero fields take the
// DefaultLimits value.
type Limits struct {
	// MaxMembers bounds the members of all archives.
	MaxMembers int
	// MaxUncompressed bounds the uncompressed bytes of all segments.
	MaxUncompressed int64
	// MaxWindow bounds the dictionary or window a decompressor allocates.
	MaxWindow int64
}

// DefaultLimits fit any real initrd (the Debian installer's has 2 400
// members and 137 MB uncompressed).
var DefaultLimits = Limits{MaxMembers: 1 << 20, MaxUncompressed: 16 << 30, MaxWindow: 128 << 20}

func (l *Limits) withDefaults() Limits {
	d := DefaultLimits
	if l == nil {
		return d
	}
	if l.MaxMembers > 0 {
		d.MaxMembers = l.MaxMembers
	}
	if l.MaxUncompressed > 0 {
		d.MaxUncompressed = l.MaxUncompressed
	}
	if l.MaxWindow > 0 {
		d.MaxWindow = l.MaxWindow
	}
	return d
}

// maxLinks bounds symlink resolution.
const maxLinks = 40

// member is one indexed cpio member.
type member struct {
	e iso.Entry
	// seq is the member's position in the archive, -1 for a directory
	// only its contents imply.
	seq int
	seg int
	// off is where the data starts in the segment's uncompressed stream.
	off int64
	// data is the member that carries the data of a hard link group.
	data *member
}

// Archive is an opened initramfs. Its methods are safe for concurrent use
// (calls are serialised).
type Archive struct {
	name  string
	r     io.ReaderAt
	size  int64
	lim   Limits
	owner *os.File

	segs     []Segment
	files    map[string]*member
	children map[string][]*member

	mu  sync.Mutex
	cur *cursor
}

// Open indexes the initramfs in r (size bytes), named name in messages
// ("/x.iso:/install.amd/initrd.gz"). r must stay readable while the
// archive is used; it is read again for Read. lim may be nil.
func Open(ctx context.Context, r io.ReaderAt, size int64, name string, lim *Limits) (*Archive, error) {
	a := &Archive{name: name, r: r, size: size, lim: lim.withDefaults(), files: map[string]*member{}}
	if err := a.scan(ctx); err != nil {
		return nil, err
	}
	a.index()
	return a, nil
}

// OpenFile opens the initramfs at the host path p.
func OpenFile(ctx context.Context, p string, lim *Limits) (*Archive, error) {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, vmerr.Wrap(vmerr.NotFound, err, "initramfs %s", p).With("path", p)
		}
		return nil, vmerr.Wrap(vmerr.IO, err, "initramfs %s", p).With("path", p)
	}
	st, err := f.Stat()
	if err == nil && st.IsDir() {
		err = vmerr.New(vmerr.Usage, "initramfs %s is a directory", p).With("path", p)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	a, err := Open(ctx, f, st.Size(), p, lim)
	if err != nil {
		f.Close()
		return nil, err
	}
	a.owner = f
	return a, nil
}

// Name names the archive in messages.
func (a *Archive) Name() string { return a.name }

// String describes the archive: "initramfs /x/initrd.gz (cpio+gzip, 2387 members)".
func (a *Archive) String() string {
	n := 0
	for _, s := range a.segs {
		n += s.Members
	}
	return fmt.Sprintf("initramfs %s (%s, %d members)", a.name, a.Compression(), n)
}

// Segments describes the parts of the file in order.
func (a *Archive) Segments() []Segment { return append([]Segment(nil), a.segs...) }

// Compression lists the segment formats joined by "+": "cpio+gzip".
func (a *Archive) Compression() string {
	var f []string
	for _, s := range a.segs {
		f = append(f, s.Format)
	}
	return strings.Join(f, "+")
}

// Close releases the file OpenFile opened and any decompressor.
func (a *Archive) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cur.close()
	a.cur = nil
	if a.owner != nil {
		err := a.owner.Close()
		a.owner = nil
		return err
	}
	return nil
}

// index builds the directory listing, adding directories that only their
// contents imply.
func (a *Archive) index() {
	if _, ok := a.files["/"]; !ok {
		a.files["/"] = &member{seq: -1, e: iso.Entry{Path: "/", Name: "/", Mode: iofs.ModeDir | 0o755}}
	}
	a.children = map[string][]*member{}
	paths := make([]string, 0, len(a.files))
	for p := range a.files {
		paths = append(paths, p)
	}
	for _, p := range paths {
		for d := path.Dir(p); p != "/"; p, d = d, path.Dir(d) {
			if _, ok := a.files[d]; !ok {
				a.files[d] = &member{seq: -1, e: iso.Entry{Path: d, Name: path.Base(d), Mode: iofs.ModeDir | 0o755}}
			}
			if d == "/" {
				break
			}
		}
	}
	for p, m := range a.files {
		if p != "/" {
			a.children[path.Dir(p)] = append(a.children[path.Dir(p)], m)
		}
	}
	for _, list := range a.children {
		sort.Slice(list, func(i, j int) bool { return list[i].e.Name < list[j].e.Name })
	}
}

func abs(p string) string { return path.Clean("/" + p) }

func (a *Archive) notFound(p string) error {
	return vmerr.New(vmerr.NotFound, "%s: %s does not exist", a.name, abs(p)).With("image", a.name).With("path", abs(p))
}

// Stat describes the entry at p without following a final symlink.
func (a *Archive) Stat(p string) (iso.Entry, error) {
	m, ok := a.files[abs(p)]
	if !ok {
		return iso.Entry{}, a.notFound(p)
	}
	return m.e, nil
}

// Exists reports whether p exists (a dangling symlink exists).
func (a *Archive) Exists(p string) (bool, error) {
	_, ok := a.files[abs(p)]
	return ok, nil
}

// List returns the entries of directory dir, sorted by name.
func (a *Archive) List(dir string) ([]iso.Entry, error) {
	m, ok := a.files[abs(dir)]
	if !ok {
		return nil, a.notFound(dir)
	}
	if !m.e.IsDir() {
		return nil, vmerr.New(vmerr.Usage, "%s: %s is not a directory", a.name, abs(dir)).With("image", a.name).With("path", abs(dir))
	}
	list := a.children[abs(dir)]
	out := make([]iso.Entry, len(list))
	for i, c := range list {
		out[i] = c.e
	}
	return out, nil
}

// Resolve returns the entry p leads to, following symlinks in every
// element (absolute targets from the archive's root, as in a chroot).
func (a *Archive) Resolve(p string) (iso.Entry, error) {
	m, err := a.resolve(p)
	if err != nil {
		return iso.Entry{}, err
	}
	return m.e, nil
}

func (a *Archive) resolve(p string) (*member, error) {
	todo := strings.Split(strings.Trim(abs(p), "/"), "/")
	cur, last := "/", a.files["/"]
	hops := 0
	for len(todo) > 0 {
		elem := todo[0]
		todo = todo[1:]
		switch elem {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			last = a.files[cur]
			continue
		}
		next := path.Join(cur, elem)
		m, ok := a.files[next]
		if !ok {
			return nil, a.notFound(p)
		}
		if m.e.IsLink() {
			if hops++; hops > maxLinks {
				return nil, vmerr.New(vmerr.IO, "%s: too many levels of symbolic links resolving %s", a.name, abs(p)).With("path", abs(p))
			}
			if strings.HasPrefix(m.e.Target, "/") {
				cur = "/"
			}
			todo = append(strings.Split(m.e.Target, "/"), todo...)
			continue
		}
		cur, last = next, m
	}
	return last, nil
}

// Walk calls fn for every entry, depth first in name order, each
// directory before its contents (not the root). Symlinks are not
// followed. fn returning iso.ErrSkipDir skips a directory's contents,
// iso.ErrStop ends the walk without an error.
func (a *Archive) Walk(fn func(iso.Entry) error) error {
	err := a.walk("/", fn)
	if errors.Is(err, iso.ErrStop) {
		return nil
	}
	return err
}

func (a *Archive) walk(dir string, fn func(iso.Entry) error) error {
	for _, m := range a.children[dir] {
		err := fn(m.e)
		if m.e.IsDir() {
			if errors.Is(err, iso.ErrSkipDir) {
				continue
			}
			if err != nil {
				return err
			}
			if err := a.walk(m.e.Path, fn); err != nil {
				return err
			}
			continue
		}
		if err != nil && !errors.Is(err, iso.ErrSkipDir) {
			return err
		}
	}
	return nil
}

// Members lists the entries in archive order (the order the kernel
// unpacks them; a path replaced later is listed where it was replaced).
func (a *Archive) Members() []iso.Entry {
	list := make([]*member, 0, len(a.files))
	for _, m := range a.files {
		if m.seq >= 0 {
			list = append(list, m)
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].seq < list[j].seq })
	out := make([]iso.Entry, len(list))
	for i, m := range list {
		out[i] = m.e
	}
	return out
}
