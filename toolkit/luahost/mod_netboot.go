package luahost

import (
	"fmt"
	"sort"
	"time"

	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// defaultWaitFileTimeout bounds server:wait_file when no timeout is given.
const defaultWaitFileTimeout = 2 * time.Minute

// luaNetboot is the Go side of a Lua netboot server. It is a NetbootSource,
// so qemu.start{netboot = srv} boots from it.
type luaNetboot struct {
	h      *Host
	srv    *netboot.Server
	forget func()
}

func (n *luaNetboot) String() string {
	return fmt.Sprintf("netboot server %s (tftp %s, http %s)", n.srv.Name(), n.srv.TFTPURL(), n.srv.HTTPURL())
}

// ConfigureNetboot implements NetbootSource. A server on a LAN needs the
// VM on that LAN.
func (n *luaNetboot) ConfigureNetboot(cfg *qemu.Config, bootfile string) error {
	if l := n.srv.LAN(); l != nil && n.h != nil {
		if lans, known := n.h.netLANs(cfg); known {
			on := false
			for _, x := range lans {
				on = on || x == l
			}
			if !on {
				return vmerr.New(vmerr.Usage, "qemu.start: netboot server %s serves lan %s; start the VM on it (net = that lan, or nics = {that lan, …})", n.srv.Name(), l.Name()).With("option", "netboot")
			}
		}
	}
	return n.srv.ConfigureNetboot(cfg, bootfile)
}

func (h *Host) serveNetboot(L *lua.LState) int {
	const fn = "netboot.serve"
	L.CheckTable(1)
	o := h.Opts(L, 1, fn)
	opt := netboot.Options{
		Name:         o.String("name", ""),
		Root:         o.String("root", ""),
		UploadDir:    o.String("upload", ""),
		NoTFTP:       !o.Bool("tftp", true),
		NoHTTP:       !o.Bool("http", true),
		ClientHost:   o.String("client_host", ""),
		MaxBlockSize: o.Int("max_blksize", 0),
		Timeout:      o.Duration("tftp_timeout", 0),
		Run:          h.opt.Run,
	}
	var onLAN *luaLAN
	switch v := o.Get("lan").(type) {
	case *lua.LNilType:
	case *lua.LUserData:
		x, ok := v.Value.(*luaLAN)
		if !ok {
			h.Errorf(L, vmerr.Usage, "%s: option \"lan\" must be a lan from lan.new", fn)
		}
		onLAN = x
	default:
		h.Errorf(L, vmerr.Usage, "%s: option \"lan\" must be a lan from lan.new, got %s", fn, v.Type())
	}
	bootfile := o.String("bootfile", "")
	if onLAN == nil && bootfile != "" {
		h.Errorf(L, vmerr.Usage, "%s: option \"bootfile\" is what a LAN's DHCP advertises and needs lan; without one give it to qemu.start{netboot = server, bootfile = …}", fn)
	}
	if onLAN != nil && opt.ClientHost != "" {
		h.Errorf(L, vmerr.Usage, "%s: option \"client_host\" does not go with lan (clients reach the server at the gateway %s)", fn, onLAN.l.Gateway())
	}
	switch v := o.Get("files").(type) {
	case *lua.LNilType:
	case *lua.LTable:
		opt.Files = map[string]string{}
		var bad string
		v.ForEach(func(k, val lua.LValue) {
			ks, okK := k.(lua.LString)
			vs, okV := val.(lua.LString)
			if !okK || !okV {
				bad = fmt.Sprintf("[%s] = %s", k.String(), val.Type())
				return
			}
			opt.Files[string(ks)] = string(vs)
		})
		if bad != "" {
			h.Errorf(L, vmerr.Usage, "%s: option \"files\" maps names to text; got %s", fn, bad)
		}
	default:
		h.Errorf(L, vmerr.Usage, "%s: option \"files\" must be a table of name = text, got %s", fn, v.Type())
	}
	o.Done()
	if opt.Root == "" && len(opt.Files) == 0 {
		h.Errorf(L, vmerr.Usage, "%s: give root (a directory) or files (overlay texts), or both", fn)
	}
	var srv *netboot.Server
	var err error
	if onLAN != nil {
		srv, err = netboot.ServeLAN(onLAN.l, opt, bootfile)
	} else {
		srv, err = netboot.Serve(opt)
	}
	if err != nil {
		h.Raise(L, err)
	}
	n := &luaNetboot{h: h, srv: srv}
	n.forget = h.OnClose("close netboot server "+srv.Name(), func() { srv.Close() })
	L.Push(h.NewObject(L, "netboot_server", n))
	return 1
}

func (h *Host) checkNetboot(L *lua.LState) *luaNetboot {
	return h.CheckObject(L, 1, "netboot_server").(*luaNetboot)
}

// requestTable converts a request for Lua.
func requestTable(L *lua.LState, r netboot.Request) *lua.LTable {
	t := L.NewTable()
	t.RawSetString("seq", lua.LNumber(r.Seq))
	t.RawSetString("proto", lua.LString(r.Proto))
	t.RawSetString("op", lua.LString(r.Op))
	t.RawSetString("client", lua.LString(r.Client))
	t.RawSetString("file", lua.LString(r.File))
	t.RawSetString("bytes", lua.LNumber(r.Bytes))
	t.RawSetString("size", lua.LNumber(r.Size))
	t.RawSetString("duration", lua.LNumber(r.Duration.Seconds()))
	t.RawSetString("outcome", lua.LString(r.Outcome))
	t.RawSetString("time", lua.LString(r.Start.Format(time.RFC3339Nano)))
	if r.Reason != "" {
		t.RawSetString("reason", lua.LString(r.Reason))
	}
	if r.Source != "" {
		t.RawSetString("source", lua.LString(r.Source))
	}
	if r.BlockSize != 0 {
		t.RawSetString("blksize", lua.LNumber(r.BlockSize))
	}
	if r.Status != 0 {
		t.RawSetString("status", lua.LNumber(r.Status))
	}
	if len(r.Options) > 0 {
		ot := L.NewTable()
		keys := make([]string, 0, len(r.Options))
		for k := range r.Options {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ot.RawSetString(k, lua.LString(r.Options[k]))
		}
		t.RawSetString("options", ot)
	}
	return t
}

func init() {
	Register(Module{
		Name: "netboot",
		Doc:  "TFTP and HTTP servers for network boots, confined to one root, with every request recorded.",
		Funcs: []Func{{
			Name:    "serve",
			Params:  "opts: {root?: string, files?: table<string, string>, tftp?: boolean, http?: boolean, upload?: string, name?: string, client_host?: string, max_blksize?: integer, tftp_timeout?: duration, lan?: vmscript.LAN, bootfile?: string}",
			Returns: "vmscript.NetbootServer",
			Doc:     "Serve root (and overlay files, with {{server}} {{tftp}} {{http}} filled in) over TFTP and HTTP on ephemeral loopback ports; pass the server to qemu.start{netboot=}. With lan: on that LAN's gateway instead (TFTP port 69, HTTP port 80), and its DHCP advertises bootfile (default pxelinux.0; iPXE gets http://GATEWAY/NAME for a .ipxe script), so qemu.start{net = lan, netboot = server} (or boot = \"n\") PXE-boots from it.",
			Fn:      func(h *Host, L *lua.LState) int { return h.serveNetboot(L) },
		}},
	})
	RegisterClass(Class{
		Name: "netboot_server",
		Doc:  "A running netboot server (TFTP and HTTP from one root); qemu.start{netboot = server, bootfile = …} boots from it.",
		Fields: []Field{
			{Name: "tftp_url", Type: "string", Doc: "tftp://127.0.0.1:PORT as the host reaches it (\"\" when TFTP is off)."},
			{Name: "http_url", Type: "string", Doc: "http://127.0.0.1:PORT as the host reaches it (\"\" when HTTP is off)."},
			{Name: "client_tftp_url", Type: "string", Doc: "The TFTP URL as a guest on user networking reaches it (tftp://10.0.2.2:PORT)."},
			{Name: "client_http_url", Type: "string", Doc: "The HTTP URL as a guest on user networking reaches it (http://10.0.2.2:PORT)."},
			{Name: "root", Type: "string", Doc: "The served directory (\"\" for overlay only)."},
			{Name: "name", Type: "string", Doc: "The server's name in the timeline and netboot.log."},
			{Name: "lan", Type: "string?", Doc: "The name of the LAN the server is attached to (nil on loopback)."},
			{Name: "bootfile", Type: "string?", Doc: "The boot file the LAN's DHCP advertises (nil on loopback)."},
		},
		Get: func(h *Host, L *lua.LState, self any, name string) lua.LValue {
			s := self.(*luaNetboot).srv
			switch name {
			case "tftp_url":
				return lua.LString(s.TFTPURL())
			case "http_url":
				return lua.LString(s.HTTPURL())
			case "client_tftp_url":
				return lua.LString(s.ClientTFTPURL())
			case "client_http_url":
				return lua.LString(s.ClientHTTPURL())
			case "root":
				return lua.LString(s.Root())
			case "name":
				return lua.LString(s.Name())
			case "lan":
				if l := s.LAN(); l != nil {
					return lua.LString(l.Name())
				}
				return lua.LNil
			case "bootfile":
				if s.LAN() != nil {
					return lua.LString(s.LANBootfile())
				}
				return lua.LNil
			}
			return nil
		},
		Methods: []Func{
			{
				Name:    "requests",
				Params:  "opts?: {file?: string, proto?: \"tftp\"|\"http\", outcome?: \"served\"|\"not found\"|\"refused\"|\"aborted\"}",
				Returns: "{seq: integer, proto: string, op: string, client: string, file: string, bytes: integer, size: integer, duration: number, outcome: string, reason?: string, blksize?: integer, status?: integer, options?: table, time: string}[]",
				Doc:     "Finished requests in arrival order; file matches a path or, without '/', any file of that base name.",
				Fn: func(h *Host, L *lua.LState) int {
					n := h.checkNetboot(L)
					o := h.Opts(L, 2, "netboot_server:requests")
					f := netboot.Filter{File: o.String("file", ""), Proto: o.String("proto", ""), Outcome: o.String("outcome", "")}
					o.Done()
					t := L.NewTable()
					for _, r := range n.srv.Requests(f) {
						t.Append(requestTable(L, r))
					}
					L.Push(t)
					return 1
				},
			},
			{
				Name:    "wait_file",
				Params:  "name: string, opts?: {timeout?: duration}",
				Returns: "{seq: integer, proto: string, op: string, client: string, file: string, bytes: integer, size: integer, duration: number, outcome: string}",
				Doc:     "Wait until name has been served completely (default 2 min); a timeout error (kind \"timeout\") lists what was requested instead.",
				Fn: func(h *Host, L *lua.LState) int {
					n := h.checkNetboot(L)
					name := L.CheckString(2)
					timeout := h.TimeoutOpt(L, 3, "netboot_server:wait_file", defaultWaitFileTimeout)
					ctx, cancel := h.withTimeout(timeout)
					defer cancel()
					r, err := n.srv.WaitFile(ctx, name)
					if err != nil {
						h.Raise(L, err)
					}
					L.Push(requestTable(L, r))
					return 1
				},
			},
			{
				Name: "close",
				Doc:  "Stop serving: transfers in progress are aborted; returns when every server goroutine has ended. Safe to call twice.",
				Fn: func(h *Host, L *lua.LState) int {
					n := h.checkNetboot(L)
					n.srv.Close()
					if n.forget != nil {
						n.forget()
					}
					return 0
				},
			},
		},
	})
}
