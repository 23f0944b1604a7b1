package control

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// register registers a run whose directory is named name, failing t.
func register(t *testing.T, dir, name string) *Registration {
	t.Helper()
	r, err := Register(dir, Entry{PID: os.Getpid(), RunDir: filepath.Join(t.TempDir(), name), Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func ids(es []Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.ID)
	}
	return strings.Join(s, " ")
}

// TestRegistryModesAndIDs: the directory is 0700, the socket and entry
// 0600; a second run with the same directory name gets "-2"; Close removes
// both files.
func TestRegistryModesAndIDs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ctl")
	a := register(t, dir, "20250101-120000-boot")
	b := register(t, dir, "20250101-120000-boot")
	if a.Entry.ID != "20250101-120000-boot" || b.Entry.ID != "20250101-120000-boot-2" {
		t.Fatalf("ids %q %q", a.Entry.ID, b.Entry.ID)
	}
	for path, want := range map[string]os.FileMode{
		dir: 0o700, a.Entry.Socket: 0o600, filepath.Join(dir, a.Entry.ID+".json"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	if got := ids(List(dir)); got != a.Entry.ID+" "+b.Entry.ID {
		t.Errorf("List: %q", got)
	}
	a.Close()
	for _, p := range []string{a.Entry.Socket, filepath.Join(dir, a.Entry.ID+".json")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after Close: %v", p, err)
		}
	}
	// The id is free again.
	c := register(t, dir, "20250101-120000-boot")
	if c.Entry.ID != a.Entry.ID {
		t.Errorf("freed id not reused: %q", c.Entry.ID)
	}
}

// TestRegistryStale: an entry whose process is gone, and one whose socket
// refuses (a kill -9, then the pid reused), are dropped by List with their
// sockets, and a stale id is taken over by Register.
func TestRegistryStale(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ctl")
	live := register(t, dir, "live")
	// A dead process's entry and socket.
	dead := register(t, dir, "dead")
	dead.ln.SetUnlinkOnClose(false)
	dead.ln.Close()
	e := dead.Entry
	e.PID = deadPID(t)
	if err := writeEntry(filepath.Join(dir, "dead.json"), e); err != nil {
		t.Fatal(err)
	}
	// A live pid (ours) whose socket nobody listens on.
	refused := register(t, dir, "refused")
	refused.ln.SetUnlinkOnClose(false)
	refused.ln.Close()
	// A socket without an entry, and an entry that is not JSON.
	orphan, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "orphan.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	orphan.SetUnlinkOnClose(false)
	orphan.Close()
	if err := os.WriteFile(filepath.Join(dir, "junk.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}

	if got := ids(List(dir)); got != "live" {
		t.Fatalf("List: %q, want only live", got)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	var names []string
	for _, p := range left {
		names = append(names, filepath.Base(p))
	}
	if got := strings.Join(names, " "); got != "live.json live.sock lock" {
		t.Errorf("left in the directory: %s", got)
	}
	_ = live
	// Register over a stale id: a dead run's id is free.
	dead2 := register(t, dir, "dead")
	dead2.ln.SetUnlinkOnClose(false)
	dead2.ln.Close()
	e = dead2.Entry
	e.PID = deadPID(t)
	_ = writeEntry(filepath.Join(dir, "dead.json"), e)
	if r := register(t, dir, "dead"); r.Entry.ID != "dead" {
		t.Errorf("stale id not taken over: %q", r.Entry.ID)
	}
}

// TestFind: an exact id, a run directory (absolute or relative), a unique
// prefix; an ambiguous prefix and an unknown run say what to do.
func TestFind(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ctl")
	a := register(t, dir, "run")
	b := register(t, dir, "run") // run-2
	c := register(t, dir, "20250101-boot")
	for q, want := range map[string]string{
		"run": a.Entry.ID, "run-2": b.Entry.ID, "2025": c.Entry.ID, b.Entry.RunDir: b.Entry.ID,
	} {
		e, err := Find(q, dir)
		if err != nil || e.ID != want {
			t.Errorf("Find(%q) = %q, %v; want %q", q, e.ID, err, want)
		}
	}
	wd, _ := os.Getwd()
	if rel, err := filepath.Rel(wd, c.Entry.RunDir); err == nil {
		if e, err := Find(rel, dir); err != nil || e.ID != c.Entry.ID {
			t.Errorf("Find(relative %q) = %q, %v", rel, e.ID, err)
		}
	}
	if _, err := Find("ru", dir); err == nil || !strings.Contains(err.Error(), "names 2 runs (run, run-2)") {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if _, err := Find("nope", dir); err == nil || !strings.Contains(err.Error(), "vmscript ps") {
		t.Errorf("unknown run: %v", err)
	}
}

// TestIDBase: odd characters are replaced, long names cut so that the
// socket path fits.
func TestIDBase(t *testing.T) {
	if got := idBase("../my run:1", 20); got != "_my_run_1" {
		t.Errorf("idBase = %q", got)
	}
	if got := idBase("", 20); got != "run" {
		t.Errorf("empty: %q", got)
	}
	long := strings.Repeat("x", 200)
	dir := "/" + strings.Repeat("d", 60)
	id := idBase(long, len(dir))
	if n := len(filepath.Join(dir, id+"-99"+socketExt)); n > maxSocketPath {
		t.Errorf("socket path %d bytes", n)
	}
}

// TestEnsureDirRefusesForeignOwner: a directory someone else made at the
// path is refused (as root: chowned to nobody); a wide mode of the user's
// own directory is narrowed.
func TestEnsureDirRefusesForeignOwner(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ensureDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v not narrowed", fi.Mode().Perm())
	}
	if os.Geteuid() != 0 {
		t.Skip("changing a directory's owner needs root")
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	err := ensureDir(dir)
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Fatalf("foreign directory: %v", err)
	}
	if len(List(dir)) != 0 {
		t.Errorf("entries listed from a foreign directory")
	}
}

// TestDirs: $XDG_RUNTIME_DIR/vmscript first when XDG_RUNTIME_DIR is the
// user's own directory and short enough for socket paths; /tmp/vmscript-UID
// always.
func TestDirs(t *testing.T) {
	fallback := filepath.Join("/tmp", "vmscript-"+strconv.Itoa(os.Geteuid()))
	xdg := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	if got := Dirs(); len(got) != 2 || got[0] != filepath.Join(xdg, "vmscript") || got[1] != fallback {
		t.Errorf("with XDG_RUNTIME_DIR: %v", got)
	}
	long := filepath.Join(xdg, strings.Repeat("l", 100))
	if err := os.Mkdir(long, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{"", "relative", long, filepath.Join(xdg, "missing")} {
		t.Setenv("XDG_RUNTIME_DIR", x)
		if got := Dirs(); len(got) != 1 || got[0] != fallback {
			t.Errorf("XDG_RUNTIME_DIR=%q: %v", x, got)
		}
	}
}

// TestPickVM: a name, the only VM, the only running one; otherwise an
// error that lists the VMs.
func TestPickVM(t *testing.T) {
	info := &RunInfo{Entry: Entry{ID: "r"}, VMs: []VMInfo{{Name: "a"}, {Name: "b", Running: true}, {Name: "c"}}}
	for name, want := range map[string]string{"a": "a", "c": "c", "": "b"} {
		if v, err := PickVM(info, name); err != nil || v.Name != want {
			t.Errorf("PickVM(%q) = %q, %v", name, v.Name, err)
		}
	}
	if _, err := PickVM(info, "d"); err == nil || !strings.Contains(err.Error(), `run r has no VM "d"; its VMs: a, b, c`) {
		t.Errorf("unknown: %v", err)
	}
	info.VMs[2].Running = true
	if _, err := PickVM(info, ""); err == nil || !strings.Contains(err.Error(), "has 3 VMs (a, b, c); name one") {
		t.Errorf("two running: %v", err)
	}
	if v, err := PickVM(&RunInfo{VMs: []VMInfo{{Name: "x"}}}, ""); err != nil || v.Name != "x" {
		t.Errorf("only VM, exited: %q %v", v.Name, err)
	}
}

// TestLockBounded: a registry lock held elsewhere makes Register fail after
// its timeout instead of waiting for ever.
func TestLockBounded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ctl")
	if err := ensureDir(dir); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { lockTimeout = d }(lockTimeout)
	lockTimeout = 300 * time.Millisecond
	t0 := time.Now()
	_, err = Register(dir, Entry{PID: os.Getpid(), RunDir: "/x/run"})
	if err == nil || !strings.Contains(err.Error(), "held for over") || time.Since(t0) < lockTimeout {
		t.Fatalf("Register under a held lock: %v after %s", err, time.Since(t0))
	}
}
