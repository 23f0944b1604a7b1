package bootmenu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// file is a config file split into lines (line i is number i+1).
type file struct {
	path  string // absolute: "/isolinux/isolinux.cfg"
	lines []string
}

func (f *file) src(line int) string { return fmt.Sprintf("%s:%d", f.path, line) }

// session is the state one parse shares across files: the file system,
// the limits and what was read so far.
type session struct {
	fsys  iofs.FS
	lim   Limits
	res   *Result
	cfg   *Config
	files int
	total int64
	// stack holds the files being read (include chain) for loop detection.
	stack []string
	// seen records the files read for Config.Files.
	seen map[string]bool
	// exist caches existence checks of kernels and initrds.
	exist map[string]bool
}

func newSession(fsys iofs.FS, lim Limits, res *Result) *session {
	return &session{fsys: fsys, lim: lim.withDefaults(), res: res, seen: map[string]bool{}, exist: map[string]bool{}}
}

// errNotFound marks a config file that does not exist.
var errNotFound = errors.New("not found")

// fail returns an "io" error about a config, with its source.
func fail(src, format string, a ...any) *vmerr.Error {
	return vmerr.New(vmerr.IO, "%s: %s", src, fmt.Sprintf(format, a...)).With("source", src)
}

func (s *session) warn(src, format string, a ...any) {
	s.res.Warnings = append(s.res.Warnings, Warning{Source: src, Message: fmt.Sprintf(format, a...)})
}

// fsName turns an absolute path into an io/fs name.
func fsName(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return "."
	}
	return p[1:]
}

// open reads the config at p (absolute), enforcing the limits, and pushes
// it on the include stack; the caller pops it with s.done(). from is the
// source of the include for messages ("" for a top config). A missing
// file gives errNotFound.
func (s *session) open(p, from string) (*file, error) {
	p = path.Clean("/" + p)
	where := from
	if where == "" {
		where = p
	}
	for i, q := range s.stack {
		if q == p {
			chain := append(append([]string(nil), s.stack[i:]...), p)
			return nil, fail(where, "include loop: %s", strings.Join(chain, " -> "))
		}
	}
	if len(s.stack) >= s.lim.Depth {
		return nil, fail(where, "includes nested more than %d deep (%s)", s.lim.Depth, strings.Join(s.stack, " -> "))
	}
	if s.files >= s.lim.Files {
		return nil, fail(where, "more than %d config files read (an include fan-out?)", s.lim.Files)
	}
	data, err := s.read(p, where)
	if err != nil {
		return nil, err
	}
	s.files++
	s.total += int64(len(data))
	if s.total > s.lim.TotalSize {
		return nil, fail(where, "more than %d bytes of config read in all", s.lim.TotalSize)
	}
	f, err := split(p, data, s.lim.Line)
	if err != nil {
		return nil, err
	}
	s.stack = append(s.stack, p)
	if !s.seen[p] {
		s.seen[p] = true
		s.cfg.Files = append(s.cfg.Files, p)
	}
	return f, nil
}

// done pops the file opened last.
func (s *session) done() { s.stack = s.stack[:len(s.stack)-1] }

// read returns the bytes of p, at most the file size limit.
func (s *session) read(p, where string) ([]byte, error) {
	fh, err := s.fsys.Open(fsName(p))
	if err != nil {
		if errors.Is(err, iofs.ErrNotExist) {
			return nil, errNotFound
		}
		return nil, vmerr.Wrap(vmerr.IO, err, "%s: open %s", where, p).With("source", where)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.IsDir() {
		return nil, fail(where, "%s is a directory, not a config file", p)
	}
	data, err := io.ReadAll(io.LimitReader(fh, s.lim.FileSize+1))
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "%s: read %s", where, p).With("source", where)
	}
	if int64(len(data)) > s.lim.FileSize {
		return nil, fail(where, "%s is larger than %d bytes; not a boot menu config", p, s.lim.FileSize)
	}
	return data, nil
}

// split checks that data is text and splits it into lines. Real configs
// hold the odd control character (Debian's menu title starts with a BEL
// for screen readers), so a file is binary when it has a NUL byte, or when
// more than a tenth of it is control characters or invalid UTF-8.
func split(p string, data []byte, maxLine int) (*file, error) {
	f := &file{path: p}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		line := 1 + bytes.Count(data[:i], []byte("\n"))
		return nil, fail(f.src(line), "binary data (a NUL byte at offset %d); not a text config", i)
	}
	if odd := oddBytes(data); odd*10 > len(data) {
		return nil, fail(p, "binary data (%d of %d bytes are control characters or invalid UTF-8); not a text config", odd, len(data))
	}
	line := 1
	for len(data) > 0 {
		n := bytes.IndexByte(data, '\n')
		var l []byte
		if n < 0 {
			l, data = data, nil
		} else {
			l, data = data[:n], data[n+1:]
		}
		if len(l) > maxLine {
			return nil, fail(f.src(line), "line is %d bytes, longer than %d; not a boot menu config", len(l), maxLine)
		}
		f.lines = append(f.lines, strings.TrimSuffix(string(l), "\r"))
		line++
	}
	return f, nil
}

// oddBytes counts control characters other than white space, and bytes of
// invalid UTF-8.
func oddBytes(data []byte) int {
	n := 0
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if (r == utf8.RuneError && size == 1) || (r < 0x20 && r != '\t' && r != '\n' && r != '\r' && r != '\f' && r != '\v') {
			n++
		}
		data = data[size:]
	}
	return n
}

// exists reports whether the absolute path p is on the medium.
func (s *session) exists(p string) bool {
	if ok, done := s.exist[p]; done {
		return ok
	}
	_, err := iofs.Stat(s.fsys, fsName(p))
	s.exist[p] = err == nil
	return err == nil
}

// checkFiles warns about an entry's kernel and initrds that are not on the
// medium (files elsewhere, "(hd0)/x" or URLs, are not checked).
func (s *session) checkFiles(e *Entry) {
	check := func(what, p string) {
		if strings.HasPrefix(p, "/") && !s.exists(p) {
			s.warn(e.Source, "%s %s of entry %q is not on the medium", what, p, e.Label)
		}
	}
	if e.Kernel != "" && e.Kind != KindLocal {
		check("kernel", e.Kernel)
	}
	for _, p := range e.Initrd {
		check("initrd", p)
	}
	if e.Config != "" {
		check("config", e.Config)
	}
}

// add appends an entry, enforcing the entry limit.
func (s *session) add(e Entry) error {
	if len(s.res.Entries) >= s.lim.Entries {
		return fail(e.Source, "more than %d boot entries", s.lim.Entries)
	}
	s.res.Entries = append(s.res.Entries, e)
	return nil
}
