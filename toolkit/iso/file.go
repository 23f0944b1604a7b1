package iso

import (
	"errors"
	"io"
	iofs "io/fs"
	"time"

	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// File is an open regular file of an image, read in place: an ISO file is
// a byte range of the image file (ISO files are contiguous), a squashfs
// file is decompressed on demand. It is an io.Reader, io.ReaderAt and
// io.Seeker, so an initramfs or a cache can stream it without copying the
// whole file into memory. A File must not outlive its Image.
type File struct {
	*io.SectionReader
	entry Entry
	im    *Image
	// sq is the go-diskfs file of a squashfs entry (nil for an ISO).
	sq iofs.File
}

// Open opens the regular file at p (following symlinks inside the image)
// for reading.
func (im *Image) Open(p string) (*File, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	e, err := im.resolveLocked(p)
	if err != nil {
		return nil, err
	}
	if !e.IsRegular() {
		return nil, vmerr.New(vmerr.Usage, "%s: %s is not a regular file (%s)", im.name, abs(p), e.Type()).With("path", abs(p))
	}
	f := &File{entry: e, im: im}
	if im.kind == KindISO {
		fi, err := im.statLocked(clean(e.Path))
		if err != nil {
			return nil, im.pathErr(e.Path, err)
		}
		st, ok := fi.Sys().(*iso9660.StatT)
		if !ok {
			return nil, vmerr.New(vmerr.Internal, "%s: no ISO 9660 location for %s", im.name, e.Path)
		}
		start := int64(st.Location) * sectorSize
		if start+e.Size > im.fileSize {
			return nil, vmerr.New(vmerr.IO, "%s: %s is truncated: the file ends at byte %d, the image at %d", im.name, e.Path, start+e.Size, im.fileSize).With("path", e.Path)
		}
		f.SectionReader = io.NewSectionReader(im.storage, start, e.Size)
		return f, nil
	}
	err = guard(im.name, func() error {
		var e2 error
		f.sq, e2 = im.fs.Open(clean(e.Path))
		return e2
	})
	if err != nil {
		return nil, ioErr(err, "%s: open %s", im.name, e.Path)
	}
	f.SectionReader = io.NewSectionReader(squashReaderAt{f}, 0, e.Size)
	return f, nil
}

// squashReaderAt reads a squashfs file at an offset, serialised with the
// image's other calls (go-diskfs files are not safe for concurrent use).
type squashReaderAt struct{ f *File }

func (s squashReaderAt) ReadAt(b []byte, off int64) (n int, err error) {
	f := s.f
	f.im.mu.Lock()
	defer f.im.mu.Unlock()
	if f.sq == nil {
		return 0, iofs.ErrClosed
	}
	err = guard(f.im.name, func() error {
		sk, ok := f.sq.(io.Seeker)
		if !ok {
			return errors.New("squashfs file cannot seek")
		}
		if _, e := sk.Seek(off, io.SeekStart); e != nil {
			return e
		}
		var e error
		n, e = io.ReadFull(f.sq, b)
		return e
	})
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = ioErr(err, "%s: read %s at byte %d", f.im.name, f.entry.Path, off)
	}
	return n, err
}

// Entry describes the file (the target, when Open followed a symlink).
func (f *File) Entry() Entry { return f.entry }

// Stat describes the file as an io/fs.FileInfo.
func (f *File) Stat() (iofs.FileInfo, error) { return entryInfo{f.entry}, nil }

// Close releases the file (the image stays open).
func (f *File) Close() error {
	if f.sq == nil {
		return nil
	}
	f.im.mu.Lock()
	defer f.im.mu.Unlock()
	err := f.sq.Close()
	f.sq = nil
	return err
}

// entryInfo is an Entry as an io/fs.FileInfo and DirEntry.
type entryInfo struct{ e Entry }

func (i entryInfo) Name() string                 { return i.e.Name }
func (i entryInfo) Size() int64                  { return i.e.Size }
func (i entryInfo) Mode() iofs.FileMode          { return i.e.Mode }
func (i entryInfo) ModTime() time.Time           { return i.e.ModTime }
func (i entryInfo) IsDir() bool                  { return i.e.IsDir() }
func (i entryInfo) Sys() any                     { return i.e }
func (i entryInfo) Type() iofs.FileMode          { return i.e.Mode.Type() }
func (i entryInfo) Info() (iofs.FileInfo, error) { return i, nil }

