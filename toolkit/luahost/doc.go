package luahost

// The API reference, generated from the registrations: `vmscript doc`,
// docs/api.md and the LuaCATS annotations in lua/types/vmscript.lua all come
// from Modules(), Classes() and Types(), so they cannot drift from the
// bindings.

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// TypeDoc describes a table type that appears in Params or Returns by name,
// such as the options table of qemu.start (vmscript.QemuStartOpts). It has
// no binding: it exists for the reference and for editors' completion.
type TypeDoc struct {
	// Name is the LuaCATS name, e.g. "vmscript.QemuStartOpts".
	Name string
	// Doc is one line about the type.
	Doc string
	// Fields are the table's keys; a Type ending in "?" marks an optional key.
	Fields []Field
}

// Types returns the table types of the reference sorted by name.
func Types() []TypeDoc {
	out := []TypeDoc{bootedEntryType(), labImageType(), patternType(), qemuStartOpts(), warmInfoType()}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Doc lines: one line, no trailing newline.
func oneDocLine(s string) bool { return s != "" && !strings.ContainsAny(s, "\r\n") }

// CheckDocs returns a description of every registered function, class,
// module, field or type without a one-line doc, and every vmscript.* type
// that is referenced but defined nowhere. Empty means the reference is
// complete.
func CheckDocs() []string {
	var bad []string
	for _, m := range Modules() {
		if !oneDocLine(m.Doc) {
			bad = append(bad, "module "+m.Name+": needs a one-line Doc")
		}
		for _, f := range m.Funcs {
			if !oneDocLine(f.Doc) {
				bad = append(bad, m.Name+"."+f.Name+": needs a one-line Doc")
			}
		}
		for _, f := range m.Fields {
			if !oneDocLine(f.Doc) {
				bad = append(bad, m.Name+"."+f.Name+" (field): needs a one-line Doc")
			}
		}
	}
	for _, c := range Classes() {
		if !oneDocLine(c.Doc) {
			bad = append(bad, "class "+c.Name+": needs a one-line Doc")
		}
		for _, f := range c.Methods {
			if !oneDocLine(f.Doc) {
				bad = append(bad, c.Name+":"+f.Name+": needs a one-line Doc")
			}
		}
		for _, f := range c.Fields {
			if !oneDocLine(f.Doc) {
				bad = append(bad, c.Name+"."+f.Name+" (field): needs a one-line Doc")
			}
		}
	}
	defined := map[string]bool{}
	for _, c := range Classes() {
		defined[classType(c.Name)] = true
	}
	for _, t := range Types() {
		defined[t.Name] = true
		if !oneDocLine(t.Doc) {
			bad = append(bad, "type "+t.Name+": needs a one-line Doc")
		}
	}
	for _, name := range referencedTypes() {
		if !defined[name] {
			bad = append(bad, "type "+name+" is referenced but neither a class nor a registered TypeDoc")
		}
	}
	return bad
}

var typeRef = regexp.MustCompile(`vmscript\.[A-Za-z_][A-Za-z0-9_]*`)

// referencedTypes lists the vmscript.* names used in Params, Returns and
// field types.
func referencedTypes() []string {
	seen := map[string]bool{}
	add := func(s string) {
		for _, m := range typeRef.FindAllString(s, -1) {
			seen[m] = true
		}
	}
	for _, m := range Modules() {
		for _, f := range m.Funcs {
			add(f.Params)
			add(f.Returns)
		}
		for _, f := range m.Fields {
			add(f.Type)
		}
	}
	for _, c := range Classes() {
		for _, f := range c.Methods {
			add(f.Params)
			add(f.Returns)
		}
		for _, f := range c.Fields {
			add(f.Type)
		}
	}
	for _, t := range Types() {
		for _, f := range t.Fields {
			add(f.Type)
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// classType returns the LuaCATS type name of a registered class: the
// vmscript.* name the bindings use for it in Params and Returns, matched
// without case and underscores ("ssh_client" is vmscript.SSHClient), or
// CamelCase of the name when nothing refers to it.
func classType(name string) string {
	key := strings.ReplaceAll(strings.ToLower(name), "_", "")
	for _, ref := range referencedTypes() {
		if strings.ToLower(strings.TrimPrefix(ref, "vmscript.")) == key {
			return ref
		}
	}
	var b strings.Builder
	b.WriteString("vmscript.")
	for _, part := range strings.Split(name, "_") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// param is one entry of a Params list.
type param struct {
	name, typ string
	optional  bool
}

// splitTop splits s at commas that are not inside (), {}, [] or quotes.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '(' || c == '{' || c == '[':
			depth++
		case c == ')' || c == '}' || c == ']':
			depth--
		case c == ',' && depth == 0:
			out = append(out, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	if rest := strings.TrimSpace(s[start:]); rest != "" {
		out = append(out, rest)
	}
	return out
}

// parseParams reads "a: string, b?: {x: integer}, ...: any".
func parseParams(s string) []param {
	var out []param
	for _, item := range splitTop(s) {
		name, typ, ok := strings.Cut(item, ":")
		if !ok {
			out = append(out, param{name: item, typ: "any"})
			continue
		}
		p := param{name: strings.TrimSpace(name), typ: strings.TrimSpace(typ)}
		if strings.HasSuffix(p.name, "?") {
			p.name, p.optional = strings.TrimSuffix(p.name, "?"), true
		}
		out = append(out, p)
	}
	return out
}

var namedReturn = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(.+)$`)

// parseReturns reads "string, boolean" or "ok: boolean, err?: string" into
// (type, name) pairs.
func parseReturns(s string) [][2]string {
	var out [][2]string
	for _, item := range splitTop(s) {
		if m := namedReturn.FindStringSubmatch(item); m != nil && !strings.HasPrefix(item, "fun(") {
			out = append(out, [2]string{m[2], m[1]})
			continue
		}
		out = append(out, [2]string{item, ""})
	}
	return out
}

// signature renders "qemu.start(opts: vmscript.QemuStartOpts) -> vmscript.VM".
func signature(owner, sep string, f Func) string {
	s := owner + sep + f.Name + "(" + f.Params + ")"
	if f.Returns != "" {
		s += " -> " + f.Returns
	}
	return s
}

// WriteReference writes the plain-text reference for `vmscript doc`: every
// module and class, or only the one named by topic ("qemu", "vm",
// "qemu.start", "console:expect", "console.expect", a type name). It returns
// false when topic names nothing.
func WriteReference(w io.Writer, topic string) bool {
	owner, member, hasMember := strings.Cut(strings.Replace(topic, ":", ".", 1), ".")
	r := &reference{w: w, member: member, hasMember: hasMember && topic != ""}
	for _, m := range Modules() {
		if topic == "" || m.Name == owner {
			r.heading("%s (module): %s\n", m.Name, m.Doc)
			r.fields(m.Name, m.Fields)
			r.funcs(m.Name, ".", m.Funcs)
			r.end()
		}
	}
	for _, c := range Classes() {
		if topic == "" || c.Name == owner || classType(c.Name) == topic {
			r.heading("%s (object, %s): %s\n", c.Name, classType(c.Name), c.Doc)
			r.fields(c.Name, c.Fields)
			r.funcs(c.Name, ":", c.Methods)
			r.end()
		}
	}
	for _, t := range Types() {
		if topic == "" || t.Name == topic || t.Name == "vmscript."+topic {
			r.found = true
			fmt.Fprintf(w, "%s (table type): %s\n", t.Name, t.Doc)
			for _, f := range t.Fields {
				fmt.Fprintf(w, "  %s: %s\n      %s\n", f.Name, f.Type, f.Doc)
			}
			fmt.Fprintln(w)
		}
	}
	return r.found
}

// reference writes the plain-text reference of WriteReference: a whole
// module or class, or only its member named member.
type reference struct {
	w         io.Writer
	member    string
	hasMember bool
	found     bool
}

func (r *reference) heading(format string, a ...any) {
	if !r.hasMember {
		r.found = true
		fmt.Fprintf(r.w, format, a...)
	}
}

func (r *reference) end() {
	if !r.hasMember {
		fmt.Fprintln(r.w)
	}
}

func (r *reference) funcs(owner, sep string, fns []Func) {
	for _, f := range fns {
		if !r.hasMember || f.Name == r.member {
			r.found = true
			fmt.Fprintf(r.w, "  %s\n      %s\n", signature(owner, sep, f), f.Doc)
		}
	}
}

func (r *reference) fields(owner string, fs []Field) {
	for _, f := range fs {
		if !r.hasMember || f.Name == r.member {
			r.found = true
			fmt.Fprintf(r.w, "  %s.%s: %s\n      %s\n", owner, f.Name, f.Type, f.Doc)
		}
	}
}

// mdEscape keeps a type readable in a Markdown table cell.
func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Markdown returns docs/api.md.
func Markdown() string {
	var b strings.Builder
	b.WriteString("<!-- Generated by `vmscript doc --markdown` (make docs); do not edit. -->\n\n")
	b.WriteString("# vmscript Lua API reference\n\n")
	b.WriteString("Every function below is registered by a binding in `toolkit/luahost`; this page, `vmscript doc`\n")
	b.WriteString("and the editor annotations in `lua/types/vmscript.lua` are generated from those registrations.\n")
	b.WriteString("Durations (`duration`) are seconds or strings such as `\"90s\"`, `\"3m\"`. A failing call raises a\n")
	b.WriteString("table error with `kind`, `message` and context; `tostring` of it reads well.\n\n")
	b.WriteString("## Modules\n\n")
	for _, m := range Modules() {
		fmt.Fprintf(&b, "- [`%s`](#%s) — %s\n", m.Name, anchor("module "+m.Name), m.Doc)
	}
	b.WriteString("\n## Objects\n\n")
	for _, c := range Classes() {
		fmt.Fprintf(&b, "- [`%s`](#%s) (`%s`) — %s\n", c.Name, anchor("object "+c.Name), classType(c.Name), c.Doc)
	}
	b.WriteString("\n")
	fields := func(owner string, fs []Field) {
		if len(fs) == 0 {
			return
		}
		b.WriteString("| field | type | |\n| --- | --- | --- |\n")
		for _, f := range fs {
			fmt.Fprintf(&b, "| `%s.%s` | `%s` | %s |\n", owner, f.Name, mdEscape(f.Type), mdEscape(f.Doc))
		}
		b.WriteString("\n")
	}
	funcs := func(owner, sep string, fns []Func) {
		for _, f := range fns {
			fmt.Fprintf(&b, "#### `%s%s%s`\n\n```lua\n%s\n```\n\n%s\n\n", owner, sep, f.Name, signature(owner, sep, f), f.Doc)
		}
	}
	for _, m := range Modules() {
		fmt.Fprintf(&b, "### module %s\n\n%s\n\n", m.Name, m.Doc)
		fields(m.Name, m.Fields)
		funcs(m.Name, ".", m.Funcs)
	}
	for _, c := range Classes() {
		fmt.Fprintf(&b, "### object %s\n\nType `%s`. %s\n\n", c.Name, classType(c.Name), c.Doc)
		fields(c.Name, c.Fields)
		funcs(c.Name, ":", c.Methods)
	}
	if ts := Types(); len(ts) > 0 {
		b.WriteString("## Table types\n\n")
		for _, t := range ts {
			fmt.Fprintf(&b, "### %s\n\n%s\n\n| key | type | |\n| --- | --- | --- |\n", t.Name, t.Doc)
			for _, f := range t.Fields {
				fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", f.Name, mdEscape(f.Type), mdEscape(f.Doc))
			}
			b.WriteString("\n")
		}
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

// anchor is GitHub's heading anchor for a heading made of words.
func anchor(heading string) string {
	return strings.ReplaceAll(strings.ToLower(heading), " ", "-")
}

// luaIdent is a name lua-language-server accepts for a parameter.
func luaIdent(name string) string {
	if name == "..." {
		return name
	}
	switch name {
	case "end", "function", "local", "return", "and", "or", "not", "in", "repeat", "until", "then", "do", "if", "else", "elseif", "while", "for", "break", "nil", "true", "false", "goto":
		return name + "_"
	}
	return name
}

// comment writes a one-line doc as a LuaCATS description.
func comment(b *strings.Builder, doc string) {
	for _, line := range strings.Split(doc, "\n") {
		b.WriteString("--- " + line + "\n")
	}
}

func writeFunc(b *strings.Builder, owner, sep string, f Func) {
	comment(b, f.Doc)
	ps := parseParams(f.Params)
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = luaIdent(p.name)
		opt := ""
		if p.optional && p.name != "..." {
			opt = "?"
		}
		fmt.Fprintf(b, "---@param %s%s %s\n", names[i], opt, p.typ)
	}
	for _, r := range parseReturns(f.Returns) {
		if r[1] != "" {
			fmt.Fprintf(b, "---@return %s %s\n", r[0], r[1])
		} else {
			fmt.Fprintf(b, "---@return %s\n", r[0])
		}
	}
	fmt.Fprintf(b, "function %s%s%s(%s) end\n\n", owner, sep, f.Name, strings.Join(names, ", "))
}

func writeField(b *strings.Builder, f Field) {
	typ := f.Type
	if typ == "" {
		typ = "any"
	}
	name := f.Name
	if strings.HasSuffix(typ, "?") {
		name += "?"
		typ = strings.TrimSuffix(typ, "?")
	}
	fmt.Fprintf(b, "---@field %s %s %s\n", name, typ, strings.ReplaceAll(f.Doc, "\n", " "))
}

// LuaCATS returns lua/types/vmscript.lua: annotations for lua-language-server
// (add lua/types to workspace.library) so editors complete and check the API.
func LuaCATS() string {
	var b strings.Builder
	b.WriteString("---@meta vmscript\n")
	b.WriteString("-- Generated by `vmscript doc --luacats` (make docs); do not edit.\n")
	b.WriteString("-- LuaCATS annotations of vmscript's Lua API for lua-language-server:\n")
	b.WriteString("-- add this directory to \"workspace.library\" in .luarc.json.\n\n")
	b.WriteString("---A duration: seconds, or a string such as \"90s\", \"3m\", \"1h30m\".\n---@alias duration number|string\n\n")
	b.WriteString("---Script arguments given with -a key=value.\n---@type table<string, string>\nargs = {}\n\n")
	b.WriteString("---Positional arguments after \"--\"; arg[0] is the script.\n---@type table<integer, string>\narg = {}\n\n")
	for _, t := range Types() {
		comment(&b, t.Doc)
		fmt.Fprintf(&b, "---@class %s\n", t.Name)
		for _, f := range t.Fields {
			writeField(&b, f)
		}
		b.WriteString("\n")
	}
	for _, c := range Classes() {
		typ := classType(c.Name)
		local := "__" + strings.ReplaceAll(strings.TrimPrefix(typ, "vmscript."), ".", "_")
		comment(&b, c.Doc)
		fmt.Fprintf(&b, "---@class %s\n", typ)
		for _, f := range c.Fields {
			writeField(&b, f)
		}
		fmt.Fprintf(&b, "local %s = {}\n\n", local)
		for _, f := range c.Methods {
			writeFunc(&b, local, ":", f)
		}
	}
	for _, m := range Modules() {
		comment(&b, m.Doc)
		fmt.Fprintf(&b, "---@class vmscript.module.%s\n", m.Name)
		for _, f := range m.Fields {
			writeField(&b, f)
		}
		fmt.Fprintf(&b, "%s = {}\n\n", m.Name)
		for _, f := range m.Funcs {
			writeFunc(&b, m.Name, ".", f)
		}
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}
