// Package iso inspects boot media without root, loop devices or extraction:
// ISO 9660 images (Rock Ridge and Joliet names, symlinks, El Torito boot
// entries) and squashfs filesystems (gzip, xz, zstd, lzo, lzma), either bare
// or inside an ISO — the `unsquashfs -ll` of an investigation. It reads
// through github.com/diskfs/go-diskfs and parses the El Torito boot catalog
// itself.
//
// Paths inside an image are written with or without a leading "/" ("/boot",
// "boot" and "boot/" are the same); entries report them with a leading "/".
// Failures are *vmerr.Error values naming the image: kind "notfound" for a
// missing image or path, "usage" for a file of the wrong format (not an ISO,
// not a squashfs, lz4 compression) and "io" for corrupt or truncated images.
package iso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Kinds of images.
const (
	KindISO      = "iso9660"
	KindSquashfs = "squashfs"
)

const (
	sectorSize = 2048
	// systemArea is the 16 sectors before the first volume descriptor.
	systemArea = 16 * sectorSize
	// maxLinks bounds symlink resolution.
	maxLinks = 40
)

// Entry is one file, directory or link of an image, as `ls -l` shows it.
type Entry struct {
	// Path is the entry's absolute path inside the image ("/boot/grub").
	Path string `json:"path"`
	// Name is the last element of Path ("/" for the root).
	Name string `json:"name"`
	// Mode is the file's type and permission bits.
	Mode iofs.FileMode `json:"-"`
	// Size is the length in bytes (for a symlink, what the image says).
	Size int64 `json:"size"`
	// ModTime is the modification time the image records.
	ModTime time.Time `json:"mtime"`
	// Target is a symlink's target, "" for anything else.
	Target string `json:"target,omitempty"`
	// UID is the owner, when the image records one (Rock Ridge, squashfs).
	UID uint32 `json:"uid"`
	// GID is the group, when the image records one.
	GID uint32 `json:"gid"`
}

// IsDir reports whether the entry is a directory.
func (e Entry) IsDir() bool { return e.Mode.IsDir() }

// IsLink reports whether the entry is a symbolic link.
func (e Entry) IsLink() bool { return e.Mode&iofs.ModeSymlink != 0 }

// IsRegular reports whether the entry is a regular file.
func (e Entry) IsRegular() bool { return e.Mode.IsRegular() }

// Type is "file", "dir", "link", "char", "block", "fifo", "socket" or "other".
func (e Entry) Type() string {
	m := e.Mode
	switch {
	case m.IsDir():
		return "dir"
	case m&iofs.ModeSymlink != 0:
		return "link"
	case m&iofs.ModeCharDevice != 0:
		return "char"
	case m&iofs.ModeDevice != 0:
		return "block"
	case m&iofs.ModeNamedPipe != 0:
		return "fifo"
	case m&iofs.ModeSocket != 0:
		return "socket"
	case m.IsRegular():
		return "file"
	}
	return "other"
}

// ModeString is the mode as `ls -l` prints it: "drwxr-xr-x", "lrwxrwxrwx".
func (e Entry) ModeString() string { return ModeString(e.Mode) }

// String is the entry as one `ls -l`-style line (like `unsquashfs -ll`).
func (e Entry) String() string {
	s := fmt.Sprintf("%s %d/%d %10d %s %s", e.ModeString(), e.UID, e.GID, e.Size,
		e.ModTime.UTC().Format("2006-01-02 15:04"), e.Path)
	if e.Target != "" {
		s += " -> " + e.Target
	}
	return s
}

