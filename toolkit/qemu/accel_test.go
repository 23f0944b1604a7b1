package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProbeSectorRunsUnderTCG: the probe's boot sector, run by the real
// QEMU under TCG, counts down and exits through isa-debug-exit (status 33),
// and the countdown is work (from 2^27 it takes well over 1.5x as long as
// from 1: 0.35 s against 0.09 s here); with too short a limit the same run
// reports errProbeSlow.
func TestProbeSectorRunsUnderTCG(t *testing.T) {
	requireQEMU(t)
	ctx := ctxT(t, 60*time.Second)
	d, err := runProbe(ctx, DefaultBinary, "tcg", 20*time.Second)
	if err != nil {
		t.Fatalf("probe under TCG: %v (after %s)", err, d)
	}
	saved := probeCountdown
	probeCountdown = 1
	short, err := runProbe(ctx, DefaultBinary, "tcg", 20*time.Second)
	probeCountdown = saved
	if err != nil {
		t.Fatalf("probe from 1 under TCG: %v", err)
	}
	if d < short*3/2 {
		t.Errorf("probe from 2^27 took %s, from 1 %s: the countdown is not the probe's work", d, short)
	}
	if _, err := runProbe(ctx, DefaultBinary, "tcg", time.Millisecond); !errors.Is(err, errProbeSlow) {
		t.Errorf("probe with a 1 ms limit: %v, want errProbeSlow", err)
	}
}

// fakeProbeQEMU writes a QEMU stand-in that sleeps tcgSleep or kvmSleep
// (by its -accel argument) and then exits with status 33, as the probe
// sector makes QEMU do, unless kvmFail is set: then -accel kvm fails the
// way QEMU does without a usable KVM.
func fakeProbeQEMU(t *testing.T, tcgSleep, kvmSleep string, kvmFail bool) string {
	t.Helper()
	fail := ""
	if kvmFail {
		fail = `[ "$2" = kvm ] && { echo "Could not access KVM kernel module: Permission denied" >&2; exit 1; }` + "\n"
	}
	script := "#!/bin/sh\n" + fail +
		`case "$2" in tcg) sleep ` + tcgSleep + ` ;; kvm) exec sleep ` + kvmSleep + ` ;; esac` + "\nexit 33\n"
	path := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRaceProbes: KVM is chosen only when its probe run finishes no later
// than TCG's; a KVM slower than TCG (nested, emulated) or one QEMU cannot
// open means TCG, with a reason that says which.
func TestRaceProbes(t *testing.T) {
	cases := []struct {
		name             string
		tcg, kvm         string
		kvmFail          bool
		accel, reasonHas string
	}{
		// The fake's kvm "run" never exits 33 (exec sleep): it must be
		// cut off at TCG's time, not waited out.
		{"kvm slower", "0.3", "30", false, "tcg", "slower under KVM than under TCG"},
		{"kvm fails", "0.1", "0", true, "tcg", "Could not access KVM kernel module"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin := fakeProbeQEMU(t, c.tcg, c.kvm, c.kvmFail)
			t0 := time.Now()
			got := raceProbes(ctxT(t, 20*time.Second), bin)
			if got.Accel != c.accel || !strings.Contains(got.Reason, c.reasonHas) {
				t.Errorf("got %q (%s), want %q with %q", got.Accel, got.Reason, c.accel, c.reasonHas)
			}
			if el := time.Since(t0); el > 5*time.Second {
				t.Errorf("the race took %s: the slow KVM run was not cut off at TCG's time", el)
			}
		})
	}
	t.Run("kvm faster", func(t *testing.T) {
		dir := t.TempDir()
		bin := filepath.Join(dir, "qemu")
		script := "#!/bin/sh\ncase \"$2\" in tcg) sleep 0.5 ;; esac\nexit 33\n"
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		got := raceProbes(ctxT(t, 20*time.Second), bin)
		if got.Accel != "kvm" || !strings.Contains(got.Reason, "ran under KVM in") || got.Probe <= 0 || got.Probe >= 500*time.Millisecond {
			t.Errorf("got %+v, want kvm with KVM's probe time", got)
		}
	})
	t.Run("tcg broken", func(t *testing.T) {
		bin := filepath.Join(t.TempDir(), "qemu")
		if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		got := raceProbes(ctxT(t, 20*time.Second), bin)
		if got.Accel != "tcg" || !strings.Contains(got.Reason, "could not run under TCG to compare") ||
			!strings.Contains(got.Reason, "exited 0 without running the boot sector") {
			t.Errorf("got %+v", got)
		}
	})
}
