package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/slurmtest"
)

// TestE2ESlurmMatrix submits a six-task matrix (mini and systemd scripts,
// one failing on purpose, one cancelled with scancel while its VM runs) to
// a private one-node Slurm cluster, waits, and checks the report: every
// verdict right, the failure named, the cancelled task reported as
// cancelled, no QEMU left.
func TestE2ESlurmMatrix(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	labImage(t, "systemd")
	cluster := slurmtest.Start(t)
	dir := t.TempDir()
	writeScript(t, dir, "mini.lua", `
		local vm = qemu.start{ name = "mini", lab = "mini", memory = "256M" }
		vm.console:expect("mini# ", { timeout = "4m" })
		vm:quit()
		if args.want == "fail" then error({ kind = "failed", message = "failing on purpose" }, 0) end
	`)
	writeScript(t, dir, "slow.lua", `
		local vm = qemu.start{ name = "mini", lab = "mini", memory = "256M" }
		vm.console:expect("mini# ", { timeout = "4m" })
		print("ready")
		vm.console:expect("never comes", { timeout = "10m" })
	`)
	writeScript(t, dir, "systemd.lua", `
		local vm = qemu.start{ name = "lab", lab = "systemd", memory = "1536M" }
		vm.console:expect("login: ", { timeout = "6m" })
		vm:quit()
	`)
	writeScript(t, dir, "nightly.lua", `return {
		tasks = { { script = "slow.lua", name = "cancel-me" }, { script = "systemd.lua", name = "systemd" } },
		scripts = { "mini.lua" },
		params = { want = { "ok", "fail", "again", "more" } },
		timeout = "15m", cpus = 1, memory = "1536M",
	}`)
	// The tasks are numbered scripts first, then tasks: cancel-me is 4.
	results := filepath.Join(dir, "results")
	cmd := exec.Command(binary, "slurm", "submit", "nightly.lua", "--results", results, "--wait")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cluster.Env()...)
	var out, errb syncBuffer // read while the process writes
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	id := waitJobID(t, &out)
	waitFile(t, filepath.Join(results, "cancel-me", "mini.console.log"), "mini# ", 5*time.Minute)
	scancel := exec.Command("scancel", id+"_4")
	scancel.Env = cmd.Env
	if b, err := scancel.CombinedOutput(); err != nil {
		t.Fatalf("scancel: %v %s", err, b)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		t.Fatalf("slurm submit --wait still waits:\n%s\n%s", out.String(), errb.String())
	}
	report := out.String()
	if cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("exit %d, want 1 (a task failed):\n%s\n%s", cmd.ProcessState.ExitCode(), report, errb.String())
	}
	for _, re := range []string{`6 runs: 4 passed, 1 failed, 1 cancelled`, `cancel-me\s+cancelled\s+143`, `mini\+want=fail\s+failed\s+1\s.*failing on purpose`,
		`systemd\s+passed\s+0`, `mini\+want=more\s+passed`} {
		if !regexp.MustCompile(re).MatchString(report) {
			t.Errorf("report lacks /%s/:\n%s", re, report)
		}
	}
	for _, f := range []string{"index.html", "junit.xml", "slurm-array.sh"} {
		if _, err := os.Stat(filepath.Join(results, f)); err != nil {
			t.Errorf("no %s: %v", f, err)
		}
	}
	noQEMULeft(t, results)
}

// waitJobID reads the job id submit prints first.
func waitJobID(t *testing.T, out *syncBuffer) string {
	t.Helper()
	re := regexp.MustCompile(`job (\d+): 6 tasks`)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no job id in %q", out.String())
	return ""
}

// waitFile waits until path holds want.
func waitFile(t *testing.T, path, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(want)) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s never held %q", path, want)
}

// noQEMULeft checks that the QEMU of every run under dir is gone.
func noQEMULeft(t *testing.T, dir string) {
	t.Helper()
	runs, _ := filepath.Glob(filepath.Join(dir, "*", "timeline.jsonl"))
	for _, tl := range runs {
		for _, ev := range timeline(t, filepath.Dir(tl)) {
			if !strings.HasPrefix(ev.Source, "vm:") || ev.Kind != "start" {
				continue
			}
			pid, _ := ev.Fields["pid"].(float64)
			if pid > 0 && syscall.Kill(int(pid), 0) == nil {
				t.Errorf("%s: QEMU pid %d still runs", tl, int(pid))
			}
		}
	}
}
