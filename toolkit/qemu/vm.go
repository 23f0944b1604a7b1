package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmscript/vmscript/toolkit/hostmem"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultStartTimeout bounds Start when its context has no deadline.
const DefaultStartTimeout = 30 * time.Second

// ExitStatus says how a QEMU process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when a signal ended the process.
	Code int `json:"code"`
	// Signal names the signal that ended the process ("SIGKILL"), if any.
	Signal string `json:"signal,omitempty"`
	// Reason is the "reason" of the last QMP SHUTDOWN event ("guest-shutdown",
	// "host-qmp-quit", "host-signal", "guest-reset", "guest-panic", …) when
	// QEMU shut down by itself; "killed" when SIGKILL ended it (by vmscript or
	// anyone else: see Detail); "crashed" when another signal ended it
	// (SIGSEGV, SIGABRT, …); "error" for a non-zero exit status without a
	// SHUTDOWN event (QEMU refused an option or failed, see Stderr); "exited"
	// for exit status 0 without a SHUTDOWN event.
	Reason string `json:"reason"`
	// Detail says more in words, e.g. who sent the SIGKILL.
	Detail string `json:"detail,omitempty"`
	// Stderr is the tail of QEMU's stderr when Reason is "crashed" or "error".
	Stderr string `json:"stderr,omitempty"`
}

// String reads like "host-qmp-quit (exit 0)" or "killed (SIGKILL)".
func (s ExitStatus) String() string {
	how := "exit " + strconv.Itoa(s.Code)
	if s.Signal != "" {
		how = s.Signal
	}
	out := s.Reason + " (" + how + ")"
	if s.Detail != "" {
		out += ": " + s.Detail
	}
	return out
}

// VM is one running QEMU process. Its methods are safe for concurrent use.
type VM struct {
	name        string
	dir         string
	ownDir      bool
	accel       AccelChoice
	mac         string
	argv        []string
	cmdlineFile string
	run         *journal.Run
	stderrPath  string
	started     time.Time

	cmd      *exec.Cmd
	pid      int
	serial   *serialPipe
	forwards []Forward

	mu         sync.Mutex
	qmp        *QMPClient
	killedByUs bool
	killWhy    string
	// quietPause is set from a quiet "stop" to the RESUME after it.
	quietPause atomic.Bool

	exited     chan struct{}
	status     ExitStatus // set before exited is closed
	lastStderr string     // stderr's tail at exit, set before exited is closed

	stopOnce sync.Once
	stopped  chan struct{}

	// mem is the VM's memory in the host's ledger, released at its exit.
	mem *hostmem.Reservation
	// agent: the VM has a guest agent port (Config.Agent).
	agent bool
	// biosSerial: SeaBIOS's serial console is on (Config.SerialBIOS or a
	// device's MirrorBIOSToSerial).
	biosSerial bool
}

// event writes to the run's timeline, if there is a run.
func (v *VM) event(kind string, fields map[string]any) {
	if v.run != nil {
		v.run.Event("vm:"+v.name, kind, fields)
	}
}

// shortTempParent returns a parent for the private directory whose socket
// paths fit the 107-byte limit.
func shortTempParent() string {
	t := os.TempDir()
	if len(t)+len("/vms-name-1234567890/")+len(qmpSocket) <= maxSocketPath {
		return t
	}
	return "/tmp"
}

