package shell

import (
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
)

// fakeGuest is a scripted guest behind a console: a getty, a shell that
// runs the marker protocol for a few fake commands, sudo, and a poweroff
// that asks. What it prints goes through console.Feed (in small chunks,
// with "\n" turned into "\r\n" as a tty does), optionally with kernel
// messages injected anywhere by inject.
type fakeGuest struct {
	t   *testing.T
	con *console.Console

	mu     sync.Mutex
	echo   bool
	state  string // "getty", "password", "shell", "sudo", "confirm", "busy"
	user   string
	pw     string // login password ("" = no prompt)
	sudoPW string
	// sudoers says whether the user may sudo.
	sudoers bool
	// inject transforms each printed string (kernel messages).
	inject func(string) string
	// chunk is the size of the Feed chunks.
	chunk int
	// lateMarker, when set, makes an interrupted command print its end
	// marker (code 130) after the interrupt, as some shells do.
	lateMarker bool
	// loseNames makes the getty lose that many user names: typed input is
	// flushed without an echo, as agetty does when it redraws its prompt.
	// With redraw, the getty prints a fresh prompt after losing a name;
	// without, the name vanishes and the old prompt stays.
	loseNames int
	redraw    bool
	// promptLag delays the "$ " after a command's end marker.
	promptLag time.Duration
	// loginSplit, when set, prints the login shell's prompt in two parts,
	// "root@lab:~#" and then, that much later, " " (a serial read cut).
	loginSplit time.Duration

	line      []byte
	busyNonce string
	sudo      struct {
		nonce, prompt, cmd string
		tries              int
	}
	closed chan struct{}
	inbuf  chan []byte
	stats  struct{ interrupts int }
}

type fakeRW struct{ g *fakeGuest }

func (f fakeRW) Read(p []byte) (int, error) {
	<-f.g.closed
	return 0, io.EOF
}

func (f fakeRW) Write(p []byte) (int, error) {
	f.g.inbuf <- append([]byte(nil), p...)
	return len(p), nil
}

