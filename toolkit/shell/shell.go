// Package shell is a command channel over a serial console: it logs in
// through a getty (Login) or takes over a shell already at its prompt
// (Attach), runs commands and returns their output and exit code (Run,
// Test), runs commands through sudo answering the password prompt (Sudo),
// and holds short scripted exchanges with prompts nobody predicted (Dialog).
//
// Commands are framed by markers carrying a fresh nonce (see marker.go for
// the protocol and the bugs of other tools it avoids), so the start, the end
// and the exit code are found even when kernel messages land in the middle
// of the output or of a marker. On setup the channel turns the terminal's
// echo off (stty -echo; busybox ash then reads plain lines and bash's
// readline stops echoing), turns off bash's line editing and history, and
// neutralises PS1, PS2 and PROMPT_COMMAND, so that on a quiet console the
// output of a command is exactly what it printed. A command that overruns
// its timeout is interrupted (Ctrl-C) and the channel resynchronises with a
// fresh nonce before the next command.
//
// Every wait has a wall-clock deadline; every command is an event in the
// run's timeline (source "shell:<vm>").
package shell

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Default bounds.
const (
	// DefaultRunTimeout bounds a command whose RunOptions.Timeout is 0.
	DefaultRunTimeout = 2 * time.Minute
	// DefaultLoginTimeout bounds Login when LoginOptions.Timeout is 0. It
	// covers the boot up to the getty: ~30 s for the systemd lab under TCG.
	DefaultLoginTimeout = 3 * time.Minute
	// DefaultAttachTimeout bounds Attach when Options.Timeout is 0.
	DefaultAttachTimeout = time.Minute
	// RecoverTimeout bounds the resynchronisation after an interrupted
	// command; it is not part of the command's own timeout.
	RecoverTimeout = 30 * time.Second
	// NudgeInterval is how long Login waits for a login prompt before it
	// presses Enter to make the getty print a fresh one.
	NudgeInterval = 15 * time.Second
)

// secretEnter ends a password. A secret is sent in one write with its
// Enter; the console's line ending is "\r" unless configured otherwise,
// which is what gettys and sudo expect.
const secretEnter = "\r"

// interrupt is Ctrl-C.
const interrupt = "\x03"

// setup is typed before the ready marker when a shell is taken over.
// Every part is harmless in the shells it does not apply to: busybox ash has
// no BASH_VERSION and no readline; dash ignores PROMPT_COMMAND.
const setup = `stty -echo 2>/dev/null; [ -n "$BASH_VERSION" ] && set +o emacs +o vi +o history; ` +
	`unset PROMPT_COMMAND; PS1='$ '; PS2=''; export PAGER=cat SYSTEMD_PAGER=cat SYSTEMD_COLORS=0; `

// Options configure Attach.
type Options struct {
	// Run receives the timeline events and the sudo transcripts. It may
	// be nil (then transcripts are not written).
	Run *journal.Run
	// Timeout bounds the wait for the shell to answer; 0 means
	// DefaultAttachTimeout.
	Timeout time.Duration
	// User is the account the shell runs as, for messages only.
	User string
}

// LoginOptions configure Login.
type LoginOptions struct {
	// User is the account to log in as.
	User string
	// Password is sent when the getty asks for one ("" sends an empty
	// line).
	Password string
	// Timeout bounds the whole login, from waiting for the prompt to a
	// ready shell; 0 means DefaultLoginTimeout.
	Timeout time.Duration
	// From is where to look for the login prompt. nil means: the start of
	// the console's last line when it holds "login:" (the getty is
	// waiting), else the end of the console's last match.
	From *console.Mark
	// Run receives the timeline events and the sudo transcripts.
	Run *journal.Run
}

// RunOptions tune one command (command.Options: the serial shell refuses
// Stdin and Env, it types commands at a prompt; Timeout 0 means
// DefaultRunTimeout).
type RunOptions = command.Options

// Result is a finished command: Output is what the command printed (stdout
// and stderr, as the terminal shows them, ANSI-stripped, "\r\n" read as
// "\n"), Stdout the same, Code -1 when the command did not finish.
type Result = command.Result

// Shell is a command channel on a console. Its methods are safe for
// concurrent use; commands run one at a time.
type Shell struct {
	con  *console.Console
	run  *journal.Run
	name string
	user string

	mu     sync.Mutex
	broken error // set when a resynchronisation failed
	// noPrompt is set when the "$ " after a command did not come (a command
	// changed PS1): later commands do not wait for it until the next sync.
	noPrompt bool
}

