package qemu_test

import (
	"bytes"
	"context"
	"github.com/vmscript/vmscript/internal/testenv"
	"os"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

// TestE2EConsoleHoldsByteZero runs the intended sequence with the real
// console: Start (paused), attach the console, Cont. SeaBIOS mirrored to the
// serial port (SerialBIOS) writes ESC c as its very first output; the
// console and its log must begin with it.
func TestE2EConsoleHoldsByteZero(t *testing.T) {
	testenv.RequireQEMU(t)
	run := testenv.Run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, err := qemu.Start(ctx, qemu.Config{Name: "con", Run: run, Net: "none", SerialBIOS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop(5 * time.Second)
	con, err := console.New(console.Options{Name: v.Name(), Run: run, LogPath: run.Path("con.console.log")})
	if err != nil {
		t.Fatal(err)
	}
	if err := con.Attach(v.Serial()); err != nil {
		t.Fatal(err)
	}
	if err := v.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	for !bytes.Contains(con.Raw(nil, nil), []byte("SeaBIOS (version")) {
		if ctx.Err() != nil {
			t.Fatalf("no SeaBIOS banner; console has %q", con.Raw(nil, nil))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if raw := con.Raw(nil, nil); !bytes.HasPrefix(raw, []byte("\x1bc")) {
		t.Errorf("console starts %q", raw[:min(len(raw), 40)])
	}
	v.Stop(5 * time.Second)
	st, _ := v.Wait(ctx)
	con.Close(nil)
	<-con.Done()
	log, _ := os.ReadFile(run.Path("con.console.log"))
	if !bytes.HasPrefix(log, []byte("\x1bc")) || !bytes.Contains(log, []byte("SeaBIOS (version")) {
		t.Errorf("console log starts %q", log[:min(len(log), 40)])
	}
	t.Logf("exit %s; console log %d bytes", st, len(log))
}
