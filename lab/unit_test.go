package lab

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestCpioRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := newCpioWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("etc", 0o755))
	must(w.File("etc/hello", 0o644, []byte("hello, world\n")))
	must(w.File("etc/odd", 0o600, []byte("abc"))) // exercises padding
	must(w.Symlink("etc/link", "hello"))
	must(w.writeHeader(&cpioEntry{Name: "dev/console", Mode: modeChar | 0o600, RdevMaj: 5, RdevMin: 1}))
	hl := &cpioEntry{Name: "bin/a", Mode: modeRegular | 0o755, Nlink: 2, Size: 4}
	must(w.writeHeader(hl))
	must(w.writeData(strings.NewReader("data"), 4))
	must(w.writeHeader(&cpioEntry{Name: "bin/b", Mode: modeRegular | 0o755, Nlink: 2, Ino: hl.Ino}))
	must(w.Close())
	if buf.Len()%512 != 0 {
		t.Errorf("archive length %d not a multiple of 512", buf.Len())
	}

	r := newCpioReader(bytes.NewReader(buf.Bytes()))
	got := map[string]string{}
	ents := map[string]*cpioEntry{}
	for {
		e, data, err := r.Next()
		if err == io.EOF {
			break
		}
		must(err)
		b, err := io.ReadAll(data)
		must(err)
		got[e.Name] = string(b)
		ents[e.Name] = e
	}
	want := map[string]string{"etc": "", "etc/hello": "hello, world\n", "etc/odd": "abc", "etc/link": "hello",
		"dev/console": "", "bin/a": "data", "bin/b": ""}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: got %q (present %v), want %q", k, g, ok, v)
		}
	}
	if e := ents["dev/console"]; e.RdevMaj != 5 || e.RdevMin != 1 || e.Mode != modeChar|0o600 {
		t.Errorf("dev/console: %+v", e)
	}
	if ents["bin/a"].Ino != ents["bin/b"].Ino || ents["bin/b"].Nlink != 2 {
		t.Errorf("hard link: a=%+v b=%+v", ents["bin/a"], ents["bin/b"])
	}

	// Debian's cpio must read it too.
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	cmd := exec.Command("cpio", "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	names := strings.Fields(string(out))
	sort.Strings(names)
	if strings.Join(names, " ") != "bin/a bin/b dev/console etc etc/hello etc/link etc/odd" {
		t.Errorf("cpio -t listed %q", names)
	}
	// And extract the hard link and symlink correctly.
	dir := t.TempDir()
	cmd = exec.Command("cpio", "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil && !strings.Contains(string(out), "console") {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/hello")); string(b) != "hello, world\n" {
		t.Errorf("extracted etc/hello = %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "etc/link")); l != "hello" {
		t.Errorf("extracted etc/link -> %q", l)
	}
}

