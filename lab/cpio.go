package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// File type bits of a cpio mode.
const (
	modeTypeMask = 0o170000
	modeSock     = 0o140000
	modeSymlink  = 0o120000
	modeRegular  = 0o100000
	modeBlock    = 0o060000
	modeDir      = 0o040000
	modeChar     = 0o020000
	modeFIFO     = 0o010000
)

// cpioEntry is one member of a newc ("070701") archive.
type cpioEntry struct {
	Name     string // no leading "/" or "./"
	Mode     uint32 // type bits | permission bits
	UID, GID uint32
	Nlink    uint32
	Mtime    uint32
	Size     uint32
	Ino      uint32 // 0: the writer assigns one
	RdevMaj  uint32
	RdevMin  uint32
}

// cpioWriter writes a newc archive as the kernel's initramfs unpacker reads
// it. Hard links share an inode number and nlink >= 2; the data goes with the
// first entry, later ones have size 0 (the kernel links them to the first).
type cpioWriter struct {
	w      io.Writer
	off    int64
	ino    uint32
	closed bool
}

func newCpioWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w, ino: 1000} }

func (c *cpioWriter) nextIno() uint32 { c.ino++; return c.ino }

func (c *cpioWriter) write(p []byte) error {
	n, err := c.w.Write(p)
	c.off += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

// writeHeader writes the header and name of e; the caller then writes
// exactly e.Size bytes of data with writeData.
func (c *cpioWriter) writeHeader(e *cpioEntry) error {
	if c.closed {
		return errors.New("cpio: write after close")
	}
	name := strings.TrimPrefix(strings.TrimPrefix(e.Name, "./"), "/")
	if name == "" {
		name = "."
	}
	if e.Ino == 0 {
		e.Ino = c.nextIno()
	}
	nlink := e.Nlink
	if nlink == 0 {
		nlink = 1
		if e.Mode&modeTypeMask == modeDir {
			nlink = 2
		}
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		e.Ino, e.Mode, e.UID, e.GID, nlink, e.Mtime, e.Size, 0, 0, e.RdevMaj, e.RdevMin, len(name)+1, 0)
	if err := c.write([]byte(hdr)); err != nil {
		return err
	}
	if err := c.write(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

// writeData copies e.Size bytes from r and pads.
func (c *cpioWriter) writeData(r io.Reader, size uint32) error {
	n, err := io.Copy(writerFunc(c.write), io.LimitReader(r, int64(size)))
	if err != nil {
		return err
	}
	if n != int64(size) {
		return fmt.Errorf("cpio: short data: %d of %d bytes", n, size)
	}
	return c.pad()
}

type writerFunc func([]byte) error

func (f writerFunc) Write(p []byte) (int, error) {
	if err := f(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// File adds a regular file.
func (c *cpioWriter) File(name string, perm uint32, data []byte) error {
	e := &cpioEntry{Name: name, Mode: modeRegular | perm&0o7777, Size: uint32(len(data))}
	if err := c.writeHeader(e); err != nil {
		return err
	}
	if err := c.write(data); err != nil {
		return err
	}
	return c.pad()
}

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) error {
	return c.writeHeader(&cpioEntry{Name: name, Mode: modeDir | perm&0o7777})
}

// Symlink adds a symbolic link.
func (c *cpioWriter) Symlink(name, target string) error {
	e := &cpioEntry{Name: name, Mode: modeSymlink | 0o777, Size: uint32(len(target))}
	if err := c.writeHeader(e); err != nil {
		return err
	}
	if err := c.write([]byte(target)); err != nil {
		return err
	}
	return c.pad()
}

// Close writes the trailer. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	if c.closed {
		return nil
	}
	if err := c.writeHeader(&cpioEntry{Name: "TRAILER!!!", Ino: 0xFFFFFFFF, Nlink: 1}); err != nil {
		return err
	}
	c.closed = true
	// Pad to a 512-byte block like GNU cpio does.
	if r := c.off % 512; r != 0 {
		return c.write(make([]byte, 512-r))
	}
	return nil
}

// cpioReader reads a newc archive (used by tests and to check outputs).
type cpioReader struct {
	r      *bufio.Reader
	off    int64
	remain int64
}

func newCpioReader(r io.Reader) *cpioReader { return &cpioReader{r: bufio.NewReader(r)} }

func (c *cpioReader) skip(n int64) error {
	m, err := io.CopyN(io.Discard, c.r, n)
	c.off += m
	return err
}

func (c *cpioReader) align() error {
	if r := c.off % 4; r != 0 {
		return c.skip(4 - r)
	}
	return nil
}

// Next returns the next entry and a reader of its data, or io.EOF after
// the trailer.
func (c *cpioReader) Next() (*cpioEntry, io.Reader, error) {
	if c.remain > 0 {
		if err := c.skip(c.remain); err != nil {
			return nil, nil, err
		}
		c.remain = 0
	}
	if err := c.align(); err != nil {
		return nil, nil, err
	}
	hdr := make([]byte, 110)
	n, err := io.ReadFull(c.r, hdr)
	c.off += int64(n)
	if err != nil {
		if err == io.EOF {
			return nil, nil, io.ErrUnexpectedEOF
		}
		return nil, nil, err
	}
	if string(hdr[:6]) != "070701" && string(hdr[:6]) != "070702" {
		return nil, nil, fmt.Errorf("cpio: bad magic %q at offset %d", hdr[:6], c.off-110)
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return nil, nil, fmt.Errorf("cpio: bad header field: %v", err)
		}
		f[i] = uint32(v)
	}
	name := make([]byte, f[11])
	n, err = io.ReadFull(c.r, name)
	c.off += int64(n)
	if err != nil {
		return nil, nil, err
	}
	if err := c.align(); err != nil {
		return nil, nil, err
	}
	e := &cpioEntry{Ino: f[0], Mode: f[1], UID: f[2], GID: f[3], Nlink: f[4], Mtime: f[5], Size: f[6],
		RdevMaj: f[9], RdevMin: f[10], Name: strings.TrimRight(string(name), "\x00")}
	if e.Name == "TRAILER!!!" {
		return nil, nil, io.EOF
	}
	c.remain = int64(e.Size)
	return e, &cpioData{c}, nil
}

type cpioData struct{ c *cpioReader }

func (d *cpioData) Read(p []byte) (int, error) {
	if d.c.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > d.c.remain {
		p = p[:d.c.remain]
	}
	n, err := d.c.r.Read(p)
	d.c.off += int64(n)
	d.c.remain -= int64(n)
	if err == io.EOF && d.c.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
