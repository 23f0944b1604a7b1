package bootmenu

import (
	"errors"
	"path"
	"strings"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// GRUB runs its config as a script, then shows the menu; an entry's body
// runs when it is chosen, with the variables as the script left them. The
// evaluator does the same: it runs the script, collecting menuentry and
// submenu items, then evaluates each body with the final variables (a
// submenu's body is itself a script with items). `source` runs a file in
// the same context; `configfile` and `normal` at script level run a file
// in a new context whose menu GRUB shows at once. Conditions (if, while,
// for over words known only at boot) are not evaluated: both branches are
// run, variables they set become unknown, and entries they define carry
// the condition. Unknown values are kept as ${name} and warned about where
// they reach an entry.

// gval is a variable's value; unknown values carry why. Exported
// variables are the ones a new context (configfile, submenu) inherits.
type gval struct {
	s        string
	unknown  bool
	why      string
	exported bool
}

// partial is how an unknown value is written: its text with the unknown
// parts as ${name} when it was built from some ("(${root})/boot/grub"),
// else ${name}.
func (v gval) partial(name string) string {
	if v.s != "" {
		return v.s
	}
	return "${" + name + "}"
}

// gctx is one GRUB context (the main config, or a configfile'd one, or a
// submenu's body): variables, functions and the menu items defined.
type gctx struct {
	env       map[string]gval
	funcs     map[string]*gcmd
	items     []*gitem
	envLoaded string // source of a load_env, whose variables are unknown
}

// child copies the context for an entry's body (all variables) or, with
// exportedOnly, for a new GRUB context (configfile, a submenu's body), which
// inherits only exported variables. Functions are global.
func (c *gctx) child(exportedOnly bool) *gctx {
	n := &gctx{env: make(map[string]gval, len(c.env)), funcs: make(map[string]*gcmd, len(c.funcs)), envLoaded: c.envLoaded}
	for k, v := range c.env {
		if v.exported || !exportedOnly {
			n.env[k] = v
		}
	}
	for k, v := range c.funcs {
		n.funcs[k] = v
	}
	return n
}

// gitem is a menuentry or submenu as defined.
type gitem struct {
	sub       bool
	title, id string
	hotkey    string
	args      []string
	body      []*gcmd
	src       string
	conds     []string
	titleUnk  []string
	entry     int // index in Result.Entries, -1 for a submenu
	children  []*gitem
}

// geval evaluates GRUB scripts of one parse.
type geval struct {
	s     *session
	steps int
	depth int
	conds []string
	pos   [][]string
	// cur is the entry whose body is being evaluated (nil in script mode).
	cur *entryState
	// base is the number of conditions that hold for the whole entry or
	// submenu being evaluated; a set under more is conditional.
	base int
	// menus are the contexts whose menus GRUB shows, in order, for the
	// default.
	menus []*gctx
}

// runtimeVars are set by GRUB itself at boot; iso_path is set by the GRUB
// that boots an ISO through its loopback.cfg.
var runtimeVars = map[string]bool{"grub_platform": true, "grub_cpu": true, "cmdpath": true, "chosen": true,
	"lang": true, "locale_dir": true, "secondary_locale_dir": true, "net_default_server": true, "iso_path": true}

func parseGrub(s *session, cfg string, opt Options) error {
	e := &geval{s: s}
	ctx := &gctx{env: map[string]gval{}, funcs: map[string]*gcmd{}}
	prefix := opt.Dir
	if prefix == "" {
		prefix = path.Dir(cfg)
	}
	ctx.env["prefix"] = gval{s: path.Clean("/" + prefix), exported: true}
	ctx.env["root"] = gval{s: "", exported: true}
	found, err := e.runFile(ctx, cfg, "")
	if err != nil {
		return err
	}
	if !found {
		return vmerr.New(vmerr.NotFound, "GRUB config %s does not exist", cfg).With("path", cfg)
	}
	if err := e.flushMenu(ctx); err != nil {
		return err
	}
	e.summarise(ctx)
	return nil
}

// runFile parses and runs the file p in ctx; found is false when it does
// not exist.
func (e *geval) runFile(ctx *gctx, p, from string) (bool, error) {
	f, err := e.s.open(p, from)
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	defer e.s.done()
	list, err := parseScript(f, e.s.lim.Depth)
	if err != nil {
		return true, err
	}
	return true, e.run(ctx, list)
}

// enter bounds the nesting of sources, functions and menus.
func (e *geval) enter(src string) error {
	e.depth++
	if e.depth > e.s.lim.Depth {
		return fail(src, "GRUB functions, sources or menus nested more than %d deep", e.s.lim.Depth)
	}
	return nil
}

func (e *geval) leave() { e.depth-- }

// run runs a command list.
func (e *geval) run(ctx *gctx, list []*gcmd) error {
	for _, c := range list {
		e.steps++
		if e.steps > e.s.lim.Steps {
			return fail(c.src(), "more than %d GRUB commands evaluated (a loop or recursion?)", e.s.lim.Steps)
		}
		var err error
		switch c.kind {
		case cSimple:
			err = e.simple(ctx, c)
		case cIf:
			err = e.ifCmd(ctx, c)
		case cFor:
			err = e.forCmd(ctx, c)
		case cWhile:
			err = e.conditional(ctx, c.name+" "+condText(c.conds[0]), c.src(), c.conds[0], c.bodies[0])
		case cFunc:
			ctx.funcs[c.name] = c
		case cMenu:
			err = e.menuItem(ctx, c)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// conditional runs lists under a condition decided at boot.
func (e *geval) conditional(ctx *gctx, cond, src string, lists ...[]*gcmd) error {
	e.conds = append(e.conds, cond+" ("+src+")")
	defer func() { e.conds = e.conds[:len(e.conds)-1] }()
	for _, l := range lists {
		if err := e.run(ctx, l); err != nil {
			return err
		}
	}
	return nil
}

func (e *geval) ifCmd(ctx *gctx, c *gcmd) error {
	for i, cond := range c.conds {
		kw := "if"
		if i > 0 {
			kw = "elif"
		}
		if err := e.conditional(ctx, kw+" "+condText(cond), c.src(), cond, c.bodies[i]); err != nil {
			return err
		}
	}
	if c.hasElse {
		return e.conditional(ctx, "else of if "+condText(c.conds[0]), c.src(), c.bodies[len(c.bodies)-1])
	}
	return nil
}

// forCmd unrolls a loop over words known statically (no glob patterns);
// anything else runs once under the loop as a condition.
func (e *geval) forCmd(ctx *gctx, c *gcmd) error {
	var items []string
	static := true
	for _, w := range c.words {
		fields, unk := e.expand(ctx, w)
		if len(unk) > 0 || strings.ContainsAny(w.raw, "*?[") {
			static = false
		}
		items = append(items, fields...)
	}
	if static {
		for _, it := range items {
			if err := e.assign(ctx, c.name, gval{s: it}, c.src()); err != nil {
				return err
			}
			if err := e.run(ctx, c.bodies[0]); err != nil {
				return err
			}
		}
		return nil
	}
	cond := "for " + c.name + " in " + gwordsRaw(c.words)
	ctx.env[c.name] = gval{unknown: true, why: "the loop variable of " + cond + " at " + c.src()}
	return e.conditional(ctx, cond, c.src(), c.bodies[0])
}

func gwordsRaw(ws []gword) string {
	var out []string
	for _, w := range ws {
		out = append(out, w.raw)
	}
	return strings.Join(out, " ")
}

// assign sets a variable; under a condition the value becomes unknown.
func (e *geval) assign(ctx *gctx, name string, v gval, src string) error {
	if len(v.s) > e.s.lim.Value {
		return fail(src, "value of %s is %d bytes, more than %d", name, len(v.s), e.s.lim.Value)
	}
	if len(e.conds) > e.base && !v.unknown {
		v = gval{unknown: true, why: "set at " + src + " only " + e.conds[len(e.conds)-1]}
	}
	v.exported = ctx.env[name].exported
	ctx.env[name] = v
	return nil
}

// lookup returns a variable's value.
func (e *geval) lookup(ctx *gctx, name string) gval {
	if name[0] >= '0' && name[0] <= '9' || name == "#" || name == "@" || name == "*" {
		var frame []string
		if len(e.pos) > 0 {
			frame = e.pos[len(e.pos)-1]
		}
		switch name {
		case "#":
			return gval{s: itoa(len(frame))}
		case "@", "*":
			return gval{s: strings.Join(frame, " ")}
		}
		n := atoi(name)
		if n >= 1 && n <= len(frame) {
			return gval{s: frame[n-1]}
		}
		return gval{}
	}
	if v, ok := ctx.env[name]; ok {
		return v
	}
	switch {
	case name == "?":
		return gval{unknown: true, why: "the exit status of the previous command"}
	case runtimeVars[name] || strings.HasPrefix(name, "feature_") || strings.HasPrefix(name, "net_") || strings.HasPrefix(name, "pxe_"):
		return gval{unknown: true, why: "set by GRUB at boot"}
	case ctx.envLoaded != "":
		return gval{unknown: true, why: "unset unless the load_env at " + ctx.envLoaded + " sets it"}
	}
	return gval{}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// expand expands a word into fields; unquoted values are split at blanks.
// Unknown values stay as ${name}; unk lists them with why.
func (e *geval) expand(ctx *gctx, w gword) (fields []string, unk []string) {
	var cur strings.Builder
	have := false
	for _, p := range w.parts {
		if !p.isVar {
			cur.WriteString(p.text)
			have = have || p.quoted || p.text != ""
			continue
		}
		v := e.lookup(ctx, p.text)
		if v.unknown {
			cur.WriteString(v.partial(p.text))
			have = true
			unk = append(unk, "${"+p.text+"} ("+v.why+")")
			continue
		}
		if p.quoted {
			cur.WriteString(v.s)
			have = true
			continue
		}
		pieces := strings.FieldsFunc(v.s, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' })
		if len(pieces) > 0 && strings.IndexAny(v.s[:1], " \t\n") == 0 && have {
			fields = append(fields, cur.String())
			cur.Reset()
			have = false
		}
		for i, piece := range pieces {
			if i > 0 {
				fields = append(fields, cur.String())
				cur.Reset()
			}
			cur.WriteString(piece)
			have = true
		}
		if len(pieces) > 0 && strings.IndexAny(v.s[len(v.s)-1:], " \t\n") == 0 {
			fields = append(fields, cur.String())
			cur.Reset()
			have = false
		}
	}
	if have {
		fields = append(fields, cur.String())
	}
	return fields, unk
}

// expandAll expands words into fields.
func (e *geval) expandAll(ctx *gctx, ws []gword) ([]string, []string) {
	var fields, unk []string
	for _, w := range ws {
		f, u := e.expand(ctx, w)
		fields = append(fields, f...)
		unk = append(unk, u...)
	}
	return fields, unk
}