// ModeString formats m as `ls -l` does.
func ModeString(m iofs.FileMode) string {
	b := []byte("----------")
	switch {
	case m.IsDir():
		b[0] = 'd'
	case m&iofs.ModeSymlink != 0:
		b[0] = 'l'
	case m&iofs.ModeCharDevice != 0:
		b[0] = 'c'
	case m&iofs.ModeDevice != 0:
		b[0] = 'b'
	case m&iofs.ModeNamedPipe != 0:
		b[0] = 'p'
	case m&iofs.ModeSocket != 0:
		b[0] = 's'
	case !m.IsRegular():
		b[0] = '?'
	}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) != 0 {
			b[1+i] = rwx[i]
		}
	}
	if m&iofs.ModeSetuid != 0 {
		b[3] = map[bool]byte{true: 's', false: 'S'}[b[3] == 'x']
	}
	if m&iofs.ModeSetgid != 0 {
		b[6] = map[bool]byte{true: 's', false: 'S'}[b[6] == 'x']
	}
	if m&iofs.ModeSticky != 0 {
		b[9] = map[bool]byte{true: 't', false: 'T'}[b[9] == 'x']
	}
	return string(b)
}

// reader is what each image kind provides: its go-diskfs filesystem.
type reader interface {
	ReadDir(p string) ([]iofs.DirEntry, error)
	Stat(p string) (iofs.FileInfo, error)
	Open(p string) (iofs.File, error)
}

// Image is an opened ISO 9660 image or squashfs filesystem. Its methods are
// safe for concurrent use (calls are serialised).
type Image struct {
	kind  string
	name  string // for messages: "/x.iso" or "/x.iso:/live/fs.squashfs"
	label string

	mu      sync.Mutex
	fs      reader
	storage backend.Storage
	// owner closes the file when the image owns it (not for a squashfs
	// inside an ISO, which shares the ISO's file).
	owner *os.File
	// iso9660 facts
	volumeSize int64
	fileSize   int64
	// start is the byte offset of a squashfs inside its container.
	start int64
	// compression of a squashfs.
	compression string
}

// Kind is KindISO or KindSquashfs.
func (im *Image) Kind() string { return im.kind }

// Name names the image in messages: its path, or "iso:/path/in/iso" for a
// squashfs inside an ISO.
func (im *Image) Name() string { return im.name }

// String returns a description such as "iso9660 image /x.iso".
func (im *Image) String() string { return im.kind + " image " + im.name }

// Label is the ISO volume identifier ("" for squashfs).
func (im *Image) Label() string { return im.label }

// Compression is the squashfs compressor ("gzip", "xz", …; "" for an ISO).
func (im *Image) Compression() string { return im.compression }

// Close releases the image's file. A squashfs opened from an ISO shares the
// ISO's file and must not outlive it.
func (im *Image) Close() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.owner != nil {
		err := im.owner.Close()
		im.owner = nil
		return err
	}
	return nil
}

func openFile(p, what string) (*os.File, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, vmerr.Wrap(vmerr.NotFound, err, "%s %s", what, p).With("path", p)
		}
		return nil, 0, vmerr.Wrap(vmerr.IO, err, "%s %s", what, p).With("path", p)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, vmerr.Wrap(vmerr.IO, err, "%s %s", what, p).With("path", p)
	}
	if st.IsDir() {
		f.Close()
		return nil, 0, vmerr.New(vmerr.Usage, "%s %s is a directory", what, p).With("path", p)
	}
	return f, st.Size(), nil
}

// Open opens an ISO 9660 image read-only.
func Open(p string) (im *Image, err error) {
	f, size, err := openFile(p, "ISO image")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	vol, label, err := checkISO(f, size, p)
	if err != nil {
		return nil, err
	}
	b := file.New(f, true)
	var fsys reader
	err = guard(p, func() error {
		if jloc, jsize, joliet, rr := jolietRoot(b); joliet && !rr {
			fsys = &jolietFS{r: b, rootLoc: jloc, rootSize: jsize}
			return nil
		}
		var e error
		fsys, e = iso9660.Read(b, size, 0, 0)
		return e
	})
	if err != nil {
		return nil, ioErr(err, "ISO image %s is corrupt", p)
	}
	im = &Image{kind: KindISO, name: p, label: label, fs: fsys, storage: b, owner: f, volumeSize: vol, fileSize: size}
	// Read the root directory now so a corrupt tree fails at open.
	if _, err := im.List("/"); err != nil {
		return nil, err
	}
	return im, nil
}

