package initramfs

import (
	"bufio"
	"io"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// cursor is a decompressor positioned in a compressed segment, kept
// between reads so that reading members in archive order decompresses
// each segment once.
type cursor struct {
	seg int
	pos int64
	r   *bufio.Reader
	dec io.Reader
}

func (c *cursor) close() {
	if c != nil {
		closeReader(c.dec)
	}
}

// stream opens the uncompressed stream of segment i.
func (a *Archive) stream(i int) (io.Reader, io.Reader, error) {
	s := a.segs[i]
	if s.Format == FormatCpio {
		return io.NewSectionReader(a.r, s.Offset, s.Length), nil, nil
	}
	dec, err := decompressor(s.Format, newSource(a.r, s.Offset, s.Offset+s.Length), &a.lim)
	if err != nil {
		return nil, nil, a.corrupt("%s segment at byte %d: %v", s.Format, s.Offset, err)
	}
	return dec, dec, nil
}

// dataLocked returns a reader of m's data, moving the shared cursor.
func (a *Archive) dataLocked(m *member) (io.Reader, error) {
	if m.data != nil {
		m = m.data
	}
	s := a.segs[m.seg]
	if s.Format == FormatCpio {
		return io.NewSectionReader(a.r, s.Offset+m.off, m.e.Size), nil
	}
	if a.cur == nil || a.cur.seg != m.seg || a.cur.pos > m.off {
		a.cur.close()
		a.cur = nil
		r, dec, err := a.stream(m.seg)
		if err != nil {
			return nil, err
		}
		a.cur = &cursor{seg: m.seg, r: bufio.NewReaderSize(r, 64<<10), dec: dec}
	}
	if n, err := a.cur.r.Discard(int(m.off - a.cur.pos)); err != nil {
		a.cur.pos += int64(n)
		return nil, a.corrupt("%s segment at byte %d: seeking to %s: %v", s.Format, s.Offset, m.e.Path, err)
	}
	a.cur.pos = m.off
	return &cursorReader{c: a.cur, left: m.e.Size}, nil
}

// cursorReader reads a member's data through the cursor.
type cursorReader struct {
	c    *cursor
	left int64
}

func (r *cursorReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.c.r.Read(p)
	r.c.pos += int64(n)
	r.left -= int64(n)
	return n, err
}

// regular resolves p to a regular file.
func (a *Archive) regular(p string) (*member, error) {
	m, err := a.resolve(p)
	if err != nil {
		return nil, err
	}
	if !m.e.IsRegular() {
		return nil, vmerr.New(vmerr.Usage, "%s: %s is not a regular file (%s)", a.name, abs(p), m.e.Type()).With("path", abs(p))
	}
	return m, nil
}

// Read returns the content of the file at p (following symlinks inside
// the archive), at most max bytes when max > 0; truncated reports that the
// file is longer than what was returned.
func (a *Archive) Read(p string, max int64) (data []byte, truncated bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, err := a.regular(p)
	if err != nil {
		return nil, false, err
	}
	want := m.e.Size
	if max > 0 && max < want {
		want = max
	}
	r, err := a.dataLocked(m)
	if err != nil {
		return nil, false, err
	}
	data = make([]byte, want)
	if n, err := io.ReadFull(r, data); err != nil {
		a.cur.close()
		a.cur = nil
		return nil, false, vmerr.Wrap(vmerr.IO, err, "%s: read %s: %d of %d bytes", a.name, m.e.Path, n, want).With("path", m.e.Path)
	}
	return data, want < m.e.Size, nil
}

// Open streams the file at p (following symlinks) with a decompressor of
// its own, for large files; close it when done.
func (a *Archive) Open(p string) (io.ReadCloser, error) {
	a.mu.Lock()
	m, err := a.regular(p)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if m.data != nil {
		m = m.data
	}
	r, dec, err := a.stream(m.seg)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, r, m.off); err != nil {
		closeReader(dec)
		return nil, a.corrupt("seeking to %s: %v", m.e.Path, err)
	}
	return &memberReader{Reader: io.LimitReader(r, m.e.Size), dec: dec}, nil
}

type memberReader struct {
	io.Reader
	dec io.Reader
}

func (r *memberReader) Close() error {
	closeReader(r.dec)
	return nil
}
