package luahost

import (
	"fmt"
	"time"

	"github.com/vmscript/vmscript/netboot"
	"github.com/vmscript/vmscript/toolkit/lan"
	"github.com/vmscript/vmscript/toolkit/record"
	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// defaultWaitFileTimeout bounds server:wait_file when no timeout is given.
const defaultWaitFileTimeout = 2 * time.Minute

func netbootModule() Module {
	return Module{
		Name: "netboot",
		Doc:  "TFTP and HTTP servers for network boots, confined to one root, with every request recorded.",
		Funcs: []Func{{
			Name:    "serve",
			Params:  "opts: {root?: string, files?: table<string, string>, tftp?: boolean, http?: boolean, upload?: string, name?: string, client_host?: string, max_blksize?: integer, tftp_timeout?: duration, lan?: vmscript.LAN, bootfile?: string}",
			Returns: "vmscript.NetbootServer", Fn: (*Host).netbootServe,
			Doc: "Serve root (and overlay files, with {{server}} {{tftp}} {{http}} filled in) over TFTP and HTTP on ephemeral loopback ports; pass the server to qemu.start{netboot=}. With lan: on that LAN's gateway instead (TFTP port 69, HTTP port 80), and its DHCP advertises bootfile (default pxelinux.0; iPXE gets http://GATEWAY/NAME for a .ipxe script), so qemu.start{net = lan, netboot = server} (or boot = \"n\") PXE-boots from it.",
		}},
	}
}

func netbootServerClass() Class {
	request := record.LuaType(netboot.Request{})
	return Class{
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
		Get: (*Host).netbootField,
		Methods: []Func{
			{Name: "requests", Params: "opts?: {file?: string, proto?: \"tftp\"|\"http\", outcome?: \"served\"|\"not found\"|\"refused\"|\"aborted\"}",
				Returns: request + "[]", Fn: (*Host).netbootRequests,
				Doc: "Finished requests in arrival order; file matches a path or, without '/', any file of that base name; duration is in seconds."},
			{Name: "wait_file", Params: "name: string, opts?: {timeout?: duration}", Returns: request, Fn: (*Host).netbootWaitFile,
				Doc: "Wait until name has been served completely (default 2 min); a timeout error (kind \"timeout\") lists what was requested instead."},
			{Name: "close", Fn: (*Host).netbootClose,
				Doc: "Stop serving: transfers in progress are aborted; returns when every server goroutine has ended. Safe to call twice."},
		},
	}
}

func (h *Host) netbootServe(L *lua.LState) int {
	L.CheckTable(1)
	o := h.Opts(L, 1, "netboot.serve")
	opt := netboot.Options{
		Name: o.String("name", ""), Root: o.String("root", ""), UploadDir: o.String("upload", ""),
		NoTFTP: !o.Bool("tftp", true), NoHTTP: !o.Bool("http", true), ClientHost: o.String("client_host", ""),
		MaxBlockSize: o.Int("max_blksize", 0), Timeout: o.Duration("tftp_timeout", 0), Run: h.opt.Run,
		Files: h.overlayFiles(o),
	}
	onLAN, bootfile := h.netbootLAN(o, opt)
	o.Done()
	if opt.Root == "" && len(opt.Files) == 0 {
		h.Errorf(L, vmerr.Usage, "netboot.serve: give root (a directory) or files (overlay texts), or both")
	}
	var srv *netboot.Server
	var err error
	if onLAN != nil {
		srv, err = netboot.ServeLAN(onLAN, opt, bootfile)
	} else {
		srv, err = netboot.Serve(opt)
	}
	if err != nil {
		h.Raise(L, err)
	}
	h.OnClose("close netboot server "+srv.Name(), func() { srv.Close() })
	L.Push(h.NewObject(L, "netboot_server", srv))
	return 1
}

// netbootLAN reads "lan" and "bootfile", which go together.
func (h *Host) netbootLAN(o *Opts, opt netboot.Options) (*lan.LAN, string) {
	var onLAN *lan.LAN
	if v := o.Get("lan"); v != lua.LNil {
		l, ok := h.objectOf(o.L, v, "lan").(*lan.LAN)
		if !ok {
			o.fail("lan", "must be a lan from lan.new, got %s", v.Type())
		}
		onLAN = l
	}
	bootfile := o.String("bootfile", "")
	if onLAN == nil && bootfile != "" {
		h.Errorf(o.L, vmerr.Usage, "%s: option \"bootfile\" is what a LAN's DHCP advertises and needs lan; without one give it to qemu.start{netboot = server, bootfile = …}", o.fn)
	}
	if onLAN != nil && opt.ClientHost != "" {
		h.Errorf(o.L, vmerr.Usage, "%s: option \"client_host\" does not go with lan (clients reach the server at the gateway %s)", o.fn, onLAN.Gateway())
	}
	return onLAN, bootfile
}

// overlayFiles reads "files": names to texts.
func (h *Host) overlayFiles(o *Opts) map[string]string {
	switch v := o.Get("files").(type) {
	case *lua.LNilType:
		return nil
	case *lua.LTable:
		files := map[string]string{}
		var bad string
		v.ForEach(func(k, val lua.LValue) {
			ks, okK := k.(lua.LString)
			vs, okV := val.(lua.LString)
			if !okK || !okV {
				bad = fmt.Sprintf("[%s] = %s", k.String(), val.Type())
				return
			}
			files[string(ks)] = string(vs)
		})
		if bad != "" {
			h.Errorf(o.L, vmerr.Usage, "%s: option \"files\" maps names to text; got %s", o.fn, bad)
		}
		return files
	default:
		h.Errorf(o.L, vmerr.Usage, "%s: option \"files\" must be a table of name = text, got %s", o.fn, v.Type())
	}
	return nil
}

func (h *Host) checkNetboot(L *lua.LState) *netboot.Server {
	return h.CheckObject(L, 1, "netboot_server").(*netboot.Server)
}

func (h *Host) netbootField(L *lua.LState, self any, name string) lua.LValue {
	s := self.(*netboot.Server)
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
}

func (h *Host) netbootRequests(L *lua.LState) int {
	s := h.checkNetboot(L)
	o := h.Opts(L, 2, "netboot_server:requests")
	f := netboot.Filter{File: o.String("file", ""), Proto: o.String("proto", ""), Outcome: o.String("outcome", "")}
	o.Done()
	L.Push(ToLua(L, s.Requests(f)))
	return 1
}

func (h *Host) netbootWaitFile(L *lua.LState) int {
	s := h.checkNetboot(L)
	name := L.CheckString(2)
	ctx, cancel := h.withTimeout(h.TimeoutOpt(L, 3, "netboot_server:wait_file", defaultWaitFileTimeout))
	defer cancel()
	r, err := s.WaitFile(ctx, name)
	if err != nil {
		h.Raise(L, err)
	}
	L.Push(ToLua(L, r))
	return 1
}

func (h *Host) netbootClose(L *lua.LState) int {
	h.checkNetboot(L).Close()
	return 0
}
