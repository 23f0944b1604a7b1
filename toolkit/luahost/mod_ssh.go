package luahost

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/ssh"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// Default bounds of the ssh bindings.
const (
	defaultSSHConnectTimeout = 30 * time.Second
	defaultVMSSHTimeout      = 2 * time.Minute
	defaultSSHRunTimeout     = 10 * time.Minute
	defaultSSHCopyTimeout    = 10 * time.Minute
	defaultSSHSessionTimeout = time.Minute
)

// luaSSH is the Go side of a Lua `ssh_client`.
type luaSSH struct {
	c      *ssh.Client
	forget func()
	// waitTimeout is the default bound of client:wait.
	waitTimeout time.Duration
}

func (s *luaSSH) String() string { return s.c.String() }

func (h *Host) checkSSH(L *lua.LState) *luaSSH {
	return h.CheckObject(L, 1, "ssh_client").(*luaSSH)
}

// sshAuthOpts reads user, password, key and keys into cfg.
func sshAuthOpts(o *Opts, cfg *ssh.Config) {
	cfg.User = o.String("user", "root")
	cfg.Password = o.String("password", "")
	if k := o.String("key", ""); k != "" {
		cfg.KeyFiles = append(cfg.KeyFiles, k)
	}
	cfg.KeyFiles = append(cfg.KeyFiles, o.StringList("keys")...)
	cfg.HostKey = o.String("host_key", "")
}

// connectSSH waits for the server within timeout and returns the Lua client.
func (h *Host) connectSSH(L *lua.LState, cfg ssh.Config, timeout time.Duration) int {
	cfg.Run = h.opt.Run
	ctx, cancel := h.withTimeout(timeout)
	defer cancel()
	c, err := ssh.Wait(ctx, cfg)
	if err != nil {
		h.Raise(L, err)
	}
	s := &luaSSH{c: c, waitTimeout: timeout}
	s.forget = h.OnClose("close ssh "+c.Name(), func() { c.Close() })
	L.Push(h.NewObject(L, "ssh_client", s))
	return 1
}

// resultTable converts a command's result.
func resultTable(L *lua.LState, r ssh.Result) *lua.LTable {
	t := L.NewTable()
	t.RawSetString("stdout", lua.LString(r.Stdout))
	t.RawSetString("stderr", lua.LString(r.Stderr))
	t.RawSetString("code", lua.LNumber(r.Code))
	if r.Signal != "" {
		t.RawSetString("signal", lua.LString(r.Signal))
	}
	t.RawSetString("duration", lua.LNumber(r.Duration.Seconds()))
	return t
}

// sshLocal resolves a local path for get: relative names go to the run
// directory, like other artifacts.
func (h *Host) sshLocal(p string) string {
	if h.opt.Run != nil && !filepath.IsAbs(p) {
		return h.opt.Run.Path(p)
	}
	return p
}

