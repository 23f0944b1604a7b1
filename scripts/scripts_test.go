package scripts_test

// End-to-end tests of the investigation scripts: each runs the real
// vmscript binary against the real lab guest (QEMU, TCG on CI) and checks the
// conclusion it reaches, its exit code for `git bisect run`, and that the
// notes cite evidence files that exist.
//
// Budget: the VM tests run in parallel (one vmscript process each, two VMs
// per investigate run, shutdown variants from checkpoint forks); the lab is
// booted directly (lab="systemd" + knobs) except where the ISO is the
// subject. 03-inspect-iso needs no VM.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/vmscript/vmscript/internal/testenv"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binary  string // the vmscript binary built by TestMain
	repo    string // the repository root
	labOnce sync.Once
	labErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The VM tests wait on QEMU, not on the CPU: let them overlap even on a
	// 2-core machine (the default -parallel is GOMAXPROCS).
	if f := flag.Lookup("test.parallel"); f != nil && f.Value.String() == strconv.Itoa(runtime.GOMAXPROCS(0)) {
		_ = f.Value.Set("8")
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repo = filepath.Dir(wd)
	tmp, err := os.MkdirTemp("", "vmscript-scripts-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(tmp, "vmscript")
	// The scripts restore warm states by default: give them a cache of
	// their own (shared by the tests of this run, as by a user's runs).
	os.Setenv("VMSCRIPT_WARM_DIR", filepath.Join(tmp, "warm"))
	build := exec.Command("go", "build", "-o", binary, "./cmd/vmscript")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/vmscript: %v\n%s", err, out)
		os.RemoveAll(tmp)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// needQEMU skips unless QEMU is installed (fails instead when
// VMSCRIPT_REQUIRE_QEMU is set).
func needQEMU(t *testing.T) {
	t.Helper()
	testenv.RequireQEMU(t)
}

// needLab builds (or finds in the cache) the systemd lab guest once.
func needLab(t *testing.T) {
	t.Helper()
	labOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, "lab", "build", "systemd")
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			labErr = fmt.Errorf("vmscript lab build systemd: %v\n%s", err, out)
		}
	})
	if labErr != nil {
		t.Fatal(labErr)
	}
}

// labFile is the path of a file of the built systemd lab.
func labFile(t *testing.T, name string) string {
	t.Helper()
	needLab(t)
	cmd := exec.Command(binary, "lab", "path", "systemd", "--file", name)
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("vmscript lab path systemd --file %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

type result struct {
	code   int
	stdout string
	stderr string
	dir    string // the run directory
	took   time.Duration
}

// vms runs `vmscript run scripts/SCRIPT --out DIR -a …` from the repo root.
func vms(t *testing.T, script string, timeout time.Duration, args ...string) result {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	argv := []string{"run", filepath.Join("scripts", script), "--out", dir, "--timeout", timeout.String()}
	for _, a := range args {
		argv = append(argv, "-a", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, argv...)
	cmd.Dir = repo
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), dir: dir, took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("vmscript run %s: %v\n%s", script, err, r.stderr)
	}
	t.Logf("%s %v: exit %d after %s; run directory %s", script, args, r.code, r.took.Round(time.Second), dir)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stdout of %s:\n%s", script, r.stdout)
			t.Logf("stderr of %s (tail):\n%s", script, tail(r.stderr, 40))
			if os.Getenv("VMSCRIPT_KEEP_RUNS") != "" {
				keep, _ := os.MkdirTemp("", "vmscript-failed-run-")
				_ = exec.Command("cp", "-a", dir, keep).Run()
				t.Logf("run directory kept in %s", keep)
			}
		}
	})
	return r
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func contains(t *testing.T, what, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
}

var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// checkEvidence reads notes.md of a run and checks that every file it links
// exists; it returns the notes and the number of links.
func checkEvidence(t *testing.T, dir string) (string, int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "notes.md"))
	if err != nil {
		t.Fatalf("notes: %v", err)
	}
	n := 0
	for _, m := range linkRE.FindAllStringSubmatch(string(b), -1) {
		u, err := url.Parse(m[1])
		if err != nil {
			t.Errorf("notes.md: bad link %q: %v", m[1], err)
			continue
		}
		p := u.Path
		if u.Scheme == "" && !filepath.IsAbs(p) {
			p = filepath.Join(dir, filepath.FromSlash(p))
		}
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
			t.Errorf("notes.md cites %s, which does not exist (%v)", m[1], err)
		}
		n++
	}
	return string(b), n
}

