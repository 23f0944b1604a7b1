package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// maxSocketPath is the longest path a unix socket can be bound to on Linux
// (sun_path holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// minIDRoom is the room a socket name needs in the control directory: a
// run id of at least 8 characters, "-99" and ".sock".
const minIDRoom = 1 + 8 + 3 + len(socketExt)

// Dirs returns the control directories, the one new runs register in
// first: $XDG_RUNTIME_DIR/vmscript when XDG_RUNTIME_DIR is an absolute
// directory of the user's and the socket paths in it fit, then
// /tmp/vmscript-UID. Lookups search both, so a run started from a login
// session is found from a shell without XDG_RUNTIME_DIR and the other way
// round.
func Dirs() []string {
	fallback := filepath.Join("/tmp", "vmscript-"+strconv.Itoa(os.Geteuid()))
	x := os.Getenv("XDG_RUNTIME_DIR")
	if x == "" || !filepath.IsAbs(x) {
		return []string{fallback}
	}
	d := filepath.Join(x, "vmscript")
	if len(d)+minIDRoom > maxSocketPath || !ownedDir(x) {
		return []string{fallback}
	}
	return []string{d, fallback}
}

// ownedDir reports whether p is a directory (not a symlink) owned by the
// effective user.
func ownedDir(p string) bool {
	fi, err := os.Lstat(p)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}

// ensureDir makes dir (mode 0700) if it is missing and checks that it is
// the user's own: a real directory, owned by the effective user, with no
// access for anyone else (a wider mode of the user's own directory is
// narrowed). A directory someone else made at the path is refused: it
// could be theirs to listen in.
func ensureDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("control directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("control directory %s is not a directory (a symlink or a file is in its place); remove it", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("control directory %s: no owner information", dir)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("control directory %s belongs to uid %d, not to you (uid %d); remove it, or set XDG_RUNTIME_DIR to a directory of yours",
			dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("control directory: %w", err)
		}
	}
	return nil
}
