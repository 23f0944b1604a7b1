package luahost

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"
)

// warmScript asks for the mini lab at its shell prompt; marker changes
// ready's source (another state).
func warmScript(marker string) string {
	return fmt.Sprintf(`
		local vm, sh, info = qemu.warm{
			start = { name = "w", lab = "mini", memory = "256M" },
			ready = function(vm)
				local sh = vm:shell{ timeout = "90s" }
				sh:run("echo %s > /tmp/ready")
				return sh
			end,
		}
		local r = sh:run("cat /tmp/ready; date +%%s")
		local marker, guest = r.output:match("(%%S+)\n(%%d+)")
		print(info.hit, marker, math.abs(tonumber(guest) - os.time()) <= 3, info.key ~= nil)
		print(table.concat(info.why, "\n"))
		vm:quit()
	`, marker)
}

// TestE2EWarmMini: a miss boots, readies and saves; the next run restores
// (its clock set, its shell at the prompt); a changed ready misses and says
// why; a truncated state file is rebuilt, never restored; two runs that
// miss together build once.
func TestE2EWarmMini(t *testing.T) {
	testenv.RequireQEMU(t)
	testenv.Lab(t, "mini")
	t.Setenv("VMSCRIPT_WARM_DIR", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	run := func(marker string) []string {
		t.Helper()
		out, err := runLua(t, ctx, warmScript(marker), nil, Options{Run: testenv.Run(t)})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return strings.Split(out, "\n")
	}
	t0 := time.Now()
	if got := run("one"); got[0] != "false\tone\ttrue\ttrue" {
		t.Fatalf("cold: %q", got)
	}
	cold := time.Since(t0)
	t0 = time.Now()
	if got := run("one"); got[0] != "true\tone\ttrue\ttrue" {
		t.Fatalf("warm: %q", got)
	}
	t.Logf("cold run %.1fs, warm run %.1fs", cold.Seconds(), time.Since(t0).Seconds())
	if got := run("two"); got[0] != "false\ttwo\ttrue\ttrue" || !strings.Contains(strings.Join(got, "\n"), "ready source: changed") {
		t.Fatalf("changed ready: %q", got)
	}
	truncate(t, "one")
	if got := run("one"); got[0] != "false\tone\ttrue\ttrue" || !strings.Contains(strings.Join(got, "\n"), "truncated") {
		t.Fatalf("truncated entry: %q", got)
	}
	concurrentMisses(t, ctx)
}

// truncate cuts the state file of the warm entry whose ready echoes marker.
func truncate(t *testing.T, marker string) {
	t.Helper()
	entries, _ := filepath.Glob(filepath.Join(os.Getenv("VMSCRIPT_WARM_DIR"), "entries", "*", "entry.json"))
	for _, e := range entries {
		data, _ := os.ReadFile(e)
		if strings.Contains(string(data), "echo "+marker) {
			state := filepath.Join(filepath.Dir(e), "state.bin")
			os.Chmod(state, 0o644)
			if err := os.Truncate(state, 4096); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no entry for %q among %v", marker, entries)
}

// concurrentMisses runs two scripts at once for a state nobody saved: one
// builds, the other waits and restores.
func concurrentMisses(t *testing.T, ctx context.Context) {
	var wg sync.WaitGroup
	outs := make([]string, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := runLua(t, ctx, warmScript("three"), nil, Options{Run: testenv.Run(t)})
			if err != nil {
				out += "error: " + err.Error()
			}
			outs[i] = out
		}()
	}
	wg.Wait()
	hits := 0
	for _, o := range outs {
		if strings.HasPrefix(o, "true\tthree\ttrue\ttrue") {
			hits++
		} else if !strings.HasPrefix(o, "false\tthree\ttrue\ttrue") {
			t.Fatalf("concurrent run: %q", o)
		}
	}
	if hits != 1 {
		t.Fatalf("two runs missing together: %d restored, want 1 (one builds)\n%q", hits, outs)
	}
}