func init() {
	Register(Module{
		Name: "ssh",
		Doc:  "SSH to guests: run commands with exit codes, copy files, interactive pty sessions.",
		Funcs: []Func{{
			Name:    "connect",
			Params:  "opts: {host?: string, port?: integer, user?: string, password?: string, key?: string, keys?: string[], timeout?: duration, host_key?: string, name?: string, sftp?: boolean}",
			Returns: "vmscript.SSHClient",
			Doc:     "Connect and log in, retrying until the server answers or timeout (default 30 s); host_key is \"accept-new\" (default), \"insecure\" or a pinned public key.",
			Fn: func(h *Host, L *lua.LState) int {
				L.CheckTable(1)
				o := h.Opts(L, 1, "ssh.connect")
				cfg := ssh.Config{Host: o.String("host", "127.0.0.1"), Port: o.Int("port", 22), Name: o.String("name", "")}
				sshAuthOpts(o, &cfg)
				cfg.NoSFTP = !o.Bool("sftp", true)
				timeout := o.Duration("timeout", defaultSSHConnectTimeout)
				o.Done()
				return h.connectSSH(L, cfg, timeout)
			},
		}},
	})
	ExtendClass("vm", Func{
		Name:    "ssh",
		Params:  "opts?: {user?: string, password?: string, key?: string, keys?: string[], timeout?: duration, host_key?: string, sftp?: boolean, via?: \"forward\"|\"lan\", port?: integer}",
		Returns: "vmscript.SSHClient",
		Doc:     "SSH into the VM, waiting until the guest's server lets us in (default 2 min): through its forward to guest port 22 (user networking), or else (or with via = \"lan\") to the address its LAN NIC leased, through the LAN's stack (the lease is waited for within the same timeout).",
		Fn:      func(h *Host, L *lua.LState) int { return h.vmSSH(L) },
	})
	RegisterClass(Class{
		Name: "ssh_client",
		Doc:  "An SSH connection to a guest (from ssh.connect or vm:ssh).",
		Fields: []Field{
			{Name: "host", Type: "string", Doc: "The server's address."},
			{Name: "port", Type: "integer", Doc: "The server's port."},
			{Name: "user", Type: "string", Doc: "The login name."},
			{Name: "transcript", Type: "string", Doc: "Path of the transcript of every command's output (\"\" without a run directory)."},
		},
		Get: func(h *Host, L *lua.LState, self any, name string) lua.LValue {
			cfg := self.(*luaSSH).c.Config()
			switch name {
			case "host":
				return lua.LString(cfg.Host)
			case "port":
				return lua.LNumber(cfg.Port)
			case "user":
				return lua.LString(cfg.User)
			case "transcript":
				return lua.LString(self.(*luaSSH).c.TranscriptPath())
			}
			return nil
		},
		Methods: []Func{
			{
				Name:    "run",
				Params:  "cmd: string, opts?: {timeout?: duration, stdin?: string, env?: table<string, string>}",
				Returns: "{stdout: string, stderr: string, code: integer, signal?: string, duration: number}",
				Doc:     "Run a command (default timeout 10 min; on timeout it is signalled and the error carries stdout/stderr); a non-zero exit is not an error.",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkSSH(L)
					cmd := L.CheckString(2)
					o := h.Opts(L, 3, "ssh_client:run")
					opt := ssh.RunOptions{Timeout: o.Duration("timeout", defaultSSHRunTimeout)}
					if in := o.String("stdin", ""); o.Has("stdin") {
						opt.Stdin = strings.NewReader(in)
					}
					if t, ok := o.Get("env").(*lua.LTable); ok {
						opt.Env = map[string]string{}
						t.ForEach(func(k, v lua.LValue) {
							ks, okK := k.(lua.LString)
							if !okK {
								h.Errorf(L, vmerr.Usage, "ssh_client:run: env keys must be strings, got %s", k.Type())
							}
							switch v.(type) {
							case lua.LString, lua.LNumber, lua.LBool:
							default:
								h.Errorf(L, vmerr.Usage, "ssh_client:run: env[%q] must be a string, got %s", string(ks), v.Type())
							}
							opt.Env[string(ks)] = v.String()
						})
					} else if o.Has("env") {
						h.Errorf(L, vmerr.Usage, "ssh_client:run: option \"env\" must be a table")
					}
					o.Done()
					res, err := s.c.Run(h.ctx, cmd, opt)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(resultTable(L, res))
					return 1
				},
			},
			{
				Name:   "wait",
				Params: "opts?: {timeout?: duration}",
				Doc:    "Check the connection and, if it is gone (guest rebooted), reconnect, retrying until timeout (default: the connect timeout).",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkSSH(L)
					timeout := h.TimeoutOpt(L, 2, "ssh_client:wait", s.waitTimeout)
					ctx, cancel := h.withTimeout(timeout)
					defer cancel()
					if err := s.c.Wait(ctx); err != nil {
						h.Raise(L, err)
					}
					return 0
				},
			},
			{
				Name:    "get",
				Params:  "remote: string, local: string, opts?: {timeout?: duration}",
				Returns: "string",
				Doc:     "Copy a guest file to local (relative paths go to the run directory) via SFTP, or cat when the server has none; returns the local path.",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkSSH(L)
					remote := L.CheckString(2)
					local := h.sshLocal(L.CheckString(3))
					timeout := h.TimeoutOpt(L, 4, "ssh_client:get", defaultSSHCopyTimeout)
					ctx, cancel := h.withTimeout(timeout)
					defer cancel()
					if _, _, err := s.c.Get(ctx, remote, local); err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LString(local))
					return 1
				},
			},
			{
				Name:    "put",
				Params:  "local: string, remote: string, opts?: {timeout?: duration}",
				Returns: "integer",
				Doc:     "Copy a local file to the guest via SFTP, or cat when the server has none; returns the number of bytes.",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkSSH(L)
					local := L.CheckString(2)
					remote := L.CheckString(3)
					timeout := h.TimeoutOpt(L, 4, "ssh_client:put", defaultSSHCopyTimeout)
					ctx, cancel := h.withTimeout(timeout)
					defer cancel()
					n, _, err := s.c.Put(ctx, local, remote)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(lua.LNumber(n))
					return 1
				},
			},
			{
				Name:    "session",
				Params:  "opts?: {pty?: boolean, term?: string, cols?: integer, rows?: integer, command?: string}",
				Returns: "vmscript.Console",
				Doc:     "Start an interactive session (a pty by default) and return it as a console: expect, send, sendline, mark, lines, tail as on a serial console.",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkSSH(L)
					o := h.Opts(L, 2, "ssh_client:session")
					opt := ssh.SessionOptions{
						PTY: o.Bool("pty", true), Term: o.String("term", ""),
						Cols: o.Int("cols", 0), Rows: o.Int("rows", 0), Command: o.String("command", ""),
					}
					o.Done()
					ctx, cancel := h.withTimeout(defaultSSHSessionTimeout)
					defer cancel()
					sess, err := s.c.Session(ctx, opt)
					if err != nil {
						h.Raise(L, err)
					}
					h.OnClose("close ssh session "+sess.Console.Name(), func() { sess.Close() })
					L.Push(h.NewObject(L, "console", &luaConsole{c: sess.Console, name: sess.Console.Name(), log: sess.LogPath}))
					return 1
				},
			},
			{
				Name: "close",
				Doc:  "Close the connection and its sessions (also done when the script ends).",
				Fn: func(h *Host, L *lua.LState) int {
					s := h.checkSSH(L)
					if err := s.c.Close(); err != nil && !strings.Contains(err.Error(), "closed") {
						h.Raise(L, vmerr.Wrap(vmerr.IO, err, "ssh %s: close", s.c.Name()))
					}
					if s.forget != nil {
						s.forget()
					}
					return 0
				},
			},
		},
	})
}

