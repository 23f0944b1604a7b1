package checkpoint_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/vmscript/vmscript/internal/testenv"

	"github.com/vmscript/vmscript/lab"
	"github.com/vmscript/vmscript/toolkit/checkpoint"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// TestE2ETimeout throttles the migration to 1 MiB/s so that saving the
// mini lab's ~100 MB cannot finish within a 1 s bound: Take fails with kind
// "timeout", cancels the migration, resumes the guest and leaves no files.
func TestE2ETimeout(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := lab.Build(ctx, "mini", lab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	run := testenv.Run(t)
	m, err := machine.Boot(ctx, machine.Spec{QEMU: qemu.Config{Name: "slow", Memory: "512M", Net: "none", Run: run}, Lab: img})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(5 * time.Second)
	if _, err := m.Console.ExpectText(ctx, "# ", console.ExpectOptions{Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	defer checkpoint.SetMaxBandwidth(1 << 20)()
	_, err = m.Checkpoint(ctx, checkpoint.Options{Name: "cp", Timeout: time.Second})
	if !vmerr.Is(err, vmerr.Timeout) {
		t.Fatalf("Take = %v, want kind timeout", err)
	}
	t.Logf("timeout: %v", err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := m.VM.Status(ctx)
		if err == nil && st == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest does not run again after the timeout: %q %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(run.Path("checkpoints/cp")); !os.IsNotExist(err) {
		t.Errorf("a failed checkpoint left its directory: %v", err)
	}
}
