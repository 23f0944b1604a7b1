package shell

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// SudoOptions tune Sudo.
type SudoOptions struct {
	// Password answers sudo's password prompt. "" refuses to answer: a
	// prompt then fails with kind "refused".
	Password string
	// Timeout bounds the whole exchange; 0 means DefaultRunTimeout.
	Timeout time.Duration
}

// SudoResult is a finished sudo command.
type SudoResult struct {
	Result
	// Transcript is the path of the exchange's transcript in the run
	// directory ("" without a run).
	Transcript string `json:"transcript"`
}

// Mask replaces the password in transcripts.
const Mask = "********"

var sudoSeq atomic.Int64

// Sudo runs cmd as root through `sudo -k -- sh -c CMD` (-k: always
// authenticate, so the exchange does not depend on an earlier sudo) and
// answers its password prompt. The prompt is sudo's own -p prompt carrying
// the command's nonce, so it is told apart from any other text. "Sorry, try
// again", "is not in the sudoers file", "is not allowed to" and a second
// prompt fail with kind "refused" (sudo's retry is interrupted); the
// channel is resynchronised afterwards. The whole exchange — the console
// text from typing the command to its end, the password replaced by Mask,
// and any other occurrence of the password masked too — is written to
// <vm>.sudo-<n>.txt in the run directory, also on failure; its path is in
// the result and in the error's "transcript" context.
func (s *Shell) Sudo(ctx context.Context, cmd string, opt SudoOptions) (SudoResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.readyLocked(ctx); err != nil {
		return SudoResult{Result: Result{Code: -1}}, err
	}
	x := newSudo(s, cmd, opt)
	line := fmt.Sprintf(`printf '\173VS%%s:B\175\n' %s; sudo -k -p '[sudo] password for %%u (%%%%%s): ' -- sh -c %s; printf '\173VS%%s:E%%03d\175\n' %s "$?"`,
		x.cm.nonce, x.cm.nonce, shellquote.Quote(cmd), x.cm.nonce)
	x.from = s.con.Mark()
	if err := s.con.Send(ctx, line+"\r"); err != nil {
		return SudoResult{Result: Result{Code: -1}}, withCmd(err, cmd, "")
	}
	x.converse(ctx)
	switch {
	case x.endMatch != nil:
		return x.ended(ctx), nil
	case x.refusal != "":
		return x.refused(ctx)
	}
	return x.failed(ctx)
}

// sudoExchange is one Sudo: the command, its markers and prompt, and what
// the conversation came to.
type sudoExchange struct {
	s               *Shell
	cmd             string
	opt             SudoOptions
	timeout         time.Duration
	start, deadline time.Time
	cm              *cmdMarkers
	prompt          *marker
	from            console.Mark

	promptEnd int64 // text offset where the password went; -1 before
	refusal   string
	endMatch  *console.Match
	waitErr   error
	res       SudoResult
}

func newSudo(s *Shell, cmd string, opt SudoOptions) *sudoExchange {
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultRunTimeout
	}
	cm := newCmdMarkers()
	start := time.Now()
	return &sudoExchange{s: s, cmd: cmd, opt: opt, timeout: timeout, start: start, deadline: start.Add(timeout),
		cm: cm, prompt: newMarker("(%" + cm.nonce + "): "), promptEnd: -1, res: SudoResult{Result: Result{Code: -1}}}
}

// converse answers sudo's prompt until the command ends, sudo refuses, or
// the wait fails.
func (x *sudoExchange) converse(ctx context.Context) {
	pats := []console.Pattern{
		{Regex: x.cm.end.Regex()},
		{Regex: x.prompt.Regex()},
		{Text: "Sorry, try again"},
		{Text: "is not in the sudoers file"},
		{Text: "is not allowed to"},
		{Text: "incorrect password attempt"},
	}
	cur := x.from
	for x.endMatch == nil && x.refusal == "" && x.waitErr == nil {
		w := time.Until(x.deadline)
		if w <= 0 {
			w = time.Millisecond
		}
		m, err := x.s.con.Expect(ctx, pats, console.ExpectOptions{From: &cur, Timeout: w})
		if err != nil {
			x.waitErr = err
			return
		}
		cur = m.End
		switch m.Index {
		case 0:
			x.endMatch = m
		case 1:
			x.answer(ctx, m)
		default:
			x.refusal = strings.TrimSpace(m.Text)
		}
	}
}

// answer types the password at sudo's prompt, or refuses a second prompt
// or one without a password to give.
func (x *sudoExchange) answer(ctx context.Context, m *console.Match) {
	switch {
	case x.promptEnd >= 0:
		x.refusal = "sudo asked for the password again"
	case x.opt.Password == "":
		x.refusal = "sudo asked for a password and none was given"
	default:
		if err := x.s.con.SendSecret(ctx, x.opt.Password+secretEnter); err != nil {
			x.waitErr = err
		}
		x.promptEnd = m.End.Text
	}
}

// finish writes the transcript with its outcome.
func (x *sudoExchange) finish(outcome string) {
	x.res.Transcript = x.s.writeTranscript(x.cmd, x.from, x.promptEnd, x.opt.Password, x.start, outcome)
}

