package bootmenu

import (
	"strconv"
	"strings"
	"time"
)

// entryState collects what an entry's body boots.
type entryState struct {
	e   Entry
	unk []string
}

// menuItem records a menuentry or submenu: options --class, --users,
// --hotkey, --id (with "=" or as the next word), --unrestricted; the first
// other word is the title, the rest are the body's $1, $2, ….
func (e *geval) menuItem(ctx *gctx, c *gcmd) error {
	if e.cur != nil {
		e.s.warn(c.src(), "%s inside the body of entry %q is not listed", c.name, e.cur.e.Label)
		return nil
	}
	fields, unk := e.expandAll(ctx, c.words)
	it := &gitem{sub: c.name == "submenu", body: c.bodies[0], src: c.src(), conds: append([]string(nil), e.conds...), entry: -1}
	titled := false
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		opt, val, hasVal := strings.Cut(f, "=")
		switch opt {
		case "--class", "--users", "--hotkey", "--id", "--source":
			if !hasVal && i+1 < len(fields) {
				i++
				val = fields[i]
			}
			if opt == "--hotkey" {
				it.hotkey = strings.ToLower(val)
			} else if opt == "--id" {
				it.id = val
			}
			continue
		case "--unrestricted":
			continue
		case "--":
			continue
		}
		if !titled {
			it.title, titled = f, true
		} else {
			it.args = append(it.args, f)
		}
	}
	if !titled {
		e.s.warn(c.src(), "%s without a title", c.name)
	}
	it.titleUnk = unk
	ctx.items = append(ctx.items, it)
	return nil
}

// flushMenu evaluates the items of a context GRUB shows as a menu.
func (e *geval) flushMenu(ctx *gctx) error {
	e.menus = append(e.menus, ctx)
	return e.flushItems(ctx, ctx.items, nil)
}

func (e *geval) flushItems(ctx *gctx, items []*gitem, menu []string) error {
	for _, it := range items {
		if err := e.enter(it.src); err != nil {
			return err
		}
		err := e.flushItem(ctx, it, menu)
		e.leave()
		if err != nil {
			return err
		}
	}
	return nil
}

// flushItem evaluates one item's body as GRUB does when it is chosen.
func (e *geval) flushItem(ctx *gctx, it *gitem, menu []string) error {
	savedConds, savedBase := e.conds, e.base
	e.conds, e.base = it.conds, len(it.conds)
	e.pos = append(e.pos, it.args)
	defer func() {
		e.conds, e.base = savedConds, savedBase
		e.pos = e.pos[:len(e.pos)-1]
	}()
	if len(it.titleUnk) > 0 {
		e.s.warn(it.src, "the title of %s uses %s; kept verbatim", it.title, strings.Join(dedupeStrings(it.titleUnk), ", "))
	}
	if it.sub {
		child := ctx.child(true)
		if err := e.run(child, it.body); err != nil {
			return err
		}
		it.children = child.items
		return e.flushItems(child, child.items, append(append([]string(nil), menu...), it.title))
	}
	st := &entryState{e: Entry{Label: it.title, Loader: Grub, Source: it.src, Name: it.id, Hotkey: it.hotkey,
		Menu: menu, Initrd: []string{}, Condition: strings.Join(it.conds, " && ")}}
	e.cur = st
	err := e.run(ctx.child(false), it.body)
	e.cur = nil
	if err != nil {
		return err
	}
	if st.e.Kind == "" {
		st.e.Kind = KindOther
	}
	if len(st.unk) > 0 {
		e.s.warn(it.src, "entry %q uses %s; kept verbatim", st.e.Label, strings.Join(dedupeStrings(st.unk), ", "))
	}
	it.entry = len(e.s.res.Entries)
	if err := e.s.add(st.e); err != nil {
		return err
	}
	e.s.checkFiles(&e.s.res.Entries[it.entry])
	return nil
}