// Start validates cfg, starts QEMU paused (-S) with its serial port on
// pipes, waits for its QMP socket, connects it, negotiates QMP and returns. The guest has not run
// yet: attach a console to Serial, then call Cont. Start is bounded by ctx
// (DefaultStartTimeout without a deadline). If QEMU exits during Start the
// error has kind "exited" and quotes QEMU's stderr.
//
// Start writes the command line to the timeline (kind "start", with the
// accel chosen and why) and, shell-quoted, to <name>.cmdline in the run
// directory; QEMU's stderr goes to <name>.stderr.log there.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	t0 := time.Now()
	cfg = cfg.withDefaults()
	// The NICs' files go to QEMU; ours are closed however Start ends.
	defer cfg.closeNICFiles()
	if cfg.Dir != "" {
		abs, err := filepath.Abs(cfg.Dir)
		if err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "qemu: dir")
		}
		cfg.Dir = abs
	}
	b, err := cfg.plan(true)
	if err != nil {
		return nil, err
	}
	mem, err := reserveMemory(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	v := &VM{name: cfg.Name, mac: cfg.MAC, run: cfg.Run, mem: mem, agent: cfg.Agent, exited: make(chan struct{}), stopped: make(chan struct{})}
	if err := v.prepareDir(ctx, b); err != nil {
		mem.Release()
		return nil, err
	}
	if err := v.launch(b); err != nil {
		if v.ownDir {
			os.RemoveAll(v.dir)
		}
		mem.Release()
		return nil, err
	}
	if err := v.connect(ctx, b.cfg.Forwards); err != nil {
		return nil, v.abortStart(err)
	}
	g := v.qmp.Greeting()
	v.event("ready", map[string]any{
		"start_ms": time.Since(t0).Milliseconds(), "qemu": g.Version, "package": g.Package,
		"forwards": forwardStrings(v.forwards),
	})
	return v, nil
}

// prepareDir makes (or cleans) the private directory, settles the
// accelerator and writes the files the command line refers to.
func (v *VM) prepareDir(ctx context.Context, b *Builder) error {
	cfg := &b.cfg
	if cfg.Accel == "kvm" {
		// QEMU would fail too, later and in its own words; a slow nested
		// KVM is the user's choice once asked for by name.
		if err := CheckKVM(); err != nil {
			return vmerr.Wrap(vmerr.Usage, err, "qemu %s: accel=\"kvm\" was asked for, but KVM is not usable here (%v); "+
				"accel=\"auto\" (the default) runs under TCG instead, 10-50x slower", cfg.Name, err).With("vm", cfg.Name)
		}
	}
	if cfg.Dir == "" {
		sweepStale(shortTempParent())
		d, err := os.MkdirTemp(shortTempParent(), "vms-"+shorten(cfg.Name, 10)+"-")
		if err != nil {
			return vmerr.Wrap(vmerr.IO, err, "qemu: private directory")
		}
		markOwner(d)
		cfg.Dir, v.ownDir = d, true
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return vmerr.Wrap(vmerr.IO, err, "qemu: dir")
		}
		// Stale sockets of an earlier QEMU would be found before ours exist.
		os.Remove(filepath.Join(cfg.Dir, qmpSocket))
	}
	v.dir = cfg.Dir
	if cfg.Accel == "auto" {
		v.accel = ResolveAccel(ctx, cfg.Binary)
		cfg.Accel = v.accel.Accel
	} else {
		v.accel = AccelChoice{Accel: cfg.Accel, Reason: "accel=" + cfg.Accel + " was asked for"}
	}
	err := writeDirFiles(b)
	if err != nil && v.ownDir {
		os.RemoveAll(v.dir)
	}
	return err
}

// writeDirFiles writes the private copy of the OVMF variable store and
// SeaBIOS's serial port file.
func writeDirFiles(b *Builder) error {
	cfg := b.cfg
	if cfg.Firmware == "uefi" {
		vars, err := os.ReadFile(cfg.OVMFVars)
		if err == nil {
			err = os.WriteFile(filepath.Join(cfg.Dir, varsFile), vars, 0o600)
		}
		if err != nil {
			return vmerr.Wrap(vmerr.IO, err, "qemu: private copy of the OVMF variable store")
		}
	}
	if b.serialBIOS {
		// SeaBIOS reads the port as a little-endian integer: 0x3f8 = COM1.
		if err := os.WriteFile(filepath.Join(cfg.Dir, serconFile), []byte{0xf8, 0x03}, 0o600); err != nil {
			return vmerr.Wrap(vmerr.IO, err, "qemu: sercon port file")
		}
	}
	return nil
}

