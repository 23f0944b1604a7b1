// Package machine joins a QEMU process and its serial console into one
// guest: it starts QEMU paused, attaches a lossless console to the serial
// socket, lets the guest run, and ends every pending console wait at once
// when QEMU exits — with the exit reason — instead of at the wait's timeout.
package machine

import (
	"context"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultStopGrace is how long Stop lets QEMU react to QMP quit before it
// kills the process group.
const DefaultStopGrace = 10 * time.Second

// Machine is a running guest: its QEMU process and its serial console.
type Machine struct {
	// VM is the QEMU process (QMP, lifecycle).
	VM *qemu.VM
	// Console is the serial console, recorded from byte 0.
	Console *console.Console
	// ConsoleLog is the path of the raw console log.
	ConsoleLog string
	// Config is the configuration Boot started QEMU from, as given (before
	// defaults), so that a checkpoint can start a copy with the same device
	// model.
	Config qemu.Config
}

// Options tune Boot beyond the QEMU configuration.
type Options struct {
	// ExpectTimeout is the console's default wait bound (0: console default).
	ExpectTimeout time.Duration
}

// Boot starts QEMU from cfg, attaches the console (log <name>.console.log in
// cfg.Run's directory) and resumes the guest. On failure nothing is left
// running.
func Boot(ctx context.Context, cfg qemu.Config, opt Options) (*Machine, error) {
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	logPath := ""
	if cfg.Run != nil {
		logPath = cfg.Run.Path(vm.Name() + ".console.log")
	}
	con, err := console.New(console.Options{
		Name: vm.Name(), Run: cfg.Run, LogPath: logPath, DefaultTimeout: opt.ExpectTimeout,
		// The console learns of QEMU's exit from the VM below, with the
		// reason; EOF on the socket alone must not pre-empt that.
		EOFGrace: -1,
	})
	if err != nil {
		vm.Stop(DefaultStopGrace)
		return nil, err
	}
	if err := con.Attach(vm.Serial()); err != nil {
		vm.Stop(DefaultStopGrace)
		con.Close(err)
		return nil, err
	}
	m := &Machine{VM: vm, Console: con, ConsoleLog: logPath, Config: cfg}
	go m.closeConsoleOnExit()
	if err := vm.Cont(ctx); err != nil {
		m.Stop(DefaultStopGrace)
		return nil, err
	}
	return m, nil
}

// closeConsoleOnExit ends the console's waits when QEMU exits, saying how.
func (m *Machine) closeConsoleOnExit() {
	<-m.VM.Exited()
	st, _ := m.VM.Wait(context.Background())
	e := vmerr.New(vmerr.Exited, "VM %s exited: %s", m.VM.Name(), st.String()).
		With("vm", m.VM.Name()).With("reason", st.Reason).With("code", st.Code)
	if st.Signal != "" {
		e.With("signal", st.Signal)
	}
	if st.Stderr != "" {
		e.With("stderr", st.Stderr)
	}
	m.Console.Close(e)
}

// Stop ends QEMU (QMP quit, then SIGKILL after grace) and closes the console
// once its last bytes are in the log.
func (m *Machine) Stop(grace time.Duration) {
	m.VM.Stop(grace)
	<-m.Console.Done()
}
