// Package testenv holds what the end-to-end tests of every package share:
// the rule for skipping when QEMU is missing, and the lab images.
package testenv

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/journal"
)

// RequireEnv is the variable that turns a missing QEMU from a skip into a
// failure; .ci/run sets it.
const RequireEnv = "VMSCRIPT_REQUIRE_QEMU"

// Required reports whether the environment demands the end-to-end tests run.
func Required() bool { return os.Getenv(RequireEnv) != "" }

// RequireQEMU skips t when qemu-system-x86_64 is missing, unless
// VMSCRIPT_REQUIRE_QEMU is set, in which case it fails t.
func RequireQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		if Required() {
			t.Fatalf("%s is set but QEMU is missing: %v", RequireEnv, err)
		}
		t.Skip("qemu-system-x86_64 not installed")
	}
}

// RequireTool skips (or, with VMSCRIPT_REQUIRE_QEMU, fails) t when a host
// program a test drives is missing.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if Required() {
			t.Fatalf("%s is set but %s is missing (see lab/host-packages.txt): %v", RequireEnv, name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// Lab returns a lab image, building it when the cache does not hold the
// current one.
func Lab(t testing.TB, name string) *lab.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	img, err := lab.Build(ctx, name, lab.Options{})
	if err != nil {
		t.Fatalf("lab %s: %v", name, err)
	}
	return img
}

// Run returns a run directory with its timeline in a temporary directory,
// closed when the test ends. When the test fails, the tail of every log in
// the run directory (consoles, QEMU's stderr, the timeline) goes to the test
// log first: the directory itself is removed, and a CI failure must carry its
// evidence.
func Run(t testing.TB) *journal.Run {
	t.Helper()
	run, err := journal.New(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		run.Close()
		if t.Failed() {
			logTails(t, run.Dir())
		}
	})
	return run
}

// tailLines is how many lines of each log a failed test shows.
const tailLines = 40

// logTails logs the last tailLines lines of every *.log and *.jsonl file in
// dir, walking subdirectories.
func logTails(t testing.TB, dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if !strings.HasSuffix(p, ".log") && !strings.HasSuffix(p, ".jsonl") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			return nil
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > tailLines {
			lines = lines[len(lines)-tailLines:]
		}
		rel, _ := filepath.Rel(dir, p)
		t.Logf("--- last %d lines of %s (%d bytes) ---\n%s", len(lines), rel, len(data), strings.Join(lines, "\n"))
		return nil
	})
}
