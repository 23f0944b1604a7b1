package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/screen"
)

// serialGrubCfg puts GRUB's terminal on the serial port too, so that what
// GRUB under OVMF echoes of the keys is read exactly (the screen itself is
// graphics there).
const serialGrubCfg = `serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=-1
menuentry "keys" { true }
`

// uefiKeys types at each pace into GRUB's command line under OVMF (keys
// through the firmware's keyboard driver) and counts what its serial echo
// lost.
func uefiKeys(ctx context.Context, dir, paces string, keys int) ([]paceResult, error) {
	tree := filepath.Join(dir, "grub-keys")
	cfg := filepath.Join(tree, "boot", "grub", "grub.cfg")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfg, []byte(serialGrubCfg), 0o644); err != nil {
		return nil, err
	}
	iso := filepath.Join(dir, "grub-keys.iso")
	if out, err := exec.Command("grub-mkrescue", "-o", iso, tree).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("grub-mkrescue: %v\n%s", err, out)
	}
	env, stop, err := boot(ctx, dir, qemu.Config{Name: "grub-keys", ISO: iso, Firmware: "uefi", Net: "none"})
	if err != nil {
		return nil, err
	}
	defer stop()
	if _, err := env.con.ExpectText(ctx, "keys", console.ExpectOptions{Timeout: 4 * time.Minute}); err != nil {
		return nil, err
	}
	if err := env.scr.Type(ctx, "c"); err != nil {
		return nil, err
	}
	var out []paceResult
	for _, p := range strings.Split(paces, ",") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, err
		}
		if _, err := env.con.ExpectText(ctx, "grub> ", console.ExpectOptions{Timeout: time.Minute}); err != nil {
			return nil, err
		}
		r, err := typeSerial(ctx, env, time.Duration(n)*time.Millisecond, keys)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// typeSerial types keys characters at one pace and compares GRUB's echo on
// the serial console; Enter then ends the line.
func typeSerial(ctx context.Context, env *vmEnv, pace time.Duration, keys int) (paceResult, error) {
	p := pace
	if p == 0 {
		p = -1
	}
	typer, err := screen.New(env.vm, screen.Options{Name: "typer", Keys: screen.KeyOptions{Pace: p}})
	if err != nil {
		return paceResult{}, err
	}
	defer typer.Close()
	s := typingText(keys)
	mark := env.con.Mark()
	t0 := time.Now()
	if err := typer.Type(ctx, s); err != nil {
		return paceResult{}, err
	}
	perKey := time.Since(t0) / time.Duration(keys)
	time.Sleep(3 * time.Second)
	// GRUB's terminfo output writes each echoed character, moves the
	// cursor and writes it again: one line per key once stripped.
	var got strings.Builder
	for _, l := range strings.Split(env.con.Text(&mark, nil), "\n") {
		for _, r := range l {
			if strings.ContainsRune(alphabet, r) {
				got.WriteRune(r)
				break
			}
		}
	}
	if err := env.scr.Key(ctx, "ret"); err != nil {
		return paceResult{}, err
	}
	return paceResult{pace: pace, typed: keys, wrong: lev([]rune(s), []rune(got.String())), perKey: perKey}, nil
}