// launch records the command line and starts QEMU with the NICs' files.
func (v *VM) launch(b *Builder) error {
	argv := b.argv()
	v.argv, v.biosSerial = argv, b.serialBIOS
	nicFiles, err := b.cfg.openNICs()
	if err != nil {
		return err
	}
	defer closeFiles(nicFiles)
	stderr, err := v.recordCommandLine(b.cfg)
	if err != nil {
		return err
	}
	defer stderr.Close() // QEMU has its own descriptor
	if err := v.spawn(stderr, nicFiles); err != nil {
		return err
	}
	v.event("start", map[string]any{
		"argv": argv, "accel": v.accel.Accel, "accel_reason": v.accel.Reason,
		"dir": b.cfg.Dir, "mac": b.cfg.MAC, "machine": b.cfg.Machine, "firmware": b.cfg.Firmware,
		"cmdline_file": v.cmdlineFile, "pid": v.pid,
	})
	return nil
}

// recordCommandLine writes the command line, for a person to rerun, and
// opens the stderr log.
func (v *VM) recordCommandLine(cfg Config) (*os.File, error) {
	var stderr *os.File
	var err error
	if v.run != nil {
		if _, err := v.run.WriteFile(cfg.Name+".cmdline", []byte(shellquote.Join(v.argv)+"\n")); err != nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "qemu: writing the command line")
		}
		v.cmdlineFile = cfg.Name + ".cmdline"
		stderr, err = v.run.Create(cfg.Name + ".stderr.log")
	} else {
		stderr, err = os.Create(filepath.Join(cfg.Dir, "stderr.log"))
	}
	if err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "qemu: stderr log")
	}
	v.stderrPath = stderr.Name()
	return stderr, nil
}

// spawn starts the process. Pdeathsig is delivered when the thread that
// forked QEMU exits, not the process: the forking goroutine stays locked to
// its thread, waiting for QEMU, and only then lets the thread go.
func (v *VM) spawn(stderr *os.File, nicFiles []*os.File) error {
	serial, qemuIn, qemuOut, err := newSerialPipe()
	if err != nil {
		return vmerr.Wrap(vmerr.IO, err, "qemu: serial pipes").With("vm", v.name)
	}
	// QEMU has its own descriptors once started; ours must go, or the
	// console would never see end of file when QEMU exits.
	defer qemuIn.Close()
	defer qemuOut.Close()
	cmd := exec.Command(v.argv[0], v.argv[1:]...)
	cmd.Stdin = qemuIn
	cmd.Stdout = qemuOut
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.ExtraFiles = nicFiles // fds 3, 4, … as in nicArgs
	v.cmd = cmd
	startErr := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread ends with this goroutine, after QEMU.
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		v.pid, v.started = cmd.Process.Pid, time.Now()
		startErr <- nil
		v.reap(cmd.Wait())
	}()
	if err := <-startErr; err != nil {
		serial.Close()
		return vmerr.Wrap(vmerr.NotFound, err, "qemu: starting %s", v.argv[0]).With("vm", v.name)
	}
	v.serial = serial
	return nil
}

// connect dials QMP and reads back the forwards' host ports. (The serial
// port needs no connecting: its pipes exist before QEMU does, so the guest
// cannot print to nobody.)
func (v *VM) connect(ctx context.Context, forwards []Forward) error {
	qc, err := v.dialSocket(ctx, filepath.Join(v.dir, qmpSocket))
	if err != nil {
		v.serial.Close()
		return err
	}
	client, err := DialQMP(ctx, qc, v.onEvent)
	if err != nil {
		v.serial.Close()
		return err
	}
	v.mu.Lock()
	client.SetInternal(v.internalEvent)
	v.qmp = client
	v.mu.Unlock()
	select {
	case <-v.exited:
		// reap ran before qmp was set: end the client now.
		client.fail(vmerr.New(vmerr.Exited, "qemu: %s exited (%s)", v.name, v.status))
	default:
	}
	v.forwards = forwards
	if err := v.resolveForwards(ctx); err != nil {
		v.serial.Close()
		return err
	}
	return nil
}