// checkISO verifies the primary volume descriptor and that the file holds
// the whole volume, returning the volume size and label.
func checkISO(f *os.File, size int64, p string) (int64, string, error) {
	if size < systemArea+2*sectorSize {
		return 0, "", vmerr.New(vmerr.IO, "ISO image %s is truncated or not an ISO: %d bytes, smaller than the system area and two volume descriptors", p, size).With("path", p)
	}
	var vol int64
	var label string
	found := false
	for i := int64(0); i < 64; i++ {
		vd := make([]byte, sectorSize)
		off := systemArea + i*sectorSize
		if _, err := f.ReadAt(vd, off); err != nil {
			if !found {
				return 0, "", vmerr.New(vmerr.IO, "ISO image %s is truncated: no volume descriptor set terminator before byte %d", p, off).With("path", p)
			}
			break
		}
		if string(vd[1:6]) != "CD001" {
			if i == 0 {
				return 0, "", vmerr.New(vmerr.Usage, "%s is not an ISO 9660 image (no CD001 signature at byte %d)", p, off).With("path", p)
			}
			return 0, "", vmerr.New(vmerr.IO, "ISO image %s is corrupt: volume descriptor %d has no CD001 signature", p, i).With("path", p)
		}
		if vd[0] == 255 {
			break
		}
		if vd[0] == 1 && !found {
			found = true
			vol = int64(binary.LittleEndian.Uint32(vd[80:84])) * int64(binary.LittleEndian.Uint16(vd[128:130]))
			label = strings.TrimRight(string(vd[40:72]), " \x00")
		}
	}
	if !found {
		return 0, "", vmerr.New(vmerr.IO, "ISO image %s has no primary volume descriptor", p).With("path", p)
	}
	if vol > size {
		return 0, "", vmerr.New(vmerr.IO, "ISO image %s is truncated: the volume is %d bytes, the file %d", p, vol, size).
			With("path", p).With("volume_bytes", vol).With("file_bytes", size)
	}
	return vol, label, nil
}

// squashfs superblock facts.
var compressors = map[uint16]string{1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}

// checkSquashfs reads the superblock at off and returns the compression.
func checkSquashfs(r io.ReaderAt, off, size int64, name string) (string, error) {
	sb := make([]byte, 96)
	if size < int64(len(sb)) {
		return "", vmerr.New(vmerr.Usage, "%s is not a squashfs (%d bytes, smaller than a superblock)", name, size).With("path", name)
	}
	if _, err := r.ReadAt(sb, off); err != nil {
		return "", vmerr.Wrap(vmerr.IO, err, "squashfs %s: read superblock", name).With("path", name)
	}
	if string(sb[0:4]) != "hsqs" {
		return "", vmerr.New(vmerr.Usage, "%s is not a squashfs (magic %q, want \"hsqs\")", name, sb[0:4]).With("path", name)
	}
	major := binary.LittleEndian.Uint16(sb[28:30])
	if major != 4 {
		return "", vmerr.New(vmerr.Usage, "squashfs %s is version %d; only version 4 is readable", name, major).With("path", name)
	}
	comp := compressors[binary.LittleEndian.Uint16(sb[20:22])]
	if comp == "" {
		comp = fmt.Sprintf("unknown(%d)", binary.LittleEndian.Uint16(sb[20:22]))
	}
	if comp == "lz4" || strings.HasPrefix(comp, "unknown") {
		return comp, vmerr.New(vmerr.Usage, "squashfs %s is %s-compressed, which go-diskfs cannot read (gzip, xz, zstd, lzo and lzma can be); use unsquashfs -ll", name, comp).
			With("path", name).With("compression", comp)
	}
	used := int64(binary.LittleEndian.Uint64(sb[40:48]))
	if used > size {
		return comp, vmerr.New(vmerr.IO, "squashfs %s is truncated: the superblock says %d bytes, there are %d", name, used, size).
			With("path", name).With("bytes_used", used).With("file_bytes", size)
	}
	return comp, nil
}

