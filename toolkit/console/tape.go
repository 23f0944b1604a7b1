package console

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
)

// A tape is one of the console's append-only histories (the raw bytes, the
// stripped text, the line index, the text↔raw offset map). Its newest
// elements are in memory; when more than limit are, the older ones are
// spilled to a file and only the newest keep stay, so a console's memory is
// bounded however much the guest writes. Every element stays readable: a
// tapeView reads what is no longer in memory back from the file.
//
// The raw tape's file is the console log itself (shared: the tape writes
// nothing); the others spill to an unlinked temporary file beside the log.
// When a file cannot be written (a full disk, a log write error) the tape
// keeps everything in memory from then on: memory is given up before
// evidence is.
//
// Locking: add and trim run under Console.mu; spill runs under
// Console.feedMu only (Feed is the only writer, and readers read the file
// only below base, which spill never rewrites).
type tape[T any] struct {
	keep  int // elements left in memory by a spill
	limit int // elements in memory that make a spill (0: never)
	codec *codec[T]
	dir   string // where a spill file is created ("" = os.TempDir())

	f      *os.File // the spill file (or the log, when shared)
	shared bool     // f is the console log, written by Feed
	err    error    // spilling failed: keep everything in memory

	base   int64 // index of mem[0]
	mem    []T
	onDisk int64 // elements in f
	next   *os.File
	// fail is told when history cannot be read back (the console records
	// it once).
	fail func(error)
}

// codec puts a tape's elements in a file, size bytes each: enc returns
// their bytes (for bytes, xs itself: no copy), dec decodes src into dst.
type codec[T any] struct {
	size int
	enc  func(xs []T) []byte
	dec  func(src []byte, dst []T)
}

var byteCodec = &codec[byte]{
	size: 1,
	enc:  func(xs []byte) []byte { return xs },
	dec:  func(src, dst []byte) { copy(dst, src) },
}

var lineCodec = &codec[lineRec]{
	size: 32,
	enc: func(xs []lineRec) []byte {
		dst := make([]byte, 0, 32*len(xs))
		for _, l := range xs {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(l.start))
			dst = binary.LittleEndian.AppendUint64(dst, uint64(l.end))
			dst = binary.LittleEndian.AppendUint64(dst, uint64(l.rawStart))
			dst = binary.LittleEndian.AppendUint64(dst, uint64(l.rawEnd))
		}
		return dst
	},
	dec: func(src []byte, dst []lineRec) {
		for i := range dst {
			b := src[32*i:]
			dst[i] = lineRec{
				start: int64(binary.LittleEndian.Uint64(b)), end: int64(binary.LittleEndian.Uint64(b[8:])),
				rawStart: int64(binary.LittleEndian.Uint64(b[16:])), rawEnd: int64(binary.LittleEndian.Uint64(b[24:])),
			}
		}
	},
}

var pairCodec = &codec[offsetPair]{
	size: 16,
	enc: func(xs []offsetPair) []byte {
		dst := make([]byte, 0, 16*len(xs))
		for _, p := range xs {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(p.text))
			dst = binary.LittleEndian.AppendUint64(dst, uint64(p.raw))
		}
		return dst
	},
	dec: func(src []byte, dst []offsetPair) {
		for i := range dst {
			b := src[16*i:]
			dst[i] = offsetPair{text: int64(binary.LittleEndian.Uint64(b)), raw: int64(binary.LittleEndian.Uint64(b[8:]))}
		}
	},
}

// Elements each tape keeps in memory after a spill, and how many make the
// next: 1 MiB / 4 MiB of raw bytes and of text, 16 Ki / 64 Ki lines and
// offset pairs — about 14 MiB at most in all. A spill copies the newest
// keep into a new array (views taken before may still read the old one),
// so each byte in memory is copied about 1.4 times over its life.
// (Variables so that tests can make them small.)
var (
	keepBytes    = 1 << 20
	limitBytes   = 4 << 20
	keepRecords  = 16 << 10
	limitRecords = 64 << 10
)