// artifact returns the content of the one artifact matching glob.
func artifact(t *testing.T, dir, glob string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "artifacts", glob))
	if len(m) != 1 {
		t.Fatalf("artifacts/%s: %d matches, want 1 (%v)", glob, len(m), m)
	}
	b, err := os.ReadFile(m[0])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// pathOf is the "path: a=v -> b=v" line investigate prints, as a map.
func pathOf(t *testing.T, stdout string) map[string]string {
	t.Helper()
	for _, line := range strings.Split(stdout, "\n") {
		if rest, ok := strings.CutPrefix(line, "path: "); ok {
			m := map[string]string{}
			for _, step := range strings.Split(rest, " -> ") {
				k, v, _ := strings.Cut(step, "=")
				m[k] = v
			}
			return m
		}
	}
	t.Fatalf("no path line in the output")
	return nil
}

// TestInvestigate walks the whole tree on the lab for each knob: it must
// end on the right side of every split and name the fault.
func TestInvestigate(t *testing.T) {
	needQEMU(t)
	needLab(t)
	cases := []struct {
		name  string
		knobs string
		code  int
		path  map[string]string
		wants []string
		check func(t *testing.T, r result, notes string)
	}{
		{
			name: "storage-hang", knobs: "lab.storage=hang", code: 1,
			path:  map[string]string{"baseline": "bad", "host-vs-guest": "good", "build-vs-runtime": "good", "network": "good", "storage": "bad", "harness": "good"},
			wants: []string{"storage detection never wrote the status", "waits forever for /run/pre-nixos/storage-status"},
			check: func(t *testing.T, r result, notes string) {
				contains(t, "notes", notes, "pre-nixos --plan-only", "PRE_NIXOS_EXEC=0 pre-nixos", "pre-nixos-detect-storage")
				contains(t, "the journal artifact", artifact(t, r.dir, "subject-journal-pre-nixos.service.txt"), "waiting for /run/pre-nixos/storage-status")
			},
		},
		{
			// What make demo runs: the live ISO (every knob bad) against its
			// known-good twin, each reached by its serial entry.
			name: "live-iso", code: 1,
			path: map[string]string{"baseline": "bad", "host-vs-guest": "good", "build-vs-runtime": "good", "network": "bad", "storage": "bad", "harness": "bad"},
			// Every knob bad, so this case also holds what one bad knob
			// at a time shows (storage-hang keeps the discrimination:
			// storage bad, the rest good): the DHCP server never heard
			// from the guest, and poweroff's prompt is in the teardown diff.
			wants: []string{"storage detection never wrote the status", "no DISCOVER from the guest; `lan` not found, NIC is ens",
				"`poweroff` asks \"Really power off? [y/N]\"", "interactive [y/N] prompt", "the teardown diff shows it"},
			check: func(t *testing.T, r result, notes string) {
				contains(t, "notes", notes, "subject: reached the serial shell via entry", "good: reached the serial shell via entry",
					"iso:/nix-store.squashfs:/etc/systemd/system/pre-nixos.service", "root=live:LABEL=VMSCRIPT_LIVE",
					"nothing was seen", "Interface \"lan\" not found")
				contains(t, "the DHCP events artifact", artifact(t, r.dir, "subject-dhcp-events.txt"), "(none: nothing was seen)")
				d := artifact(t, r.dir, "shutdown-diff-systemctl-poweroff-vs-poweroff.diff")
				contains(t, "the teardown diff", d, "+Really power off? [y/N]", "-reboot: Power down")
				contains(t, "the poweroff timeline", artifact(t, r.dir, "shutdown-poweroff.timeline.txt"),
					"outcome: prompt", "not answered", "shutdown reason: host-qmp-quit")
				contains(t, "the systemctl timeline", artifact(t, r.dir, "shutdown-systemctl-poweroff.timeline.txt"),
					"outcome: exited", "shutdown reason: guest-shutdown")
			},
		},
		{
			name: "all-clean", knobs: "lab.storage=ok lab.lan=match lab.shutdown=clean", code: 0,
			path:  map[string]string{"baseline": "good", "host-vs-guest": "good", "build-vs-runtime": "good", "network": "good", "storage": "good", "harness": "good"},
			wants: []string{"holds lease 10.0.3.", "every shutdown variant work"},
			check: func(t *testing.T, r result, notes string) {
				contains(t, "stdout", r.stdout, "verdict: good (exit 0)")
				contains(t, "notes", notes, "Overall: good (git bisect exit 0)")
				// Both paths power off by themselves. (Their diff may still show
				// systemd stopping independent units in another order.)
				if d := artifact(t, r.dir, "shutdown-diff-systemctl-poweroff-vs-poweroff.diff"); strings.Contains(d, "[y/N]") {
					t.Errorf("a prompt in the clean teardown diff:\n%s", d)
				}
				for _, v := range []string{"systemctl-poweroff", "poweroff"} {
					contains(t, v+" timeline", artifact(t, r.dir, "shutdown-"+v+".timeline.txt"), "outcome: exited", "shutdown reason: guest-shutdown")
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var args []string
			if c.knobs != "" {
				args = append(args, "knobs="+c.knobs)
			}
			r := vms(t, "investigate.lua", 8*time.Minute, args...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d", r.code, c.code)
			}
			got := pathOf(t, r.stdout)
			for k, v := range c.path {
				if got[k] != v {
					t.Errorf("split %s: %q, want %q (path %v)", k, got[k], v, got)
				}
			}
			if len(got) != len(c.path) {
				t.Errorf("path %v, want the %d splits %v", got, len(c.path), c.path)
			}
			contains(t, "stdout", r.stdout, c.wants...)
			notes, links := checkEvidence(t, r.dir)
			if links < 20 {
				t.Errorf("notes.md links %d evidence files, want the whole bundle", links)
			}
			contains(t, "notes", notes, c.wants...)
			contains(t, "notes", notes, "systemctl status --no-pager --full pre-nixos.service", "journalctl --no-pager -b -u pre-nixos.service",
				"networkctl status --no-pager lan", "ip -o link", "ip -4 addr", "cat /run/pre-nixos/storage-status", "Overall: ")
			if c.check != nil {
				c.check(t, r, notes)
			}
		})
	}
}

// TestHarnessShutdownDiff compares `systemctl poweroff --no-wall` with
// `poweroff` on the lab with the confirmation prompt on: the prompt is named,
// never answered, and the teardown diff shows where the paths part.
func TestHarnessShutdownDiff(t *testing.T) {
	needQEMU(t)
	needLab(t)
	t.Parallel()
	r := vms(t, "06-harness.lua", 6*time.Minute, "knobs=lab.shutdown=confirm")
	if r.code != 1 {
		t.Errorf("exit %d, want 1 (a prompt)", r.code)
	}
	contains(t, "stdout", r.stdout,
		`variant "systemctl poweroff --no-wall": exited, reason guest-shutdown`,
		`variant "poweroff": prompt, reason host-qmp-quit`, `prompt "Really power off? [y/N]"`,
		`diff "systemctl poweroff --no-wall" vs "poweroff": non-empty`)
	d := artifact(t, r.dir, "shutdown-diff-systemctl-poweroff-vs-poweroff.diff")
	contains(t, "diff", d, "--- systemctl poweroff --no-wall", "+++ poweroff", "+Really power off? [y/N]", "-reboot: Power down")
	// Normalised: no kernel timestamps, no PIDs.
	if regexp.MustCompile(`\[\s*\d+\.\d{6}\]|systemd-shutdown\[\d+\]`).MatchString(d) {
		t.Errorf("the diff is not normalised:\n%s", d)
	}
	checkEvidence(t, r.dir)
}

// TestStorageWarm runs split 5 twice on the storage regression: the first
// run boots, logs in and saves the warm state, the second restores it and
// reaches the same verdict with the same evidence; the notes say where each
// guest came from; `vmscript warm ls` lists the state.
func TestStorageWarm(t *testing.T) {
	needQEMU(t)
	needLab(t)
	t.Parallel()
	knobs := "knobs=lab.storage=hang"
	first := vms(t, "05-storage.lua", 8*time.Minute, knobs)
	second := vms(t, "05-storage.lua", 8*time.Minute, knobs)
	for i, r := range []result{first, second} {
		if r.code != 1 {
			t.Errorf("run %d: exit %d, want 1 (the status was not written)", i+1, r.code)
		}
		contains(t, "stdout", r.stdout, "storage: bad")
		notes, _ := checkEvidence(t, r.dir)
		contains(t, "notes", notes, "pre-nixos-detect-storage")
	}
	n1, _ := checkEvidence(t, first.dir)
	n2, _ := checkEvidence(t, second.dir)
	contains(t, "the first run's notes", n1, "subject: booted cold and saved as warm state")
	contains(t, "the second run's notes", n2, "subject: restored from warm state", "its console starts at the restore")
	t.Logf("first run %.1fs, second %.1fs", first.took.Seconds(), second.took.Seconds())
	out, err := exec.Command(binary, "warm", "ls").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "subject") {
		t.Errorf("vmscript warm ls: %v\n%s", err, out)
	}
}