func TestTarToCpio(t *testing.T) {
	dir := t.TempDir()
	tp := filepath.Join(dir, "x.tar")
	f, err := os.Create(tp)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	mt := time.Unix(1700000000, 0)
	hdrs := []struct {
		h    tar.Header
		data string
	}{
		{tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}, ""},
		{tar.Header{Name: "./usr/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}, ""},
		{tar.Header{Name: "./usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}, ""},
		{tar.Header{Name: "./usr/bin/perl", Typeflag: tar.TypeReg, Mode: 0o755, Size: 4, ModTime: mt}, "perl"},
		{tar.Header{Name: "./usr/bin/perl5.36", Typeflag: tar.TypeLink, Linkname: "./usr/bin/perl", ModTime: mt}, ""},
		{tar.Header{Name: "./bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin", ModTime: mt}, ""},
		{tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mt}, ""},
		{tar.Header{Name: "./home/nixos/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: 1000, Gid: 1000, ModTime: mt}, ""},
		{tar.Header{Name: "./var/lib/dpkg/status", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt,
			Size: int64(len(statusSample))}, statusSample},
	}
	for _, h := range hdrs {
		h := h
		if err := tw.WriteHeader(&h.h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, h.data)
	}
	tw.Close()
	f.Close()

	out := filepath.Join(dir, "x.cpio.gz")
	pkgs, err := tarToCpioGz(tp, out)
	if err != nil {
		t.Fatal(err)
	}
	if pkgs["libc6"] != "2.36-9" || len(pkgs) != 1 {
		t.Errorf("installed packages = %v", pkgs)
	}
	ents := readInitramfs(t, out)
	if e := ents["usr/bin/perl5.36"]; e == nil || e.Ino != ents["usr/bin/perl"].Ino || e.Nlink != 2 || e.Size != 0 {
		t.Errorf("hard link: %+v vs %+v", e, ents["usr/bin/perl"])
	}
	if e := ents["dev/null"]; e == nil || e.Mode != modeChar|0o666 || e.RdevMaj != 1 || e.RdevMin != 3 {
		t.Errorf("dev/null: %+v", e)
	}
	if e := ents["home/nixos"]; e == nil || e.UID != 1000 || e.Mode != modeDir|0o700 {
		t.Errorf("home/nixos: %+v", e)
	}
	if e := ents["bin"]; e == nil || e.Mode&modeTypeMask != modeSymlink || string(e.data) != "usr/bin" {
		t.Errorf("bin: %+v", e)
	}
	if _, ok := ents[""]; ok {
		t.Errorf("root entry written")
	}
}

const statusSample = `Package: libc6
Status: install ok installed
Version: 2.36-9

Package: gone
Status: deinstall ok config-files
Version: 1.0
`

func TestImageKeyChangesWithInputs(t *testing.T) {
	fsys := fstest.MapFS{
		"files/mini/init":    {Data: []byte("#!/bin/sh\n")},
		"files/mini/profile": {Data: []byte("PS1='mini# '\n")},
		"files/systemd/x":    {Data: []byte("other image\n")},
	}
	pkgs := map[string]string{"busybox-static": "1:1.35.0-4", "linux-image-6.1.0-56-amd64": "6.1.192-2"}
	k0, err := imageKey("mini", "r", fsys, pkgs)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := imageKey("mini", "r", fsys, map[string]string{"linux-image-6.1.0-56-amd64": "6.1.192-2", "busybox-static": "1:1.35.0-4"}); k != k0 {
		t.Errorf("key not stable")
	}
	fsys["files/systemd/x"] = &fstest.MapFile{Data: []byte("changed\n")}
	if k, _ := imageKey("mini", "r", fsys, pkgs); k != k0 {
		t.Errorf("key changed with another image's file")
	}
	fsys["files/mini/init"] = &fstest.MapFile{Data: []byte("#!/bin/sh\necho\n")}
	k1, _ := imageKey("mini", "r", fsys, pkgs)
	if k1 == k0 {
		t.Errorf("key did not change with an input file")
	}
	pkgs["linux-image-6.1.0-56-amd64"] = "6.1.193-1"
	k2, _ := imageKey("mini", "r", fsys, pkgs)
	if k2 == k1 {
		t.Errorf("key did not change with a package version")
	}
	if k3, _ := imageKey("systemd", "r", fsys, pkgs); k3 == k2 {
		t.Errorf("key does not depend on the image name")
	}
	if k4, _ := imageKey("mini", "r2", fsys, pkgs); k4 == k2 {
		t.Errorf("key does not depend on the recipe")
	}
	// The embedded files are part of the real key.
	if _, err := imageKey("systemd", "r", embedded, nil); err != nil {
		t.Fatal(err)
	}
}

func TestToolCancelKillsProcessGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	// The shell's child (sleep) must die too, or Wait would block on the pipe.
	_, err := tool{ctx: ctx}.run("sh", "-c", "sleep 60; echo done")
	if err == nil {
		t.Fatal("no error after cancel")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

func TestToolErrorQuotesStderr(t *testing.T) {
	_, err := tool{ctx: context.Background()}.run("sh", "-c", "echo 'E: Unable to locate package nope' >&2; exit 100")
	if err == nil || !strings.Contains(err.Error(), "Unable to locate package nope") || !strings.Contains(err.Error(), "exit status 100") {
		t.Fatalf("err = %v", err)
	}
}

// cpioFile is an entry read back from an initramfs, with its data.
type cpioFile struct {
	cpioEntry
	data []byte
}

// readInitramfs reads a gzip'ed newc archive into a map by name.
func readInitramfs(t *testing.T, p string) map[string]*cpioFile {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	r := newCpioReader(zr)
	res := map[string]*cpioFile{}
	for {
		e, data, err := r.Next()
		if err == io.EOF {
			return res
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		cf := &cpioFile{cpioEntry: *e}
		if e.Mode&modeTypeMask == modeSymlink || e.Size < 1<<16 {
			cf.data, err = io.ReadAll(data)
			if err != nil {
				t.Fatal(err)
			}
		}
		res[e.Name] = cf
	}
}

func TestAptErrorsNamePackage(t *testing.T) {
	requireTools(t, "apt-cache", "apt-get")
	b := &build{name: "mini", cache: t.TempDir()}
	_, err := aptCandidates(context.Background(), b, []string{"busybox-static", "vmscript-no-such-package"})
	if err == nil || !strings.Contains(err.Error(), "vmscript-no-such-package") || strings.Contains(err.Error(), "busybox-static") {
		t.Errorf("aptCandidates: %v", err)
	}
	_, err = aptDownload(context.Background(), b, map[string]string{"busybox-static": "0.0-vmscript-none"})
	if err == nil || !strings.Contains(err.Error(), "package busybox-static=0.0-vmscript-none") ||
		!strings.Contains(err.Error(), "E: ") {
		t.Errorf("aptDownload: %v", err)
	}
	t.Logf("example: %v", &StageError{Image: "mini", Stage: "download", Err: err})
}
