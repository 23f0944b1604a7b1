// Package machine is the guest: one type that owns a VM's QEMU process, its
// serial console, its NICs and their ports on vmscript LANs, its port
// forwards, the route SSH takes to it, the renewal of its lease after a
// fork, and its checkpoints and forks. A lab image, a netboot server and a
// LAN port add themselves to its QEMU command line (qemu.Device). The Lua
// layer and the end-to-end tests reach guests through it (syzkaller's
// vm/vmimpl Instance is the model).
//
//	pool := machine.NewPool(run)
//	m, err := pool.Boot(ctx, machine.Spec{Lab: img, NICs: []machine.NIC{{LAN: l}}})
//	m.Console.Expect(ctx, …)
//	c, err := m.SSH(ctx, machine.SSHOptions{Config: ssh.Config{User: "root", KeyFiles: keys}})
//	cp, err := m.Checkpoint(ctx, checkpoint.Options{Continue: true})
//	f, err := cp.Fork(ctx, machine.ForkOptions{NICs: []machine.NIC{{LAN: l}}})
//	lease, err := f.RenewLease(ctx, machine.RenewOptions{})
//
// Boot starts QEMU paused, attaches a lossless console to the serial port
// (so the log holds byte 0), lets the guest run, and ends every pending
// console wait at once when QEMU exits — with the exit reason — instead of
// at the wait's timeout.
package machine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/vmscript/vmscript/toolkit/agent"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/screen"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultStopGrace is how long Stop lets QEMU react to QMP quit before it
// kills the process group.
const DefaultStopGrace = 10 * time.Second

// Machine is a running guest. VM and Console are its QEMU process (QMP,
// lifecycle) and its serial console, recorded from byte 0; the other parts
// are reached through its methods.
type Machine struct {
	// VM is the QEMU process.
	VM *qemu.VM
	// Console is the serial console.
	Console *console.Console
	// ConsoleLog is the path of the raw console log ("" without a run).
	ConsoleLog string

	spec   Spec        // as given, for forks
	config qemu.Config // what QEMU was started from (before QEMU's defaults)
	run    *journal.Run
	ports  []Port
	pool   *Pool
	entry  *BootedEntry // the ISO entry booted directly, if any

	screenOnce sync.Once
	screen     *screen.Screen
	screenErr  error

	agentMu sync.Mutex
	agent   *agent.Client // the guest agent session (Agent)
}

// Entry returns the ISO boot menu entry the machine booted directly (nil
// when it booted otherwise).
func (m *Machine) Entry() *BootedEntry { return m.entry }

// Name returns the VM's name.
func (m *Machine) Name() string { return m.VM.Name() }

// Config returns the QEMU configuration the machine was started from
// (before defaults): a checkpoint starts its forks from it.
func (m *Machine) Config() qemu.Config { return m.config }

// Run returns the run that receives the machine's logs and events (nil
// without one).
func (m *Machine) Run() *journal.Run { return m.run }

// Ports returns the machine's NICs on vmscript LANs, in NIC order.
func (m *Machine) Ports() []Port { return append([]Port(nil), m.ports...) }

// String reads "vm NAME (pid N)".
func (m *Machine) String() string { return "vm " + m.VM.Name() + " (pid " + itoa(m.VM.PID()) + ")" }

// Boot starts a guest from spec: QEMU paused, the console attached to its
// serial port (log <name>.console.log in the run directory), then the
// guest running. On failure nothing is left running.
func Boot(ctx context.Context, spec Spec) (*Machine, error) {
	p, err := spec.plan(ctx)
	if err != nil {
		return nil, err
	}
	m, err := start(ctx, spec, p.cfg, p.ports)
	if m != nil {
		m.entry = p.entry
	}
	return m, err
}

// start boots cfg; ports collects the LAN ports QEMU's NICs open.
func start(ctx context.Context, spec Spec, cfg qemu.Config, ports *[]Port) (*Machine, error) {
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	logPath := ""
	if cfg.Run != nil {
		logPath = cfg.Run.Path(vm.Name() + ".console.log")
	}
	con, err := console.New(console.Options{
		Name: vm.Name(), Run: cfg.Run, LogPath: logPath, DefaultTimeout: spec.ExpectTimeout, Failures: spec.Failures,
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
	m := &Machine{VM: vm, Console: con, ConsoleLog: logPath, spec: spec, config: cfg, run: cfg.Run, ports: *ports}
	go m.closeConsoleOnExit()
	if vm.BIOSOnSerial() && !spec.KeepIPXEPrompt {
		go m.answerIPXEPrompt()
	}
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
	m.closeScreen()
	m.closeAgent()
}

// Wait waits for QEMU to exit (bounded by ctx) and for the console's last
// bytes to reach its log, and returns how QEMU ended. A timeout error
// carries the console's tail.
func (m *Machine) Wait(ctx context.Context) (qemu.ExitStatus, error) {
	t0 := time.Now()
	st, err := m.VM.Wait(ctx)
	if err != nil {
		var ve *vmerr.Error
		if vmerr.Is(err, vmerr.Timeout) && errors.As(err, &ve) {
			ve.With("tail", m.Console.Tail(console.TailLines)).With("waited_s", time.Since(t0).Seconds())
		}
		return st, err
	}
	<-m.Console.Done()
	return st, nil
}

// withVM adds the machine's name and console tail to a *vmerr.Error, and
// prefixes its message with what failed.
func (m *Machine) withVM(err error, what string) error {
	var ve *vmerr.Error
	if errors.As(err, &ve) {
		if what != "" {
			ve.Message = what + ": " + ve.Message
		}
		ve.With("vm", m.VM.Name()).With("tail", m.Console.Tail(console.TailLines))
	}
	return err
}
