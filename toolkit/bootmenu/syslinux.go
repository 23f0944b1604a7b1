package bootmenu

import (
	"errors"
	"path"
	"strconv"
	"strings"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// The syslinux family (isolinux, syslinux, pxelinux) reads its config line
// by line as if all included files were concatenated: a LABEL's settings
// run until the next LABEL, MENU BEGIN/END/SEPARATOR or the end of the main
// config, even across an INCLUDE. Keywords are case-insensitive and end at
// white space. Relative paths resolve against the working directory: the
// directory the config was found in (isolinux, syslinux) or the TFTP
// prefix (pxelinux), not the including file's directory. A missing INCLUDE
// is skipped silently by syslinux (here: a warning). Lines longer than
// 4095 bytes are split by syslinux (here: a warning).

// sysMaxLine is the longest line syslinux reads in one piece.
const sysMaxLine = 4095

// sysMenu is one menu (the top one or a MENU BEGIN submenu).
type sysMenu struct {
	tag, label, title string
	parent            *sysMenu
	parentItem        int
	// items are the menu's entries in order: an index into Result.Entries
	// for a boot entry, -1 for a submenu, separator or navigation item.
	items []int
	// def is the MENU DEFAULT item, -1 when none.
	def int
	src string
}

// sysLabel is a LABEL being defined.
type sysLabel struct {
	name, kernel, ktype string
	append, initrd      string
	hasAppend           bool
	hasInitrd           bool
	menuLabel           string
	help                string
	def, hide, disabled bool
	nav                 bool
	ipappend            uint64
	src                 string
	menu                *sysMenu
}

// sysParser parses one syslinux-family config.
type sysParser struct {
	s          *session
	loader     string
	cwd        string
	appendG    string
	sysappend  uint64
	def, defAt string
	ui         string
	paths      []string
	timeout    int
	prompt     int
	cur        *sysLabel
	menus      []*sysMenu
	// labels are all recorded labels with their entry index (-1 when the
	// label is no boot entry), for DEFAULT.
	labels []recorded
}

type recorded struct {
	name  string
	entry int
	hide  bool
}

// kernelTypes are syslinux's kernel-like keywords.
var kernelTypes = map[string]bool{"kernel": true, "linux": true, "boot": true, "bss": true, "pxe": true,
	"fdimage": true, "comboot": true, "com32": true, "config": true, "localboot": true}

func parseSyslinux(s *session, cfg string, opt Options) error {
	p := &sysParser{s: s, loader: opt.Loader, cwd: opt.Dir}
	if p.cwd == "" {
		p.cwd = path.Dir(cfg)
		if p.loader == Pxelinux {
			p.cwd = "/"
		}
	}
	p.cwd = path.Clean("/" + p.cwd)
	root := &sysMenu{def: -1}
	p.menus = []*sysMenu{root}
	if err := p.file(cfg, ""); err != nil {
		return err
	}
	if err := p.record(); err != nil {
		return err
	}
	for len(p.menus) > 1 {
		m := p.menus[len(p.menus)-1]
		s.warn(m.src, "MENU BEGIN without MENU END")
		p.menus = p.menus[:len(p.menus)-1]
	}
	return p.finish(root)
}

// file parses the config at p; from is the INCLUDE's source ("" for the
// main config).
func (p *sysParser) file(name, from string) error {
	f, err := p.s.open(name, from)
	if errors.Is(err, errNotFound) {
		if from == "" {
			return vmerr.New(vmerr.NotFound, "%s config %s does not exist", p.loader, name).With("path", name)
		}
		p.s.warn(from, "included file %s does not exist (%s skips it)", name, p.loader)
		return nil
	}
	if err != nil {
		return err
	}
	defer p.s.done()
	for i := 0; i < len(f.lines); i++ {
		line := f.lines[i]
		src := f.src(i + 1)
		if len(line) > sysMaxLine {
			p.s.warn(src, "line is %d bytes; %s reads the bytes after %d as another line", len(line), p.loader, sysMaxLine)
		}
		kw, rest := word(line)
		switch strings.ToLower(kw) {
		case "", "#":
			continue
		case "menu":
			err = p.menu(rest, src)
		case "text":
			i = p.text(f, i, rest)
		case "include":
			file, _ := word(rest)
			err = p.file(p.resolve(file), src)
		default:
			err = p.directive(strings.ToLower(kw), rest, src)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// word splits the first white-space separated word off s (both trimmed).
func word(s string) (string, string) {
	s = strings.TrimLeft(s, " \t\f\v")
	if strings.HasPrefix(s, "#") {
		return "#", ""
	}
	i := strings.IndexAny(s, " \t\f\v")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t\f\v")
}

// directive handles the non-menu keywords.
func (p *sysParser) directive(kw, rest, src string) error {
	switch {
	case kw == "label":
		if err := p.record(); err != nil {
			return err
		}
		name, _ := word(rest)
		p.cur = &sysLabel{name: name, kernel: name, ktype: "kernel", ipappend: p.sysappend, src: src, menu: p.top()}
	case kw == "append":
		if p.cur != nil {
			p.cur.append, p.cur.hasAppend = rest, true
		} else {
			p.appendG = rest
		}
	case kw == "initrd":
		if p.cur == nil {
			p.s.warn(src, "INITRD outside a LABEL is ignored by %s", p.loader)
			return nil
		}
		p.cur.initrd, p.cur.hasInitrd = rest, true
	case kernelTypes[kw]:
		if p.cur == nil {
			p.s.warn(src, "%s outside a LABEL is ignored by %s", strings.ToUpper(kw), p.loader)
			return nil
		}
		p.cur.kernel, p.cur.ktype = rest, kw
	case kw == "ipappend" || kw == "sysappend":
		n, _ := strconv.ParseUint(firstWord(rest), 0, 32)
		if p.cur != nil {
			p.cur.ipappend = n
		} else {
			p.sysappend = n
		}
	case kw == "default":
		p.def, p.defAt = rest, src
	case kw == "ui":
		p.ui = rest
	case kw == "timeout":
		p.timeout = atoi(rest)
	case kw == "prompt":
		p.prompt = atoi(rest)
	case kw == "path":
		for _, d := range strings.Split(firstWord(rest), ":") {
			if d != "" {
				p.paths = append(p.paths, p.resolve(d))
			}
		}
	}
	return nil
}

func firstWord(s string) string { w, _ := word(s); return w }

// atoi reads a leading decimal number as C's atoi does (0 when none).
func atoi(s string) int {
	s = strings.TrimSpace(s)
	n, i := 0, 0
	neg := strings.HasPrefix(s, "-")
	if neg {
		i = 1
	}
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9' && n < 1<<30; i++ {
		n = n*10 + int(s[i]-'0')
	}
	if neg {
		return -n
	}
	return n
}

func (p *sysParser) top() *sysMenu { return p.menus[len(p.menus)-1] }

// menu handles MENU sub-keywords.
func (p *sysParser) menu(rest, src string) error {
	kw, arg := word(rest)
	m := p.top()
	switch strings.ToLower(kw) {
	case "label":
		if p.cur != nil {
			p.cur.menuLabel = arg
		} else if m.parent != nil {
			m.label = arg
			if m.title == "" {
				m.title = stripCaret(arg)
			}
		}
	case "title":
		m.title = arg
		if m.parent != nil && m.label == m.tag {
			m.label = arg
		}
	case "default":
		if p.cur != nil {
			p.cur.def = true
		} else if m.parent != nil {
			m.parent.def = m.parentItem
		}
	case "hide":
		if p.cur != nil {
			p.cur.hide = true
		}
	case "disable", "disabled":
		if p.cur != nil {
			p.cur.disabled = true
		}
	case "exit", "goto", "quit":
		if p.cur != nil {
			p.cur.nav = true
		}
	case "separator":
		if err := p.record(); err != nil {
			return err
		}
		m.items = append(m.items, -1)
	case "begin":
		return p.begin(firstWord(arg), src)
	case "end":
		return p.end(src)
	case "include":
		file, tag := word(arg)
		if tag == "" {
			return p.file(p.resolve(file), src)
		}
		if err := p.begin(tag, src); err != nil {
			return err
		}
		if err := p.file(p.resolve(file), src); err != nil {
			return err
		}
		return p.end(src)
	}
	return nil
}

func (p *sysParser) begin(tag, src string) error {
	if err := p.record(); err != nil {
		return err
	}
	if len(p.menus) > p.s.lim.Depth {
		return fail(src, "MENU BEGIN nested more than %d deep", p.s.lim.Depth)
	}
	m := p.top()
	sub := &sysMenu{tag: tag, label: tag, parent: m, parentItem: len(m.items), def: -1, src: src}
	m.items = append(m.items, -1)
	p.menus = append(p.menus, sub)
	return nil
}

func (p *sysParser) end(src string) error {
	if err := p.record(); err != nil {
		return err
	}
	if len(p.menus) == 1 {
		p.s.warn(src, "MENU END without MENU BEGIN (ignored)")
		return nil
	}
	p.menus = p.menus[:len(p.menus)-1]
	return nil
}

// text reads a TEXT block up to ENDTEXT, returning the index of its last
// line. TEXT HELP becomes the current label's help.
func (p *sysParser) text(f *file, i int, rest string) int {
	help := strings.EqualFold(firstWord(rest), "help")
	var lines []string
	j := i + 1
	for ; j < len(f.lines); j++ {
		if strings.EqualFold(firstWord(f.lines[j]), "endtext") {
			break
		}
		lines = append(lines, f.lines[j])
	}
	if j == len(f.lines) {
		p.s.warn(f.src(i+1), "TEXT without ENDTEXT: the rest of the file is text")
	}
	if help && p.cur != nil {
		p.cur.help = strings.Join(lines, "\n")
	}
	return j
}

// stripCaret removes the hotkey markers from a menu label.
func stripCaret(s string) string { return strings.ReplaceAll(s, "^", "") }

// hotkey returns the character after the first "^", lowercased.
func hotkey(s string) string {
	i := strings.IndexByte(s, '^')
	if i < 0 || i+1 >= len(s) {
		return ""
	}
	return strings.ToLower(s[i+1 : i+2])
}

// resolve makes a config path absolute against the working directory.
func (p *sysParser) resolve(f string) string {
	switch {
	case f == "":
		return ""
	case strings.Contains(f, "://"):
		return f
	case strings.HasPrefix(f, "::"):
		return path.Clean("/" + f[2:])
	case strings.HasPrefix(f, "/"):
		return path.Clean(f)
	}
	return path.Join(p.cwd, f)
}

// resolveModule finds a .c32 module in the working directory or on PATH.
func (p *sysParser) resolveModule(f string) string {
	first := p.resolve(f)
	if strings.Contains(f, "/") || strings.Contains(f, "://") || p.s.exists(first) {
		return first
	}
	for _, d := range p.paths {
		if c := path.Join(d, f); p.s.exists(c) {
			return c
		}
	}
	return first
}

// kindOf maps a syslinux kernel type (with KERNEL's type taken from the
// file's extension) to an entry kind.
func kindOf(ktype, file string) string {
	if ktype == "kernel" {
		switch strings.ToLower(path.Ext(file)) {
		case ".c32":
			ktype = "com32"
		case ".cbt", ".com":
			ktype = "comboot"
		case ".bs", ".bin":
			ktype = "boot"
		case ".bss":
			ktype = "bss"
		case ".0":
			ktype = "pxe"
		case ".img":
			ktype = "fdimage"
		default:
			ktype = "linux"
		}
	}
	switch ktype {
	case "linux":
		return KindLinux
	case "com32":
		return KindCom32
	case "config":
		return KindConfig
	case "localboot":
		return KindLocal
	}
	return KindChain
}