// abortStart ends a QEMU that started but could not be connected to. A
// closed socket usually means QEMU is exiting over a bad option (some are
// parsed only after the sockets exist): it gets a moment to exit by itself,
// so that the error quotes its stderr.
func (v *VM) abortStart(err error) error {
	select {
	case <-v.exited:
	case <-time.After(500 * time.Millisecond):
		v.killWith("start failed: " + err.Error())
		<-v.exited
	}
	v.mu.Lock()
	killed := v.killedByUs
	v.mu.Unlock()
	if !killed {
		e := vmerr.New(vmerr.Exited, "qemu: %s exited during start (%s)", v.name, v.status).
			With("vm", v.name).With("stderr", v.lastStderr).With("stderr_file", v.stderrPath)
		e.Message += ":\n" + indent(v.lastStderr)
		e.Err = err
		err = e
	}
	v.event("start_failed", map[string]any{"error": err.Error()})
	return err
}

func forwardStrings(fs []Forward) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = fmt.Sprintf("%s:%s:%d->%d", f.Proto, f.HostAddr, f.HostPort, f.GuestPort)
	}
	return out
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func indent(s string) string {
	if s == "" {
		return "  | (stderr is empty)"
	}
	return "  | " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  | ")
}

// dialSocket connects to a unix socket QEMU is about to create, giving up
// when QEMU exits or ctx expires.
func (v *VM) dialSocket(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	delay := 2 * time.Millisecond
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) && ctx.Err() == nil {
			return nil, vmerr.Wrap(vmerr.IO, err, "qemu: connecting to %s", path).With("vm", v.name)
		}
		select {
		case <-v.exited:
			return nil, vmerr.New(vmerr.Exited, "qemu: %s exited before creating %s", v.name, filepath.Base(path))
		case <-ctx.Done():
			return nil, vmerr.Wrap(vmerr.Timeout, ctx.Err(), "qemu: %s did not create %s", v.name, path).With("vm", v.name)
		case <-time.After(delay):
		}
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// onEvent writes a QMP event to the timeline.
func (v *VM) onEvent(ev Event) {
	if v.run == nil {
		return
	}
	fields := map[string]any{"event": ev.Name, "seq": ev.Seq, "qemu_time": ev.Time.Format(journal.WallFormat)}
	if ev.Internal {
		fields["internal"] = true // a pause of vmscript's own (a screen reading)
	}
	if len(ev.Data) > 0 {
		var data any
		if json.Unmarshal(ev.Data, &data) == nil {
			fields["data"] = data
		}
	}
	v.run.Event("qmp:"+v.name, "event", fields)
}

// reap runs when QEMU has exited: it settles the exit status, ends QMP and
// closes Exited.
func (v *VM) reap(werr error) {
	st := ExitStatus{Code: -1}
	ps := v.cmd.ProcessState
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				st.Signal = signalName(ws.Signal())
			case ws.Exited():
				st.Code = ws.ExitStatus()
			}
		}
	} else if werr != nil {
		st.Detail = werr.Error()
	}

	// QEMU's last events (SHUTDOWN) are in the socket: read them before
	// deciding why it exited. EOF comes at once, as QEMU is gone.
	v.mu.Lock()
	client := v.qmp
	killed, why := v.killedByUs, v.killWhy
	v.mu.Unlock()
	var shutdown string
	if client != nil {
		select {
		case <-client.Done():
		case <-time.After(time.Second):
		}
		for _, ev := range client.Events() {
			if ev.Name == "SHUTDOWN" {
				var d struct {
					Reason string `json:"reason"`
				}
				json.Unmarshal(ev.Data, &d)
				shutdown = d.Reason
			}
		}
	}
	switch {
	case st.Signal == "SIGKILL":
		st.Reason = "killed"
		if killed {
			st.Detail = "SIGKILL sent by vmscript: " + why
		} else {
			st.Detail = "SIGKILL from outside vmscript (kill -9, the OOM killer, …)"
		}
	case st.Signal != "":
		st.Reason = "crashed"
	case shutdown != "":
		st.Reason = shutdown
	case st.Code == 0:
		st.Reason = "exited"
	default:
		st.Reason = "error"
	}
	// Read now: without a Run the log lives in Dir, removed below.
	tail := v.stderrTail()
	if st.Reason == "crashed" || st.Reason == "error" {
		st.Stderr = tail
	}
	v.lastStderr = tail
	v.status = st
	if client != nil {
		client.fail(vmerr.New(vmerr.Exited, "qemu: %s exited (%s)", v.name, st))
		client.conn.Close()
	}
	fields := map[string]any{"code": st.Code, "reason": st.Reason, "pid": v.pid}
	if st.Signal != "" {
		fields["signal"] = st.Signal
	}
	if st.Detail != "" {
		fields["detail"] = st.Detail
	}
	if st.Stderr != "" {
		fields["stderr"] = st.Stderr
	}
	if !v.started.IsZero() {
		fields["uptime_ms"] = time.Since(v.started).Milliseconds()
	}
	v.event("exit", fields)
	// Remove the private dir before announcing the exit, so that whoever
	// waits on Exited finds it gone.
	if v.ownDir {
		os.RemoveAll(v.dir)
	}
	v.mem.Release()
	close(v.exited)
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGBUS:
		return "SIGBUS"
	case syscall.SIGILL:
		return "SIGILL"
	}
	return "signal " + strconv.Itoa(int(s)) + " (" + s.String() + ")"
}

