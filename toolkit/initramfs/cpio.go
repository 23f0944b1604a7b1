package initramfs

import (
	"bufio"
	"errors"
	"io"
	iofs "io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// The newc cpio format: a 110-byte ASCII header (magic "070701", or
// "070702" when check is the sum of the data bytes, then 13 eight-digit
// hex fields), the name with its NUL padded so that header and name end
// 4-byte aligned, the data padded to 4 bytes. Alignment counts from the
// start of the file for an uncompressed archive and from the start of the
// uncompressed stream for a compressed one, as in the kernel.

const (
	headerSize = 110
	// maxName is the kernel's PATH_MAX; longer names are refused.
	maxName = 4096
)

// cpio header field indexes.
const (
	fIno = iota
	fMode
	fUID
	fGID
	fNlink
	fMtime
	fFilesize
	fDevMajor
	fDevMinor
	fRdevMajor
	fRdevMinor
	fNamesize
	fCheck
)

// scanner reads the cpio archives of one segment's uncompressed stream.
type scanner struct {
	a       *Archive
	st      *scanState
	br      *bufio.Reader
	pos     int64
	base    int64
	seg     int
	segOff  int64
	members int
	// overread counts bytes a decompressor read past its stream to find
	// its end (xz: one, bzip2: two), reported as an error.
	overread int64
}

func (s *scanner) fail(format string, args ...any) *vmerr.Error {
	return s.a.corrupt("segment %d (at byte %d of the file), uncompressed byte %d: "+format,
		append([]any{s.seg, s.segOff, s.pos}, args...)...)
}

// endErrors are the errors decompressors give after their stream when
// other data follows, and how many bytes they read to find out.
var endErrors = []struct {
	text string
	n    int64
}{{errXzTrailing, 1}, {"bad magic value in continuation file", 2}}

// readErr turns a read error into a message; io.EOF mid-member is a
// truncated archive.
func (s *scanner) readErr(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return s.fail("truncated in %s", what)
	}
	return s.fail("%s: %v", what, err)
}

func (s *scanner) read(n int, what string) ([]byte, error) {
	b := make([]byte, n)
	k, err := io.ReadFull(s.br, b)
	s.pos += int64(k)
	if err != nil {
		return nil, s.readErr(err, what)
	}
	return b, nil
}

// skip discards n bytes, adding them to *sum when sum is not nil.
func (s *scanner) skip(n int64, sum *uint32, what string) error {
	for n > 0 {
		chunk, err := s.br.Peek(int(min(n, int64(s.br.Size()))))
		if len(chunk) == 0 && err != nil {
			return s.readErr(err, what)
		}
		if sum != nil {
			for _, c := range chunk {
				*sum += uint32(c)
			}
		}
		s.br.Discard(len(chunk))
		s.pos += int64(len(chunk))
		n -= int64(len(chunk))
		if s.st.ctx.Err() != nil {
			return vmerr.New(vmerr.DoneKind(s.st.ctx), "%s: reading stopped: %v", s.a.name, s.st.ctx.Err())
		}
	}
	return nil
}

func (s *scanner) align(what string) error {
	if r := (s.base + s.pos) % 4; r != 0 {
		return s.skip(4-r, nil, what)
	}
	return nil
}

// zeros skips zero bytes between archives of a compressed stream; eof
// reports the end of the stream.
func (s *scanner) zeros() (eof bool, err error) {
	for {
		b, err := s.br.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return true, nil
			}
			for _, e := range endErrors {
				if strings.Contains(err.Error(), e.text) {
					s.overread = e.n
					return true, nil
				}
			}
			return false, s.readErr(err, "the stream")
		}
		if b[0] != 0 {
			if (s.base+s.pos)%4 != 0 {
				return false, s.fail("an archive starts at an unaligned position (the kernel reports broken padding)")
			}
			return false, nil
		}
		s.br.Discard(1)
		s.pos++
	}
}

// archive reads members; an uncompressed segment is one archive and ends
// at its trailer, a compressed stream may hold several and ends at EOF.
func (s *scanner) archive(uncompressed bool) error {
	for {
		if !uncompressed {
			if eof, err := s.zeros(); err != nil || eof {
				return err
			}
		}
		trailer, err := s.member()
		if err != nil {
			return err
		}
		if trailer && uncompressed {
			return nil
		}
	}
}