// vmSSH is vm:ssh.
func (h *Host) vmSSH(L *lua.LState) int {
	v := h.checkVM(L)
	o := h.Opts(L, 2, "vm:ssh")
	cfg := ssh.Config{Host: "127.0.0.1"}
	sshAuthOpts(o, &cfg)
	cfg.NoSFTP = !o.Bool("sftp", true)
	timeout := o.Duration("timeout", defaultVMSSHTimeout)
	via := o.OneOf("via", "", "", "forward", "lan")
	guestPort := o.Int("port", 22)
	o.Done()
	name := v.m.VM.Name()
	if guestPort < 1 || guestPort > 65535 {
		h.Errorf(L, vmerr.Usage, "vm:ssh: port %d out of range", guestPort)
	}
	if via != "lan" {
		for _, f := range v.m.VM.Forwards() {
			if f.GuestPort == guestPort && f.Proto == "tcp" {
				cfg.Port = f.HostPort
				if f.HostAddr != "" && f.HostAddr != "0.0.0.0" {
					cfg.Host = f.HostAddr
				}
			}
		}
	}
	ports := h.vmLANPorts(name)
	switch {
	case cfg.Port != 0:
	case via == "forward":
		h.Errorf(L, vmerr.Usage, "vm:ssh: vm %s has no forward to guest port %d; start it with forwards = {%d} in qemu.start", name, guestPort, guestPort)
	case len(ports) == 0 && via == "lan":
		h.Errorf(L, vmerr.Usage, "vm:ssh: vm %s has no NIC on a lan; start it with net = lan (or nics = {lan, …}) in qemu.start", name)
	case len(ports) == 0:
		h.Errorf(L, vmerr.Usage, "vm:ssh: vm %s has neither a forward to guest port %d nor a NIC on a lan; start it with forwards = {%d} (user networking) or net = lan in qemu.start", name, guestPort, guestPort)
	}
	cfg.Name = name
	if cfg.User != "root" {
		cfg.Name = name + "-" + cfg.User
	}
	// A VM that exits ends the wait at once, with its exit reason.
	ctx, cancel := context.WithCancelCause(h.ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-v.m.VM.Exited():
			cancel(vmerr.New(vmerr.Exited, "vm %s exited while waiting for SSH", name))
		case <-ctx.Done():
		}
	}()
	cfg.Run = h.opt.Run
	wctx, wcancel := context.WithTimeout(ctx, timeout)
	defer wcancel()
	raise := func(err error) {
		if cause := context.Cause(ctx); cause != nil && h.ctx.Err() == nil {
			if ve, ok := cause.(*vmerr.Error); ok {
				h.Raise(L, ve.With("tail", v.m.Console.Tail(20)))
			}
		}
		var ve *vmerr.Error
		if errors.As(err, &ve) && ve.Kind == vmerr.Timeout {
			ve.With("tail", v.m.Console.Tail(20)).With("vm", name)
		}
		h.Raise(L, err)
	}
	if cfg.Port == 0 {
		p, lease, err := waitAnyLease(wctx, ports)
		if err != nil {
			var ve *vmerr.Error
			if errors.As(err, &ve) && ve.Kind == vmerr.Timeout {
				ve.Message = "vm:ssh: " + ve.Message + " (SSH over the LAN dials the guest's leased address)"
			}
			raise(err)
		}
		cfg.Host, cfg.Port = lease.IP.String(), guestPort
		cfg.Dial = lanSSHDialer(p, guestPort)
	}
	c, err := ssh.Wait(wctx, cfg)
	if err != nil {
		raise(err)
	}
	s := &luaSSH{c: c, waitTimeout: timeout}
	s.forget = h.OnClose("close ssh "+c.Name(), func() { c.Close() })
	L.Push(h.NewObject(L, "ssh_client", s))
	return 1
}

