// Package shellquote writes words for a POSIX shell: the one place vmscript
// quotes anything a shell will read, on the host (QEMU's command line for a
// person to rerun, mmdebstrap hooks, QEMU's exec: migration) and in guests
// (commands over the serial shell and SSH).
package shellquote

import "strings"

// Quote returns s as one shell word in single quotes, each single quote
// inside written as quote, backslash, quote, quote. Every string, the empty
// one included, comes back as exactly one word with its bytes unchanged.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Join renders argv as one line that a POSIX shell runs as the same command,
// for a person to read and rerun: a word of only letters, digits and
// -_./:=,+@% stays bare, every other word is Quoted.
func Join(argv []string) string {
	q := make([]string, len(argv))
	for i, s := range argv {
		q[i] = s
		if s == "" || strings.IndexFunc(s, unsafe) >= 0 {
			q[i] = Quote(s)
		}
	}
	return strings.Join(q, " ")
}

// unsafe reports whether r needs quoting somewhere in a word.
func unsafe(r rune) bool {
	return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		strings.ContainsRune("-_./:=,+@%", r))
}
