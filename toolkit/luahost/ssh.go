package luahost

import (
	"path/filepath"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/ssh"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// Default bounds of the ssh bindings.
const (
	defaultSSHConnectTimeout = 30 * time.Second
	defaultSSHSessionTimeout = time.Minute
)

func sshModule() Module {
	return Module{
		Name: "ssh",
		Doc:  "SSH to guests: run commands with exit codes, copy files, interactive pty sessions.",
		Funcs: []Func{{
			Name:    "connect",
			Params:  "opts: {host?: string, port?: integer, user?: string, password?: string, key?: string, keys?: string[], timeout?: duration, host_key?: string, name?: string, sftp?: boolean}",
			Returns: "vmscript.SSHClient", Fn: (*Host).sshConnect,
			Doc: "Connect and log in, retrying until the server answers or timeout (default 30 s); host_key is \"accept-new\" (default), \"insecure\" or a pinned public key.",
		}},
	}
}

func sshClientClass() Class {
	return Class{
		Name: "ssh_client",
		Doc:  "An SSH connection to a guest (from ssh.connect or vm:ssh).",
		Fields: []Field{
			{Name: "host", Type: "string", Doc: "The server's address."},
			{Name: "port", Type: "integer", Doc: "The server's port."},
			{Name: "user", Type: "string", Doc: "The login name."},
			{Name: "transcript", Type: "string", Doc: "Path of the transcript of every command's output (\"\" without a run directory)."},
		},
		Get: (*Host).sshField,
		Methods: append(runnerMethods("ssh_client", "10 min"),
			Func{Name: "wait", Params: "opts?: {timeout?: duration}", Fn: (*Host).sshWait,
				Doc: "Check the connection and, if it is gone (guest rebooted), reconnect, retrying until timeout (default: the connect timeout)."},
			Func{Name: "get", Params: "remote: string, local: string, opts?: {timeout?: duration}", Returns: "string", Fn: (*Host).sshGet,
				Doc: "Copy a guest file to local (relative paths go to the run directory) via SFTP, or cat when the server has none; returns the local path."},
			Func{Name: "put", Params: "local: string, remote: string, opts?: {timeout?: duration}", Returns: "integer", Fn: (*Host).sshPut,
				Doc: "Copy a local file to the guest via SFTP, or cat when the server has none; returns the number of bytes."},
			Func{Name: "session", Params: "opts?: {pty?: boolean, term?: string, cols?: integer, rows?: integer, command?: string}", Returns: "vmscript.Console", Fn: (*Host).sshSession,
				Doc: "Start an interactive session (a pty by default) and return it as a console: expect, send, sendline, mark, lines, tail as on a serial console."},
			Func{Name: "close", Fn: (*Host).sshClose, Doc: "Close the connection and its sessions (also done when the script ends)."},
		),
	}
}

func (h *Host) checkSSH(L *lua.LState) *ssh.Client {
	return h.CheckObject(L, 1, "ssh_client").(*ssh.Client)
}

// sshObject is a client as a Lua `ssh_client`, closed when the host closes.
func (h *Host) sshObject(L *lua.LState, c *ssh.Client) *lua.LUserData {
	h.OnClose("close ssh "+c.Name(), func() { c.Close() })
	return h.NewObject(L, "ssh_client", c)
}

func (h *Host) sshConnect(L *lua.LState) int {
	L.CheckTable(1)
	o := h.Opts(L, 1, "ssh.connect")
	cfg := sshLogin(o)
	cfg.Host, cfg.Port, cfg.Name = o.String("host", "127.0.0.1"), o.Int("port", 22), o.String("name", "")
	timeout := o.Duration("timeout", defaultSSHConnectTimeout)
	o.Done()
	cfg.Run, cfg.WaitTimeout = h.opt.Run, timeout
	ctx, cancel := h.withTimeout(timeout)
	defer cancel()
	c, err := ssh.Wait(ctx, cfg)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(h.sshObject(L, c))
	return 1
}

func (h *Host) sshField(L *lua.LState, self any, name string) lua.LValue {
	c := self.(*ssh.Client)
	cfg := c.Config()
	switch name {
	case "host":
		return lua.LString(cfg.Host)
	case "port":
		return lua.LNumber(cfg.Port)
	case "user":
		return lua.LString(cfg.User)
	case "transcript":
		return lua.LString(c.TranscriptPath())
	}
	return nil
}

func (h *Host) sshWait(L *lua.LState) int {
	c := h.checkSSH(L)
	ctx, cancel := h.withTimeout(h.TimeoutOpt(L, 2, "ssh_client:wait", c.Config().WaitTimeout))
	defer cancel()
	if err := c.Wait(ctx); err != nil {
		h.Raise(L, err)
	}
	return 0
}

// localPath resolves a local path: relative names go to the run directory,
// like other artifacts.
func (h *Host) localPath(p string) string {
	if h.opt.Run != nil && !filepath.IsAbs(p) {
		return h.opt.Run.Path(p)
	}
	return p
}

func (h *Host) sshGet(L *lua.LState) int {
	c := h.checkSSH(L)
	remote, local := L.CheckString(2), h.localPath(L.CheckString(3))
	ctx, cancel := h.withTimeout(h.TimeoutOpt(L, 4, "ssh_client:get", ssh.DefaultCopyTimeout))
	defer cancel()
	if _, _, err := c.Get(ctx, remote, local); err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LString(local))
	return 1
}

func (h *Host) sshPut(L *lua.LState) int {
	c := h.checkSSH(L)
	local, remote := L.CheckString(2), L.CheckString(3)
	ctx, cancel := h.withTimeout(h.TimeoutOpt(L, 4, "ssh_client:put", ssh.DefaultCopyTimeout))
	defer cancel()
	n, _, err := c.Put(ctx, local, remote)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(lua.LNumber(n))
	return 1
}

func (h *Host) sshSession(L *lua.LState) int {
	c := h.checkSSH(L)
	o := h.Opts(L, 2, "ssh_client:session")
	opt := ssh.SessionOptions{PTY: o.Bool("pty", true), Term: o.String("term", ""),
		Cols: o.Int("cols", 0), Rows: o.Int("rows", 0), Command: o.String("command", "")}
	o.Done()
	ctx, cancel := h.withTimeout(defaultSSHSessionTimeout)
	defer cancel()
	sess, err := c.Session(ctx, opt)
	if err != nil {
		h.Raise(L, err)
	}
	h.OnClose("close ssh session "+sess.Console.Name(), func() { sess.Close() })
	L.Push(h.NewObject(L, "console", sess.Console))
	return 1
}

func (h *Host) sshClose(L *lua.LState) int {
	c := h.checkSSH(L)
	if err := c.Close(); err != nil && !strings.Contains(err.Error(), "closed") {
		h.Raise(L, vmerr.Wrap(vmerr.IO, err, "ssh %s: close", c.Name()))
	}
	return 0
}
