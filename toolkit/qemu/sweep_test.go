package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

func TestSweepStaleRemovesOnlyDeadOwners(t *testing.T) {
	parent := t.TempDir()
	// A process that has exited: its pid is free (reuse within the test is
	// practically impossible).
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	mk := func(name string, pid int) string {
		d := filepath.Join(parent, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if pid > 0 {
			if err := os.WriteFile(filepath.Join(d, ownerFile), []byte(strconv.Itoa(pid)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	gone := mk("vms-gone-1", dead.Process.Pid)
	alive := mk("vms-alive-1", os.Getppid())
	mine := mk("vms-mine-1", os.Getpid())
	unowned := mk("vms-old-1", 0)
	other := mk("not-ours", dead.Process.Pid)
	sweepOnce = sync.Once{}
	sweepStale(parent)
	sweepOnce = sync.Once{}
	for _, c := range []struct {
		dir  string
		want bool
	}{{gone, false}, {alive, true}, {mine, true}, {unowned, true}, {other, true}} {
		_, err := os.Stat(c.dir)
		if exists := err == nil; exists != c.want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(c.dir), exists, c.want)
		}
	}
}