func newShell(con *console.Console, run *journal.Run, user string) *Shell {
	return &Shell{con: con, run: run, name: con.Name(), user: user}
}

// Console returns the console the shell runs on.
func (s *Shell) Console() *console.Console { return s.con }

// User returns the account given to Login or Attach ("" if unknown).
func (s *Shell) User() string { return s.user }

func (s *Shell) event(kind string, f map[string]any) {
	if s.run != nil {
		s.run.Event("shell:"+s.name, kind, f)
	}
}

// Attach takes over a shell that is at its prompt on con (the mini lab, an
// emergency shell, a shell a script reached by hand): it types the setup
// line and waits for the ready marker, retrying with a fresh nonce (after
// Ctrl-C) until the shell answers or the timeout passes. Characters typed
// while the shell is not reading yet (still booting, a program flushing its
// input) are lost or queued; the retry covers both.
func Attach(ctx context.Context, con *console.Console, opt Options) (*Shell, error) {
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultAttachTimeout
	}
	s := newShell(con, opt.Run, opt.User)
	start := time.Now()
	if err := s.sync(ctx, start.Add(timeout), "attach"); err != nil {
		return nil, err
	}
	s.event("attach", map[string]any{"user": s.user, "took_s": secs(time.Since(start))})
	return s, nil
}