// OpenSquashfs opens a bare squashfs file read-only.
func OpenSquashfs(p string) (im *Image, err error) {
	f, size, err := openFile(p, "squashfs")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	return openSquashfs(file.New(f, true), f, 0, size, p)
}

func openSquashfs(b backend.Storage, owner *os.File, start, size int64, name string) (*Image, error) {
	comp, err := checkSquashfs(b, start, size, name)
	if err != nil {
		return nil, err
	}
	var fsys *squashfs.FileSystem
	err = guard(name, func() error {
		var e error
		fsys, e = squashfs.Read(b, size, start, 0)
		return e
	})
	if err != nil {
		return nil, ioErr(err, "squashfs %s (%s) is corrupt", name, comp)
	}
	im := &Image{kind: KindSquashfs, name: name, fs: fsys, storage: b, owner: owner, start: start, compression: comp, fileSize: size}
	if _, err := im.List("/"); err != nil {
		return nil, err
	}
	return im, nil
}

// Squashfs opens the squashfs file at p inside this ISO, reading it in
// place (ISO files are contiguous). The result shares the ISO's file: close
// the ISO after it.
func (im *Image) Squashfs(p string) (*Image, error) {
	if im.kind != KindISO {
		return nil, vmerr.New(vmerr.Usage, "%s: squashfs inside a %s is not supported; only inside an ISO", im.name, im.kind)
	}
	e, err := im.Stat(p)
	if err != nil {
		return nil, err
	}
	name := im.name + ":" + e.Path
	if !e.IsRegular() {
		return nil, vmerr.New(vmerr.Usage, "%s is not a squashfs: it is a %s", name, e.Type()).With("path", name)
	}
	im.mu.Lock()
	fi, serr := im.fs.Stat(clean(e.Path))
	im.mu.Unlock()
	if serr != nil {
		return nil, im.pathErr(e.Path, serr)
	}
	st, ok := fi.Sys().(*iso9660.StatT)
	if !ok {
		return nil, vmerr.New(vmerr.Internal, "%s: no ISO 9660 location for %s", im.name, e.Path)
	}
	start := int64(st.Location) * sectorSize
	if start+e.Size > im.fileSize {
		return nil, vmerr.New(vmerr.IO, "%s is truncated: the file ends at byte %d, the image at %d", name, start+e.Size, im.fileSize).With("path", name)
	}
	return openSquashfs(im.storage, nil, start, e.Size, name)
}

// clean turns an image path ("/a/b", "a/b/", "", "/") into go-diskfs form
// ("a/b", ".").
func clean(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return "."
	}
	return p[1:]
}

// abs is the entry path form: "/a/b".
func abs(p string) string { return path.Clean("/" + p) }

// guard runs fn, turning a panic of go-diskfs on corrupt data into an error.
func guard(name string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("go-diskfs panicked reading %s: %v", name, r)
		}
	}()
	return fn()
}

func ioErr(err error, format string, a ...any) *vmerr.Error {
	var ve *vmerr.Error
	if errors.As(err, &ve) {
		return ve
	}
	return vmerr.Wrap(vmerr.IO, err, format, a...)
}

// pathErr classifies an error about path p.
func (im *Image) pathErr(p string, err error) error {
	var ve *vmerr.Error
	if errors.As(err, &ve) {
		return ve
	}
	msg := err.Error()
	if errors.Is(err, iofs.ErrNotExist) || strings.Contains(msg, "not found") || strings.Contains(msg, "does not exist") ||
		strings.Contains(msg, "could not find") {
		return vmerr.New(vmerr.NotFound, "%s: %s does not exist", im.name, abs(p)).With("image", im.name).With("path", abs(p))
	}
	return vmerr.Wrap(vmerr.IO, err, "%s: %s", im.name, abs(p)).With("image", im.name).With("path", abs(p))
}

