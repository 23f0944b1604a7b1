// Package control lets a second terminal reach a live run: while a script
// (or the REPL after it) runs, the run's process serves a unix socket that
// lists its guests, attaches a terminal to a guest's serial console, and
// dials a guest's TCP port (the ProxyCommand of `vmscript ssh`).
//
// Where: each run registers in a control directory of the user's own (mode
// 0700): $XDG_RUNTIME_DIR/vmscript, else /tmp/vmscript-UID (a unix socket
// path holds at most 107 bytes). ID.sock is the run's socket (0600), ID.json
// its registry entry (run id, pid, script, run directory, start; 0600). The
// id is the run directory's name, with "-2", "-3", … when a live run holds
// it. List drops the entries of dead runs (their process is gone or their
// socket refuses), and Find resolves an id, a run directory or an id's
// unique prefix. The server refuses a peer whose uid (SO_PEERCRED) is not
// its own, whatever the modes would let in (root too).
//
// Protocol: a client sends one JSON line (Request), the server answers one
// JSON line (Response). OpInfo ends there. After a successful OpConsole or
// OpDial the connection is a raw byte stream both ways: a console's tail
// and then every byte from that point (read from the console's history by
// offset: lossless, no buffering), with the client's bytes going to
// Console.Send (so they are in the timeline and the guest's echo in the
// console log, and a script's expect sees every byte); a dialled port's
// TCP stream, half-closes passed on.
//
//	srv, err := control.Start(control.Options{Pool: pool, Run: run, Script: path, Start: t0})
//	defer srv.Close()
//
//	e, err := control.Find("20250101-1200")      // another process
//	info, err := control.Info(ctx, e.Socket)
//	s, err := control.Console(ctx, e.Socket, "mini")
//	err = control.Attach(ctx, s, os.Stdin, os.Stdout, "mini")
//
// The server stays on the consumer side of machine: cmd → control →
// machine, like luahost.
package control
