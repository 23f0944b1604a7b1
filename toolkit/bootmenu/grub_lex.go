package bootmenu

import (
	"strings"
)

// GRUB's script language, as far as boot menus need it: words separated
// by blanks; ";" and newlines end commands; "#" at the start of a word
// starts a comment; '…' is literal; "…" expands $variables and takes \ as
// an escape before $ " \ and newline; \ outside quotes escapes the next
// character (\ newline continues the line); $name, ${name}, $1, $#, $?,
// $@, $* expand; unquoted "{" and "}" are tokens of their own.

type tokKind int

const (
	tWord tokKind = iota
	tSep
	tLBrace
	tRBrace
	tEOF
)

// part is one piece of a word: literal text or a variable reference.
type part struct {
	text   string
	isVar  bool
	quoted bool // inside quotes: no field splitting
}

// word is one shell word before expansion.
type gword struct {
	parts []part
	raw   string
}

// lit returns the word's text when it is one unquoted literal (a reserved
// word or command name), else "".
func (w gword) lit() string {
	if len(w.parts) == 1 && !w.parts[0].isVar && !w.parts[0].quoted {
		return w.parts[0].text
	}
	return ""
}

type token struct {
	kind tokKind
	w    gword
	line int
}

// lexer turns a config into tokens.
type lexer struct {
	src  string
	i    int
	line int
	file *file
}

// lex tokenises a whole file.
func lex(f *file) ([]token, error) {
	l := &lexer{src: strings.Join(f.lines, "\n"), line: 1, file: f}
	var out []token
	for {
		t, err := l.next()
		if err != nil {
			return nil, err
		}
		out = append(out, t)
		if t.kind == tEOF {
			return out, nil
		}
	}
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v' }

func (l *lexer) next() (token, error) {
	for l.i < len(l.src) {
		c := l.src[l.i]
		switch {
		case isBlank(c):
			l.i++
		case c == '\\' && l.i+1 < len(l.src) && l.src[l.i+1] == '\n':
			l.i += 2
			l.line++
		case c == '#':
			for l.i < len(l.src) && l.src[l.i] != '\n' {
				l.i++
			}
		case c == '\n' || c == ';':
			t := token{kind: tSep, line: l.line}
			if c == '\n' {
				l.line++
			}
			l.i++
			return t, nil
		case c == '{':
			l.i++
			return token{kind: tLBrace, line: l.line}, nil
		case c == '}':
			l.i++
			return token{kind: tRBrace, line: l.line}, nil
		default:
			return l.word()
		}
	}
	return token{kind: tEOF, line: l.line}, nil
}

// word reads one word starting at l.i.
func (l *lexer) word() (token, error) {
	start, line := l.i, l.line
	var w gword
	var lit strings.Builder
	flush := func(quoted bool) {
		if lit.Len() > 0 {
			w.parts = append(w.parts, part{text: lit.String(), quoted: quoted})
			lit.Reset()
		}
	}
	for l.i < len(l.src) {
		c := l.src[l.i]
		if isBlank(c) || c == '\n' || c == ';' || c == '{' || c == '}' {
			break
		}
		switch c {
		case '\\':
			l.i++
			if l.i < len(l.src) {
				if l.src[l.i] == '\n' {
					l.line++
				} else {
					lit.WriteByte(l.src[l.i])
				}
				l.i++
			}
		case '\'':
			flush(false)
			end := strings.IndexByte(l.src[l.i+1:], '\'')
			if end < 0 {
				return token{}, fail(l.file.src(line), "GRUB syntax error: unterminated ' quote")
			}
			s := l.src[l.i+1 : l.i+1+end]
			l.line += strings.Count(s, "\n")
			w.parts = append(w.parts, part{text: s, quoted: true})
			l.i += end + 2
		case '"':
			flush(false)
			if err := l.dquote(&w, line); err != nil {
				return token{}, err
			}
		case '$':
			flush(false)
			if p, ok := l.variable(); ok {
				w.parts = append(w.parts, p)
			} else {
				lit.WriteByte('$')
				l.i++
			}
		default:
			lit.WriteByte(c)
			l.i++
		}
	}
	flush(false)
	w.raw = l.src[start:l.i]
	if len(w.parts) == 0 {
		// "" or '' is an empty word.
		w.parts = []part{{text: "", quoted: true}}
	}
	return token{kind: tWord, w: w, line: line}, nil
}

// dquote reads a "…" string at l.i into w.
func (l *lexer) dquote(w *gword, line int) error {
	l.i++
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			w.parts = append(w.parts, part{text: lit.String(), quoted: true})
			lit.Reset()
		}
	}
	hadPart := false
	for l.i < len(l.src) {
		c := l.src[l.i]
		switch {
		case c == '"':
			l.i++
			flush()
			if !hadPart && len(w.parts) == 0 {
				w.parts = append(w.parts, part{text: "", quoted: true})
			}
			return nil
		case c == '\\' && l.i+1 < len(l.src) && strings.IndexByte("$\"\\\n", l.src[l.i+1]) >= 0:
			if l.src[l.i+1] == '\n' {
				l.line++
			} else {
				lit.WriteByte(l.src[l.i+1])
			}
			l.i += 2
		case c == '$':
			if p, ok := l.variable(); ok {
				flush()
				p.quoted = true
				w.parts = append(w.parts, p)
				hadPart = true
			} else {
				lit.WriteByte('$')
				l.i++
			}
		default:
			if c == '\n' {
				l.line++
			}
			lit.WriteByte(c)
			l.i++
		}
	}
	return fail(l.file.src(line), "GRUB syntax error: unterminated \" quote")
}

func isNameByte(c byte, first bool) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
}

// variable reads a $reference at l.i; ok is false for a lone "$".
func (l *lexer) variable() (part, bool) {
	s := l.src[l.i+1:]
	switch {
	case strings.HasPrefix(s, "{"):
		end := strings.IndexByte(s, '}')
		if end < 2 || strings.ContainsAny(s[1:end], " \t\n\"'$") {
			return part{}, false
		}
		l.i += end + 2
		return part{text: s[1:end], isVar: true}, true
	case len(s) > 0 && strings.IndexByte("?#@*", s[0]) >= 0:
		l.i += 2
		return part{text: s[:1], isVar: true}, true
	case len(s) > 0 && s[0] >= '0' && s[0] <= '9':
		n := 1
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		l.i += n + 1
		return part{text: s[:n], isVar: true}, true
	case len(s) > 0 && isNameByte(s[0], true):
		n := 1
		for n < len(s) && isNameByte(s[n], false) {
			n++
		}
		l.i += n + 1
		return part{text: s[:n], isVar: true}, true
	}
	return part{}, false
}