// entry converts a go-diskfs FileInfo.
func (im *Image) entry(dir string, fi iofs.FileInfo) Entry {
	name := fi.Name()
	p := path.Join(abs(dir), name)
	if name == "." || name == "" {
		p, name = abs(dir), path.Base(abs(dir))
	}
	e := Entry{Path: p, Name: name, Mode: fi.Mode(), Size: fi.Size(), ModTime: fi.ModTime()}
	switch st := fi.Sys().(type) {
	case *iso9660.StatT:
		e.Target = st.LinkTarget
		e.UID, e.GID = st.UID, st.GID
		if e.Target != "" && e.Mode&iofs.ModeSymlink == 0 {
			e.Mode = iofs.ModeSymlink | 0o777
		}
		if !st.RockRidge && fi.IsDir() {
			e.Mode = iofs.ModeDir | 0o555
		} else if !st.RockRidge {
			e.Mode = 0o444
		}
	case *squashfs.StatT:
		e.Target = st.LinkTarget
		e.UID, e.GID = st.UID, st.GID
	}
	if fi.IsDir() {
		e.Mode |= iofs.ModeDir
	}
	return e
}

// List returns the entries of directory dir, sorted by name.
func (im *Image) List(dir string) ([]Entry, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.listLocked(dir)
}