// stderrTail returns the last lines of QEMU's stderr, without the
// informational line QEMU prints while waiting for the serial client.
func (v *VM) stderrTail() string {
	data, err := os.ReadFile(v.stderrPath)
	if err != nil {
		return ""
	}
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	var keep []string
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if strings.Contains(l, "info: QEMU waiting for connection on") || l == "" {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > 20 {
		keep = keep[len(keep)-20:]
	}
	return strings.Join(keep, "\n")
}

// resolveForwards reads the ports QEMU bound for forwards with host port 0
// from "info usernet".
func (v *VM) resolveForwards(ctx context.Context) error {
	need := false
	for _, f := range v.forwards {
		if f.HostPort == 0 {
			need = true
		}
	}
	if !need {
		return nil
	}
	raw, err := v.QMP(ctx, "human-monitor-command", map[string]any{"command-line": "info usernet"})
	if err != nil {
		return err
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		return vmerr.Wrap(vmerr.Protocol, err, "qemu: info usernet")
	}
	fs, err := matchForwards(v.forwards, text)
	if err != nil {
		return err
	}
	v.forwards = fs
	return nil
}

type usernetEntry struct {
	proto, addr     string
	port, guestPort int
	used            bool
}

// matchForwards fills in the host ports of forwards with port 0 from the
// text of "info usernet", whose lines look like
//
//	TCP[HOST_FORWARD]  11       127.0.0.1 46791       10.0.2.15    22     0     0
func matchForwards(fs []Forward, text string) ([]Forward, error) {
	var entries []*usernetEntry
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[0], "[HOST_FORWARD]") {
			continue
		}
		port, err1 := strconv.Atoi(f[3])
		gport, err2 := strconv.Atoi(f[5])
		if err1 != nil || err2 != nil {
			continue
		}
		addr := f[2]
		if addr == "*" {
			addr = "0.0.0.0"
		}
		entries = append(entries, &usernetEntry{
			proto: strings.ToLower(strings.TrimSuffix(f[0], "[HOST_FORWARD]")),
			addr:  addr, port: port, guestPort: gport,
		})
	}
	out := append([]Forward(nil), fs...)
	take := func(f Forward, exact bool) int {
		for _, e := range entries {
			if !e.used && e.proto == f.Proto && e.guestPort == f.GuestPort && e.addr == f.HostAddr && (!exact || e.port == f.HostPort) {
				e.used = true
				return e.port
			}
		}
		return 0
	}
	for _, f := range out {
		if f.HostPort != 0 {
			take(f, true)
		}
	}
	for i, f := range out {
		if f.HostPort == 0 {
			p := take(f, false)
			if p == 0 {
				return nil, vmerr.New(vmerr.Protocol, "qemu: forward %s:%s:0->%d not in info usernet:\n%s", f.Proto, f.HostAddr, f.GuestPort, indent(text))
			}
			out[i].HostPort = p
		}
	}
	return out, nil
}

