package initramfs

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
	"github.com/vmscript/vmscript/internal/iocount"
)

// Formats of segments.
const (
	FormatCpio  = "cpio"
	FormatGzip  = "gzip"
	FormatXz    = "xz"
	FormatZstd  = "zstd"
	FormatLzma  = "lzma"
	FormatLz4   = "lz4"
	FormatBzip2 = "bzip2"
)

// magics are the formats the kernel's initramfs unpacker recognises.
var magics = []struct {
	format string
	magic  []byte
}{
	{FormatCpio, []byte("070701")},
	{FormatCpio, []byte("070702")},
	{FormatGzip, []byte{0x1f, 0x8b}},
	{FormatGzip, []byte{0x1f, 0x9e}},
	{FormatXz, []byte{0xfd, '7', 'z', 'X', 'Z', 0}},
	{FormatZstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{FormatLzma, []byte{0x5d, 0, 0}},
	{FormatLz4, []byte{0x02, 0x21, 0x4c, 0x18}},
	{FormatBzip2, []byte("BZh")},
	{"lzo", []byte{0x89, 'L', 'Z', 'O'}},
	{"odc cpio", []byte("070707")},
}

// detect names the format of data starting with head ("" when unknown).
func detect(head []byte) string {
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.format
		}
	}
	return ""
}

// source is the compressed input of a segment: a buffered reader whose
// consumed() is exact, since the decompressors read through the buffer
// (as an io.ByteReader) without reading ahead of it.
type source struct {
	*bufio.Reader
	cnt *iocount.Reader
}

func newSource(r io.ReaderAt, off, size int64) *source {
	c := &iocount.Reader{R: io.NewSectionReader(r, off, size-off)}
	return &source{Reader: bufio.NewReaderSize(c, 64<<10), cnt: c}
}

func (s *source) consumed() int64 { return s.cnt.N - int64(s.Buffered()) }

// errXzTrailing is what the xz reader returns in single-stream mode when
// more data follows the stream (the error is not exported).
const errXzTrailing = "xz: unexpected data after stream"

// decompressor opens a reader of the uncompressed data of a segment of the
// given format starting at src. end, when known in advance (zstd, lz4),
// limits the input.
func decompressor(format string, src *source, lim *Limits) (io.Reader, error) {
	switch format {
	case FormatGzip:
		z, err := gzip.NewReader(src)
		if err != nil {
			return nil, err
		}
		z.Multistream(false)
		return z, nil
	case FormatXz:
		if err := checkXzDict(src, lim.MaxWindow); err != nil {
			return nil, err
		}
		return xz.ReaderConfig{SingleStream: true}.NewReader(src)
	case FormatLzma:
		if err := checkLzmaDict(src, lim.MaxWindow); err != nil {
			return nil, err
		}
		return lzma.ReaderConfig{DictCap: int(lim.MaxWindow)}.NewReader(src)
	case FormatZstd:
		d, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(uint64(lim.MaxWindow)), zstd.WithDecoderMaxMemory(uint64(lim.MaxUncompressed)))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case FormatLz4:
		return lz4.NewReader(src), nil
	case FormatBzip2:
		return bzip2.NewReader(src), nil
	}
	return nil, fmt.Errorf("%s-compressed initramfs segments are not supported", format)
}

// closeReader releases a decompressor's resources (zstd's decoder).
func closeReader(r io.Reader) {
	if c, ok := r.(io.Closer); ok {
		c.Close()
	}
}

// checkXzDict refuses an xz stream whose first block needs a dictionary
// larger than max (the reader would allocate it). Later blocks are not
// checked before they are decoded.
func checkXzDict(src *source, max int64) error {
	head, _ := src.Peek(12 + 1024)
	if len(head) < 13 || head[12] == 0 {
		return nil
	}
	hsize := (int(head[12]) + 1) * 4
	if len(head) < 12+hsize {
		return nil
	}
	h := head[12 : 12+hsize]
	i := 2
	skipVarint := func() (uint64, bool) {
		v, n := binary.Uvarint(h[i:])
		if n <= 0 {
			return 0, false
		}
		i += n
		return v, true
	}
	if h[1]&0x40 != 0 {
		if _, ok := skipVarint(); !ok {
			return nil
		}
	}
	if h[1]&0x80 != 0 {
		if _, ok := skipVarint(); !ok {
			return nil
		}
	}
	for f := 0; f <= int(h[1]&3) && i < len(h); f++ {
		id, ok1 := skipVarint()
		psize, ok2 := skipVarint()
		if !ok1 || !ok2 || i+int(psize) > len(h) {
			return nil
		}
		if id == 0x21 && psize == 1 {
			d := h[i] & 0x3f
			if d > 40 {
				return errors.New("xz: invalid LZMA2 dictionary size")
			}
			dict := int64(2|d&1) << (d/2 + 11)
			if d == 40 {
				dict = 1<<32 - 1
			}
			if dict > max {
				return fmt.Errorf("xz stream needs a %d MiB dictionary, more than the %d MiB allowed", dict>>20, max>>20)
			}
		}
		i += int(psize)
	}
	return nil
}