// waitAnyLease waits until one of a VM's LAN NICs holds a lease and returns
// that NIC and lease. On timeout the error is the first NIC's (it says what
// its DHCP server saw from that MAC).
func waitAnyLease(ctx context.Context, ports []lanPort) (lanPort, lan.Lease, error) {
	for _, p := range ports {
		if l, ok := p.l.DHCP().Lease(p.mac); ok {
			return p, l, nil
		}
	}
	if len(ports) == 1 {
		l, err := ports[0].l.DHCP().WaitLease(ctx, ports[0].mac)
		return ports[0], l, err
	}
	type result struct {
		i     int
		lease lan.Lease
		err   error
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan result, len(ports))
	for i, p := range ports {
		go func() {
			l, err := p.l.DHCP().WaitLease(wctx, p.mac)
			ch <- result{i, l, err}
		}()
	}
	errs := make([]error, len(ports))
	for range ports {
		r := <-ch
		if r.err == nil {
			return ports[r.i], r.lease, nil
		}
		errs[r.i] = r.err
	}
	return ports[0], lan.Lease{}, errs[0]
}

// lanSSHDialer dials the guest's current lease (looked up at every attempt,
// so a guest that rebooted and leased again is found) through the LAN's
// stack. Its errors are plain, so that ssh.Wait retries them (a guest whose
// server does not listen yet refuses the connection).
func lanSSHDialer(p lanPort, port int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		lease, ok := p.l.DHCP().Lease(p.mac)
		if !ok {
			return nil, fmt.Errorf("lan %s: %s holds no DHCP lease", p.l.Name(), p.mac)
		}
		c, err := p.l.DialTCP(ctx, lease.IP.String(), port)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
			return nil, errors.New(err.Error())
		}
		return c, nil
	}
}
