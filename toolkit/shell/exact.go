package shell

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Exact output (RunOptions.Exact).
//
// The kernel writes its console messages straight to the UART, between any
// two bytes of what the shell's terminal sends, so no marker protocol can
// tell a command's output from a kernel line that lands inside it (dmesg
// prints the very same text). An exact run therefore keeps the output off
// the console: the command runs in the shell itself (eval, so cd and
// variables persist) with stdout and stderr in two files; then each file
// is fetched as its size, its SHA-256 and its base64 text, 76 characters a
// line. Foreign text inside the base64 is cut out (a line that is not
// base64 is a kernel line; one that is too long holds one, whose place the
// next line's length gives), the result is checked against the size and
// the digest, and fetched again when it does not match. What comes back is
// the command's bytes or an error, never a guess.

// fetchAttempts bounds how often a file is fetched before Run gives up.
const fetchAttempts = 5

// b64Line is the length of a base64 line (coreutils' and busybox's wrap).
const b64Line = 76

func (s *Shell) runExact(ctx context.Context, cmd string, opt RunOptions) (Result, error) {
	start := time.Now()
	base := "${TMPDIR:-/tmp}/.vmscript-" + newNonce()
	out, errf := base+".out", base+".err"
	plain := opt
	plain.Exact = false
	r, err := s.runLocked(ctx, "eval "+shellquote.Quote(cmd)+" >"+out+" 2>"+errf, plain)
	if err != nil {
		return r, err
	}
	code := r.Code
	stdout, err := s.fetch(ctx, out, plain)
	if err == nil {
		var stderr []byte
		if stderr, err = s.fetch(ctx, errf, plain); err == nil {
			_, _ = s.runLocked(ctx, "rm -f "+out+" "+errf, plain)
			res := Result{Stdout: string(stdout), Stderr: string(stderr), Output: string(stdout) + string(stderr), Code: code, Duration: time.Since(start)}
			s.event("run-exact", map[string]any{"command": cmd, "code": code, "stdout_bytes": len(stdout), "stderr_bytes": len(stderr)})
			return res, nil
		}
	}
	return Result{Code: code, Duration: time.Since(start)}, withCmd(err, cmd, "")
}

// fetch reads a guest file byte for byte: size, digest and base64, checked,
// fetched again while they do not agree.
func (s *Shell) fetch(ctx context.Context, path string, opt RunOptions) ([]byte, error) {
	var why string
	for attempt := 1; attempt <= fetchAttempts; attempt++ {
		r, err := s.runLocked(ctx, "wc -c <"+path+" && sha256sum <"+path+" && base64 "+path, opt)
		if err != nil {
			return nil, err
		}
		if r.Code != 0 {
			return nil, vmerr.New(vmerr.Failed, "%s: reading the output file %s failed (exit %d): %s", s.name, path, r.Code, shorten(r.Output, 200)).With("vm", s.name)
		}
		data, perr := decodeFetch(r.Output)
		if perr == nil {
			if attempt > 1 {
				s.event("fetch-retried", map[string]any{"path": path, "attempts": attempt, "why": why})
			}
			return data, nil
		}
		why = perr.Error()
	}
	return nil, vmerr.New(vmerr.Protocol, "%s: the output file %s never came back whole in %d fetches (last: %s)", s.name, path, fetchAttempts, why).With("vm", s.name)
}

// decodeFetch parses "SIZE\nSHA256  -\nBASE64…" as fetched through a
// console, with foreign lines cut out of the base64, and checks it.
func decodeFetch(text string) ([]byte, error) {
	lines := strings.Split(strings.ReplaceAll(text, "\r", ""), "\n")
	size, digest, rest, err := fetchHeader(lines)
	if err != nil {
		return nil, err
	}
	data, err := base64.StdEncoding.DecodeString(strings.Join(cleanBase64(rest, size), ""))
	if err != nil {
		return nil, fmt.Errorf("base64: %v", err)
	}
	sum := sha256.Sum256(data)
	if int64(len(data)) != size || hex.EncodeToString(sum[:]) != digest {
		return nil, fmt.Errorf("got %d bytes with sha256 %.12s…, want %d with %.12s…", len(data), hex.EncodeToString(sum[:]), size, digest)
	}
	return data, nil
}

// fetchHeader finds the size and the digest: the first line that is only a
// number, then the first that is a digest ("<64 hex>  -"); kernel lines
// before either are passed over.
func fetchHeader(lines []string) (int64, string, []string, error) {
	i := 0
	var size int64 = -1
	for ; i < len(lines) && size < 0; i++ {
		if n, err := strconv.ParseInt(strings.TrimSpace(lines[i]), 10, 64); err == nil && n >= 0 {
			size = n
		}
	}
	for ; i < len(lines); i++ {
		f := strings.Fields(lines[i])
		if len(f) == 2 && f[1] == "-" && len(f[0]) == 64 && isHex(f[0]) {
			return size, f[0], lines[i+1:], nil
		}
	}
	return 0, "", nil, fmt.Errorf("no size and digest lines")
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// cleanBase64 returns the base64 lines of a file of size bytes with
// foreign text cut out. Every line but the last holds b64Line characters,
// so the length each must have is known. A clean line of that length is
// taken. A line that is not clean waits: if its base64 start is just that
// long, a kernel line came right after a whole line (its start is the
// line); if shorter, a kernel line interrupted it and the next clean line,
// short by as much, completes it; a waiting line that neither fits was
// foreign through and through. Kernel lines on a console start with their
// timestamp ("[   25.459336] "), which no base64 holds; one without (a
// kernel built without CONFIG_PRINTK_TIME) may be misread, which the
// caller's digest check catches.
func cleanBase64(lines []string, size int64) []string {
	total := int((size + 2) / 3 * 4)
	var out []string
	done := 0
	take := func(l string) { out, done = append(out, l), done+len(l) }
	pending := ""
	for _, l := range lines {
		if l == "" || done >= total {
			continue
		}
		w := min(b64Line, total-done)
		clean := isBase64(l)
		if pending != "" {
			switch run := base64Run(pending); {
			case clean && len(l) < w && w-len(l) == run:
				take(pending[:w-len(l)] + l) // a head, completed
				pending = ""
				continue
			case run == w:
				// A whole line, then a kernel line ("[  12.3] …": its
				// timestamp ends the run). A longer run is a kernel line
				// without a timestamp, passed over; were it not, the
				// digest says so and the file is fetched again.
				take(pending[:w])
				if done >= total {
					continue
				}
				w = min(b64Line, total-done)
			case !clean:
				continue // another foreign line after the first
			}
			pending = ""
		}
		switch {
		case clean && len(l) == w:
			take(l)
		case !clean:
			pending = l
		}
	}
	if pending != "" && done < total && base64Run(pending) == total-done {
		take(pending[:total-done])
	}
	return out
}

// base64Run is the length of l's base64 start.
func base64Run(l string) int {
	i := 0
	for i < len(l) && isBase64(l[i:i+1]) {
		i++
	}
	return i
}

// isBase64 reports whether l is all base64 alphabet (with padding).
func isBase64(l string) bool {
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return true
}