// checkLzmaDict refuses a .lzma stream whose header asks for a dictionary
// larger than max.
func checkLzmaDict(src *source, max int64) error {
	head, _ := src.Peek(5)
	if len(head) < 5 {
		return nil
	}
	if dict := int64(binary.LittleEndian.Uint32(head[1:5])); dict > max {
		return fmt.Errorf("lzma stream needs a %d MiB dictionary, more than the %d MiB allowed", dict>>20, max>>20)
	}
	return nil
}

// zstdEnd returns the end of the zstd frames (and skippable frames)
// starting at off, by walking frame and block headers without decoding.
func zstdEnd(r io.ReaderAt, off, size int64) (int64, error) {
	var b [18]byte
	pos := off
	for pos+4 <= size {
		if _, err := r.ReadAt(b[:4], pos); err != nil {
			return 0, err
		}
		magic := binary.LittleEndian.Uint32(b[:4])
		switch {
		case magic&0xfffffff0 == 0x184d2a50:
			if _, err := r.ReadAt(b[:4], pos+4); err != nil {
				return 0, fmt.Errorf("zstd skippable frame at byte %d is truncated", pos)
			}
			pos += 8 + int64(binary.LittleEndian.Uint32(b[:4]))
			continue
		case magic != 0xfd2fb528:
			return pos, nil
		}
		end, err := zstdFrameEnd(r, pos, size)
		if err != nil {
			return 0, err
		}
		pos = end
	}
	if pos > size {
		return 0, fmt.Errorf("zstd frame ends at byte %d, after the end of the file (%d bytes): truncated", pos, size)
	}
	return pos, nil
}

// zstdFrameEnd walks one zstd frame at pos.
func zstdFrameEnd(r io.ReaderAt, pos, size int64) (int64, error) {
	var fhd [1]byte
	if _, err := r.ReadAt(fhd[:], pos+4); err != nil {
		return 0, fmt.Errorf("zstd frame at byte %d is truncated", pos)
	}
	d := fhd[0]
	single := d&0x20 != 0
	hdr := int64(1)
	if !single {
		hdr++
	}
	hdr += []int64{0, 1, 2, 4}[d&3]
	fcs := []int64{0, 2, 4, 8}[d>>6]
	if d>>6 == 0 && single {
		fcs = 1
	}
	p := pos + 4 + hdr + fcs
	var bh [3]byte
	for {
		if p+3 > size {
			return 0, fmt.Errorf("zstd frame at byte %d is truncated", pos)
		}
		if _, err := r.ReadAt(bh[:], p); err != nil {
			return 0, err
		}
		h := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, n := h&1 != 0, (h>>1)&3, int64(h>>3)
		switch typ {
		case 1:
			n = 1
		case 3:
			return 0, fmt.Errorf("zstd frame at byte %d has a reserved block type at byte %d", pos, p)
		}
		p += 3 + n
		if last {
			break
		}
	}
	if d&0x04 != 0 {
		p += 4
	}
	return p, nil
}

// lz4End returns the end of the legacy lz4 stream at off: blocks of a
// 4-byte size and data, until the end of the file, a new legacy magic
// (another stream, which continues it) or a size that cannot be a block.
func lz4End(r io.ReaderAt, off, size int64) (int64, error) {
	const maxBlock = 8<<20 + 8<<20/255 + 16
	pos := off + 4
	var b [4]byte
	for pos+4 <= size {
		if _, err := r.ReadAt(b[:], pos); err != nil {
			return 0, err
		}
		n := int64(binary.LittleEndian.Uint32(b[:]))
		switch {
		case n == 0x184c2102:
			pos += 4
			continue
		case n == 0 || n > maxBlock:
			return pos, nil
		}
		if pos+4+n > size {
			return 0, fmt.Errorf("lz4 block at byte %d runs past the end of the file: truncated", pos)
		}
		pos += 4 + n
	}
	return pos, nil
}
