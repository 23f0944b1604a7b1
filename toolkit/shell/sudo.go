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
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultRunTimeout
	}
	start := time.Now()
	deadline := start.Add(timeout)
	cm := newCmdMarkers()
	prompt := newMarker("(%" + cm.nonce + "): ")
	line := fmt.Sprintf(`printf '\173VS%%s:B\175\n' %s; sudo -k -p '[sudo] password for %%u (%%%%%s): ' -- sh -c %s; printf '\173VS%%s:E%%03d\175\n' %s "$?"`,
		cm.nonce, cm.nonce, shellquote.Quote(cmd), cm.nonce)
	from := s.con.Mark()
	if err := s.con.Send(ctx, line+"\r"); err != nil {
		return SudoResult{Result: Result{Code: -1}}, withCmd(err, cmd, "")
	}
	pats := []console.Pattern{
		{Regex: cm.end.Regex()},
		{Regex: prompt.Regex()},
		{Text: "Sorry, try again"},
		{Text: "is not in the sudoers file"},
		{Text: "is not allowed to"},
		{Text: "incorrect password attempt"},
	}
	var (
		cur       = from
		promptEnd = int64(-1) // text offset where the password went
		refusal   string
		endMatch  *console.Match
		waitErr   error
	)
	for endMatch == nil && refusal == "" {
		w := time.Until(deadline)
		if w <= 0 {
			w = time.Millisecond
		}
		m, err := s.con.Expect(ctx, pats, console.ExpectOptions{From: &cur, Timeout: w})
		if err != nil {
			waitErr = err
			break
		}
		cur = m.End
		switch m.Index {
		case 0:
			endMatch = m
		case 1:
			switch {
			case promptEnd >= 0:
				refusal = "sudo asked for the password again"
			case opt.Password == "":
				refusal = "sudo asked for a password and none was given"
			default:
				if err := s.con.SendSecret(ctx, opt.Password+secretEnter); err != nil {
					waitErr = err
				}
				promptEnd = m.End.Text
			}
		default:
			refusal = strings.TrimSpace(m.Text)
		}
		if waitErr != nil {
			break
		}
	}

	res := SudoResult{Result: Result{Code: -1}}
	finish := func(outcome string) {
		res.Transcript = s.writeTranscript(cmd, from, promptEnd, opt.Password, start, outcome)
	}

	if endMatch != nil {
		s.settlePrompt(ctx, endMatch.End)
		text := s.con.Text(&from, &endMatch.End)
		p := cm.parseRun(text)
		out := ""
		if p.endFound {
			lo := p.outStart
			if promptEnd >= 0 {
				lo = max(lo, int(promptEnd-from.Text))
				if lo < len(text) && text[lo] == '\n' {
					lo++
				}
			}
			if lo <= p.outEnd {
				out = text[lo:p.outEnd]
			}
			res.Code = p.code
		}
		res.Output, res.Stdout, res.Duration = out, out, time.Since(start)
		finish(fmt.Sprintf("exit code %d", res.Code))
		s.event("sudo", map[string]any{"command": cmd, "code": res.Code, "transcript": res.Transcript, "took_s": secs(time.Since(start))})
		return res, nil
	}

	if refusal != "" {
		// Interrupt sudo's next prompt (or let it exit on its own), then
		// take the channel back.
		rerr := s.settleLocked(ctx, cm, from)
		finish("refused: " + refusal)
		e := vmerr.New(vmerr.Refused, "%s: sudo %q refused: %s", s.name, cmd, refusal).
			With("vm", s.name).With("command", cmd).With("transcript", res.Transcript).With("recovered", rerr == nil)
		if s.user != "" {
			e.With("user", s.user)
		}
		s.event("sudo", map[string]any{"command": cmd, "refused": refusal, "transcript": res.Transcript, "took_s": secs(time.Since(start))})
		return res, e
	}

	// The wait failed: timeout, VM gone, cancelled.
	if vmerr.Is(waitErr, vmerr.Timeout) {
		rerr := s.recoverLocked(ctx)
		finish("timeout")
		e := vmerr.New(vmerr.Timeout, "%s: sudo %q did not finish within %s", s.name, cmd, fmtDur(timeout)).
			With("vm", s.name).With("command", cmd).With("transcript", res.Transcript).With("recovered", rerr == nil).
			With("tail", s.con.Tail(console.TailLines))
		return res, e
	}
	finish("error: " + waitErr.Error())
	if ve, ok := waitErr.(*vmerr.Error); ok {
		ve.With("command", cmd).With("transcript", res.Transcript)
	}
	return res, waitErr
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