// FS returns the image as an io/fs.FS (also fs.StatFS and fs.ReadDirFS),
// for readers that take one, such as boot menu parsers. Names follow
// io/fs rules (no leading "/"; "." is the root); symlinks inside the image
// are followed in every element. Errors are the image's *vmerr.Error
// values wrapped in *fs.PathError, so errors.Is(err, fs.ErrNotExist)
// holds for missing names.
func (im *Image) FS() iofs.FS { return imageFS{im} }

type imageFS struct{ im *Image }

func (fsys imageFS) check(op, name string) error {
	if !iofs.ValidPath(name) {
		return &iofs.PathError{Op: op, Path: name, Err: iofs.ErrInvalid}
	}
	return nil
}

func (fsys imageFS) wrap(op, name string, err error) error {
	if vmerr.Is(err, vmerr.NotFound) {
		return &iofs.PathError{Op: op, Path: name, Err: notExist{err}}
	}
	return &iofs.PathError{Op: op, Path: name, Err: err}
}

// notExist is a not-found error that also matches fs.ErrNotExist.
type notExist struct{ error }

func (n notExist) Is(target error) bool { return target == iofs.ErrNotExist }
func (n notExist) Unwrap() error        { return n.error }

func (fsys imageFS) Stat(name string) (iofs.FileInfo, error) {
	if err := fsys.check("stat", name); err != nil {
		return nil, err
	}
	e, err := fsys.im.Resolve(name)
	if err != nil {
		return nil, fsys.wrap("stat", name, err)
	}
	return entryInfo{e}, nil
}

func (fsys imageFS) ReadDir(name string) ([]iofs.DirEntry, error) {
	if err := fsys.check("readdir", name); err != nil {
		return nil, err
	}
	e, err := fsys.im.Resolve(name)
	if err != nil {
		return nil, fsys.wrap("readdir", name, err)
	}
	list, err := fsys.im.List(e.Path)
	if err != nil {
		return nil, fsys.wrap("readdir", name, err)
	}
	out := make([]iofs.DirEntry, len(list))
	for i, x := range list {
		out[i] = entryInfo{x}
	}
	return out, nil
}

func (fsys imageFS) Open(name string) (iofs.File, error) {
	if err := fsys.check("open", name); err != nil {
		return nil, err
	}
	e, err := fsys.im.Resolve(name)
	if err != nil {
		return nil, fsys.wrap("open", name, err)
	}
	if e.IsDir() {
		return &dirFile{fsys: fsys, e: e}, nil
	}
	f, err := fsys.im.Open(e.Path)
	if err != nil {
		return nil, fsys.wrap("open", name, err)
	}
	return f, nil
}

// dirFile is an open directory of an imageFS.
type dirFile struct {
	fsys imageFS
	e    Entry
	list []iofs.DirEntry
	read bool
}

func (d *dirFile) Stat() (iofs.FileInfo, error) { return entryInfo{d.e}, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &iofs.PathError{Op: "read", Path: d.e.Path, Err: errors.New("is a directory")}
}
func (d *dirFile) Close() error { return nil }

func (d *dirFile) ReadDir(n int) ([]iofs.DirEntry, error) {
	if !d.read {
		list, err := d.fsys.ReadDir(clean(d.e.Path))
		if err != nil {
			return nil, err
		}
		d.list, d.read = list, true
	}
	if n <= 0 {
		out := d.list
		d.list = nil
		return out, nil
	}
	if len(d.list) == 0 {
		return nil, io.EOF
	}
	if n > len(d.list) {
		n = len(d.list)
	}
	out := d.list[:n]
	d.list = d.list[n:]
	return out, nil
}

var (
	_ iofs.StatFS    = imageFS{}
	_ iofs.ReadDirFS = imageFS{}
	_ iofs.File      = (*File)(nil)
	_ io.ReaderAt    = (*File)(nil)
)
