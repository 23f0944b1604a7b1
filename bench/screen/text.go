package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/screen"
)

// grubEntries are the entries of the sample grub.cfg on the rescue ISO.
var grubEntries = []string{
	"GNU/Linux", "GNU (aka GNU/Hurd)", "FreeBSD (or GNU/kFreeBSD), direct boot",
	"FreeBSD (or GNU/kFreeBSD), via /boot/loader", "NetBSD", "OpenBSD",
	"Microsoft Windows", "Memtest86+", "Change the colors",
}

// grubMenu is GRUB 2.06's text-mode menu of the rescue ISO as it should be
// on rows 0–21 of 80x25 (the countdown row 22 changes every second): the
// title, a box of 13 rows with the entries, the help text.
func grubMenu() []string {
	rows := []string{"", fmt.Sprintf("%23sGNU GRUB  version %s", "", dpkgVersion("grub-rescue-pc")), "",
		" ┌" + strings.Repeat("─", 76) + "┐"}
	for i := 0; i < 13; i++ {
		e, mark := "", " "
		if i < len(grubEntries) {
			e = grubEntries[i]
		}
		if i == 0 {
			mark = "*"
		}
		rows = append(rows, " │"+mark+e+strings.Repeat(" ", 75-len(e))+"│")
	}
	return append(rows, " └"+strings.Repeat("─", 76)+"┘", "",
		"      Use the ↑ and ↓ keys to select which entry is highlighted.",
		"      Press enter to boot the selected OS, `e' to edit the commands",
		"      before booting or `c' for a command-line.")
}

// textResult is what the text-mode part measured.
type textResult struct {
	wrong, total int
	readTook     []time.Duration
	paused       []time.Duration
	drops        []paceResult
	uefiDrops    []paceResult
	latency      []time.Duration
}

type paceResult struct {
	pace         time.Duration
	typed, wrong int
	perKey       time.Duration
}

func textMode(ctx context.Context, dir string, rounds int, paces string, keys int) (*textResult, error) {
	env, stop, err := boot(ctx, dir, qemu.Config{Name: "grub-bios", ISO: grubRescueISO, Net: "none", Memory: "256M"})
	if err != nil {
		return nil, err
	}
	defer stop()
	m, err := env.scr.Expect(ctx, []console.Pattern{{Regex: `executed automatically in \d+s`}}, screen.ExpectOptions{Timeout: 2 * time.Minute})
	if err != nil {
		return nil, err
	}
	res := &textResult{}
	want := grubMenu()
	for r, w := range want {
		got := []rune(m.Screen.Lines[r])
		for c, ch := range []rune(fmt.Sprintf("%-80s", w)) {
			res.total++
			if c >= len(got) && ch != ' ' || c < len(got) && got[c] != ch {
				res.wrong++
			}
		}
	}
	for i := 0; i < 5; i++ {
		snap, err := env.scr.Text(ctx)
		if err != nil {
			return nil, err
		}
		res.readTook, res.paused = append(res.readTook, snap.Took), append(res.paused, snap.Paused)
	}
	if err := env.scr.Type(ctx, "c"); err != nil {
		return nil, err
	}
	if _, err := env.scr.Expect(ctx, []console.Pattern{{Text: "grub> "}}, screen.ExpectOptions{Timeout: time.Minute}); err != nil {
		return nil, err
	}
	for _, p := range strings.Split(paces, ",") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, err
		}
		pr, err := typeAtPace(ctx, env, time.Duration(n)*time.Millisecond, keys)
		if err != nil {
			return nil, err
		}
		res.drops = append(res.drops, pr)
	}
	res.latency, err = latency(ctx, env, rounds)
	return res, err
}