// sync types the setup and a ready marker and waits for the marker;
// attempts repeat, each after a Ctrl-C, until deadline.
func (s *Shell) sync(ctx context.Context, deadline time.Time, why string) error {
	start := time.Now()
	wait := 3 * time.Second
	attempts := 0
	for {
		attempts++
		nonce := newNonce()
		from := s.con.Mark()
		if err := s.con.Send(ctx, setup+readyLine(nonce)+"\r"); err != nil {
			return err
		}
		w := min(wait, time.Until(deadline))
		if w <= 0 {
			w = time.Millisecond
		}
		m, err := s.con.Expect(ctx, []console.Pattern{{Regex: readyMarker(nonce).Regex()}},
			console.ExpectOptions{From: &from, Timeout: w, Desc: "the shell to answer (" + why + ")"})
		if err == nil {
			s.noPrompt = false
			s.settlePrompt(ctx, m.End)
			return nil
		}
		if !vmerr.Is(err, vmerr.Timeout) {
			return err
		}
		if !time.Now().Before(deadline) {
			return vmerr.New(vmerr.Timeout, "%s: no shell answered on the console within %s (%s, %d attempts)",
				s.name, fmtDur(time.Since(start)), why, attempts).
				With("vm", s.name).With("waited_s", secs(time.Since(start))).With("tail", s.con.Tail(console.TailLines))
		}
		// Clear whatever holds the line (a half-typed line, a program
		// reading the terminal) and try again with a fresh nonce.
		if err := s.con.Send(ctx, interrupt); err != nil {
			return err
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
		wait = min(2*wait, 20*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return vmerr.Wrap(vmerr.Cancelled, context.Cause(ctx), "cancelled")
	}
}

// recoverLocked interrupts the running command and resynchronises. The
// caller holds s.mu.
func (s *Shell) recoverLocked(ctx context.Context) error {
	if err := s.con.Send(ctx, interrupt); err != nil {
		s.broken = err
		return err
	}
	if err := sleep(ctx, 200*time.Millisecond); err != nil {
		return err
	}
	if err := s.sync(ctx, time.Now().Add(RecoverTimeout), "recovery"); err != nil {
		s.broken = err
		return err
	}
	s.broken = nil
	s.event("resync", nil)
	return nil
}

// promptSettle bounds the wait for the shell's "$ " after an end marker.
const promptSettle = time.Second

// settlePrompt waits, briefly and out of the timeline, for the "$ " the
// shell prints after the marker that ended at end. Then nothing of the
// channel's own is still on its way when Run returns: a checkpoint taken
// next holds no prompt that each fork would print after its restore, and a
// script's next mark starts after it. A prompt that does not come (the
// command changed PS1) is not an error; later commands stop waiting for it
// until the next resynchronisation.
func (s *Shell) settlePrompt(ctx context.Context, end console.Mark) {
	if s.noPrompt {
		return
	}
	_, err := s.con.Expect(ctx, []console.Pattern{{Text: "$ "}}, console.ExpectOptions{From: &end, Timeout: promptSettle, Quiet: true})
	if vmerr.Is(err, vmerr.Timeout) {
		s.noPrompt = true
	}
}

// readyLocked makes sure the channel is in sync before a command.
func (s *Shell) readyLocked(ctx context.Context) error {
	if s.broken == nil {
		return nil
	}
	return s.recoverLocked(ctx)
}

// Run types cmd (as one line; it runs in the shell itself through eval, so
// cd and variables persist) and waits for its end marker. Recovery after a
// timeout relies on Ctrl-C reaching the command: a shell started with
// SIGINT ignored (a background job of a non-interactive script, as the mini
// lab's /init does) passes that on to every command, and the channel then
// resynchronises only when the command ends by itself. Errors:
//
//   - "timeout" when the command overruns opt.Timeout: context "output"
//     holds the partial output, "recovered" says whether the channel
//     resynchronised (Ctrl-C, fresh nonce) for the next command;
//   - the console's close reason ("exited") when the VM goes away, "watch"
//     when a fail watcher fires, "cancelled" when ctx ends.
func (s *Shell) Run(ctx context.Context, cmd string, opt RunOptions) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if opt.Exact {
		return s.runExact(ctx, cmd, opt)
	}
	return s.runLocked(ctx, cmd, opt)
}

// Channel implements command.Runner: commands go over the serial console.
func (s *Shell) Channel() string { return "serial" }

func (s *Shell) runLocked(ctx context.Context, cmd string, opt RunOptions) (Result, error) {
	if opt.Stdin != nil || len(opt.Env) > 0 {
		return Result{Code: -1}, vmerr.New(vmerr.Usage, "%s: the serial shell types commands at its prompt: it passes no stdin or env (use SSH)", s.name).With("command", cmd)
	}
	if err := s.readyLocked(ctx); err != nil {
		return Result{Code: -1}, err
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultRunTimeout
	}
	start := time.Now()
	cm := newCmdMarkers()
	from := s.con.Mark()
	if err := s.con.Send(ctx, cm.runLine(cmd)+"\r"); err != nil {
		return Result{Code: -1}, withCmd(err, cmd, "")
	}
	m, err := s.con.Expect(ctx, []console.Pattern{{Regex: cm.end.Regex()}}, console.ExpectOptions{From: &from, Timeout: timeout, Desc: "the end of `" + shorten(cmd, 60) + "`"})
	if err != nil {
		partial := ""
		if text := s.con.Text(&from, nil); text != "" {
			if p := cm.parseRun(text); p.beginFound {
				partial = text[p.outStart:p.outEnd]
			}
		}
		if !vmerr.Is(err, vmerr.Timeout) {
			return Result{Output: partial, Code: -1}, withCmd(err, cmd, partial)
		}
		e := vmerr.New(vmerr.Timeout, "%s: command %q did not finish within %s", s.name, cmd, fmtDur(timeout)).
			With("vm", s.name).With("command", cmd).With("output", partial).With("waited_s", secs(time.Since(start))).
			With("tail", s.con.Tail(console.TailLines))
		rerr := s.recoverLocked(ctx)
		e.With("recovered", rerr == nil)
		if rerr != nil {
			e.With("recover_error", rerr.Error())
		}
		s.event("run", map[string]any{"command": cmd, "error": "timeout", "took_s": secs(time.Since(start)), "recovered": rerr == nil})
		return Result{Output: partial, Code: -1}, e
	}
	s.settlePrompt(ctx, m.End)
	text := s.con.Text(&from, &m.End)
	p := cm.parseRun(text)
	if !p.endFound {
		// The console matched the end marker but the tightest parse did
		// not: cannot happen, the regexes are the same.
		return Result{Code: -1}, vmerr.New(vmerr.Internal, "%s: end marker of %q matched but not parsed", s.name, cmd)
	}
	out := text[p.outStart:p.outEnd]
	res := Result{Output: out, Stdout: out, Code: p.code, Duration: time.Since(start)}
	s.event("run", map[string]any{"command": cmd, "code": res.Code, "bytes": len(res.Output), "took_s": secs(time.Since(start))})
	return res, nil
}

// Test runs cmd and reports whether it exited 0. An error (timeout, VM
// gone) counts as false; use Run to tell them apart.
func (s *Shell) Test(ctx context.Context, cmd string) bool {
	r, err := s.Run(ctx, cmd, RunOptions{})
	return err == nil && r.Code == 0
}

// withCmd adds the command and partial output to a console error.
func withCmd(err error, cmd, partial string) error {
	if ve, ok := err.(*vmerr.Error); ok {
		ve.With("command", cmd)
		if partial != "" {
			ve.With("output", partial)
		}
	}
	return err
}

func secs(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }

// promptRE recognises a shell prompt at the end of a line: "root@lab:~# ",
// "$ ", "mini# ", possibly followed by a kernel message that landed on it.
const promptRE = `[#$]\s?(?:\[\s*\d+\.\d+\][^\n]*)?$`

// Login logs in on a getty: it waits for "login: " (kernel and systemd
// messages may be interleaved; every NudgeInterval without a prompt it
// presses Enter so the getty prints a fresh one), answers the user name and
// the password, and waits for a shell prompt, then sets the shell up as
// Attach does. When the console ends with a bare "login: " for a
// NudgeInterval after the name was sent (a getty that redrew its prompt and
// flushed its input, or one systemd restarted), it types the name again, up
// to maxRetype times. "Login incorrect" (or a second password prompt) fails with
// kind "auth"; no prompt before the timeout fails with kind "timeout".
func Login(ctx context.Context, con *console.Console, opt LoginOptions) (*Shell, error) {
	if opt.User == "" {
		return nil, vmerr.New(vmerr.Usage, "%s: login needs a user", con.Name())
	}
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultLoginTimeout
	}
	start := time.Now()
	l := &login{ctx: ctx, con: con, opt: opt, name: con.Name(), start: start, deadline: start.Add(timeout)}
	if err := l.waitPrompt(); err != nil {
		return nil, err
	}
	if err := l.answer(); err != nil {
		return nil, err
	}
	// A shell: set it up.
	s := newShell(con, opt.Run, opt.User)
	if err := s.sync(ctx, l.deadline, "login"); err != nil {
		return nil, err
	}
	s.event("login", map[string]any{"user": opt.User, "took_s": secs(time.Since(start))})
	return s, nil
}

