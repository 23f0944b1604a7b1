package initramfs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

const installerInitrd = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/initrd.gz"

func needFile(t *testing.T, p, pkg string) {
	t.Helper()
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("%s is missing (apt-get install %s) and VMSCRIPT_REQUIRE_QEMU is set", p, pkg)
		}
		t.Skipf("%s is missing (package %s)", p, pkg)
	}
}

func TestDebianInstallerInitrd(t *testing.T) {
	needFile(t, installerInitrd, "debian-installer-12-netboot-amd64")
	start := time.Now()
	a, err := OpenFile(context.Background(), installerInitrd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	t.Logf("%s: indexed in %v", a, time.Since(start))
	segs := a.Segments()
	if len(segs) != 1 || segs[0].Format != FormatGzip || segs[0].Length != fileSize(t, installerInitrd) || segs[0].Members < 2000 {
		t.Errorf("segments %+v", segs)
	}
	init, _, err := a.Read("/init", 0)
	if err != nil || !bytes.HasPrefix(init, []byte("#!/bin/sh")) {
		t.Fatalf("/init: %q %v", init, err)
	}
	for _, p := range []string{"/sbin/init", "/bin/sh", "/lib/debian-installer/menu", "/etc/lsb-release"} {
		if ok, _ := a.Exists(p); !ok {
			t.Errorf("%s missing", p)
		}
	}
	// cpio itself agrees on the content of /init.
	if _, err := exec.LookPath("cpio"); err == nil {
		zcat := exec.Command("sh", "-c", "zcat "+installerInitrd+" | cpio --quiet -i --to-stdout init")
		if want, err := zcat.Output(); err != nil || !bytes.Equal(want, init) {
			t.Errorf("cpio gives %d bytes of /init (%v), we %d", len(want), err, len(init))
		}
	}
	n := 0
	if err := a.Walk(func(e iso.Entry) error { n++; return nil }); err != nil || n < 2000 {
		t.Errorf("walk: %d entries, %v", n, err)
	}
}

func fileSize(t *testing.T, p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestLabInitramfs(t *testing.T) {
	for _, c := range []struct{ lab, want string }{{"mini", "/init"}, {"systemd", "/etc/systemd/system/multi-user.target.wants/pre-nixos.service"}} {
		t.Run(c.lab, func(t *testing.T) {
			if c.lab == "systemd" && raceEnabled {
				t.Skip("200 MB of gzip under the race detector takes over a minute; run without -race")
			}
			img, err := lab.Lookup(c.lab, lab.Options{})
			if err != nil {
				if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
					t.Fatal(err)
				}
				t.Skipf("the %s lab is not built (vmscript lab build %s): %v", c.lab, c.lab, err)
			}
			a, err := OpenFile(context.Background(), img.Files["initramfs"], nil)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			t.Log(a)
			e, err := a.Resolve(c.want)
			if err != nil {
				list, _ := a.List("/")
				t.Fatalf("%s: %v; root: %v", c.want, err, list)
			}
			data, _, err := a.Read(e.Path, 4096)
			if err != nil || len(data) == 0 {
				t.Fatalf("read %s: %v", e.Path, err)
			}
			t.Logf("%s: %q", e, data[:min(len(data), 80)])
		})
	}
}

func TestMissingFile(t *testing.T) {
	_, err := OpenFile(context.Background(), "/no/such/initrd", nil)
	if vmerr.KindOf(err) != vmerr.NotFound || !strings.Contains(err.Error(), "/no/such/initrd") {
		t.Fatalf("%v", err)
	}
	_, err = OpenFile(context.Background(), t.TempDir(), nil)
	if vmerr.KindOf(err) != vmerr.Usage {
		t.Fatalf("directory: %v", err)
	}
}

// BenchmarkInstallerInitrd indexes the installer's 40 MB initrd.gz and
// reads /init and the last member.
func BenchmarkInstallerInitrd(b *testing.B) {
	if _, err := os.Stat(installerInitrd); err != nil {
		b.Skip(err)
	}
	for i := 0; i < b.N; i++ {
		a, err := OpenFile(context.Background(), installerInitrd, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := a.Read("/init", 0); err != nil {
			b.Fatal(err)
		}
		a.Close()
	}
}
