// Command live measures the time to a root shell on the NixOS-shaped live
// ISO (the systemd lab's live.iso) by each of the three ways vmscript
// reaches it — the ISO's serial entry booted directly (entry=), the boot
// menu chosen with keys on the screen (isolinux under BIOS, GRUB under
// UEFI), and a login typed on the VGA screen — against the same system
// booted directly (the lab's kernel and its whole system as an initramfs:
// the floor of any boot through firmware and a loader) and lab.iso, whose
// default entry has a serial console.
// Each is scripts/00-shell.lua run by vmscript as a user runs it, cold, one
// guest at a time, the ways in turns. It prints a markdown section.
//
//	go run ./bench/live -vmscript bin/vmscript -rounds 2
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	bin := flag.String("vmscript", "bin/vmscript", "the vmscript binary")
	rounds := flag.Int("rounds", 2, "runs of each way, in turns")
	flag.Parse()
	if err := run(*bin, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench/live:", err)
		os.Exit(1)
	}
}

// way is one way to a root shell: the arguments to scripts/00-shell.lua.
type way struct {
	name string
	doc  string
	args []string
}

// ways lists the reference first: every ratio is against it.
func ways() []way {
	return []way{
		{"direct", "the lab's kernel + its whole system as a 64 MB compressed initramfs, booted directly", []string{"knobs=lab.storage=ok"}},
		{"lab.iso", "lab.iso as it is: GRUB, default entry on the serial console", []string{"iso=lab"}},
		{"entry", "live.iso's serial entry booted directly (`entry=`)", []string{"via=entry"}},
		{"menu (BIOS)", "live.iso through SeaBIOS: isolinux's vesamenu read by OCR, Down, Enter", []string{"via=menu"}},
		{"menu (UEFI)", "live.iso through OVMF: GRUB's menu read by OCR, Down, Enter", []string{"via=menu", "firmware=uefi"}},
		{"screen", "live.iso's default entry: root login typed on the VGA screen, then a serial getty", []string{"via=screen"}},
	}
}

// measurement is one run: the script's own time to the shell, the process's.
type measurement struct {
	shell, total float64 // seconds
}

func run(bin string, rounds int) error {
	labISO, err := labPath(bin)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "vmscript-bench-live-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ws := ways()
	got := make([][]measurement, len(ws))
	n := 0
	for r := range rounds {
		for i := range ws {
			k := (i + r) % len(ws) // a different order each round
			w := ws[k]
			args := append([]string(nil), w.args...)
			if args[0] == "iso=lab" {
				args[0] = "iso=" + labISO
			}
			n++
			m, err := once(bin, filepath.Join(tmp, strconv.Itoa(n)), args)
			if err != nil {
				return fmt.Errorf("%s: %w", w.name, err)
			}
			got[k] = append(got[k], m)
		}
	}
	report(ws, got, rounds)
	return nil
}

// labPath is the systemd lab's lab.iso, as `vmscript lab path` says.
func labPath(bin string) (string, error) {
	out, err := exec.Command(bin, "lab", "path", "systemd").Output()
	if err != nil {
		return "", fmt.Errorf("vmscript lab path systemd: %v (build the lab first: vmscript lab build systemd)", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "lab.iso"), nil
}

// shellRe is the line scripts/00-shell.lua prints once it has the shell.
var shellRe = regexp.MustCompile(`shell via \S+ after ([0-9.]+)s`)

// once runs scripts/00-shell.lua cold into dir.
func once(bin, dir string, args []string) (measurement, error) {
	cmdArgs := []string{"run", "scripts/00-shell.lua", "-q", "-o", dir, "-a", "cold=1"}
	for _, a := range args {
		cmdArgs = append(cmdArgs, "-a", a)
	}
	cmd := exec.Command(bin, cmdArgs...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	m := measurement{total: time.Since(t0).Seconds()}
	if err != nil {
		return m, fmt.Errorf("%s %s: %v\n%s", bin, strings.Join(cmdArgs, " "), err, out.String())
	}
	s := shellRe.FindSubmatch(out.Bytes())
	if s == nil {
		return m, fmt.Errorf("no %q in its output:\n%s", shellRe, out.String())
	}
	m.shell, _ = strconv.ParseFloat(string(s[1]), 64)
	return m, nil
}

func median(ms []measurement, f func(measurement) float64) float64 {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = f(m)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func shellTime(m measurement) float64 { return m.shell }
func totalTime(m measurement) float64 { return m.total }

func report(ws []way, got [][]measurement, rounds int) {
	fmt.Printf("## Time to a root shell on the NixOS-shaped live ISO, by each way (systemd lab, 1536M, cold, %d rounds)\n\n", rounds)
	fmt.Println("scripts/00-shell.lua, one guest at a time, the ways in turns. \"To the shell\" is the script's own")
	fmt.Println("clock from qemu.start to a logged-in serial shell; \"whole run\" is the vmscript process. Medians;")
	fmt.Println("ratios against the direct kernel boot of the same system.")
	fmt.Println()
	fmt.Println("| way | what boots | to the shell | ratio | whole run | every run (to the shell) |")
	fmt.Println("|---|---|---|---|---|---|")
	ref := median(got[0], shellTime)
	for i, w := range ws {
		s := median(got[i], shellTime)
		var each []string
		for _, m := range got[i] {
			each = append(each, fmt.Sprintf("%.1f", m.shell))
		}
		fmt.Printf("| %s | %s | %.1f s | %.2f× | %.1f s | %s |\n", w.name, w.doc, s, s/ref, median(got[i], totalTime), strings.Join(each, ", "))
	}
	fmt.Println()
}