// Name returns the VM's name.
func (v *VM) Name() string { return v.name }

// PID returns QEMU's process id (also its process group id).
func (v *VM) PID() int { return v.pid }

// Dir returns the VM's private directory (sockets, OVMF variables). Start
// removes a directory it made when QEMU exits.
func (v *VM) Dir() string { return v.dir }

// AgentSocket is the host side of the guest agent's port ("" without
// Config.Agent).
func (v *VM) AgentSocket() string {
	if !v.agent {
		return ""
	}
	return filepath.Join(v.dir, AgentSocket)
}

// BIOSOnSerial reports whether SeaBIOS's serial console is on: the text of
// SeaBIOS and of option ROMs (iPXE) is on the serial port, and what is
// sent to the serial port reaches them as keys.
func (v *VM) BIOSOnSerial() bool { return v.biosSerial }

// Accel returns the accelerator in use, "kvm" or "tcg".
func (v *VM) Accel() string { return v.accel.Accel }

// AccelReason says why that accelerator was chosen.
func (v *VM) AccelReason() string { return v.accel.Reason }

// Argv returns QEMU's command line.
func (v *VM) Argv() []string { return append([]string(nil), v.argv...) }

// Forwards returns the port forwards with their host ports resolved.
func (v *VM) Forwards() []Forward { return append([]Forward(nil), v.forwards...) }

// MAC returns the NIC's MAC address ("" with net none).
func (v *VM) MAC() string { return v.mac }

// Serial returns the guest's serial port, for the console: reads are what
// the guest wrote, writes go to the guest. Read and write deadlines can be
// set. Reads end with io.EOF when QEMU exits.
func (v *VM) Serial() io.ReadWriter { return v.serial }

// StderrPath returns the file QEMU's stderr goes to: <name>.stderr.log in
// the run directory, or stderr.log in Dir without a Run (removed with Dir).
func (v *VM) StderrPath() string { return v.stderrPath }

// Exited is closed when QEMU has exited and ExitStatus is settled.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// client returns the QMP client (set by Start before it returns).
func (v *VM) client() *QMPClient {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.qmp
}

// QMP runs a QMP command (args: anything that encodes to a JSON object, or
// nil) and returns its "return" value. Replies of any size are read. The
// command is bounded by ctx, DefaultCommandTimeout if ctx has no deadline.
// On a QEMU that has exited it fails at once with kind "exited"; an error
// reply of QEMU has kind "refused".
func (v *VM) QMP(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return v.command(ctx, cmd, args, cmd != "query-status")
}

// QMPQuiet is QMP without the timeline record, for a caller that polls
// (the screen reads the display with a few commands every poll) and records
// what it found itself. A quiet "stop" is one of vmscript's own brief
// pauses: its STOP and the RESUME of the quiet "cont" after it are marked
// Internal, and WaitEvent passes over them.
func (v *VM) QMPQuiet(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	if cmd == "stop" {
		v.quietPause.Store(true)
	}
	ret, err := v.command(ctx, cmd, args, false)
	if err != nil && (cmd == "stop" || cmd == "cont") {
		v.quietPause.Store(false) // no RESUME will come to end it
	}
	return ret, err
}

// internalEvent says whether an event being read is one of a quiet pause's:
// its STOP, and the RESUME that ends it.
func (v *VM) internalEvent(name string) bool {
	switch name {
	case "STOP":
		return v.quietPause.Load()
	case "RESUME":
		return v.quietPause.Swap(false)
	}
	return false
}

func (v *VM) command(ctx context.Context, cmd string, args any, record bool) (json.RawMessage, error) {
	c := v.client()
	if c == nil {
		return nil, vmerr.New(vmerr.Internal, "qemu: %s: QMP is not connected", v.name)
	}
	t0 := time.Now()
	ret, err := c.Command(ctx, cmd, args)
	if v.run != nil && record {
		fields := map[string]any{"command": cmd, "ms": time.Since(t0).Milliseconds()}
		if args != nil {
			fields["args"] = args
		}
		if err != nil {
			fields["error"] = err.Error()
		}
		v.run.Event("qmp:"+v.name, "command", fields)
	}
	if err != nil {
		var e *vmerr.Error
		if errors.As(err, &e) {
			e.With("vm", v.name)
		}
	}
	return ret, err
}

