package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vmscript/vmscript/toolkit/luahost"
	lua "github.com/yuin/gopher-lua"
	"golang.org/x/term"
)

// Prompts of the REPL: a new chunk, and the continuation of an incomplete one.
const (
	promptNew  = "vmscript> "
	promptMore = "      >> "
)

// historyMax is how many lines of REPL history are kept.
const historyMax = 1000

// replHelp is printed by .help and when the REPL starts.
const replHelp = `Lua REPL: type Lua; an expression (or =expr) prints its value, tables pretty-printed.
An incomplete chunk continues on the next line; Ctrl-C drops it.
vm.console:interact() attaches the terminal to a console (Ctrl-] returns).
Ctrl-D or .quit leaves the REPL; the VMs are then stopped.`

// termRestore, when set, puts the terminal back in cooked mode; the
// abandon path of a run calls it.
var termRestore struct {
	sync.Mutex
	fn func()
}

func setTermRestore(fn func()) {
	termRestore.Lock()
	termRestore.fn = fn
	termRestore.Unlock()
}

func restoreTerminal() {
	termRestore.Lock()
	fn := termRestore.fn
	termRestore.fn = nil
	termRestore.Unlock()
	if fn != nil {
		fn()
	}
}

// repl reads Lua from the terminal and evaluates it on the Lua goroutine.
type repl struct {
	h        *luahost.Host
	p        *progress
	in       *os.File
	out, err io.Writer
	tty      bool
	t        *term.Terminal
	br       *bufio.Reader
	ctrlC    *ctrlCReader
}

// runREPL runs the REPL until the user leaves it (nil), calls vmscript.exit
// (*luahost.ExitError) or the run is cancelled (the cause). It must run on
// the goroutine that owns h.
func runREPL(h *luahost.Host, p *progress, in *os.File, out, errOut io.Writer, banner string) error {
	r := &repl{h: h, p: p, in: in, out: out, err: errOut}
	r.tty = term.IsTerminal(int(in.Fd())) && isTerminal(out)
	if banner != "" {
		fmt.Fprintln(errOut, banner)
	}
	fmt.Fprintln(errOut, replHelp)
	if r.tty {
		r.ctrlC = &ctrlCReader{r: in}
		r.t = term.NewTerminal(struct {
			io.Reader
			io.Writer
		}{r.ctrlC, out}, promptNew)
		r.t.History = loadHistory(historyPath())
	} else {
		r.br = bufio.NewReader(in)
	}
	var chunk []string
	for {
		if err := h.Context().Err(); err != nil {
			return context.Cause(h.Context())
		}
		prompt := promptNew
		if len(chunk) > 0 {
			prompt = promptMore
		}
		line, err := r.readLine(prompt)
		if errors.Is(err, errInterrupted) {
			chunk = nil
			fmt.Fprintln(out, "^C")
			continue
		}
		if err != nil {
			fmt.Fprintln(out)
			return nil
		}
		if len(chunk) == 0 {
			switch strings.TrimSpace(line) {
			case "":
				continue
			case ".quit", ".exit", "quit", "exit":
				return nil
			case ".help", "help":
				fmt.Fprintln(out, replHelp)
				continue
			}
		}
		chunk = append(chunk, line)
		src := strings.Join(chunk, "\n")
		if strings.HasPrefix(src, "=") {
			src = "return " + src[1:]
		}
		vals, err := h.Eval("return "+src, "stdin")
		var se *luahost.SyntaxError
		if errors.As(err, &se) {
			vals, err = h.Eval(src, "stdin")
			if errors.As(err, &se) && strings.HasSuffix(se.Message, "at end of file") {
				continue // incomplete: read more
			}
		}
		chunk = nil
		var exit *luahost.ExitError
		switch {
		case errors.As(err, &exit):
			return err
		case h.Context().Err() != nil:
			return context.Cause(h.Context())
		case err != nil:
			fmt.Fprintln(errOut, describeError(err))
		case len(vals) > 0:
			r.printValues(vals)
		}
	}
}

var errInterrupted = errors.New("interrupted")

