package bootmenu

import (
	"strings"
)

type cmdKind int

const (
	cSimple cmdKind = iota
	cIf
	cFor
	cWhile
	cFunc
	cMenu
)

// gcmd is one parsed GRUB command.
type gcmd struct {
	kind cmdKind
	file *file
	line int
	// words are a simple command's words, a menuentry's or submenu's
	// arguments, or a for loop's items.
	words []gword
	// name is the menu keyword ("menuentry", "submenu"), the loop
	// ("while", "until") or variable (for), or the function's name.
	name string
	// conds are the condition lists of if/elif branches (one for while).
	conds [][]*gcmd
	// bodies are the branch bodies of an if (the else body last when
	// hasElse), or the one body of a loop, function or menu.
	bodies  [][]*gcmd
	hasElse bool
}

func (c *gcmd) src() string { return c.file.src(c.line) }

// text renders a simple command's source words.
func (c *gcmd) text() string {
	var ws []string
	for _, w := range c.words {
		ws = append(ws, w.raw)
	}
	return strings.Join(ws, " ")
}

// condText renders a condition list ("[ x$a = xy ]; b").
func condText(list []*gcmd) string {
	var out []string
	for _, c := range list {
		out = append(out, c.text())
	}
	return strings.Join(out, "; ")
}

// parser builds commands from tokens.
type parser struct {
	toks  []token
	i     int
	f     *file
	depth int
	max   int
}

func parseScript(f *file, maxDepth int) ([]*gcmd, error) {
	toks, err := lex(f)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, f: f, max: maxDepth}
	list, err := p.list(nil)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, p.errAt(t, "unexpected %s", describe(t))
	}
	return list, nil
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) take() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) errAt(t token, format string, a ...any) error {
	return fail(p.f.src(t.line), "GRUB syntax error: "+format, a...)
}

func describe(t token) string {
	switch t.kind {
	case tSep:
		return "end of command"
	case tLBrace:
		return "\"{\""
	case tRBrace:
		return "\"}\""
	case tEOF:
		return "end of file"
	}
	return "\"" + t.w.raw + "\""
}

// reserved reports whether t is the reserved word w in command position.
func reserved(t token, words ...string) bool {
	if t.kind != tWord {
		return false
	}
	l := t.w.lit()
	for _, w := range words {
		if l == w {
			return true
		}
	}
	return false
}

// list parses commands until "}", end of file or one of the stop words in
// command position.
func (p *parser) list(stop []string) ([]*gcmd, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > p.max {
		return nil, p.errAt(p.peek(), "blocks nested more than %d deep", p.max)
	}
	var out []*gcmd
	for {
		t := p.peek()
		switch {
		case t.kind == tSep:
			p.take()
			continue
		case t.kind == tEOF || t.kind == tRBrace || reserved(t, stop...):
			return out, nil
		case t.kind == tLBrace:
			return nil, p.errAt(t, "unexpected \"{\"")
		}
		c, err := p.command()
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// command parses one command at a word token.
func (p *parser) command() (*gcmd, error) {
	t := p.peek()
	switch t.w.lit() {
	case "if":
		return p.ifCmd()
	case "for":
		return p.forCmd()
	case "while", "until":
		return p.whileCmd()
	case "function":
		return p.funcCmd()
	case "menuentry", "submenu":
		return p.menuCmd()
	case "then", "elif", "else", "fi", "do", "done", "in":
		return nil, p.errAt(t, "unexpected %q", t.w.lit())
	}
	c := &gcmd{kind: cSimple, file: p.f, line: t.line}
	for p.peek().kind == tWord {
		c.words = append(c.words, p.take().w)
	}
	if p.peek().kind == tLBrace {
		return nil, p.errAt(p.peek(), "unexpected \"{\" after %s", c.words[0].raw)
	}
	return c, nil
}

// expect consumes the reserved word w.
func (p *parser) expect(w string, opening token) error {
	t := p.peek()
	if !reserved(t, w) {
		return p.errAt(t, "expected %q for the %s at line %d, found %s", w, opening.w.raw, opening.line, describe(t))
	}
	p.take()
	return nil
}

func (p *parser) ifCmd() (*gcmd, error) {
	open := p.take()
	c := &gcmd{kind: cIf, file: p.f, line: open.line}
	for {
		cond, err := p.list([]string{"then"})
		if err != nil {
			return nil, err
		}
		if err := p.expect("then", open); err != nil {
			return nil, err
		}
		body, err := p.list([]string{"elif", "else", "fi"})
		if err != nil {
			return nil, err
		}
		c.conds = append(c.conds, cond)
		c.bodies = append(c.bodies, body)
		if !reserved(p.peek(), "elif") {
			break
		}
		p.take()
	}
	if reserved(p.peek(), "else") {
		p.take()
		body, err := p.list([]string{"fi"})
		if err != nil {
			return nil, err
		}
		c.bodies = append(c.bodies, body)
		c.hasElse = true
	}
	return c, p.expect("fi", open)
}

func (p *parser) forCmd() (*gcmd, error) {
	open := p.take()
	c := &gcmd{kind: cFor, file: p.f, line: open.line}
	v := p.take()
	if v.kind != tWord || v.w.lit() == "" {
		return nil, p.errAt(v, "for: expected a variable name, found %s", describe(v))
	}
	c.name = v.w.lit()
	if err := p.expect("in", open); err != nil {
		return nil, err
	}
	for p.peek().kind == tWord {
		c.words = append(c.words, p.take().w)
	}
	return p.loopBody(c, open)
}

func (p *parser) whileCmd() (*gcmd, error) {
	open := p.take()
	c := &gcmd{kind: cWhile, file: p.f, line: open.line, name: open.w.lit()}
	cond, err := p.list([]string{"do"})
	if err != nil {
		return nil, err
	}
	c.conds = [][]*gcmd{cond}
	return p.loopBody(c, open)
}

func (p *parser) loopBody(c *gcmd, open token) (*gcmd, error) {
	for p.peek().kind == tSep {
		p.take()
	}
	if err := p.expect("do", open); err != nil {
		return nil, err
	}
	body, err := p.list([]string{"done"})
	if err != nil {
		return nil, err
	}
	c.bodies = [][]*gcmd{body}
	return c, p.expect("done", open)
}

// block parses "{ list }".
func (p *parser) block(open token) ([]*gcmd, error) {
	if t := p.peek(); t.kind != tLBrace {
		return nil, p.errAt(t, "%s without \"{\" on its line", open.w.raw)
	}
	p.take()
	body, err := p.list(nil)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tRBrace {
		return nil, p.errAt(t, "%s at line %d: no closing \"}\" (found %s)", open.w.raw, open.line, describe(t))
	}
	p.take()
	return body, nil
}

func (p *parser) funcCmd() (*gcmd, error) {
	open := p.take()
	n := p.take()
	if n.kind != tWord || n.w.lit() == "" {
		return nil, p.errAt(n, "function: expected a name, found %s", describe(n))
	}
	body, err := p.block(open)
	if err != nil {
		return nil, err
	}
	return &gcmd{kind: cFunc, file: p.f, line: open.line, name: n.w.lit(), bodies: [][]*gcmd{body}}, nil
}

func (p *parser) menuCmd() (*gcmd, error) {
	open := p.take()
	c := &gcmd{kind: cMenu, file: p.f, line: open.line, name: open.w.lit()}
	for p.peek().kind == tWord {
		c.words = append(c.words, p.take().w)
	}
	body, err := p.block(open)
	if err != nil {
		return nil, err
	}
	c.bodies = [][]*gcmd{body}
	return c, nil
}