// buildTestISO makes an ISO with three squashfs images (gzip, xz, zstd) and
// a grub.cfg, holding some of the assets 03-inspect-iso looks for.
func buildTestISO(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"xorriso", "mksquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
				t.Fatalf("%s is missing and VMSCRIPT_REQUIRE_QEMU is set", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	dir := t.TempDir()
	write := func(p, s string) {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("gz/etc/systemd/system/pre-nixos.service", "[Service]\nExecStart=/bin/pre-nixos\n")
	write("gz/etc/hostname", "test\n")
	write("xz/etc/systemd/network/20-lan.network", "[Match]\nName=lan\n[Network]\nDHCP=ipv4\n")
	write("zst/nix/store/abc-pre-nixos/bin/pre-nixos", "#!/bin/sh\n")
	write("iso/boot/grub/grub.cfg", "menuentry test {\n\tlinux /boot/bzImage init=/init lab.storage=hang\n}\n")
	write("iso/README", "test image\n")
	for _, s := range []struct{ src, comp string }{{"gz", "gzip"}, {"xz", "xz"}, {"zst", "zstd"}} {
		out := filepath.Join(dir, "iso", s.comp+".squashfs")
		cmd := exec.Command("mksquashfs", filepath.Join(dir, s.src), out, "-comp", s.comp, "-noappend", "-quiet", "-all-root")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("mksquashfs -comp %s: %v\n%s", s.comp, err, b)
		}
	}
	img := filepath.Join(dir, "test.iso")
	cmd := exec.Command("xorriso", "-as", "mkisofs", "-R", "-J", "-V", "VMSCRIPT_TEST", "-o", img, filepath.Join(dir, "iso"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xorriso: %v\n%s", err, b)
	}
	return img
}

// Test03InspectISO inspects ISOs without booting them: the lab's, one
// built here, and two upstream images from Debian's packages.
func Test03InspectISO(t *testing.T) {
	t.Parallel()
	t.Run("test-iso", func(t *testing.T) {
		t.Parallel()
		img := buildTestISO(t)
		r := vms(t, "03-inspect-iso.lua", 2*time.Minute, "iso="+img,
			"assets=pre_nixos/root_key.pub;pre-nixos.service;systemd/network;bin/pre-nixos")
		if r.code != 1 {
			t.Errorf("exit %d, want 1 (root_key.pub is missing)", r.code)
		}
		contains(t, "stdout", r.stdout,
			`label "VMSCRIPT_TEST"`,
			"squashfs: /gzip.squashfs (gzip,", "squashfs: /xz.squashfs (xz,", "squashfs: /zstd.squashfs (zstd,",
			`entry: grub "test" [default] (/boot/grub/grub.cfg:1): init=/init lab.storage=hang`,
			"found pre-nixos.service: iso:/gzip.squashfs:/etc/systemd/system/pre-nixos.service",
			"found systemd/network: iso:/xz.squashfs:/etc/systemd/network",
			"found bin/pre-nixos: iso:/zstd.squashfs:/nix/store/abc-pre-nixos/bin/pre-nixos",
			"missing pre_nixos/root_key.pub")
		notes, _ := checkEvidence(t, r.dir)
		contains(t, "notes", notes, "The ISO lacks: pre_nixos/root_key.pub")
		contains(t, "listing", artifact(t, r.dir, "iso-listing.txt"), "# squashfs /xz.squashfs (xz)", "20-lan.network")
		// Every asset present: exit 0.
		r = vms(t, "03-inspect-iso.lua", 2*time.Minute, "iso="+img, "assets=pre-nixos.service;README")
		if r.code != 0 {
			t.Errorf("exit %d with every asset present, want 0", r.code)
		}
		contains(t, "stdout", r.stdout, "found README: iso:/README")
	})
	t.Run("lab-iso", func(t *testing.T) {
		t.Parallel()
		img := labFile(t, "iso")
		r := vms(t, "03-inspect-iso.lua", 2*time.Minute, "iso="+img)
		if r.code != 0 {
			t.Errorf("exit %d, want 0 (the unit is in the initramfs, opened in place)", r.code)
		}
		contains(t, "stdout", r.stdout, `label "VMSCRIPT_LAB"`,
			"boot: BIOS /boot/grub/i386-pc/eltorito.img", "boot: UEFI /efi.img",
			"initramfs: /boot/initramfs (gzip, ",
			`entry: grub "vmscript lab`, "lab.storage=hang lab.lan=mismatch lab.shutdown=confirm",
			"found pre_nixos/root_key.pub: iso:/pre_nixos/root_key.pub",
			"found pre-nixos.service: iso:/boot/initramfs:/")
		checkEvidence(t, r.dir)
	})
	t.Run("live-iso", func(t *testing.T) {
		t.Parallel()
		needLab(t)
		r := vms(t, "03-inspect-iso.lua", 2*time.Minute)
		if r.code != 0 {
			t.Errorf("exit %d, want 0 (every asset is in the ISO or its squashfs)", r.code)
		}
		contains(t, "stdout", r.stdout, `label "VMSCRIPT_LIVE"`,
			"boot: BIOS /isolinux/isolinux.bin", "boot: UEFI /boot/efi.img",
			"squashfs: /nix-store.squashfs (zstd, ", "initramfs: /boot/initrd (gzip, ",
			`entry: isolinux "vmscript lab live installer" [default] (/isolinux/isolinux.cfg:`,
			`entry: isolinux "vmscript lab live installer (serial console=ttyS0,115200n8)" (/isolinux/isolinux.cfg:`,
			`entry: grub "vmscript lab live installer" [default] (/EFI/boot/grub.cfg:`,
			"found pre_nixos/root_key.pub: iso:/pre_nixos/root_key.pub",
			"found pre-nixos.service: ", "iso:/nix-store.squashfs:/etc/systemd/system/pre-nixos.service",
			"found systemd/network: iso:/nix-store.squashfs:/etc/systemd/network")
		checkEvidence(t, r.dir)
	})
	for _, up := range []struct{ name, path, boot string }{
		{"ipxe", "/usr/lib/ipxe/ipxe.iso", "boot: BIOS /isolinux.bin"},
		{"grub-rescue", "/usr/lib/grub-rescue/grub-rescue-cdrom.iso", "boot: BIOS /boot/grub/i386-pc/eltorito.img"},
	} {
		t.Run(up.name, func(t *testing.T) {
			t.Parallel()
			if _, err := os.Stat(up.path); err != nil {
				if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
					t.Fatalf("%s is missing and VMSCRIPT_REQUIRE_QEMU is set", up.path)
				}
				t.Skip(err)
			}
			r := vms(t, "03-inspect-iso.lua", 2*time.Minute, "iso="+up.path)
			if r.code != 1 {
				t.Errorf("exit %d, want 1 (an upstream image has none of the installer's assets)", r.code)
			}
			contains(t, "stdout", r.stdout, "iso "+up.path, up.boot, "missing pre_nixos/root_key.pub", "missing pre-nixos.service")
			checkEvidence(t, r.dir)
		})
	}
}

// TestLiveISOShell reaches a root shell on the NixOS-shaped live ISO by the
// menu (BIOS and GRUB's under UEFI) and by the screen, booting cold. The
// third way, the ISO's entry, is TestInvestigate's live-iso case (its notes
// say "reached the serial shell via entry").
func TestLiveISOShell(t *testing.T) {
	needQEMU(t)
	needLab(t)
	t.Parallel()
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"menu-bios", []string{"via=menu"}, []string{"shell via menu", "console=ttyS0,115200n8"}},
		{"screen", []string{"via=screen"}, []string{"shell via screen"}},
		{"menu-uefi", []string{"via=menu", "firmware=uefi"}, []string{"shell via menu", "console=ttyS0,115200n8"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := vms(t, "00-shell.lua", 8*time.Minute, append([]string{"cold=1"}, c.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d", r.code)
			}
			contains(t, "stdout", r.stdout, append(c.want, "root=live:LABEL=VMSCRIPT_LIVE", "overlay", "/dev/sr0")...)
			notes, _ := checkEvidence(t, r.dir)
			contains(t, "notes", notes, "reached the serial shell via "+strings.SplitN(c.name, "-", 2)[0])
		})
	}
}