func (r *repl) readLine(prompt string) (string, error) {
	if !r.tty {
		line, err := r.br.ReadString('\n')
		if err != nil && line == "" {
			return "", err
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	fd := int(r.in.Fd())
	state, err := term.MakeRaw(fd)
	if err != nil {
		return "", err
	}
	setTermRestore(func() { _ = term.Restore(fd, state) })
	defer restoreTerminal()
	if w, h, err := term.GetSize(fd); err == nil {
		_ = r.t.SetSize(w, h)
	}
	r.t.SetPrompt(prompt)
	r.p.setSink(r.t)
	defer r.p.setSink(nil)
	r.ctrlC.hit = false
	line, err := r.t.ReadLine()
	if r.ctrlC.hit {
		return "", errInterrupted
	}
	if errors.Is(err, term.ErrPasteIndicator) {
		err = nil
	}
	return line, err
}

// ctrlCReader turns Ctrl-C into "end of line, erase it, Enter" and notes
// it, because x/term reports Ctrl-C like Ctrl-D (io.EOF).
type ctrlCReader struct {
	r       io.Reader
	pending []byte
	hit     bool
}

func (c *ctrlCReader) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		buf := make([]byte, len(p))
		n, err := c.r.Read(buf)
		if n == 0 {
			return 0, err
		}
		for _, b := range buf[:n] {
			if b == 3 {
				c.hit = true
				c.pending = append(c.pending, 5, 21, '\r') // Ctrl-E, Ctrl-U, Enter
				continue
			}
			c.pending = append(c.pending, b)
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// printValues prints results Lua-style.
func (r *repl) printValues(vals []lua.LValue) {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = prettyValue(r.h, v, "", map[*lua.LTable]bool{})
	}
	fmt.Fprintln(r.out, strings.Join(parts, "\t"))
}

// prettyDepth bounds how deep nested tables are printed.
const prettyDepth = 8

// prettyValue renders v as Lua source would show it: strings quoted, tables
// as constructors with sorted keys, a table that contains itself as
// <cycle>, objects and error tables through tostring.
func prettyValue(h *luahost.Host, v lua.LValue, indent string, path map[*lua.LTable]bool) string {
	switch x := v.(type) {
	case lua.LString:
		return strconv.Quote(string(x))
	case *lua.LTable:
		if mt, ok := h.L.GetMetatable(x).(*lua.LTable); ok && mt.RawGetString("__tostring") != lua.LNil {
			return h.ToString(x)
		}
		if path[x] {
			return "<cycle>"
		}
		if len(path) >= prettyDepth {
			return "{…}"
		}
		path[x] = true
		defer delete(path, x)
		n := x.Len()
		var items []string
		for i := 1; i <= n; i++ {
			items = append(items, prettyValue(h, x.RawGetInt(i), indent+"  ", path))
		}
		type kv struct {
			k string
			v lua.LValue
		}
		var rest []kv
		x.ForEach(func(k, val lua.LValue) {
			if num, ok := k.(lua.LNumber); ok && float64(num) == float64(int(num)) && int(num) >= 1 && int(num) <= n {
				return
			}
			var key string
			if s, ok := k.(lua.LString); ok && isIdent(string(s)) {
				key = string(s)
			} else {
				key = "[" + prettyValue(h, k, indent+"  ", path) + "]"
			}
			rest = append(rest, kv{key, val})
		})
		sort.Slice(rest, func(i, j int) bool { return rest[i].k < rest[j].k })
		for _, e := range rest {
			items = append(items, e.k+" = "+prettyValue(h, e.v, indent+"  ", path))
		}
		if len(items) == 0 {
			return "{}"
		}
		flat := "{ " + strings.Join(items, ", ") + " }"
		if len(flat)+len(indent) <= 78 && !strings.Contains(flat, "\n") {
			return flat
		}
		return "{\n" + indent + "  " + strings.Join(items, ",\n"+indent+"  ") + ",\n" + indent + "}"
	default:
		return h.ToString(v)
	}
}

var luaKeywords = map[string]bool{"and": true, "break": true, "do": true, "else": true, "elseif": true, "end": true,
	"false": true, "for": true, "function": true, "if": true, "in": true, "local": true, "nil": true, "not": true,
	"or": true, "repeat": true, "return": true, "then": true, "true": true, "until": true, "while": true, "goto": true}

func isIdent(s string) bool {
	if s == "" || luaKeywords[s] {
		return false
	}
	for i, c := range s {
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// historyPath is $VMSCRIPT_HISTORY, or ~/.cache/vmscript/repl_history
// (XDG_CACHE_HOME honoured).
func historyPath() string {
	if p := os.Getenv("VMSCRIPT_HISTORY"); p != "" {
		return p
	}
	base, err := os.UserCacheDir() // $XDG_CACHE_HOME or ~/.cache
	if err != nil {
		return ""
	}
	return filepath.Join(base, "vmscript", "repl_history")
}

// fileHistory is the REPL's history: the last historyMax lines, appended to
// a file as they are entered.
type fileHistory struct {
	path  string
	lines []string // oldest first
}

func loadHistory(path string) *fileHistory {
	h := &fileHistory{path: path}
	if path == "" {
		return h
	}
	if data, err := os.ReadFile(path); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if l != "" {
				h.lines = append(h.lines, l)
			}
		}
		if len(h.lines) > historyMax {
			h.lines = h.lines[len(h.lines)-historyMax:]
		}
	}
	return h
}

// Add records a line (not empty, not a repeat of the previous one).
func (h *fileHistory) Add(entry string) {
	if strings.TrimSpace(entry) == "" || len(h.lines) > 0 && h.lines[len(h.lines)-1] == entry {
		return
	}
	h.lines = append(h.lines, entry)
	if len(h.lines) > historyMax {
		h.lines = h.lines[1:]
	}
	if h.path == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(h.path), 0o755); err != nil {
		return
	}
	f, err := os.OpenFile(h.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	_, _ = f.WriteString(entry + "\n")
	_ = f.Close()
}

// Len is the number of lines.
func (h *fileHistory) Len() int { return len(h.lines) }

// At returns the idx-th most recent line.
func (h *fileHistory) At(idx int) string { return h.lines[len(h.lines)-1-idx] }