func dedupeStrings(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// bootKinds maps GRUB's boot commands to entry kinds.
var bootKinds = map[string]string{"linux": KindLinux, "linuxefi": KindLinux, "linux16": KindLinux,
	"multiboot": KindMultiboot, "multiboot2": KindMultiboot, "kfreebsd": KindBSD, "knetbsd": KindBSD,
	"kopenbsd": KindBSD, "chainloader": KindChain, "configfile": KindConfig, "normal": KindConfig}

var initrdCmds = map[string]bool{"initrd": true, "initrdefi": true, "initrd16": true}

// bootCmd applies a boot command inside an entry's body; done is false
// for any other command. Boot commands under a condition of their own are
// not applied (which branch runs is decided at boot).
func (e *geval) bootCmd(ctx *gctx, c *gcmd, name string, args, unk []string) (bool, error) {
	kind, isBoot := bootKinds[name]
	if !isBoot && !initrdCmds[name] {
		return false, nil
	}
	st := e.cur
	if len(e.conds) > e.base {
		e.s.warn(c.src(), "entry %q: %q runs only %s; not applied", st.e.Label, c.text(), e.conds[len(e.conds)-1])
		return true, nil
	}
	st.unk = append(st.unk, unk...)
	var files []string
	for _, a := range args {
		if strings.HasPrefix(a, "--") && len(files) == 0 {
			continue
		}
		files = append(files, a)
	}
	if r := e.lookup(ctx, "root"); r.unknown {
		for _, f := range files {
			if strings.HasPrefix(f, "/") {
				st.unk = append(st.unk, "${root} ("+r.why+")")
				break
			}
		}
	}
	if initrdCmds[name] {
		st.e.Initrd = []string{}
		for _, f := range files {
			st.e.Initrd = append(st.e.Initrd, e.resolvePath(ctx, f))
		}
		return true, nil
	}
	st.e.Kind = kind
	if len(files) == 0 {
		e.s.warn(c.src(), "entry %q: %s without a file", st.e.Label, name)
		return true, nil
	}
	if kind == KindConfig {
		st.e.Config = e.resolvePath(ctx, files[0])
		return true, nil
	}
	st.e.Kernel = e.resolvePath(ctx, files[0])
	st.e.Append = strings.Join(files[1:], " ")
	return true, nil
}

// summarise marks the default entries and fills the config's summary.
func (e *geval) summarise(top *gctx) {
	shown := top
	for _, m := range e.menus {
		if len(m.items) > 0 {
			shown = m
			break
		}
	}
	cfg := e.s.cfg
	if v, ok := shown.env["default"]; ok {
		cfg.Default = v.s
		if v.unknown {
			cfg.Default = "${default}"
		}
	}
	cfg.Timeout = grubTimeout(shown)
	for _, m := range e.menus {
		e.markDefault(m)
	}
}

// grubTimeout is the menu's timeout: unset or negative waits for ever.
func grubTimeout(ctx *gctx) *time.Duration {
	v, ok := ctx.env["timeout"]
	d := Forever
	switch {
	case !ok:
	case v.unknown:
		return nil
	default:
		n, err := strconv.Atoi(strings.TrimSpace(v.s))
		if err != nil {
			return nil
		}
		if n >= 0 {
			d = time.Duration(n) * time.Second
		}
	}
	return &d
}

// markDefault marks the entry GRUB's "default" selects in a menu: a
// number, a title or an --id, with ">" between submenu levels; unset
// means 0.
func (e *geval) markDefault(ctx *gctx) {
	if len(ctx.items) == 0 {
		return
	}
	v, ok := ctx.env["default"]
	raw := "0"
	if ok {
		raw = v.s
	}
	src := ctx.items[0].src
	if v.unknown {
		e.s.warn(e.s.cfg.Path, "the default entry is only known at boot: default is %s", v.why)
		return
	}
	items := ctx.items
	var it *gitem
	for i, p := range strings.Split(raw, ">") {
		it = findItem(items, p)
		if it == nil {
			e.s.warn(src, "default %q names no entry of this menu", raw)
			return
		}
		if i < len(strings.Split(raw, ">"))-1 {
			items = it.children
		}
	}
	if it.sub || it.entry < 0 {
		e.s.warn(src, "default %q is a submenu, not an entry", raw)
		return
	}
	e.s.res.Entries[it.entry].Default = true
}

func findItem(items []*gitem, key string) *gitem {
	if n, err := strconv.Atoi(key); err == nil {
		if n >= 0 && n < len(items) {
			return items[n]
		}
		return nil
	}
	for _, it := range items {
		if it.title == key || (it.id != "" && it.id == key) {
			return it
		}
	}
	return nil
}
