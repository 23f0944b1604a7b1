package checkpoint

import (
	"context"
	"os"
	"slices"
	"testing"

	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func TestFileURIVersion(t *testing.T) {
	for _, c := range []struct {
		major, minor int
		want         bool
	}{{7, 2, false}, {8, 1, false}, {8, 2, true}, {9, 0, true}} {
		if got := fileURIVersion(c.major, c.minor); got != c.want {
			t.Errorf("%d.%d: %v, want %v", c.major, c.minor, got, c.want)
		}
	}
}

func TestForkConfig(t *testing.T) {
	dir := t.TempDir()
	c := &Checkpoint{name: "cp", dir: dir, state: dir + "/state.bin", mac: "52:54:00:aa:bb:cc", names: map[string]bool{},
		cfg: qemu.Config{Name: "orig", Dir: "/tmp/x", SerialLog: "/tmp/x/serial.log",
			Forwards: []qemu.Forward{{GuestPort: 22, HostPort: 2222}}, QEMUArgs: []string{"-x"}}}
	cfg, err := c.forkConfig(context.Background(), ForkOptions{Name: "f1"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "f1" || cfg.Dir != "" || cfg.SerialLog != "" || cfg.MAC != c.mac {
		t.Errorf("cfg = %+v", cfg)
	}
	if cfg.Forwards[0].HostPort != 0 || c.cfg.Forwards[0].HostPort != 2222 {
		t.Errorf("forwards: fork %+v, original %+v", cfg.Forwards, c.cfg.Forwards)
	}
	if want := []string{"-x", "-incoming", "exec:cat '" + dir + "/state.bin'"}; !slices.Equal(cfg.QEMUArgs, want) {
		t.Errorf("QEMUArgs = %q, want %q", cfg.QEMUArgs, want)
	}
	if len(c.cfg.QEMUArgs) != 1 {
		t.Errorf("the original's QEMUArgs changed: %q", c.cfg.QEMUArgs)
	}
	// A LAN port given as a file cannot be reused; a wrong number of NICs
	// is refused.
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	c.cfg.NICs = []qemu.NIC{{File: f}}
	if _, err := c.forkConfig(context.Background(), ForkOptions{Name: "f2"}); !vmerr.Is(err, vmerr.Usage) {
		t.Errorf("file NIC: %v", err)
	}
	if _, err := c.forkConfig(context.Background(), ForkOptions{Name: "f3", NICs: []qemu.NIC{{User: true}, {User: true}}}); !vmerr.Is(err, vmerr.Usage) {
		t.Errorf("two NICs for one: %v", err)
	}
	c.useFile = true
	c.cfg.NICs = nil
	cfg, _ = c.forkConfig(context.Background(), ForkOptions{Name: "f4"})
	if got := cfg.QEMUArgs[len(cfg.QEMUArgs)-1]; got != "file:"+dir+"/state.bin" {
		t.Errorf("file transport: %q", got)
	}
}

func TestReserveNames(t *testing.T) {
	c := &Checkpoint{name: "cp", names: map[string]bool{}}
	a, _ := c.reserve("")
	b, _ := c.reserve("cp-2x")
	d, _ := c.reserve("")
	if a != "cp-1" || b != "cp-2x" || d != "cp-2" {
		t.Errorf("names %s %s %s", a, b, d)
	}
	if _, err := c.reserve("cp-1"); !vmerr.Is(err, vmerr.Usage) {
		t.Errorf("duplicate: %v", err)
	}
	c.removed = true
	if _, err := c.reserve(""); err == nil {
		t.Error("a removed checkpoint forks")
	}
}
