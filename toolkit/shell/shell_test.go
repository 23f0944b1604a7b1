package shell

import (
	"bytes"
	"context"
	"fmt"
	"github.com/vmscript/vmscript/internal/testenv"
	"log"
	"math/rand"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

const printk = "[   12.345678] random printk\r\n"

// printkRE removes injected kernel lines (for comparing outputs).
func dropPrintk(s string) string { return strings.ReplaceAll(s, "[   12.345678] random printk\n", "") }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func attachFake(t *testing.T, g *fakeGuest) *Shell {
	t.Helper()
	s, err := Attach(testCtx(t), g.con, Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var quietCases = []struct {
	cmd  string
	out  string
	code int
}{
	{"true", "", 0},
	{"false", "", 1},
	{"(exit 42)", "", 42},
	{"(exit 255)", "", 255},
	{"nosuchcmd", "sh: nosuchcmd: not found\n", 127},
	{"echo hello", "hello\n", 0},
	{"printf no-newline", "no-newline", 0},
	{"echo it's {VS fake:E000} $PS1", "it's {VS fake:E000} $PS1\n", 0},
	{"echo [   1.000000] looks like printk", "[   1.000000] looks like printk\n", 0},
}

func TestRunQuietExact(t *testing.T) {
	for _, echo := range []bool{true, false} {
		t.Run(fmt.Sprintf("echo=%v", echo), func(t *testing.T) {
			g := newFakeGuest(t, nil)
			s := attachFake(t, g)
			if !echo {
				// The fake turns echo off on setup; turn it back on to
				// check the echo never reaches the output.
				g.mu.Lock()
				g.echo = true
				g.mu.Unlock()
			}
			for _, c := range quietCases {
				r, err := s.Run(testCtx(t), c.cmd, RunOptions{Timeout: 10 * time.Second})
				if err != nil {
					t.Fatalf("%s: %v", c.cmd, err)
				}
				if r.Output != c.out || r.Code != c.code {
					t.Errorf("%s: got (%q, %d), want (%q, %d)", c.cmd, r.Output, r.Code, c.out, c.code)
				}
			}
		})
	}
}

// TestRunPrintkEverywhere injects a kernel message at every byte position
// of what the guest prints for a command (markers included), in chunks of
// several sizes: the exit code must always be right and the output, less
// the kernel line, exact.
func TestRunPrintkEverywhere(t *testing.T) {
	g := newFakeGuest(t, nil)
	s := attachFake(t, g)
	for _, c := range []struct {
		cmd  string
		out  string
		code int
	}{{"echo hello world", "hello world\n", 0}, {"(exit 42)", "", 42}, {"nosuchcmd", "sh: nosuchcmd: not found\n", 127}, {"printf x", "x", 0}} {
		for pos := 0; pos < 80; pos++ {
			for _, chunk := range []int{1, 5, 64} {
				done := false
				g.mu.Lock()
				g.chunk = chunk
				g.inject = func(out string) string {
					if done || pos > len(out) {
						return out
					}
					done = true
					return out[:pos] + printk + out[pos:]
				}
				g.mu.Unlock()
				r, err := s.Run(testCtx(t), c.cmd, RunOptions{Timeout: 10 * time.Second})
				if err != nil {
					t.Fatalf("%s pos %d: %v", c.cmd, pos, err)
				}
				if r.Code != c.code {
					t.Errorf("%s pos %d chunk %d: code %d, want %d", c.cmd, pos, chunk, r.Code, c.code)
				}
				// A printk between the start marker and its newline
				// leaves that newline in the output: allowed, documented.
				// So does one between a line's "\r" and "\n".
				got := strings.ReplaceAll(strings.TrimPrefix(dropPrintk(r.Output), "\n"), "\n\n", "\n")
				if got != c.out {
					t.Errorf("%s pos %d chunk %d: output %q, want %q", c.cmd, pos, chunk, r.Output, c.out)
				}
			}
		}
	}
}

// TestRunPrintkFlood injects several kernel lines at random places.
func TestRunPrintkFlood(t *testing.T) {
	g := newFakeGuest(t, nil)
	s := attachFake(t, g)
	rng := rand.New(rand.NewSource(1))
	g.mu.Lock()
	g.inject = func(out string) string {
		// Four kernel lines at random places of the shell's output, never
		// inside one another (the kernel writes a line whole).
		cuts := make([]int, 4)
		for i := range cuts {
			cuts[i] = rng.Intn(len(out) + 1)
		}
		sort.Ints(cuts)
		var b strings.Builder
		prev := 0
		for _, c := range cuts {
			b.WriteString(out[prev:c])
			b.WriteString(printk)
			prev = c
		}
		b.WriteString(out[prev:])
		return b.String()
	}
	g.mu.Unlock()
	codes := []int{0, 1, 42, 127}
	cmds := []string{"true", "false", "(exit 42)", "nosuchcmd"}
	for i := range 200 {
		r, err := s.Run(testCtx(t), cmds[i%4], RunOptions{Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if r.Code != codes[i%4] {
			t.Fatalf("run %d %s: code %d", i, cmds[i%4], r.Code)
		}
	}
}

func TestParseRunTightest(t *testing.T) {
	cm := newCmdMarkers()
	n := cm.nonce
	// Marker characters in the output before the real marker must not
	// stretch the match backwards.
	text := "echo\n{VS" + n + ":B}\nx{\n{V\n{VS" + n[:3] + printk[:len(printk)-2] + "\n" + n[3:] + ":E0" + printk[:len(printk)-2] + "\n42}\n"
	p := cm.parseRun(text)
	if !p.endFound || p.code != 42 {
		t.Fatalf("parse: %+v", p)
	}
	if out := text[p.outStart:p.outEnd]; out != "x{\n{V\n" {
		t.Fatalf("output %q", out)
	}
}

func TestTimeoutRecovers(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("late-marker=%v", late), func(t *testing.T) {
			g := newFakeGuest(t, nil)
			g.lateMarker = late
			s := attachFake(t, g)
			start := time.Now()
			_, err := s.Run(testCtx(t), "partial some output", RunOptions{Timeout: 300 * time.Millisecond})
			var ve *vmerr.Error
			if !vmerr.Is(err, vmerr.Timeout) || !errorsAs(err, &ve) {
				t.Fatalf("got %v", err)
			}
			if ve.Context["output"] != "some output\n" || ve.Context["recovered"] != true {
				t.Fatalf("context %v", ve.Context)
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("took %v", time.Since(start))
			}
			r, err := s.Run(testCtx(t), "echo next", RunOptions{Timeout: 10 * time.Second})
			if err != nil || r.Output != "next\n" || r.Code != 0 {
				t.Fatalf("after timeout: %+v %v", r, err)
			}
		})
	}
}

func errorsAs(err error, ve **vmerr.Error) bool {
	e, ok := err.(*vmerr.Error)
	if ok {
		*ve = e
	}
	return ok
}

func TestLoginFake(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		g := newFakeGuest(t, nil)
		g.state, g.pw = "getty", "secret"
		// Boot messages with a kernel line landing on the prompt's line.
		g.out("[    1.0] booting\nDebian GNU/Linux 12 lab ttyS0\n\nlab login: ")
		s, err := Login(testCtx(t), g.con, LoginOptions{User: "nixos", Password: "secret", Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Run(testCtx(t), "echo hi", RunOptions{})
		if err != nil || r.Output != "hi\n" {
			t.Fatalf("%+v %v", r, err)
		}
	})
	t.Run("incorrect", func(t *testing.T) {
		g := newFakeGuest(t, nil)
		g.state, g.pw = "getty", "secret"
		g.out("lab login: ")
		_, err := Login(testCtx(t), g.con, LoginOptions{User: "nixos", Password: "wrong", Timeout: 10 * time.Second})
		if !vmerr.Is(err, vmerr.Auth) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("prompt-cut-after-hash", func(t *testing.T) {
		// "root@lab:~#" then " " 100 ms later (CI, 2026-11-26: the match
		// ended at '#', the space made it "not quiet", and the next wait
		// started after the '#' and never saw a prompt again).
		g := newFakeGuest(t, nil)
		g.state, g.loginSplit = "getty", 100*time.Millisecond
		g.out("lab login: ")
		start := time.Now()
		s, err := Login(testCtx(t), g.con, LoginOptions{User: "root", Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("login took %s", d)
		}
		if !s.Test(testCtx(t), "true") {
			t.Fatal("test true")
		}
	})
	t.Run("prompt-already-consumed", func(t *testing.T) {
		// The prompt was matched before (console cursor past it) and a
		// kernel line landed on it: Login still answers it.
		g := newFakeGuest(t, nil)
		g.state = "getty"
		g.out("lab login: [  2.0] late kernel line\n")
		if _, err := g.con.ExpectText(testCtx(t), "late kernel line", consoleOpts()); err != nil {
			t.Fatal(err)
		}
		s, err := Login(testCtx(t), g.con, LoginOptions{User: "root", Timeout: 40 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if !s.Test(testCtx(t), "true") {
			t.Fatal("test true")
		}
	})
}

// TestRunWaitsForPrompt: Run returns after the shell's "$ " has arrived,
// so nothing of the channel's own is still on its way (a checkpoint taken
// next would carry it into every fork); a prompt that never comes costs
// promptSettle once, not per command.
func TestRunWaitsForPrompt(t *testing.T) {
	g := newFakeGuest(t, nil)
	s, err := Attach(testCtx(t), g.con, Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	g.promptLag = 200 * time.Millisecond
	if _, err := s.Run(testCtx(t), "echo hi", RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if tail := g.con.Tail(1); len(tail) != 1 || tail[0] != "$ " {
		t.Fatalf("after Run the console ends with %q, want the prompt", tail)
	}
	g.promptLag = time.Hour // the prompt never comes
	start := time.Now()
	for range 3 {
		if r, err := s.Run(testCtx(t), "true", RunOptions{}); err != nil || r.Code != 0 {
			t.Fatalf("%+v %v", r, err)
		}
	}
	if d := time.Since(start); d < promptSettle || d > 2*promptSettle+time.Second {
		t.Fatalf("three commands without a prompt took %s, want about one promptSettle (%s)", d, promptSettle)
	}
}

// TestLoginLostName: a getty that flushes the typed name (silently, or
// while redrawing its prompt) gets it typed again; the retries are bounded.
func TestLoginLostName(t *testing.T) {
	defer func(d time.Duration) { loginNudge = d }(loginNudge)
	loginNudge = 300 * time.Millisecond
	for _, redraw := range []bool{false, true} {
		t.Run(fmt.Sprintf("redraw=%v", redraw), func(t *testing.T) {
			run := testenv.Run(t)
			g := newFakeGuest(t, run)
			g.state, g.loseNames, g.redraw = "getty", 2, redraw
			g.out("lab login: ")
			s, err := Login(testCtx(t), g.con, LoginOptions{User: "root", Timeout: 10 * time.Second, Run: run})
			if err != nil {
				t.Fatal(err)
			}
			if !s.Test(testCtx(t), "true") {
				t.Fatal("test true")
			}
			if n := countEvents(t, run, "login-retype"); n != 2 {
				t.Fatalf("%d login-retype events, want 2", n)
			}
		})
	}
	t.Run("gives-up", func(t *testing.T) {
		g := newFakeGuest(t, nil)
		g.state, g.loseNames = "getty", maxRetype+1
		g.out("lab login: ")
		start := time.Now()
		_, err := Login(testCtx(t), g.con, LoginOptions{User: "root", Timeout: 3 * time.Second})
		if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "a shell prompt after the user name") || !strings.Contains(err.Error(), "lab login:") {
			t.Fatalf("got %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %s with a 3s timeout", d)
		}
		g.mu.Lock()
		left := g.loseNames
		g.mu.Unlock()
		if left != 0 {
			t.Fatalf("typed the name %d times, want %d", maxRetype+1-left, maxRetype+1)
		}
	})
}

// countEvents counts the run's timeline events of a kind.
func countEvents(t *testing.T, run *journal.Run, kind string) int {
	t.Helper()
	f, err := os.Open(run.Path(journal.TimelineFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	events, _, err := journal.ReadTimeline(f)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func TestSudoFake(t *testing.T) {
	run := testenv.Run(t)
	g := newFakeGuest(t, run)
	g.user, g.sudoPW = "nixos", "hunter2"
	s, err := Attach(testCtx(t), g.con, Options{Run: run, User: "nixos"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Sudo(testCtx(t), "echo as root", SudoOptions{Password: "hunter2"})
	if err != nil || r.Output != "as root\n" || r.Code != 0 {
		t.Fatalf("sudo: %+v %v", r, err)
	}
	data, err := os.ReadFile(r.Transcript)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("hunter2")) || !bytes.Contains(data, []byte("password for nixos")) || !bytes.Contains(data, []byte(Mask)) {
		t.Fatalf("transcript:\n%s", data)
	}
	_, err = s.Sudo(testCtx(t), "echo no", SudoOptions{Password: "wrong"})
	var ve *vmerr.Error
	if !vmerr.Is(err, vmerr.Refused) || !errorsAs(err, &ve) || ve.Context["transcript"] == "" {
		t.Fatalf("wrong password: %v", err)
	}
	if r, err := s.Run(testCtx(t), "echo after", RunOptions{}); err != nil || r.Output != "after\n" {
		t.Fatalf("after refusal: %+v %v", r, err)
	}
	g.sudoers = false
	if _, err := s.Sudo(testCtx(t), "id", SudoOptions{Password: "hunter2"}); !vmerr.Is(err, vmerr.Refused) {
		t.Fatalf("not in sudoers: %v", err)
	}
}

func TestDialogFake(t *testing.T) {
	var logBuf bytes.Buffer
	log.SetOutput(&logBuf)
	defer log.SetOutput(os.Stderr)

	t.Run("poweroff", func(t *testing.T) {
		g := newFakeGuest(t, nil)
		s := attachFake(t, g)
		_ = s
		if err := g.con.SendLine(testCtx(t), "poweroff"); err != nil {
			t.Fatal(err)
		}
		// The prompt may already be showing: Dialog starts at the start
		// of the console's last line.
		time.Sleep(50 * time.Millisecond)
		res, err := Dialog(testCtx(t), g.con, []Case{
			{Pattern: `Really power off\? \[y/N\]`, Send: "y", Line: true, Retries: -1},
			{Pattern: `aborted`, Fail: "poweroff aborted", Retries: -1},
			{Pattern: `reboot: Power down`, OK: true, Retries: -1},
		}, DialogOptions{Timeout: 10 * time.Second, Retries: -1})
		if err != nil || res.Index != 2 || res.Text != "reboot: Power down" {
			t.Fatalf("%+v %v", res, err)
		}
	})
	t.Run("fail", func(t *testing.T) {
		g := newFakeGuest(t, nil)
		attachFake(t, g)
		g.con.SendLine(testCtx(t), "poweroff")
		_, err := Dialog(testCtx(t), g.con, []Case{
			{Pattern: `\[y/N\]`, Send: "n", Line: true, Retries: -1},
			{Pattern: `aborted`, Fail: "poweroff aborted", Retries: -1},
		}, DialogOptions{Timeout: 10 * time.Second, Retries: -1})
		if !vmerr.Is(err, vmerr.Refused) || !strings.Contains(err.Error(), "poweroff aborted") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("retries", func(t *testing.T) {
		g := newFakeGuest(t, nil)
		g.state, g.pw = "getty", "secret"
		g.out("lab login: ")
		_, err := Dialog(testCtx(t), g.con, []Case{
			{Pattern: `login: $`, Send: "root", Line: true, Retries: 1},
			{Pattern: `Password: $`, Send: "bad", Line: true, Secret: true, Retries: 5},
			{Pattern: `\$ $`, OK: true},
		}, DialogOptions{Timeout: 10 * time.Second})
		if !vmerr.Is(err, vmerr.Refused) || !strings.Contains(err.Error(), "going in circles") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("chatty-console-deadline", func(t *testing.T) {
		// goexpect's timeout restarts on output; ours must not.
		g := newFakeGuest(t, nil)
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
					g.out("[   1.0] chatter\n")
				}
			}
		}()
		defer close(stop)
		start := time.Now()
		_, err := Dialog(testCtx(t), g.con, []Case{{Pattern: `never`, OK: true}}, DialogOptions{Timeout: 500 * time.Millisecond})
		if !vmerr.Is(err, vmerr.Timeout) {
			t.Fatalf("got %v", err)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Fatalf("deadline overrun: %v", el)
		}
	})
	t.Run("closed", func(t *testing.T) {
		g := newFakeGuest(t, nil)
		go func() { time.Sleep(100 * time.Millisecond); g.con.Close(vmerr.New(vmerr.Exited, "VM fake exited")) }()
		_, err := Dialog(testCtx(t), g.con, []Case{{Pattern: `never`, OK: true}}, DialogOptions{Timeout: 20 * time.Second})
		if !vmerr.Is(err, vmerr.Exited) {
			t.Fatalf("got %v", err)
		}
	})
	if logBuf.Len() > 0 {
		t.Errorf("goexpect logged to the standard logger: %q", logBuf.String())
	}
}

func consoleOpts() console.ExpectOptions { return console.ExpectOptions{Timeout: 5 * time.Second} }