// login is one Login under way.
type login struct {
	ctx             context.Context
	con             *console.Console
	opt             LoginOptions
	name            string
	start, deadline time.Time
	typedAt         time.Time // when the user name was first typed
	retyped         int
}

// timeoutErr says what the login waited for when its deadline passed.
func (l *login) timeoutErr(what string) error {
	return vmerr.New(vmerr.Timeout, "%s: login as %s: timed out after %s waiting for %s", l.name, l.opt.User, fmtDur(time.Since(l.start)), what).
		With("vm", l.name).With("user", l.opt.User).With("waited_s", secs(time.Since(l.start))).With("tail", l.con.Tail(console.TailLines))
}

// expect waits for pats from from, at most limit and never past the
// deadline.
func (l *login) expect(from *console.Mark, pats []console.Pattern, limit time.Duration) (*console.Match, error) {
	w := min(time.Until(l.deadline), limit)
	if w <= 0 {
		return nil, vmerr.New(vmerr.Timeout, "deadline")
	}
	return l.con.Expect(l.ctx, pats, console.ExpectOptions{From: from, Timeout: w})
}

// waitPrompt waits for "login: ", pressing Enter every loginNudge without
// one so the getty prints a fresh prompt; it keeps looking from where it
// was, so a prompt that arrives meanwhile is not missed.
func (l *login) waitPrompt() error {
	from := l.opt.From
	if from == nil {
		from = atLoginPrompt(l.con)
	}
	for {
		_, err := l.expect(from, []console.Pattern{{Text: "login: "}}, loginNudge)
		if err == nil {
			return nil
		}
		if !vmerr.Is(err, vmerr.Timeout) {
			return err
		}
		if !time.Now().Before(l.deadline) {
			return l.timeoutErr(`the login prompt ("login: ")`)
		}
		if err := l.con.Send(l.ctx, "\r"); err != nil {
			return err
		}
	}
}

// answer types the user name, the password if asked, and waits for a
// shell prompt. The prompt must settle: a '#' or '$' at the end of what has
// arrived so far may be a line cut by the serial port ("Linux lab … #" then
// "1 SMP …", or "root@lab:~#" then " "), and the console looks again from
// the same start when more comes.
func (l *login) answer() error {
	l.typedAt = time.Now()
	cur := l.con.Mark()
	if err := l.con.SendLine(l.ctx, l.opt.User); err != nil {
		return err
	}
	pwSent := false
	var lastNudge time.Time
	pats := []console.Pattern{{Text: "assword:"}, {Text: "Login incorrect"}, {Regex: promptRE, Settle: promptQuiet}}
	for {
		// Once prompt-like text has shown up, look again often: a kernel
		// message after a real prompt keeps it from settling until an
		// Enter makes the shell print a fresh one.
		limit := loginNudge
		seen := promptLikeRE.MatchString(l.con.Text(&cur, nil))
		if seen {
			limit = promptNudge
		}
		m, err := l.expect(&cur, pats, limit)
		if err == nil {
			if m.Index == 2 {
				return nil
			}
			cur = m.End
			if err := l.password(m.Index, pwSent); err != nil {
				return err
			}
			pwSent = true
			continue
		}
		if !vmerr.Is(err, vmerr.Timeout) {
			return err
		}
		if !time.Now().Before(l.deadline) {
			// Say when the getty answered: a boot that ate most of the
			// timeout is not a login that hung.
			return l.timeoutErr(fmt.Sprintf("a shell prompt after the user name (typed at %s, %d retyped)", fmtDur(l.typedAt.Sub(l.start)), l.retyped))
		}
		if err := l.nudge(seen, pwSent, &lastNudge, &cur); err != nil {
			return err
		}
	}
}