// member reads one member and indexes it.
func (s *scanner) member() (trailer bool, err error) {
	start := s.pos
	hdr, err := s.read(headerSize, "a cpio header")
	if err != nil {
		return false, err
	}
	magic := string(hdr[:6])
	if magic != "070701" && magic != "070702" {
		return false, s.fail("no cpio header (magic %q, want \"070701\" or \"070702\")", hdr[:6])
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return false, s.fail("cpio header field %d is not hexadecimal: %q", i, hdr[6+8*i:14+8*i])
		}
		f[i] = uint32(v)
	}
	if f[fNamesize] == 0 || f[fNamesize] > maxName {
		return false, s.fail("cpio name size %d (must be 1 to %d)", f[fNamesize], maxName)
	}
	nameb, err := s.read(int(f[fNamesize]), "a member name")
	if err != nil {
		return false, err
	}
	name := string(nameb)
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if err := s.align("a member name's padding"); err != nil {
		return false, err
	}
	if name == "TRAILER!!!" {
		return true, nil
	}
	m, err := s.data(name, f, magic == "070702")
	if err != nil {
		return false, err
	}
	return false, s.record(m, f, s.pos-start)
}

// data reads (symlink target) or skips (checking the crc variant's sum)
// a member's data.
func (s *scanner) data(name string, f [13]uint32, crc bool) (*member, error) {
	p := path.Clean("/" + name)
	base := path.Base(p)
	e := iso.Entry{Path: p, Name: base, Mode: fileMode(f[fMode]), Size: int64(f[fFilesize]),
		ModTime: time.Unix(int64(f[fMtime]), 0).UTC(), UID: f[fUID], GID: f[fGID]}
	m := &member{e: e, seq: s.st.seq, seg: s.seg, off: s.pos}
	s.st.seq++
	switch {
	case e.IsLink():
		if f[fFilesize] > maxName {
			return nil, s.fail("symlink %s has a %d-byte target", p, f[fFilesize])
		}
		t, err := s.read(int(f[fFilesize]), "the target of symlink "+p)
		if err != nil {
			return nil, err
		}
		m.e.Target = string(t)
	case crc && e.IsRegular():
		var sum uint32
		if err := s.skip(e.Size, &sum, "the data of "+p); err != nil {
			return nil, err
		}
		if sum != f[fCheck] {
			return nil, s.fail("%s: the data sums to %08x, the crc header says %08x", p, sum, f[fCheck])
		}
	default:
		if err := s.skip(e.Size, nil, "the data of "+p); err != nil {
			return nil, err
		}
	}
	return m, s.align("the data padding of " + p)
}

// record indexes a member, enforcing the limits.
func (s *scanner) record(m *member, f [13]uint32, n int64) error {
	st := s.st
	st.members++
	s.members++
	st.total += n
	lim := &s.a.lim
	if st.members > lim.MaxMembers {
		return s.fail("more than %d members", lim.MaxMembers)
	}
	if st.total > lim.MaxUncompressed {
		return s.fail("more than %d uncompressed bytes (a decompression bomb?)", lim.MaxUncompressed)
	}
	if err := st.ctx.Err(); err != nil {
		return vmerr.New(vmerr.DoneKind(st.ctx), "%s: reading stopped: %v", s.a.name, err)
	}
	if m.e.Path == "/" {
		m.e.Name = "/"
		if !m.e.IsDir() {
			return s.fail("the root is a %s, not a directory", m.e.Type())
		}
	}
	if m.e.IsRegular() && f[fNlink] >= 2 {
		k := [3]uint32{f[fDevMajor], f[fDevMinor], f[fIno]}
		st.links[k] = append(st.links[k], m)
	}
	s.a.files[m.e.Path] = m
	return nil
}

// fileMode converts a cpio (stat) mode.
func fileMode(mode uint32) iofs.FileMode {
	m := iofs.FileMode(mode & 0o777)
	if mode&0o4000 != 0 {
		m |= iofs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= iofs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= iofs.ModeSticky
	}
	switch mode & 0o170000 {
	case 0o040000:
		m |= iofs.ModeDir
	case 0o120000:
		m |= iofs.ModeSymlink
	case 0o020000:
		m |= iofs.ModeDevice | iofs.ModeCharDevice
	case 0o060000:
		m |= iofs.ModeDevice
	case 0o010000:
		m |= iofs.ModeNamedPipe
	case 0o140000:
		m |= iofs.ModeSocket
	case 0o100000:
	default:
		m |= iofs.ModeIrregular
	}
	return m
}
