// Package guest holds the shell programs vmscript runs inside guests, as
// .sh files (each tested under a real sh), and turns one into a single
// command line that any POSIX shell at a prompt runs: the serial shell and
// SSH send commands one line at a time.
package guest

import (
	"embed"
	"strings"

	"github.com/vmscript/vmscript/toolkit/shellquote"
)

//go:embed *.sh
var scripts embed.FS

// Command returns the one-line command that runs the embedded script name
// (e.g. "renew-mac.sh") with args under sh: the script's text, without its
// comment lines, travels in a printf %b argument with its newlines and
// backslashes escaped, so the line holds no newline and no quoting of the
// script's own is disturbed. It panics on a name that is not embedded (a
// programming error).
func Command(name string, args ...string) string {
	src, err := scripts.ReadFile(name)
	if err != nil {
		panic("guest: no script " + name)
	}
	var body []string
	for _, line := range strings.Split(string(src), "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		body = append(body, trimmed)
	}
	esc := strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(strings.Join(body, "\n"))
	cmd := `sh -c "$(printf %b ` + shellquote.Quote(esc) + `)" ` + strings.TrimSuffix(name, ".sh")
	for _, a := range args {
		cmd += " " + shellquote.Quote(a)
	}
	return cmd
}
