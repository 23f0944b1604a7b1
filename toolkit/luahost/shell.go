package luahost

import (
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/shell"
	lua "github.com/yuin/gopher-lua"
)

func shellClass() Class {
	return Class{
		Name:   "shell",
		Doc:    "A command channel on a VM's serial console (marker protocol: exact output and exit code).",
		Fields: []Field{{Name: "user", Type: "string", Doc: "The account the shell runs as (\"\" if unknown)."}},
		Get:    (*Host).shellField,
		Methods: append(runnerMethods("shell", "2 min"), Func{
			Name: "sudo", Params: "cmd: string, opts?: {password?: string, timeout?: duration}",
			Returns: record.LuaType(shell.SudoResult{}), Fn: (*Host).shellSudo,
			Doc: "Run a command as root through sudo, answering its password prompt; kind \"refused\" on a wrong password; the transcript is saved (password masked).",
		}),
	}
}

func (h *Host) shellField(L *lua.LState, self any, name string) lua.LValue {
	if name == "user" {
		return lua.LString(self.(*shell.Shell).User())
	}
	return nil
}

func (h *Host) shellSudo(L *lua.LState) int {
	s := h.CheckObject(L, 1, "shell").(*shell.Shell)
	cmd := L.CheckString(2)
	o := h.Opts(L, 3, "shell:sudo")
	opt := shell.SudoOptions{Password: o.String("password", ""), Timeout: o.Duration("timeout", shell.DefaultRunTimeout)}
	o.Done()
	r, err := s.Sudo(h.ctx, cmd, opt)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, r))
	return 1
}