// EventMark returns the Seq the next QMP event will have; pass it to
// WaitEvent as from to wait only for later events.
func (v *VM) EventMark() int { return v.client().Mark() }

// Events returns the QMP events received since Start.
func (v *VM) Events() []Event { return v.client().Events() }

// WaitEvent waits for a QMP event named name (any if empty) whose data
// satisfies match (if not nil). Every event since Start is kept: without
// from the first matching event since Start is returned even if it arrived
// before the call; with from (an EventMark or an earlier Event.Seq+1) only
// events from there count. It fails with kind "exited" when QEMU exits first
// and "timeout" when ctx expires.
func (v *VM) WaitEvent(ctx context.Context, name string, match func(data json.RawMessage) bool, from ...int) (Event, error) {
	f := 0
	if len(from) > 0 {
		f = from[0]
	}
	ev, err := v.client().WaitFor(ctx, name, f, func(ev Event) bool { return !ev.Internal && (match == nil || match(ev.Data)) })
	if err != nil {
		var e *vmerr.Error
		if errors.As(err, &e) {
			e.With("vm", v.name)
		}
	}
	return ev, err
}

// Cont lets the paused guest run (QMP "cont").
func (v *VM) Cont(ctx context.Context) error {
	_, err := v.QMP(ctx, "cont", nil)
	if err == nil {
		v.event("cont", nil)
	}
	return err
}

// Status returns the run state from query-status: "prelaunch", "paused",
// "running", "shutdown", "guest-panicked", …
func (v *VM) Status(ctx context.Context) (string, error) {
	raw, err := v.QMP(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", vmerr.Wrap(vmerr.Protocol, err, "qemu: query-status reply")
	}
	return st.Status, nil
}

// Powerdown presses the ACPI power button (system_powerdown). A guest
// without ACPI button handling ignores it.
func (v *VM) Powerdown(ctx context.Context) error {
	_, err := v.QMP(ctx, "system_powerdown", nil)
	return err
}

// Quit asks QEMU to exit at once (QMP quit); Wait then reports reason
// "host-qmp-quit". A QEMU that exits before its reply arrives counts as
// success.
func (v *VM) Quit(ctx context.Context) error {
	_, err := v.QMP(ctx, "quit", nil)
	if err != nil && vmerr.Is(err, vmerr.Exited) {
		select {
		case <-v.exited:
			return nil
		case <-time.After(time.Second):
		}
	}
	return err
}

// Kill sends SIGKILL to QEMU's process group. Killing a QEMU that has
// already exited does nothing.
func (v *VM) Kill() error {
	return v.killWith("Kill called")
}

func (v *VM) killWith(why string) error {
	select {
	case <-v.exited:
		return nil
	default:
	}
	v.mu.Lock()
	v.killedByUs, v.killWhy = true, why
	v.mu.Unlock()
	// QEMU leads its own process group (Setpgid); it is not reaped yet, so
	// the group id cannot have been reused.
	err := syscall.Kill(-v.pid, syscall.SIGKILL)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return vmerr.Wrap(vmerr.IO, err, "qemu: killing %s", v.name)
	}
	return nil
}

// Wait waits for QEMU to exit and returns how it ended. It is bounded only
// by ctx: pass a deadline.
func (v *VM) Wait(ctx context.Context) (ExitStatus, error) {
	select {
	case <-v.exited:
		return v.status, nil
	case <-ctx.Done():
		kind := vmerr.DoneKind(ctx)
		return ExitStatus{}, vmerr.Wrap(kind, ctx.Err(), "qemu: waiting for %s to exit", v.name).With("vm", v.name)
	}
}

