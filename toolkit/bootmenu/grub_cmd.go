package bootmenu

import (
	"path"
	"regexp"
	"strings"
)

// assignment matches a NAME=value word.
var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// notEvaluated are commands that define entries or variables in ways the
// parser does not follow.
var notEvaluated = map[string]bool{"extract_entries_source": true, "extract_entries_configfile": true,
	"extract_legacy_entries_source": true, "extract_legacy_entries_configfile": true, "legacy_source": true,
	"legacy_configfile": true, "syslinux_source": true, "syslinux_configfile": true, "eval": true}

// searchCmds set a variable to the device holding a file, label or UUID.
var searchCmds = map[string]bool{"search": true, "search.file": true, "search.fs_label": true,
	"search.fs_uuid": true, "search_label": true, "search_fs_uuid": true, "search_fs_file": true}

// simple runs one simple command.
func (e *geval) simple(ctx *gctx, c *gcmd) error {
	if len(c.words) == 1 && assignment.MatchString(c.words[0].raw) {
		return e.set(ctx, c, []string{c.words[0].raw})
	}
	fields, unk := e.expandAll(ctx, c.words)
	if len(fields) == 0 {
		return nil
	}
	name, args := fields[0], fields[1:]
	if e.cur != nil {
		if done, err := e.bootCmd(ctx, c, name, args, unk); done || err != nil {
			return err
		}
	}
	switch {
	case name == "set":
		return e.set(ctx, c, nil)
	case name == "unset":
		for _, a := range args {
			delete(ctx.env, a)
		}
	case name == "export":
		for _, a := range args {
			v := ctx.env[a]
			v.exported = true
			ctx.env[a] = v
		}
	case name == "source" || name == ".":
		for _, a := range args {
			if err := e.source(ctx, a, c.src()); err != nil {
				return err
			}
		}
	case name == "configfile" || name == "normal":
		if len(args) > 0 {
			return e.configfile(ctx, args[0], c.src())
		}
	case searchCmds[name]:
		e.search(ctx, name, args, c.src())
	case name == "load_env":
		ctx.envLoaded = c.src()
		e.s.warn(c.src(), "load_env: variables from GRUB's environment block are only known at boot")
	case notEvaluated[name]:
		e.s.warn(c.src(), "%s is not evaluated; the entries it defines at boot are not listed", name)
	case ctx.funcs[name] != nil:
		return e.call(ctx, ctx.funcs[name], args, c.src())
	default:
		e.setFlags(ctx, args, c.src(), name)
	}
	return nil
}

// set handles `set a=b …` and `a=b`; words are raw assignment words when
// the command is an assignment statement.
func (e *geval) set(ctx *gctx, c *gcmd, raw []string) error {
	ws := c.words[1:]
	if raw != nil {
		ws = c.words
	}
	for _, w := range ws {
		// Split at the first "=" of the word's literal text; the value is
		// the rest of the word, expanded without field splitting.
		name, val, unk, ok := e.splitAssign(ctx, w)
		if !ok {
			continue
		}
		v := gval{s: val}
		if len(unk) > 0 {
			v = gval{s: val, unknown: true, why: "set at " + c.src() + " from " + strings.Join(unk, ", ")}
		}
		if err := e.assign(ctx, name, v, c.src()); err != nil {
			return err
		}
	}
	return nil
}

// splitAssign expands an assignment word "name=value" (the value keeps its
// blanks).
func (e *geval) splitAssign(ctx *gctx, w gword) (string, string, []string, bool) {
	var b strings.Builder
	var unk []string
	for _, p := range w.parts {
		if !p.isVar {
			b.WriteString(p.text)
			continue
		}
		v := e.lookup(ctx, p.text)
		if v.unknown {
			b.WriteString(v.partial(p.text))
			unk = append(unk, "${"+p.text+"} ("+v.why+")")
			continue
		}
		b.WriteString(v.s)
	}
	s := b.String()
	i := strings.IndexByte(s, '=')
	if i <= 0 || !assignment.MatchString(s[:i+1]) {
		return "", "", nil, false
	}
	return s[:i], s[i+1:], unk, true
}