// ended is the result of a command that ran: its output after the
// password, and its exit code.
func (x *sudoExchange) ended(ctx context.Context) SudoResult {
	s := x.s
	s.settlePrompt(ctx, x.endMatch.End)
	text := s.con.Text(&x.from, &x.endMatch.End)
	p := x.cm.parseRun(text)
	out := ""
	if p.endFound {
		lo := p.outStart
		if x.promptEnd >= 0 {
			lo = max(lo, int(x.promptEnd-x.from.Text))
			if lo < len(text) && text[lo] == '\n' {
				lo++
			}
		}
		if lo <= p.outEnd {
			out = text[lo:p.outEnd]
		}
		x.res.Code = p.code
	}
	x.res.Output, x.res.Stdout, x.res.Duration = out, out, time.Since(x.start)
	x.finish(fmt.Sprintf("exit code %d", x.res.Code))
	s.event("sudo", map[string]any{"command": x.cmd, "code": x.res.Code, "transcript": x.res.Transcript, "took_s": secs(time.Since(x.start))})
	return x.res
}

// refused interrupts sudo's next prompt (or lets it exit on its own), takes
// the channel back, and fails with kind "refused".
func (x *sudoExchange) refused(ctx context.Context) (SudoResult, error) {
	s := x.s
	rerr := s.settleLocked(ctx, x.cm, x.from)
	x.finish("refused: " + x.refusal)
	e := vmerr.New(vmerr.Refused, "%s: sudo %q refused: %s", s.name, x.cmd, x.refusal).
		With("vm", s.name).With("command", x.cmd).With("transcript", x.res.Transcript).With("recovered", rerr == nil)
	if s.user != "" {
		e.With("user", s.user)
	}
	s.event("sudo", map[string]any{"command": x.cmd, "refused": x.refusal, "transcript": x.res.Transcript, "took_s": secs(time.Since(x.start))})
	return x.res, e
}

// failed reports a wait that failed: a timeout (the channel recovers), the
// VM gone, the run cancelled.
func (x *sudoExchange) failed(ctx context.Context) (SudoResult, error) {
	s := x.s
	if vmerr.Is(x.waitErr, vmerr.Timeout) {
		rerr := s.recoverLocked(ctx)
		x.finish("timeout")
		e := vmerr.New(vmerr.Timeout, "%s: sudo %q did not finish within %s", s.name, x.cmd, fmtDur(x.timeout)).
			With("vm", s.name).With("command", x.cmd).With("transcript", x.res.Transcript).With("recovered", rerr == nil).
			With("tail", s.con.Tail(console.TailLines))
		return x.res, e
	}
	x.finish("error: " + x.waitErr.Error())
	if ve, ok := x.waitErr.(*vmerr.Error); ok {
		ve.With("command", x.cmd).With("transcript", x.res.Transcript)
	}
	return x.res, x.waitErr
}

// settleLocked ends a refused sudo: Ctrl-C, then the end marker (sudo
// exits 1 on an interrupted prompt and the shell prints the marker), or a
// full resynchronisation when it does not come.
func (s *Shell) settleLocked(ctx context.Context, cm *cmdMarkers, from console.Mark) error {
	if err := s.con.Send(ctx, interrupt); err != nil {
		s.broken = err
		return err
	}
	if _, err := s.con.Expect(ctx, []console.Pattern{{Regex: cm.end.Regex()}},
		console.ExpectOptions{From: &from, Timeout: 10 * time.Second}); err == nil {
		return nil
	}
	return s.recoverLocked(ctx)
}

// writeTranscript saves the exchange with the password masked and returns
// its path ("" without a run or on a write error, which is reported in the
// timeline).
func (s *Shell) writeTranscript(cmd string, from console.Mark, promptEnd int64, password string, start time.Time, outcome string) string {
	if s.run == nil {
		return ""
	}
	text := s.con.Text(&from, nil)
	if promptEnd >= 0 {
		if i := int(promptEnd - from.Text); i >= 0 && i <= len(text) {
			text = text[:i] + Mask + text[i:]
		}
	}
	if password != "" {
		text = strings.ReplaceAll(text, password, Mask)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# vmscript sudo transcript\n# vm: %s\n", s.name)
	if s.user != "" {
		fmt.Fprintf(&b, "# user: %s\n", s.user)
	}
	fmt.Fprintf(&b, "# command: %s\n# started: %s\n# took: %.3fs\n# outcome: %s\n", cmd, start.Format(time.RFC3339Nano), time.Since(start).Seconds(), outcome)
	fmt.Fprintf(&b, "# The console text of the exchange follows (ANSI-stripped); the password sent is shown as %s.\n\n", Mask)
	b.WriteString(text)
	if !strings.HasSuffix(text, "\n") {
		b.WriteString("\n")
	}
	body := b.String()
	if password != "" {
		// The header carries the command; a password typed into it is
		// masked too.
		body = strings.ReplaceAll(body, password, Mask)
	}
	name := fmt.Sprintf("%s.sudo-%d.txt", s.name, sudoSeq.Add(1))
	path, err := s.run.WriteFile(name, []byte(body))
	if err != nil {
		s.event("transcript_error", map[string]any{"file": name, "error": err.Error()})
		return ""
	}
	return path
}
