package main

import (
	"fmt"
	"path/filepath"

	"github.com/vmscript/vmscript/toolkit/control"
)

// startControl serves the run's control socket, through which vmscript ps,
// console and ssh reach it from another terminal, for the session's whole
// life (script, then REPL). A failure is a warning: the run goes on
// without it.
func (s *session) startControl() {
	script := ""
	if s.script != "" {
		script, _ = filepath.Abs(s.script)
	}
	srv, err := control.Start(control.Options{Pool: s.host.Pool(), Run: s.run, Script: script, Start: s.start})
	if err != nil {
		s.run.Event("control", "error", map[string]any{"error": err.Error()})
		fmt.Fprintf(s.stderr, "vmscript: warning: no control socket, so vmscript ps, console and ssh will not see this run: %v\n", err)
		return
	}
	s.control = srv
	if s.mode != progressQuiet {
		id := srv.Entry().ID
		fmt.Fprintf(s.stderr, "vmscript: run id %s (attach: vmscript console %s, vmscript ssh %s)\n", id, id, id)
	}
}

// controlState tells the control socket what the run does now.
func (s *session) controlState(state string) {
	if s.control != nil {
		s.control.SetState(state)
	}
}

// stopControl unregisters the run and ends every attached terminal.
func (s *session) stopControl() {
	if s.control != nil {
		if err := s.control.Close(); err != nil {
			fmt.Fprintf(s.stderr, "vmscript: warning: control socket: %v\n", err)
		}
	}
}