// setFlags marks the variable of a --set=VAR / --set VAR option unknown.
func (e *geval) setFlags(ctx *gctx, args []string, src, name string) {
	for i, a := range args {
		v := ""
		switch {
		case strings.HasPrefix(a, "--set="):
			v = a[len("--set="):]
		case a == "--set" && i+1 < len(args):
			v = args[i+1]
		}
		if v != "" {
			ctx.env[v] = gval{unknown: true, why: "set by " + name + " at " + src}
		}
	}
}

// search: a --file search for a file on the medium finds the medium (it
// sets the variable to the medium); a label or UUID search is only known
// at boot.
func (e *geval) search(ctx *gctx, name string, args []string, src string) {
	v, file, target := "root", name == "search.file" || name == "search_fs_file", ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--set="):
			v = a[len("--set="):]
		case a == "--set" || a == "-s":
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				v = args[i+1]
				i++
			}
		case a == "--file" || a == "-f":
			file = true
		case strings.HasPrefix(a, "-"):
		default:
			target = a
		}
	}
	if file && strings.HasPrefix(target, "/") && e.s.exists(path.Clean(target)) {
		ctx.env[v] = gval{s: ""}
		return
	}
	ctx.env[v] = gval{unknown: true, why: "set by " + name + " " + target + " at " + src + ": which device matches is only known at boot"}
}

// source runs a file in the current context.
func (e *geval) source(ctx *gctx, p, src string) error {
	abs, ok := e.filePath(ctx, p, src)
	if !ok {
		return nil
	}
	if err := e.enter(src); err != nil {
		return err
	}
	defer e.leave()
	found, err := e.runFile(ctx, abs, src)
	if err == nil && !found {
		e.s.warn(src, "sourced file %s does not exist (GRUB reports an error and goes on)", abs)
	}
	return err
}

// configfile runs a file in a new context whose menu GRUB shows at once.
func (e *geval) configfile(ctx *gctx, p, src string) error {
	abs, ok := e.filePath(ctx, p, src)
	if !ok {
		return nil
	}
	if err := e.enter(src); err != nil {
		return err
	}
	defer e.leave()
	child := ctx.child(true)
	found, err := e.runFile(child, abs, src)
	if err != nil {
		return err
	}
	if !found {
		e.s.warn(src, "config file %s does not exist (GRUB reports an error and goes on)", abs)
		return nil
	}
	return e.flushMenu(child)
}

// filePath resolves a file a script reads; files elsewhere are warned
// about and skipped.
func (e *geval) filePath(ctx *gctx, p, src string) (string, bool) {
	abs := e.resolvePath(ctx, p)
	if !strings.HasPrefix(abs, "/") {
		e.s.warn(src, "%s is not on this medium (or its device is only known at boot); not read", abs)
		return "", false
	}
	return abs, true
}

// call runs a function with positional parameters.
func (e *geval) call(ctx *gctx, f *gcmd, args []string, src string) error {
	if err := e.enter(src); err != nil {
		return err
	}
	defer e.leave()
	e.pos = append(e.pos, args)
	defer func() { e.pos = e.pos[:len(e.pos)-1] }()
	return e.run(ctx, f.bodies[0])
}

// resolvePath turns a GRUB file name into an absolute path on the medium,
// or keeps its device: "(hd0,1)/vmlinuz". A path without a device is on
// $root; the medium is root "" (as GRUB starts from it) or a cdN device.
func (e *geval) resolvePath(ctx *gctx, p string) string {
	if strings.HasPrefix(p, "(") {
		end := strings.IndexByte(p, ')')
		if end < 0 {
			return p
		}
		dev, rest := p[1:end], p[end+1:]
		if isMedium(dev) {
			return cleanGrub(rest)
		}
		return "(" + dev + ")" + rest
	}
	if !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "+") {
		return p
	}
	root := e.lookup(ctx, "root")
	if root.unknown {
		return "(${root})" + p
	}
	if r := strings.Trim(root.s, "()"); !isMedium(r) {
		return "(" + r + ")" + p
	}
	return cleanGrub(p)
}

func cleanGrub(p string) string {
	if strings.HasPrefix(p, "+") || p == "" {
		return p
	}
	return path.Clean("/" + p)
}

// isMedium reports whether a GRUB device name is the medium itself.
func isMedium(dev string) bool {
	if dev == "" || dev == "cd" {
		return true
	}
	if strings.HasPrefix(dev, "cd") {
		for _, c := range dev[2:] {
			if c < '0' || c > '9' {
				return false
			}
		}
		return true
	}
	return false
}
