package iso

import (
	"encoding/binary"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// go-diskfs v1.9.4 cannot list a Joliet directory two or more levels deep
// on an image without Rock Ridge: its path table lookup never advances to
// the second path element (and uses a 0-based parent index), and its
// fallback tree walk compares undecoded UCS-2 names. For such images
// (Joliet, no Rock Ridge) this file reads the Joliet tree itself by walking
// directory records from the root; everything else goes through go-diskfs.

// jolietRoot returns the Joliet root directory record's extent and size, and
// whether the primary tree carries Rock Ridge (SUSP "SP" in the root's "."
// record), from the volume descriptors.
func jolietRoot(r io.ReaderAt) (loc, size uint32, joliet, rockRidge bool) {
	for i := int64(0); i < 64; i++ {
		vd := make([]byte, sectorSize)
		if _, err := r.ReadAt(vd, systemArea+i*sectorSize); err != nil || string(vd[1:6]) != "CD001" || vd[0] == 255 {
			break
		}
		root := vd[156 : 156+34]
		switch {
		case vd[0] == 1:
			rloc := binary.LittleEndian.Uint32(root[2:6])
			sec := make([]byte, sectorSize)
			if _, err := r.ReadAt(sec, int64(rloc)*sectorSize); err == nil && sec[0] >= 34 {
				n := int(sec[32])
				su := 33 + n + (n+1)%2
				if su+2 <= int(sec[0]) && string(sec[su:su+2]) == "SP" {
					rockRidge = true
				}
			}
		case vd[0] == 2 && vd[88] == '%' && vd[89] == '/' && (vd[90] == '@' || vd[90] == 'C' || vd[90] == 'E'):
			if !joliet {
				joliet = true
				loc = binary.LittleEndian.Uint32(root[2:6])
				size = binary.LittleEndian.Uint32(root[10:14])
			}
		}
	}
	return loc, size, joliet, rockRidge
}

// jolietFS reads a Joliet directory tree.
type jolietFS struct {
	r        io.ReaderAt
	rootLoc  uint32
	rootSize uint32
}

// jEntry is one Joliet directory record; it is an fs.DirEntry and FileInfo.
type jEntry struct {
	name  string
	loc   uint32
	size  uint32
	mtime time.Time
	dir   bool
}

func (e *jEntry) Name() string       { return e.name }
func (e *jEntry) Size() int64        { return int64(e.size) }
func (e *jEntry) ModTime() time.Time { return e.mtime }
func (e *jEntry) IsDir() bool        { return e.dir }
func (e *jEntry) Mode() iofs.FileMode {
	if e.dir {
		return iofs.ModeDir | 0o555
	}
	return 0o444
}
func (e *jEntry) Type() iofs.FileMode          { return e.Mode().Type() }
func (e *jEntry) Info() (iofs.FileInfo, error) { return e, nil }
func (e *jEntry) Sys() any                     { return &iso9660.StatT{Location: e.loc} }

func (j *jolietFS) readDir(loc, size uint32) ([]*jEntry, error) {
	if size > 64<<20 {
		return nil, fmt.Errorf("directory at block %d claims %d bytes", loc, size)
	}
	b := make([]byte, size)
	if _, err := j.r.ReadAt(b, int64(loc)*sectorSize); err != nil {
		return nil, fmt.Errorf("read Joliet directory at block %d: %w", loc, err)
	}
	var out []*jEntry
	for i := 0; i < len(b); {
		n := int(b[i])
		if n == 0 {
			i += sectorSize - i%sectorSize
			continue
		}
		if n < 34 || i+n > len(b) || 33+int(b[i+32]) > n {
			return nil, fmt.Errorf("corrupt Joliet directory record at block %d byte %d", loc, i)
		}
		rec := b[i : i+n]
		i += n
		nl := int(rec[32])
		raw := rec[33 : 33+nl]
		if nl == 1 && (raw[0] == 0 || raw[0] == 1) {
			continue
		}
		u := make([]uint16, nl/2)
		for k := range u {
			u[k] = binary.BigEndian.Uint16(raw[2*k:])
		}
		name := string(utf16.Decode(u))
		if k := strings.LastIndex(name, ";"); k > 0 {
			name = name[:k]
		}
		d := rec[18:25]
		mtime := time.Date(1900+int(d[0]), time.Month(d[1]), int(d[2]), int(d[3]), int(d[4]), int(d[5]), 0,
			time.FixedZone("", int(int8(d[6]))*15*60))
		out = append(out, &jEntry{name: name, loc: binary.LittleEndian.Uint32(rec[2:6]),
			size: binary.LittleEndian.Uint32(rec[10:14]), mtime: mtime, dir: rec[25]&2 != 0})
	}
	return out, nil
}

// lookup finds the directory record of p ("." for the root).
func (j *jolietFS) lookup(p string) (*jEntry, error) {
	cur := &jEntry{name: ".", loc: j.rootLoc, size: j.rootSize, dir: true}
	if p == "." {
		return cur, nil
	}
	for _, elem := range strings.Split(p, "/") {
		if !cur.dir {
			return nil, &iofs.PathError{Op: "open", Path: p, Err: iofs.ErrNotExist}
		}
		list, err := j.readDir(cur.loc, cur.size)
		if err != nil {
			return nil, err
		}
		var next *jEntry
		for _, e := range list {
			if e.name == elem {
				next = e
				break
			}
		}
		if next == nil {
			return nil, &iofs.PathError{Op: "open", Path: p, Err: iofs.ErrNotExist}
		}
		cur = next
	}
	return cur, nil
}

func (j *jolietFS) ReadDir(p string) ([]iofs.DirEntry, error) {
	d, err := j.lookup(p)
	if err != nil {
		return nil, err
	}
	if !d.dir {
		return nil, fmt.Errorf("%s is not a directory", p)
	}
	list, err := j.readDir(d.loc, d.size)
	if err != nil {
		return nil, err
	}
	out := make([]iofs.DirEntry, len(list))
	for i, e := range list {
		out[i] = e
	}
	return out, nil
}

func (j *jolietFS) Stat(p string) (iofs.FileInfo, error) {
	e, err := j.lookup(p)
	if err != nil {
		return nil, err
	}
	if p == "." {
		return e, nil
	}
	e.name = path.Base(p)
	return e, nil
}

// jFile is an open Joliet file.
type jFile struct {
	*io.SectionReader
	e *jEntry
}

func (f *jFile) Stat() (iofs.FileInfo, error) { return f.e, nil }
func (f *jFile) Close() error                 { return nil }

func (j *jolietFS) Open(p string) (iofs.File, error) {
	e, err := j.lookup(p)
	if err != nil {
		return nil, err
	}
	if e.dir {
		return nil, fmt.Errorf("%s is a directory", p)
	}
	return &jFile{SectionReader: io.NewSectionReader(j.r, int64(e.loc)*sectorSize, int64(e.size)), e: e}, nil
}

var _ reader = (*jolietFS)(nil)
