package bootmenu

import (
	"path"
	"strings"
	"time"
)

// record turns the LABEL being defined into an entry (or a non-boot menu
// item) of its menu.
func (p *sysParser) record() error {
	l := p.cur
	if l == nil {
		return nil
	}
	p.cur = nil
	m := l.menu
	if l.nav || l.disabled {
		m.items = append(m.items, -1)
		p.labels = append(p.labels, recorded{name: l.name, entry: -1, hide: l.hide})
		return nil
	}
	e := p.entry(l)
	idx := len(p.s.res.Entries)
	if err := p.s.add(e); err != nil {
		return err
	}
	p.s.checkFiles(&p.s.res.Entries[idx])
	if !l.hide {
		if l.def {
			m.def = len(m.items)
		}
		m.items = append(m.items, idx)
	}
	p.labels = append(p.labels, recorded{name: l.name, entry: idx, hide: l.hide})
	return nil
}

// entry builds the Entry of a label: the command line is the rest of the
// KERNEL line, then APPEND (the label's, else the global one; "-" is
// none), then " initrd=" for INITRD; the initrds are the first initrd= on
// that line, as syslinux's Linux loader takes them.
func (p *sysParser) entry(l *sysLabel) Entry {
	shown := l.name
	if l.menuLabel != "" {
		shown = l.menuLabel
	}
	e := Entry{Label: stripCaret(shown), Loader: p.loader, Source: l.src, Name: l.name,
		Menu: p.menuPath(l.menu), Hidden: l.hide, Help: l.help, Initrd: []string{}}
	if l.menuLabel != "" {
		e.Hotkey = hotkey(l.menuLabel)
	}
	file, args := word(l.kernel)
	e.Kind = kindOf(l.ktype, file)
	app := l.append
	if !l.hasAppend {
		app = p.appendG
	}
	if strings.TrimSpace(app) == "-" {
		app = ""
	}
	cmd := strings.TrimSpace(strings.Join(nonEmpty(args, strings.TrimSpace(app)), " "))
	if l.hasInitrd {
		cmd = strings.TrimSpace(cmd + " initrd=" + strings.TrimSpace(l.initrd))
	}
	switch e.Kind {
	case KindConfig:
		e.Config = p.resolve(file)
	case KindLocal:
	case KindCom32:
		e.Kernel, e.Append = p.resolveModule(file), cmd
	default:
		e.Kernel, e.Append = p.resolve(file), cmd
	}
	if e.Kind == KindLinux {
		e.Initrd = p.initrds(cmd)
	}
	if l.ipappend != 0 && p.loader == Pxelinux {
		p.s.warn(l.src, "IPAPPEND/SYSAPPEND %d: pxelinux adds network options (ip=, BOOTIF=, …) to entry %q at boot; they are not in Append", l.ipappend, e.Label)
	}
	return e
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// initrds returns the files of the first initrd= word of cmd.
func (p *sysParser) initrds(cmd string) []string {
	out := []string{}
	for _, w := range strings.Fields(cmd) {
		if !strings.HasPrefix(w, "initrd=") {
			continue
		}
		for _, f := range strings.Split(w[len("initrd="):], ",") {
			if f != "" {
				out = append(out, p.resolve(f))
			}
		}
		break
	}
	return out
}

// menuPath lists the labels of m and its parents, outermost first.
func (p *sysParser) menuPath(m *sysMenu) []string {
	var out []string
	for ; m != nil && m.parent != nil; m = m.parent {
		name := stripCaret(m.label)
		if name == "" {
			name = stripCaret(m.title)
		}
		out = append([]string{name}, out...)
	}
	return out
}

// finish decides the default entry and the timeout, as syslinux does after
// reading everything: DEFAULT naming a (not hidden) label makes that label
// the default of its menu; else the menu module starts on the top menu's
// MENU DEFAULT, or its first item. A DEFAULT naming no label and no .c32,
// without UI, is a kernel command line booted as is (without the global
// APPEND, as syslinux 6 does).
func (p *sysParser) finish(root *sysMenu) error {
	cfg := p.s.cfg
	cfg.Default = p.def
	defWord, defArgs := word(p.def)
	menuMode := p.ui != ""
	cfg.UI = p.ui
	if !menuMode && strings.EqualFold(path.Ext(defWord), ".c32") {
		cfg.UI, menuMode = p.def, true
	}
	found := false
	for _, l := range p.labels {
		if defWord != "" && l.name == defWord && !l.hide {
			found = true
			if l.entry >= 0 {
				p.s.res.Entries[l.entry].Default = true
			}
			break
		}
	}
	switch {
	case found:
	case menuMode:
		if defWord != "" && cfg.UI != p.def {
			p.s.warn(p.defAt, "DEFAULT %s names no label; the menu starts on its MENU DEFAULT or first entry", defWord)
		}
		i := root.def
		if i < 0 {
			i = 0
		}
		if i < len(root.items) && root.items[i] >= 0 {
			p.s.res.Entries[root.items[i]].Default = true
		}
	case defWord != "":
		e := Entry{Label: defWord, Loader: p.loader, Source: p.defAt, Kind: kindOf("kernel", defWord),
			Kernel: p.resolve(defWord), Default: true, Initrd: []string{}}
		e.Append = defArgs
		if e.Kind == KindLinux {
			e.Initrd = p.initrds(e.Append)
		}
		if err := p.s.add(e); err != nil {
			return err
		}
		p.s.checkFiles(&p.s.res.Entries[len(p.s.res.Entries)-1])
	default:
		p.s.warn(p.s.cfg.Path, "no DEFAULT and no UI: %s stops at its boot: prompt", p.loader)
		forever := Forever
		cfg.Timeout = &forever
		return nil
	}
	cfg.Timeout = p.waits(menuMode)
	return nil
}

// waits is the time before the default boots: TIMEOUT is in tenths of a
// second, 0 meaning for ever; without a menu and PROMPT 0 the default
// boots at once.
func (p *sysParser) waits(menuMode bool) *time.Duration {
	d := time.Duration(p.timeout) * 100 * time.Millisecond
	switch {
	case !menuMode && p.prompt == 0:
		d = 0
	case p.timeout <= 0:
		d = Forever
	}
	return &d
}