// add appends xs (under Console.mu).
func (t *tape[T]) add(xs []T) { t.mem = appendDoubling(t.mem, xs) }

// len is the number of elements ever added (under Console.mu).
func (t *tape[T]) len() int64 { return t.base + int64(len(t.mem)) }

// full says the tape should spill (under Console.feedMu).
func (t *tape[T]) full() bool { return t.limit > 0 && t.err == nil && len(t.mem) > t.limit }

// spill writes what the file lacks (under Console.feedMu, not mu): after
// it, trim may drop all but the newest keep elements.
func (t *tape[T]) spill(name string) error {
	if t.shared {
		if t.onDisk < t.len() {
			t.err = fmt.Errorf("console %s: the log is behind its history", name)
		}
		return t.err
	}
	f := t.f
	if f == nil {
		var err error
		if f, err = os.CreateTemp(t.dir, ".vmscript-console-*"); err != nil {
			t.err = err
			return err
		}
		// Unlinked: the file goes with the process, its space with it.
		_ = os.Remove(f.Name())
		t.next = f
	}
	from := t.onDisk - t.base
	buf := t.codec.enc(t.mem[from:])
	if _, err := f.WriteAt(buf, t.onDisk*int64(t.codec.size)); err != nil {
		t.err = fmt.Errorf("console %s: spilling its history to %s: %w", name, filepath.Dir(f.Name()), err)
		return t.err
	}
	t.onDisk = t.len()
	return nil
}

// trim keeps the newest keep elements in memory, those before them being
// in the file (under Console.mu, after a spill that succeeded).
func (t *tape[T]) trim() {
	if t.next != nil {
		t.f, t.next = t.next, nil
	}
	drop := min(int64(len(t.mem)-t.keep), t.onDisk-t.base)
	if drop <= 0 {
		return
	}
	// A new array: views taken before keep reading the old one.
	mem := make([]T, len(t.mem)-int(drop), t.limit+t.limit/8)
	copy(mem, t.mem[drop:])
	t.mem, t.base = mem, t.base+drop
}

// view is what a reader may read without the lock (under Console.mu).
func (t *tape[T]) view() tapeView[T] {
	return tapeView[T]{base: t.base, mem: t.mem, f: t.f, codec: t.codec, fail: t.fail}
}

// tapeView is a tape as it was when the view was taken: elements [0, base)
// in the file, [base, end) in memory.
type tapeView[T any] struct {
	base  int64
	mem   []T
	f     *os.File
	codec *codec[T]
	fail  func(error)
}

func (v tapeView[T]) end() int64 { return v.base + int64(len(v.mem)) }

// slice returns elements [lo, hi), clamped to the view. The memory part is
// shared, not copied; a range starting before base is read from the file
// into a new slice.
func (v tapeView[T]) slice(lo, hi int64) ([]T, error) {
	hi = min(hi, v.end())
	lo = min(max(lo, 0), hi)
	if lo >= v.base {
		return v.mem[lo-v.base : hi-v.base], nil
	}
	out := make([]T, hi-lo)
	fileHi := min(hi, v.base)
	buf := make([]byte, (fileHi-lo)*int64(v.codec.size))
	var err error
	if v.f == nil {
		err = fmt.Errorf("history before %d is not kept", v.base)
	} else if _, err = v.f.ReadAt(buf, lo*int64(v.codec.size)); err != nil {
		err = fmt.Errorf("reading the console's history back from %s: %w", v.f.Name(), err)
	}
	if err != nil {
		if v.fail != nil {
			v.fail(err)
		}
		return nil, err
	}
	v.codec.dec(buf, out[:fileHi-lo])
	copy(out[fileHi-lo:], v.mem[:max(hi-v.base, 0)])
	return out, nil
}

// at returns element i (0 ≤ i < end); the zero value when it cannot be
// read back (fail has been told).
func (v tapeView[T]) at(i int64) T {
	if i >= v.base {
		return v.mem[i-v.base]
	}
	s, err := v.slice(i, i+1)
	if err != nil {
		var zero T
		return zero
	}
	return s[0]
}