// typeAtPace types keys characters at one pace into GRUB's command line,
// reads the line back and counts the characters lost or wrong; then it
// clears the line.
func typeAtPace(ctx context.Context, env *vmEnv, pace time.Duration, keys int) (paceResult, error) {
	p := pace
	if p == 0 {
		p = -1 // back to back
	}
	typer, err := screen.New(env.vm, screen.Options{Name: "typer", Keys: screen.KeyOptions{Pace: p}})
	if err != nil {
		return paceResult{}, err
	}
	defer typer.Close()
	s := typingText(keys)
	t0 := time.Now()
	if err := typer.Type(ctx, s); err != nil {
		return paceResult{}, err
	}
	perKey := time.Since(t0) / time.Duration(keys)
	time.Sleep(2 * time.Second) // let GRUB drain its buffer
	snap, err := env.scr.Text(ctx)
	if err != nil {
		return paceResult{}, err
	}
	got := ""
	for i := len(snap.Lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(snap.Lines[i], "grub> ") {
			got = strings.TrimPrefix(snap.Lines[i], "grub> ")
			// A line longer than the screen goes on in the next row.
			for j := i + 1; j < len(snap.Lines) && snap.Lines[j] != ""; j++ {
				got += snap.Lines[j]
			}
			break
		}
	}
	wrong := lev([]rune(s), []rune(got))
	if err := env.scr.Key(ctx, "ctrl-u"); err != nil {
		return paceResult{}, err
	}
	if _, err := env.scr.Expect(ctx, []console.Pattern{{Regex: `(?m)^grub>$`}}, screen.ExpectOptions{Timeout: 30 * time.Second}); err != nil {
		return paceResult{}, fmt.Errorf("clearing the line after pace %s: %w", pace, err)
	}
	return paceResult{pace: pace, typed: keys, wrong: wrong, perKey: perKey}, nil
}

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// typingText is n characters of the alphabet.
func typingText(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteByte(alphabet[i%len(alphabet)])
	}
	return b.String()
}

// latency types "echo markN" and measures from the moment the output row
// "markN" is in the text buffer (seen by a side reader polling the buffer
// every few milliseconds) to the return of a wait for it with the screen's
// default poll.
func latency(ctx context.Context, env *vmEnv, rounds int) ([]time.Duration, error) {
	var out []time.Duration
	for i := 0; i < rounds; i++ {
		mark := fmt.Sprintf("mark%d", i)
		seen := make(chan time.Time, 1)
		pctx, cancel := context.WithCancel(ctx)
		go watchBuffer(pctx, env, mark, seen)
		if err := env.scr.Type(ctx, "echo "+mark+"\n"); err != nil {
			cancel()
			return nil, err
		}
		_, err := env.scr.Expect(ctx, []console.Pattern{{Regex: `(?m)^` + mark + `$`}}, screen.ExpectOptions{Timeout: time.Minute})
		done := time.Now()
		cancel()
		if err != nil {
			return nil, err
		}
		select {
		case at := <-seen:
			out = append(out, done.Sub(at))
		case <-time.After(time.Second):
			return nil, fmt.Errorf("the side reader never saw %s", mark)
		}
	}
	return out, nil
}

// watchBuffer reads the 80x25 text buffer every ~2 ms and sends the time a
// row reading exactly mark first appears.
func watchBuffer(ctx context.Context, env *vmEnv, mark string, seen chan<- time.Time) {
	f := filepath.Join(env.dir, "side.bin")
	for ctx.Err() == nil {
		// The buffer is read between the send and the reply: the send's
		// time errs on the early side, the latency on the long side.
		at := time.Now()
		if _, err := env.vm.QMPQuiet(ctx, "pmemsave", map[string]any{"val": 0xb8000, "size": 4000, "filename": f}); err != nil {
			return
		}
		b, err := os.ReadFile(f)
		if err != nil || len(b) < 4000 {
			return
		}
		for r := 0; r < 25; r++ {
			var row strings.Builder
			for c := 0; c < 80; c++ {
				row.WriteByte(b[(r*80+c)*2])
			}
			if strings.TrimRight(row.String(), " \x00") == mark {
				seen <- at
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// lev is the Levenshtein distance.
func lev(a, b []rune) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
