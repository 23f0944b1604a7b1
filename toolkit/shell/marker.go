package shell

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"strings"

	"github.com/vmscript/vmscript/toolkit/shellquote"
)

// The marker protocol.
//
// Every command is typed as ONE line (one write: typing the command and its
// marker separately let characters slip in between, os-autoinst #2952):
//
//	printf '\173VS%s:B\175\n' NONCE; eval 'CMD'; printf '\173VS%s:E%03d\175\n' NONCE "$?"
//
// so the guest prints "{VS<nonce>:B}", the command's output, then
// "{VS<nonce>:E<code>}" with the exit code in exactly three digits (a
// terminator-less code can be read short, os-autoinst-distri-opensuse
// #15681). The braces are typed as octal escapes and the nonce as a separate
// argument, so the echo of the typed line never contains a marker: the
// start is found in what the command printed, not in its echo (the classic
// "marker matched its own echo" bug). The nonce is fresh for every command
// and every resynchronisation, so a stale marker of an interrupted command
// never ends a later one (os-autoinst #3062).
//
// Kernel messages (printk to the serial console) are written by the kernel
// between any two bytes of the shell's output, so they can land in the
// middle of a marker: "{VSab[  12.345] random printk\ncd:E000}". Silencing
// the kernel first (dmesg -n 1) is not a fix: the command that silences it
// can itself be garbled (labgrid #1749) and journald, other consoles and
// /dev/kmsg writers are not silenced by it. Instead, markers are matched
// tolerantly: between any two characters of a marker may stand the rest of
// a line and any number of whole lines (the shape a printk insertion has),
// and of overlapping candidates the one that starts last (the tightest) is
// taken. Output between the markers is exact when nothing else writes to
// the console; when the kernel does, its lines are part of the output (they
// cannot be told apart from the command's own, e.g. for dmesg).

// nonceLen is the number of random characters in a nonce.
const nonceLen = 12

const nonceAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newNonce returns a fresh random nonce.
func newNonce() string {
	b := make([]byte, nonceLen)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	for i := range b {
		b[i] = nonceAlphabet[int(b[i])%len(nonceAlphabet)]
	}
	return string(b)
}

// sep is what may stand between two characters of a marker: the rest of a
// line and whole lines (foreign output that interrupted it).
const sep = `(?:[^\n]*\n)*?`

// tolerant returns a regex matching lit with sep allowed between any two
// characters. A '#' in lit stands for one captured digit.
func tolerant(lit string) string {
	var b strings.Builder
	for i, r := range lit {
		if i > 0 {
			b.WriteString(sep)
		}
		if r == '#' {
			b.WriteString(`(\d)`)
			continue
		}
		b.WriteString(regexp.QuoteMeta(string(r)))
	}
	return b.String()
}

// marker is one kind of marker for one nonce.
type marker struct {
	lit string // the literal as printed, '#' for digits
	re  *regexp.Regexp
	// anchored matches at the start of the text only.
	anchored *regexp.Regexp
}

func newMarker(lit string) *marker {
	t := tolerant(lit)
	return &marker{lit: lit, re: regexp.MustCompile(t), anchored: regexp.MustCompile(`\A(?:` + t + `)`)}
}

// Regex is the tolerant regex, for console waits.
func (m *marker) Regex() string { return m.re.String() }

// find returns the tightest match of m in text: among candidates it takes
// the one that starts last, so a marker character that happens to occur in
// earlier output does not stretch the match backwards. loc holds the start,
// the end and the submatch pairs, as FindStringSubmatchIndex does.
func (m *marker) find(text string) []int {
	loc := m.re.FindStringSubmatchIndex(text)
	if loc == nil {
		return nil
	}
	first := m.lit[0]
	for s := loc[1] - 1; s > loc[0]; s-- {
		if text[s] != first {
			continue
		}
		if l := m.anchored.FindStringSubmatchIndex(text[s:]); l != nil {
			for i := range l {
				if l[i] >= 0 {
					l[i] += s
				}
			}
			return l
		}
	}
	return loc
}

// digits returns the captured digits of a match as a number.
func digits(text string, loc []int) int {
	n := 0
	for i := 2; i+1 < len(loc); i += 2 {
		if loc[i] < 0 {
			continue
		}
		n = n*10 + int(text[loc[i]]-'0')
	}
	return n
}

// markers of one command.
type cmdMarkers struct {
	nonce string
	begin *marker
	end   *marker
}

func newCmdMarkers() *cmdMarkers {
	n := newNonce()
	return &cmdMarkers{nonce: n, begin: newMarker("{VS" + n + ":B}"), end: newMarker("{VS" + n + ":E###}")}
}

// runLine is the line typed for cmd. The command runs in the shell itself
// (eval), so cd and variables persist between commands.
func (cm *cmdMarkers) runLine(cmd string) string {
	return fmt.Sprintf(`printf '\173VS%%s:B\175\n' %s; eval %s; printf '\173VS%%s:E%%03d\175\n' %s "$?"`,
		cm.nonce, shellquote.Quote(cmd), cm.nonce)
}

// readyLine prints the ready marker of nonce.
func readyLine(nonce string) string {
	return fmt.Sprintf(`printf '\173VS%%s:R\175\n' %s`, nonce)
}

func readyMarker(nonce string) *marker { return newMarker("{VS" + nonce + ":R}") }

// parsed is a command's output located in the console text.
type parsed struct {
	// outStart and outEnd delimit the output in the text.
	outStart, outEnd int
	// beginFound: the start marker was seen.
	beginFound bool
	// endFound: the end marker was seen; code is valid.
	endFound bool
	code     int
}

// parseRun locates the output and the exit code of one command in text (the
// console text from before the command was typed).
func (cm *cmdMarkers) parseRun(text string) parsed {
	var p parsed
	b := cm.begin.find(text)
	if b == nil {
		return p
	}
	p.beginFound = true
	// The output starts after the newline that ends the start marker's
	// line (a printk landing between the marker and its newline costs an
	// extra line in the output, never a lost one).
	p.outStart = len(text)
	if nl := strings.IndexByte(text[b[1]:], '\n'); nl >= 0 {
		p.outStart = b[1] + nl + 1
	}
	p.outEnd = len(text)
	e := cm.end.find(text[b[1]:])
	if e == nil {
		return p
	}
	p.endFound = true
	p.code = digits(text[b[1]:], e)
	p.outEnd = b[1] + e[0]
	if p.outEnd < p.outStart {
		p.outStart = p.outEnd
	}
	return p
}
