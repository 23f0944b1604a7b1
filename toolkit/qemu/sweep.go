package qemu

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ownerFile in a private directory names the vmscript process that made it,
// so a later run can remove what a killed one (kill -9) left in /tmp.
const ownerFile = "owner.pid"

var sweepOnce sync.Once

// markOwner records this process as the owner of dir.
func markOwner(dir string) {
	_ = os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// sweepStale removes private directories under parent whose owner process
// is gone. A kill -9 of vmscript kills QEMU (Pdeathsig) but cannot remove
// the directory with its sockets and OVMF vars copy; the next run does.
// Directories without an owner file are left alone unless a day old.
func sweepStale(parent string) {
	sweepOnce.Do(func() {
		dirs, _ := filepath.Glob(filepath.Join(parent, "vms-*"))
		for _, d := range dirs {
			st, err := os.Lstat(d)
			if err != nil || !st.IsDir() || st.Sys().(*syscall.Stat_t).Uid != uint32(os.Getuid()) {
				continue
			}
			data, err := os.ReadFile(filepath.Join(d, ownerFile))
			if err != nil {
				if time.Since(st.ModTime()) > 24*time.Hour {
					os.RemoveAll(d)
				}
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
			if err != nil || pid <= 0 || pid == os.Getpid() {
				continue
			}
			if syscall.Kill(pid, 0) == syscall.ESRCH {
				os.RemoveAll(d)
			}
		}
	})
}