// password answers the password prompt (pattern 0), or fails on "Login
// incorrect" (pattern 1) or a second password prompt.
func (l *login) password(index int, pwSent bool) error {
	if index == 1 {
		return authErr(l.con, l.opt.User, "Login incorrect")
	}
	if pwSent {
		return authErr(l.con, l.opt.User, "the password prompt came back")
	}
	return l.con.SendSecret(l.ctx, l.opt.Password+secretEnter)
}

// nudge acts on a wait without a settled prompt: an Enter once a prompt
// showed (an empty command line makes a shell print a fresh prompt, and is
// harmless type-ahead otherwise; before the password prompt it would be
// read as an empty password), or the user name again when a getty lost it.
func (l *login) nudge(seen, pwSent bool, lastNudge *time.Time, cur *console.Mark) error {
	switch {
	case seen && time.Since(*lastNudge) >= promptNudge:
		*lastNudge = time.Now()
		return l.con.Send(l.ctx, "\r")
	case !pwSent && l.retyped < maxRetype && gettyWaiting(l.con):
		// A getty that re-prompts (agetty flushes its input when it
		// redraws the prompt, e.g. on --reload) or a getty restarted by
		// systemd lost the name: the console ends with a bare "login: "
		// and nothing came since. Type the name again.
		l.retyped++
		if l.opt.Run != nil {
			l.opt.Run.Event("shell:"+l.name, "login-retype", map[string]any{"user": l.opt.User, "attempt": l.retyped + 1})
		}
		*cur = l.con.Mark()
		return l.con.SendLine(l.ctx, l.opt.User)
	}
	return nil
}

func authErr(con *console.Console, user, why string) error {
	return vmerr.New(vmerr.Auth, "%s: login as %s failed: %s", con.Name(), user, why).
		With("vm", con.Name()).With("user", user).With("tail", con.Tail(console.TailLines))
}

// loginNudge is how long Login waits for a sign of progress before it
// looks again (a variable so tests need not wait 15 s).
var loginNudge = NudgeInterval

// maxRetype bounds how often Login types the user name again for a getty
// that lost it.
const maxRetype = 3

// gettyWaiting reports whether the console ends with a getty's bare login
// prompt: nothing typed, nothing printed after "login: ".
func gettyWaiting(con *console.Console) bool {
	const prompt = "login: "
	end := con.Mark()
	from := console.Mark{Text: max(end.Text-int64(len(prompt)), 0)}
	return con.Text(&from, &end) == prompt
}

// promptQuiet is how long a shell prompt must stay the last thing on the
// console before Login believes it.
const promptQuiet = 300 * time.Millisecond

// promptLikeRE finds prompt-like text anywhere (settled or not).
var promptLikeRE = regexp.MustCompile("(?m)" + promptRE)

// promptNudge is the least time between two Enters Login presses to get a
// prompt that stays the last thing on the console.
const promptNudge = 2 * time.Second

// atLoginPrompt returns the start of the console's last (incomplete) line
// when it holds "login:", so a prompt that is already showing is answered;
// else nil (the console's last-match cursor).
func atLoginPrompt(con *console.Console) *console.Mark {
	tail := con.Tail(1)
	if len(tail) == 0 {
		return nil
	}
	last := tail[len(tail)-1]
	if !strings.Contains(last, "login:") {
		return nil
	}
	end := con.Mark()
	// The last line may be complete (then Tail's line excludes the
	// newline); looking back its length plus one is safe either way.
	m := console.Mark{Text: max(end.Text-int64(len(last))-1, 0)}
	return &m
}

// String describes the shell.
func (s *Shell) String() string {
	if s.user != "" {
		return fmt.Sprintf("shell on %s as %s", s.name, s.user)
	}
	return "shell on " + s.name
}

// shorten cuts s to n bytes for a description, marking the cut.
func shorten(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
