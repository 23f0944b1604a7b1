package netboot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// MaxNameLen is the longest file name a client may ask for, in bytes. No
// boot file name needs more: DHCP's file field holds 128 bytes and option 67
// at most 255.
const MaxNameLen = 255

// CleanName checks a file name as a TFTP or HTTP client sent it and returns
// the name relative to the served root. One leading "/" is dropped (the root
// stands for "/", as with tftpd-hpa -s; iPXE and pxelinux send names with and
// without it). Refused, with the reason as the error: an empty name, more than
// MaxNameLen bytes, NUL or other control bytes, invalid UTF-8, a backslash,
// a name that is still absolute after dropping one "/" ("//etc/passwd"), and
// empty, "." or ".." components. What passes is a plain relative slash path;
// symlinks that leave the root are refused later by os.Root.
func CleanName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", errors.New("empty file name")
	case len(raw) > MaxNameLen:
		return "", fmt.Errorf("file name is %d bytes (limit %d)", len(raw), MaxNameLen)
	case strings.IndexByte(raw, 0) >= 0:
		return "", errors.New("NUL byte in file name")
	case !utf8.ValidString(raw):
		return "", errors.New("file name is not valid UTF-8")
	case strings.ContainsRune(raw, '\\'):
		return "", errors.New("backslash in file name")
	}
	for _, r := range raw {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("control character %U in file name", r)
		}
	}
	name := strings.TrimPrefix(raw, "/")
	if name == "" {
		return "", errors.New("file name is the root directory")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute path (only one leading '/' is allowed: it stands for the root)")
	}
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "":
			return "", errors.New("empty path component (\"//\" or a trailing '/')")
		case ".":
			return "", errors.New("'.' path component")
		case "..":
			return "", errors.New("'..' path component (path traversal)")
		}
	}
	return name, nil
}

// matchName reports whether a served file answers to name: the same clean
// path, or, when name has no '/', the same base name ("linux" matches
// "debian-installer/amd64/linux").
func matchName(name, file string) bool {
	name = strings.TrimPrefix(name, "/")
	if name == file {
		return true
	}
	return !strings.Contains(name, "/") && path.Base(file) == name
}

// errNotFound marks a lookup that found nothing (outcome "not found").
var errNotFound = errors.New("not found")

// content is one opened file ready to serve.
type content struct {
	r       io.ReadSeeker
	size    int64
	modTime time.Time
	source  string // "overlay" or "root"
	close   func()
}

// open finds name (already cleaned) in the overlay, then in the root. The
// error wraps errNotFound for a missing file; any other error is a refusal
// whose text is the reason.
func (s *Server) open(name string) (*content, error) {
	if data, ok := s.overlay[name]; ok {
		return &content{r: strings.NewReader(data), size: int64(len(data)), modTime: s.started, source: "overlay", close: func() {}}, nil
	}
	if s.root == nil {
		return nil, fmt.Errorf("%w: %s (no root directory; overlay only)", errNotFound, name)
	}
	// O_NONBLOCK: a FIFO in the root must not hang the server.
	f, err := s.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, classifyOpenError(name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %v", name, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s is a directory", name)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s)", name, st.Mode().Type())
	}
	return &content{r: f, size: st.Size(), modTime: st.ModTime(), source: "root", close: func() { f.Close() }}, nil
}

// classifyOpenError turns an os.Root error into a not-found error or a
// refusal with a reason a person understands.
func classifyOpenError(name string, err error) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "path escapes from parent"):
		return fmt.Errorf("%s: a symlink leads out of the root", name)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %s", errNotFound, name)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %s (a path component is not a directory)", errNotFound, name)
	case errors.Is(err, syscall.ELOOP):
		return fmt.Errorf("%s: too many levels of symlinks", name)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: permission denied", name)
	}
	return fmt.Errorf("%s: %v", name, err)
}
