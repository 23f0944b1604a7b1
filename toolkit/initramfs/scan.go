package initramfs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// scanState is shared by the segments of one scan.
type scanState struct {
	ctx     context.Context
	seq     int
	members int
	total   int64
	// links groups the members of hard link sets.
	links map[[3]uint32][]*member
}

// scan reads the file once, segment by segment, as the kernel does:
// zero bytes between segments are skipped, each segment is an aligned
// uncompressed cpio archive or a compressed stream.
func (a *Archive) scan(ctx context.Context) error {
	st := &scanState{ctx: ctx, links: map[[3]uint32][]*member{}}
	off := int64(0)
	for {
		next, err := a.skipZeros(off)
		if err != nil {
			return err
		}
		if next >= a.size {
			break
		}
		head := make([]byte, 8)
		n, _ := a.r.ReadAt(head, next)
		seg, err := a.segment(st, next, detect(head[:n]), head[:n])
		if err != nil {
			return err
		}
		a.segs = append(a.segs, seg)
		off = next + seg.Length
	}
	if len(a.segs) == 0 {
		return vmerr.New(vmerr.Usage, "%s is not an initramfs: it is empty or all zero bytes", a.name).With("path", a.name)
	}
	for _, group := range st.links {
		var holder *member
		for _, m := range group {
			if m.e.Size > 0 {
				holder = m
			}
		}
		for _, m := range group {
			if holder != nil && m != holder {
				m.data, m.e.Size = holder, holder.e.Size
			}
		}
	}
	return nil
}

// skipZeros returns the offset of the first non-zero byte at or after off
// (the file size when there is none).
func (a *Archive) skipZeros(off int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for off < a.size {
		n, err := a.r.ReadAt(buf[:min(int64(len(buf)), a.size-off)], off)
		if n == 0 && err != nil {
			return 0, vmerr.Wrap(vmerr.IO, err, "%s: read at byte %d", a.name, off).With("path", a.name)
		}
		if i := bytes.IndexFunc(buf[:n], func(r rune) bool { return r != 0 }); i >= 0 {
			return off + int64(i), nil
		}
		off += int64(n)
	}
	return a.size, nil
}

func (a *Archive) corrupt(format string, args ...any) *vmerr.Error {
	return vmerr.New(vmerr.IO, "%s: %s", a.name, fmt.Sprintf(format, args...)).With("path", a.name)
}

// segment scans the segment of the given format at off.
func (a *Archive) segment(st *scanState, off int64, format string, head []byte) (Segment, error) {
	seg := Segment{Offset: off, Format: format}
	sc := &scanner{a: a, st: st, seg: len(a.segs), segOff: off}
	switch format {
	case "":
		return seg, a.corrupt("unknown data at byte %d (% x): neither a cpio archive nor a compression the kernel knows", off, head)
	case "lzo", "odc cpio":
		return seg, vmerr.New(vmerr.Usage, "%s: the segment at byte %d is %s, which is not supported", a.name, off, format).With("path", a.name)
	case FormatCpio:
		if off%4 != 0 {
			return seg, a.corrupt("cpio archive at byte %d is not 4-byte aligned (the kernel rejects it)", off)
		}
		sc.br, sc.base = newSource(a.r, off, a.size).Reader, off
		if err := sc.archive(true); err != nil {
			return seg, err
		}
		seg.Length, seg.Size, seg.Members = sc.pos, sc.pos, sc.members
		return seg, nil
	}
	end := a.size
	var err error
	switch format {
	case FormatZstd:
		end, err = zstdEnd(a.r, off, a.size)
	case FormatLz4:
		end, err = lz4End(a.r, off, a.size)
	}
	if err != nil {
		return seg, a.corrupt("%s segment at byte %d: %v", format, off, err)
	}
	src := newSource(a.r, off, end)
	dec, err := decompressor(format, src, &a.lim)
	if err != nil {
		return seg, a.corrupt("%s segment at byte %d: %v", format, off, err)
	}
	defer closeReader(dec)
	sc.br = bufio.NewReaderSize(dec, 64<<10)
	if err := sc.archive(false); err != nil {
		return seg, err
	}
	seg.Length, seg.Size, seg.Members = src.consumed()-sc.overread, sc.pos, sc.members
	return seg, nil
}