func newFakeGuest(t *testing.T, run *journal.Run) *fakeGuest {
	t.Helper()
	con, err := console.New(console.Options{Name: "fake", Run: run, EOFGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGuest{t: t, con: con, echo: true, state: "shell", chunk: 7, sudoers: true,
		closed: make(chan struct{}), inbuf: make(chan []byte, 64)}
	if err := con.Attach(fakeRW{g}); err != nil {
		t.Fatal(err)
	}
	go g.loop()
	t.Cleanup(func() {
		con.Close(nil)
		select {
		case <-g.closed:
		default:
			close(g.closed)
		}
	})
	return g
}

func (g *fakeGuest) loop() {
	for {
		select {
		case <-g.closed:
			return
		case p := <-g.inbuf:
			for _, b := range p {
				g.input(b)
			}
		}
	}
}

// out prints s as the guest's tty would.
func (g *fakeGuest) out(s string) {
	g.mu.Lock()
	inject, chunk := g.inject, g.chunk
	g.mu.Unlock()
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if inject != nil {
		s = inject(s)
	}
	for len(s) > 0 {
		n := min(chunk, len(s))
		g.con.Feed([]byte(s[:n]))
		s = s[n:]
	}
}

func (g *fakeGuest) input(b byte) {
	g.mu.Lock()
	echo := g.echo
	g.mu.Unlock()
	if b == 3 { // Ctrl-C
		g.stats.interrupts++
		g.line = g.line[:0]
		switch g.state {
		case "busy":
			g.state = "shell"
			if g.lateMarker {
				g.out("^C\n" + endMarker(g.busyNonce, 130))
			} else {
				g.out("^C\n")
			}
		case "sudo":
			g.state = "shell"
			g.out("\n" + endMarker(g.sudo.nonce, 1))
		}
		return
	}
	if b != '\r' {
		g.line = append(g.line, b)
		return
	}
	line := string(g.line)
	g.line = g.line[:0]
	g.mu.Lock()
	lose := g.state == "getty" && line != "" && g.loseNames > 0
	if lose {
		g.loseNames--
	}
	g.mu.Unlock()
	if lose {
		if g.redraw {
			g.out("\nDebian GNU/Linux 12 lab ttyS0\n\nlab login: ")
		}
		return
	}
	if echo && g.state != "password" && g.state != "sudo" {
		g.out(line + "\n")
	}
	g.handle(line)
}

var (
	readyRE = regexp.MustCompile(`printf '\\173VS%s:R\\175\\n' ([a-z0-9]+)$`)
	runRE   = regexp.MustCompile(`^printf '\\173VS%s:B\\175\\n' ([a-z0-9]+); \(?eval ('(?:[^']|'\\'')*')\)?; printf '\\173VS%s:E%03d\\175\\n' ([a-z0-9]+) "\$\?"$`)
	sudoRE  = regexp.MustCompile(`^printf '\\173VS%s:B\\175\\n' ([a-z0-9]+); sudo -k -p '([^']*)' -- sh -c (.*); printf '\\173VS%s:E%03d\\175\\n' ([a-z0-9]+) "\$\?"$`)
)

func unquote(w string) string {
	w = strings.TrimPrefix(strings.TrimSuffix(w, "'"), "'")
	return strings.ReplaceAll(w, `'\''`, `'`)
}

func beginMarker(n string) string         { return "{VS" + n + ":B}\n" }
func endMarker(n string, code int) string { return "{VS" + n + ":E" + pad3(code) + "}\n" }
func pad3(c int) string {
	s := "00" + itoa(c)
	return s[len(s)-3:]
}
func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// fakeCommand returns a fake command's output and exit code; busy means it
// runs until interrupted, after printing out.
func fakeCommand(cmd string) (out string, code int, busy bool) {
	switch {
	case cmd == "true":
		return "", 0, false
	case cmd == "false":
		return "", 1, false
	case strings.HasPrefix(cmd, "(exit ") && strings.HasSuffix(cmd, ")"):
		n := 0
		for _, c := range cmd[6 : len(cmd)-1] {
			n = n*10 + int(c-'0')
		}
		return "", n, false
	case strings.HasPrefix(cmd, "echo "):
		return cmd[5:] + "\n", 0, false
	case strings.HasPrefix(cmd, "printf "):
		return cmd[7:], 0, false
	case strings.HasPrefix(cmd, "sleep "):
		return "", 0, true
	case strings.HasPrefix(cmd, "partial "):
		return cmd[8:] + "\n", 0, true
	case cmd == "poweroff":
		return "", 0, false
	}
	return "sh: " + cmd + ": not found\n", 127, false
}

// prompt prints the shell's "$ ", promptLag late.
func (g *fakeGuest) prompt() {
	if g.promptLag > 0 {
		time.AfterFunc(g.promptLag, func() { g.out("$ ") })
		return
	}
	g.out("$ ")
}

func (g *fakeGuest) handle(line string) {
	switch g.state {
	case "getty":
		if line == "" {
			g.out("\nlab login: ")
			return
		}
		g.user = line
		if g.pw != "" {
			g.state = "password"
			g.out("Password: ")
			return
		}
		g.state = "shell"
		if g.loginSplit > 0 {
			g.out("Linux lab 6.1.0 #1 SMP\n" + "root@lab:~#")
			time.AfterFunc(g.loginSplit, func() { g.out(" ") })
			return
		}
		g.out("Linux lab 6.1.0\n" + "root@lab:~# ")
		return
	case "password":
		if line == g.pw {
			g.state = "shell"
			g.out("\n" + g.user + "@lab:~$ ")
			return
		}
		g.state = "getty"
		g.out("\n\nLogin incorrect\nlab login: ")
		return
	case "sudo":
		if !g.sudoers {
			g.state = "shell"
			g.out("\n" + g.user + " is not in the sudoers file.\n" + endMarker(g.sudo.nonce, 1))
			return
		}
		if line == g.sudoPW {
			g.state = "shell"
			out, code, _ := fakeCommand(g.sudo.cmd)
			g.out(out + endMarker(g.sudo.nonce, code))
			g.prompt()
			return
		}
		g.sudo.tries++
		if g.sudo.tries >= 3 {
			g.state = "shell"
			g.out("\nsudo: 3 incorrect password attempts\n" + endMarker(g.sudo.nonce, 1))
			return
		}
		g.out("\nSorry, try again.\n" + g.sudo.prompt)
		return
	case "confirm":
		g.state = "shell"
		if line == "y" {
			g.out("\nreboot: Power down\n")
			g.con.Close(nil)
			return
		}
		g.out("\npoweroff: aborted\n")
		return
	case "busy":
		return // typeahead: ignored by the fake
	}
	// The shell.
	if strings.Contains(line, "stty -echo") {
		g.mu.Lock()
		g.echo = false
		g.mu.Unlock()
	}
	if m := readyRE.FindStringSubmatch(line); m != nil {
		g.out("{VS" + m[1] + ":R}\n$ ")
		return
	}
	if m := sudoRE.FindStringSubmatch(line); m != nil {
		g.state = "sudo"
		g.sudo.nonce, g.sudo.cmd, g.sudo.tries = m[1], unquote(m[3]), 0
		g.sudo.prompt = strings.NewReplacer("%%", "%", "%u", g.user).Replace(m[2])
		g.out(beginMarker(m[1]) + g.sudo.prompt)
		return
	}
	if m := runRE.FindStringSubmatch(line); m != nil {
		cmd := unquote(m[2])
		out, code, busy := fakeCommand(cmd)
		if busy {
			g.state, g.busyNonce = "busy", m[1]
			g.out(beginMarker(m[1]) + out)
			return
		}
		g.out(beginMarker(m[1]) + out + endMarker(m[1], code))
		g.prompt()
		return
	}
	if line == "poweroff" {
		g.state = "confirm"
		g.out("Really power off? [y/N] ")
		return
	}
	if line != "" {
		g.out("sh: " + line + ": not found\n$ ")
	}
}