func (im *Image) listLocked(dir string) ([]Entry, error) {
	var des []iofs.DirEntry
	err := guard(im.name, func() error {
		var e error
		des, e = im.fs.ReadDir(clean(dir))
		return e
	})
	if err != nil {
		if c := clean(dir); c != "." {
			if fi, serr := im.statLocked(c); serr == nil && !fi.IsDir() {
				return nil, vmerr.New(vmerr.Usage, "%s: %s is not a directory", im.name, abs(dir)).With("image", im.name).With("path", abs(dir))
			}
		}
		return nil, im.pathErr(dir, err)
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		var fi iofs.FileInfo
		if err := guard(im.name, func() error {
			var e error
			fi, e = de.Info()
			return e
		}); err != nil {
			return nil, im.pathErr(path.Join(abs(dir), de.Name()), err)
		}
		out = append(out, im.entry(dir, fi))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (im *Image) statLocked(c string) (fi iofs.FileInfo, err error) {
	err = guard(im.name, func() error {
		var e error
		fi, e = im.fs.Stat(c)
		return e
	})
	return fi, err
}

// Stat describes the entry at p without following a final symlink.
func (im *Image) Stat(p string) (Entry, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.lstatLocked(p)
}

// lstatLocked is lstat(2): the last element is not followed, the
// directories leading to it are (/sbin/init under a merged /usr).
func (im *Image) lstatLocked(p string) (Entry, error) {
	e, err := im.lstatRealLocked(p)
	if err == nil || !vmerr.Is(err, vmerr.NotFound) {
		return e, err
	}
	c := clean(p)
	if c == "." || path.Dir(c) == "." {
		return e, err
	}
	dir, derr := im.resolveLocked(path.Dir(c))
	if derr != nil || !dir.IsDir() || clean(dir.Path) == path.Dir(c) {
		return e, err
	}
	return im.lstatRealLocked(path.Join(dir.Path, path.Base(c)))
}

// lstatRealLocked looks p up in its parent's listing; the parent must be a
// directory, not a symlink to one.
func (im *Image) lstatRealLocked(p string) (Entry, error) {
	c := clean(p)
	if c == "." {
		fi, err := im.statLocked(".")
		if err != nil {
			return Entry{}, im.pathErr("/", err)
		}
		e := im.entry("/", fi)
		e.Path, e.Name = "/", "/"
		return e, nil
	}
	// Look the name up in its parent's listing: go-diskfs's Stat of a
	// missing name in a missing directory gives unhelpful errors.
	list, err := im.listLocked(path.Dir(c))
	if err != nil {
		if vmerr.Is(err, vmerr.Usage) || vmerr.Is(err, vmerr.NotFound) {
			return Entry{}, vmerr.New(vmerr.NotFound, "%s: %s does not exist", im.name, abs(p)).With("image", im.name).With("path", abs(p))
		}
		return Entry{}, err
	}
	base := path.Base(c)
	for _, e := range list {
		if e.Name == base {
			return e, nil
		}
	}
	return Entry{}, vmerr.New(vmerr.NotFound, "%s: %s does not exist", im.name, abs(p)).With("image", im.name).With("path", abs(p))
}

// Resolve returns the entry p leads to, following symlinks inside the image
// in every element of the path (a link pointing outside the root is
// resolved as if the root were "/", as in a chroot).
func (im *Image) Resolve(p string) (Entry, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.resolveLocked(p)
}

func (im *Image) resolveLocked(p string) (Entry, error) {
	todo := strings.Split(strings.Trim(abs(p), "/"), "/")
	cur := "/"
	hops := 0
	last, err := im.lstatRealLocked("/")
	if err != nil {
		return Entry{}, err
	}
	for len(todo) > 0 {
		elem := todo[0]
		todo = todo[1:]
		switch elem {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			if last, err = im.lstatRealLocked(cur); err != nil {
				return Entry{}, err
			}
			continue
		}
		next := path.Join(cur, elem)
		e, err := im.lstatRealLocked(next)
		if err != nil {
			if vmerr.Is(err, vmerr.NotFound) {
				return Entry{}, vmerr.New(vmerr.NotFound, "%s: %s does not exist", im.name, abs(p)).With("image", im.name).With("path", abs(p))
			}
			return Entry{}, err
		}
		if e.IsLink() {
			hops++
			if hops > maxLinks {
				return Entry{}, vmerr.New(vmerr.IO, "%s: too many levels of symbolic links resolving %s", im.name, abs(p)).With("path", abs(p))
			}
			target := strings.Split(e.Target, "/")
			if strings.HasPrefix(e.Target, "/") {
				cur = "/"
			}
			todo = append(target, todo...)
			continue
		}
		cur, last = next, e
	}
	return last, nil
}

// Exists reports whether p exists (without following a final symlink).
// Errors other than "not found" (a corrupt image) are returned.
func (im *Image) Exists(p string) (bool, error) {
	_, err := im.Stat(p)
	if err == nil {
		return true, nil
	}
	if vmerr.Is(err, vmerr.NotFound) {
		return false, nil
	}
	return false, err
}

// Read returns the content of the file at p (following symlinks inside the
// image), at most max bytes when max > 0. truncated reports that the file
// is longer than what was returned.
func (im *Image) Read(p string, max int64) (data []byte, truncated bool, err error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	e, err := im.resolveLocked(p)
	if err != nil {
		return nil, false, err
	}
	if !e.IsRegular() {
		return nil, false, vmerr.New(vmerr.Usage, "%s: %s is not a regular file (%s)", im.name, abs(p), e.Type()).With("path", abs(p))
	}
	err = guard(im.name, func() error {
		f, err := im.fs.Open(clean(e.Path))
		if err != nil {
			return err
		}
		defer f.Close()
		var r io.Reader = f
		if max > 0 {
			r = io.LimitReader(f, max)
		}
		data, err = io.ReadAll(r)
		return err
	})
	if err != nil {
		return nil, false, ioErr(err, "%s: read %s", im.name, e.Path)
	}
	if int64(len(data)) < e.Size && (max <= 0 || int64(len(data)) < max) {
		return nil, false, vmerr.New(vmerr.IO, "%s: short read of %s: %d of %d bytes (truncated image?)", im.name, e.Path, len(data), e.Size).With("path", e.Path)
	}
	return data, int64(len(data)) < e.Size, nil
}

// ErrSkipDir, returned by a Walk callback for a directory, skips its
// contents.
var ErrSkipDir = iofs.SkipDir

// ErrStop, returned by a Walk callback, ends the walk without an error.
var ErrStop = errors.New("stop walk")

// Walk calls fn for every entry under the root, depth first in name order,
// each directory before its contents (the root itself is not passed).
// Symlinks are not followed.
func (im *Image) Walk(fn func(Entry) error) error {
	err := im.walk("/", fn)
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

func (im *Image) walk(dir string, fn func(Entry) error) error {
	list, err := im.List(dir)
	if err != nil {
		return err
	}
	for _, e := range list {
		err := fn(e)
		if e.IsDir() {
			if errors.Is(err, ErrSkipDir) {
				continue
			}
			if err != nil {
				return err
			}
			if err := im.walk(e.Path, fn); err != nil {
				return err
			}
			continue
		}
		if err != nil && !errors.Is(err, ErrSkipDir) {
			return err
		}
	}
	return nil
}

// all returns every entry by path.
func (im *Image) all() (map[string]Entry, error) {
	out := map[string]Entry{}
	err := im.Walk(func(e Entry) error {
		out[e.Path] = e
		return nil
	})
	return out, err
}

// hashLimit is the largest file whose content Diff compares.
const hashLimit = 4 << 20

// Change is one difference between two images.
type Change struct {
	// Path is the path in both images.
	Path string `json:"path"`
	// Op is "added", "removed" or "changed".
	Op string `json:"op"`
	// What lists what changed: "type", "size", "mode", "target", "content".
	What []string `json:"what"`
	// A and B are the entries in the first and second image (nil when
	// absent).
	A *Entry `json:"a,omitempty"`
	B *Entry `json:"b,omitempty"`
}

// String is a one-line summary: "+ /path", "- /path", "~ /path (size, content)".
func (c Change) String() string {
	switch c.Op {
	case "added":
		return "+ " + c.Path
	case "removed":
		return "- " + c.Path
	}
	return fmt.Sprintf("~ %s (%s)", c.Path, strings.Join(c.What, ", "))
}

// Diff lists what a and b differ in, sorted by path: entries only in one,
// and entries whose type, size, mode, symlink target or (for regular files
// of equal size up to 4 MiB) content differ. Times are not compared.
func Diff(a, b *Image) ([]Change, error) {
	ea, err := a.all()
	if err != nil {
		return nil, err
	}
	eb, err := b.all()
	if err != nil {
		return nil, err
	}
	var out []Change
	for p, x := range ea {
		x := x
		y, ok := eb[p]
		if !ok {
			out = append(out, Change{Path: p, Op: "removed", A: &x})
			continue
		}
		var what []string
		if x.Type() != y.Type() {
			what = append(what, "type")
		}
		if x.Size != y.Size && !x.IsDir() {
			what = append(what, "size")
		}
		if x.Mode.Perm() != y.Mode.Perm() && (!x.IsLink() || !y.IsLink()) {
			what = append(what, "mode")
		}
		if x.Target != y.Target {
			what = append(what, "target")
		}
		if len(what) == 0 && x.IsRegular() && x.Size <= hashLimit {
			da, _, err := a.Read(p, hashLimit)
			if err != nil {
				return nil, err
			}
			db, _, err := b.Read(p, hashLimit)
			if err != nil {
				return nil, err
			}
			if !bytes.Equal(da, db) {
				what = append(what, "content")
			}
		}
		if len(what) > 0 {
			y := y
			out = append(out, Change{Path: p, Op: "changed", What: what, A: &x, B: &y})
		}
	}
	for p, y := range eb {
		if _, ok := ea[p]; !ok {
			y := y
			out = append(out, Change{Path: p, Op: "added", B: &y})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
