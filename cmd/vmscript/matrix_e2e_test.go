package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestE2EMatrixAndReport: a three-task matrix on the mini lab, each task
// picked the way an engine picks it (--task, a Slurm array's variable, a
// Kubernetes Indexed Job's), one failing on purpose; then one report of
// the three: text, JUnit and the HTML page, the failure named.
func TestE2EMatrixAndReport(t *testing.T) {
	requireQEMU(t)
	labImage(t, "mini")
	t.Parallel()
	dir := t.TempDir()
	writeScript(t, dir, "probe.lua", `
		local vm = qemu.start{ name = "mini", lab = "mini", memory = "256M" }
		vm.console:expect("mini# ", { timeout = "4m" })
		notes.step("probe " .. args.want)
		vm:quit()
		if args.want == "fail" then error({ kind = "failed", message = "failing on purpose" }, 0) end
		notes.conclude("ok")
	`)
	writeScript(t, dir, "nightly.lua", `return {
		scripts = { "probe.lua" },
		params = { want = { "ok", "fail" } },
		tasks = { { script = "probe.lua", args = { want = "ok" }, name = "again" } },
		timeout = "5m",
	}`)
	list := vms(t, dir, nil, "matrix", "list", "nightly.lua")
	for _, want := range []string{"0      probe+want=ok", "1      probe+want=fail", "2      again", "want=fail"} {
		if !strings.Contains(list.stdout, want) {
			t.Errorf("matrix list lacks %q:\n%s", want, list.stdout)
		}
	}
	envs := [][]string{nil, {"SLURM_ARRAY_TASK_ID=1"}, {"JOB_COMPLETION_INDEX=2"}}
	codes := make([]int, 3)
	var wg sync.WaitGroup
	for i, env := range envs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := []string{"run", "--matrix", "nightly.lua", "--results", "results", "-q"}
			if env == nil {
				args = append(args, "--task", strconv.Itoa(i))
			}
			codes[i] = vms(t, dir, env, args...).code
		}()
	}
	wg.Wait()
	if codes[0] != 0 || codes[1] != 1 || codes[2] != 0 {
		t.Fatalf("exit codes %v, want [0 1 0]", codes)
	}
	for _, f := range []string{"probe+want=ok/result.json", "probe+want=fail/junit.xml", "again/notes.md"} {
		if _, err := os.Stat(filepath.Join(dir, "results", f)); err != nil {
			t.Errorf("results lack %s", f)
		}
	}
	r := vms(t, dir, nil, "report", "results", "--html", "results/index.html", "--junit", "results/junit.xml")
	if r.code != 1 || !strings.Contains(r.stdout, "3 runs: 2 passed, 1 failed") || !strings.Contains(r.stdout, "failing on purpose") {
		t.Errorf("report: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	page, _ := os.ReadFile(filepath.Join(dir, "results", "index.html"))
	junit, _ := os.ReadFile(filepath.Join(dir, "results", "junit.xml"))
	if !strings.Contains(string(page), `<a href="probe&#43;want=fail/notes.md">failed</a> (1)`) || !strings.Contains(string(junit), `failures="1"`) {
		t.Errorf("html or junit:\n%s\n%s", page, junit)
	}
	// Bad input: a task that does not exist, a script beside --matrix.
	bad := vms(t, dir, nil, "run", "--matrix", "nightly.lua", "--task", "3")
	if bad.code != 2 || !strings.Contains(bad.stderr, "has tasks 0 to 2, not 3") {
		t.Errorf("--task 3: exit %d %s", bad.code, bad.stderr)
	}
	bad = vms(t, dir, nil, "run", "probe.lua", "--matrix", "nightly.lua", "--task", "0")
	if bad.code != 2 || !strings.Contains(bad.stderr, "give no script") {
		t.Errorf("script and --matrix: exit %d %s", bad.code, bad.stderr)
	}
}