// Screendump writes the screen as PNG to file; a relative name is put in
// the run directory (or the current directory without a run).
func (v *VM) Screendump(ctx context.Context, file string) error {
	if !filepath.IsAbs(file) && v.run != nil {
		file = v.run.Path(file)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return vmerr.Wrap(vmerr.IO, err, "qemu: screendump")
	}
	if _, err := v.QMP(ctx, "screendump", map[string]any{"filename": abs, "format": "png"}); err != nil {
		return err
	}
	v.event("artifact", map[string]any{"what": "screendump", "file": abs})
	return nil
}

// SendKeys presses a key combination and releases it, e.g.
// "ctrl-alt-delete", "ret", "shift-a", "ctrl-alt-f2". Names are QEMU qcodes
// (see QMP send-key) plus the aliases ctrl, alt, del, enter, esc, backspace,
// pgup, pgdn, win and the characters '-' (as "minus") and ' ' (as "space").
func (v *VM) SendKeys(ctx context.Context, combo string) error {
	keys, err := ParseKeys(combo)
	if err != nil {
		return err
	}
	type key struct {
		Type string `json:"type"`
		Data string `json:"data"`
	}
	ks := make([]key, len(keys))
	for i, k := range keys {
		ks[i] = key{"qcode", k}
	}
	_, err = v.QMP(ctx, "send-key", map[string]any{"keys": ks})
	return err
}

var keyAliases = map[string]string{
	"control": "ctrl", "del": "delete", "enter": "ret", "return": "ret",
	"escape": "esc", "backspace": "backspace", "bs": "backspace",
	"pgup": "pgup", "pageup": "pgup", "pgdn": "pgdn", "pagedown": "pgdn",
	"win": "meta_l", "super": "meta_l", "meta": "meta_l", "space": "spc",
	"altgr": "alt_r", "ctrl_l": "ctrl", "alt_l": "alt", "ins": "insert",
}

// ParseKeys turns a combination like "ctrl-alt-delete" into QEMU qcodes.
// Unknown names pass through for QEMU to judge.
func ParseKeys(combo string) ([]string, error) {
	combo = strings.TrimSpace(strings.ToLower(combo))
	if combo == "" {
		return nil, usage("keys", "empty key combination")
	}
	var out []string
	for _, k := range strings.Split(combo, "-") {
		if k == "" {
			return nil, usage("keys", "%q: empty key name (write the key '-' as \"minus\")", combo)
		}
		if a, ok := keyAliases[k]; ok {
			k = a
		}
		out = append(out, k)
	}
	return out, nil
}

// Stop ends QEMU: QMP quit, then, if QEMU has not exited within grace,
// SIGKILL to its process group. The timeline's "stop" event says which
// happened. Stop is idempotent and returns when QEMU has exited. The serial
// socket is closed once a console reading it has seen EOF (or after 2 s).
func (v *VM) Stop(grace time.Duration) {
	v.stopOnce.Do(func() {
		defer close(v.stopped)
		t0 := time.Now()
		method, why := "", ""
		select {
		case <-v.exited:
			method, why = "none", "QEMU had already exited ("+v.status.String()+")"
		default:
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			err := v.Quit(ctx)
			if err == nil {
				select {
				case <-v.exited:
				case <-ctx.Done():
				}
			}
			cancel()
			select {
			case <-v.exited:
				method, why = "qmp-quit", "QEMU exited on QMP quit"
			default:
				method = "sigkill"
				if err != nil {
					why = "QMP quit failed: " + err.Error()
				} else {
					why = fmt.Sprintf("QEMU did not exit within %s of QMP quit", grace)
				}
				v.killWith("Stop: " + why)
				select {
				case <-v.exited:
				case <-time.After(10 * time.Second):
					why += "; QEMU still not reaped 10 s after SIGKILL"
				}
			}
		}
		v.event("stop", map[string]any{"method": method, "why": why, "ms": time.Since(t0).Milliseconds()})
		if v.serial != nil {
			if v.serial.reading.Load() {
				select {
				case <-v.serial.eof:
				case <-time.After(2 * time.Second):
				}
			}
			v.serial.Close()
		}
	})
	<-v.stopped
}
