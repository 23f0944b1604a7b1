package luahost

import (
	"fmt"

	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// luaShell is the Go side of a Lua `shell` (vm:login, vm:shell).
type luaShell struct {
	s *shell.Shell
}

func (s *luaShell) String() string { return s.s.String() }

func (h *Host) checkShell(L *lua.LState) *luaShell { return h.CheckObject(L, 1, "shell").(*luaShell) }

func shellResultTable(L *lua.LState, r shell.Result) *lua.LTable {
	t := L.NewTable()
	t.RawSetString("output", lua.LString(r.Output))
	t.RawSetString("code", lua.LNumber(r.Code))
	return t
}

// dialogCases reads the list part of console:dialog's table.
func (h *Host) dialogCases(L *lua.LState, t *lua.LTable) []shell.Case {
	const fn = "console:dialog"
	n := t.Len()
	if n == 0 {
		h.Errorf(L, vmerr.Usage, "%s: give at least one case: {\"pattern\", send=…} or {\"pattern\", ok=true}", fn)
	}
	cases := make([]shell.Case, 0, n)
	for i := 1; i <= n; i++ {
		ct, ok := t.RawGetInt(i).(*lua.LTable)
		if !ok {
			h.Errorf(L, vmerr.Usage, "%s: case %d must be a table {\"pattern\", send=, ok=, fail=}, got %s", fn, i, t.RawGetInt(i).Type())
		}
		where := fmt.Sprintf("%s: case %d", fn, i)
		pat, ok := ct.RawGetInt(1).(lua.LString)
		if !ok || pat == "" {
			h.Errorf(L, vmerr.Usage, "%s: the first item must be the pattern (a regex string)", where)
		}
		// The pattern is the list item; Opts checks the named keys.
		o := h.OptsOf(L, namedKeys(L, ct), where)
		c := shell.Case{Pattern: string(pat), Retries: o.Int("retries", -1)}
		if o.Has("send") {
			c.Send = o.String("send", "")
			c.Line = !o.Bool("raw", false)
		} else {
			o.Get("raw")
		}
		c.Secret = o.Bool("secret", false)
		c.OK = o.Bool("ok", false)
		c.Fail = o.String("fail", "")
		c.FailKind = o.String("kind", "")
		o.Done()
		acts := 0
		for _, b := range []bool{o.Has("send"), c.OK, c.Fail != ""} {
			if b {
				acts++
			}
		}
		if acts > 1 {
			h.Errorf(L, vmerr.Usage, "%s: send, ok and fail exclude each other", where)
		}
		cases = append(cases, c)
	}
	return cases
}

// namedKeys returns a copy of t without its list part, for Opts (which
// refuses keys it was not asked about).
func namedKeys(L *lua.LState, t *lua.LTable) *lua.LTable {
	n := t.Len()
	out := L.NewTable()
	t.ForEach(func(k, v lua.LValue) {
		if num, ok := k.(lua.LNumber); ok && float64(num) == float64(int(num)) && int(num) >= 1 && int(num) <= n {
			return
		}
		out.RawSet(k, v)
	})
	return out
}

func init() {
	ExtendClass("vm",
		Func{
			Name: "login", Params: "opts: {user: string, password?: string, timeout?: duration}", Returns: "vmscript.Shell",
			Doc: "Log in on the serial getty (waits for \"login: \" through boot messages); returns a shell channel; kind \"auth\" on Login incorrect.",
			Fn: func(h *Host, L *lua.LState) int {
				v := h.checkVM(L)
				o := h.Opts(L, 2, "vm:login")
				opt := shell.LoginOptions{
					User:     o.String("user", ""),
					Password: o.String("password", ""),
					Timeout:  o.Duration("timeout", shell.DefaultLoginTimeout),
					Run:      h.opt.Run,
				}
				o.Done()
				if opt.User == "" {
					h.Errorf(L, vmerr.Usage, "vm:login: option \"user\" is required")
				}
				s, err := shell.Login(h.ctx, v.m.Console, opt)
				if err != nil {
					h.Raise(L, err)
				}
				L.Push(h.NewObject(L, "shell", &luaShell{s: s}))
				return 1
			},
		},
		Func{
			Name: "shell", Params: "opts?: {timeout?: duration, user?: string}", Returns: "vmscript.Shell",
			Doc: "Take over a shell already at its prompt on the serial console (mini lab, emergency shell); returns a shell channel.",
			Fn: func(h *Host, L *lua.LState) int {
				v := h.checkVM(L)
				o := h.Opts(L, 2, "vm:shell")
				opt := shell.Options{
					Timeout: o.Duration("timeout", shell.DefaultAttachTimeout),
					User:    o.String("user", ""),
					Run:     h.opt.Run,
				}
				o.Done()
				s, err := shell.Attach(h.ctx, v.m.Console, opt)
				if err != nil {
					h.Raise(L, err)
				}
				L.Push(h.NewObject(L, "shell", &luaShell{s: s}))
				return 1
			},
		},
	)
	ExtendClass("console", Func{
		Name:    "dialog",
		Params:  "cases: {[integer]: {[1]: string, send?: string, raw?: boolean, secret?: boolean, ok?: boolean, fail?: string, kind?: string, retries?: integer}, timeout?: duration, retries?: integer, from?: \"start\"|\"now\"|table}",
		Returns: "{index: integer, text: string, output: string}",
		Doc:     "Answer prompts until an ok case matches (regex cases in list order, send adds Enter, one overall deadline); returns the ok case.",
		Fn: func(h *Host, L *lua.LState) int {
			c := h.checkConsole(L)
			t := L.CheckTable(2)
			o := h.OptsOf(L, namedKeys(L, t), "console:dialog")
			opt := shell.DialogOptions{
				Timeout: o.Duration("timeout", shell.DefaultDialogTimeout),
				Retries: o.Int("retries", shell.DefaultDialogRetries),
				From:    h.markOpt(L, o, c.c, "from"),
			}
			o.Done()
			cases := h.dialogCases(L, t)
			res, err := shell.Dialog(h.ctx, c.c, cases, opt)
			if err != nil {
				h.Raise(L, err)
			}
			rt := L.NewTable()
			rt.RawSetString("index", lua.LNumber(res.Index+1))
			rt.RawSetString("text", lua.LString(res.Text))
			rt.RawSetString("output", lua.LString(res.Output))
			L.Push(rt)
			return 1
		},
	})
	RegisterClass(Class{
		Name: "shell",
		Doc:  "A command channel on a VM's serial console (marker protocol: exact output and exit code).",
		Fields: []Field{
			{Name: "user", Type: "string", Doc: "The account the shell runs as (\"\" if unknown)."},
		},
		Get: func(h *Host, L *lua.LState, self any, name string) lua.LValue {
			if name == "user" {
				return lua.LString(self.(*luaShell).s.User())
			}
			return nil
		},
		Methods: []Func{
			{
				Name: "run", Params: "cmd: string, opts?: {timeout?: duration}", Returns: "{output: string, code: integer}",
				Doc: "Run a command (default timeout 2 min); on timeout raises kind \"timeout\" with the partial output and the channel recovers.",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkShell(L)
					cmd := L.CheckString(2)
					timeout := h.TimeoutOpt(L, 3, "shell:run", shell.DefaultRunTimeout)
					r, err := s.s.Run(h.ctx, cmd, shell.RunOptions{Timeout: timeout})
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(shellResultTable(L, r))
					return 1
				},
			},
			{
				Name: "test", Params: "cmd: string, opts?: {timeout?: duration}", Returns: "boolean",
				Doc: "Run a command and return whether it exited 0 (a timeout or a dead VM raises).",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkShell(L)
					cmd := L.CheckString(2)
					timeout := h.TimeoutOpt(L, 3, "shell:test", shell.DefaultRunTimeout)
					r, err := s.s.Run(h.ctx, cmd, shell.RunOptions{Timeout: timeout})
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LBool(r.Code == 0))
					return 1
				},
			},
			{
				Name: "sudo", Params: "cmd: string, opts?: {password?: string, timeout?: duration}", Returns: "{output: string, code: integer, transcript: string}",
				Doc: "Run a command as root through sudo, answering its password prompt; kind \"refused\" on a wrong password; the transcript is saved (password masked).",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkShell(L)
					cmd := L.CheckString(2)
					o := h.Opts(L, 3, "shell:sudo")
					opt := shell.SudoOptions{
						Password: o.String("password", ""),
						Timeout:  o.Duration("timeout", shell.DefaultRunTimeout),
					}
					o.Done()
					r, err := s.s.Sudo(h.ctx, cmd, opt)
					if err != nil {
						h.Raise(L, err)
					}
					t := shellResultTable(L, r.Result)
					t.RawSetString("transcript", lua.LString(r.Transcript))
					L.Push(t)
					return 1
				},
			},
		},
	})
}
