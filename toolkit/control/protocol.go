package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/vmscript/vmscript/toolkit/qemu"
)

// Operations a client asks for, in Request.Op.
const (
	// OpInfo answers with the run and its VMs (Response.Run).
	OpInfo = "info"
	// OpConsole attaches to a VM's serial console: after the answer the
	// connection carries the console's raw bytes to the client (its recent
	// tail, then every byte from there on) and the client's bytes to the
	// console (each write a Console.Send).
	OpConsole = "console"
	// OpDial connects to a TCP port of a VM by its route (the forward on
	// user networking, or its LAN lease): after the answer the connection
	// carries that TCP stream both ways, half-closes included.
	OpDial = "dial"
)

// maxLine bounds one JSON line of the protocol.
const maxLine = 1 << 20

// Request is the first line a client sends: one JSON object, then "\n".
type Request struct {
	// Op is OpInfo, OpConsole or OpDial.
	Op string `json:"op"`
	// VM names the guest; "" picks the run's only one.
	VM string `json:"vm,omitempty"`
	// Port is the guest's TCP port for OpDial (0: 22).
	Port int `json:"port,omitempty"`
	// Via is "forward", "lan" or "" (the VM's route) for OpDial.
	Via string `json:"via,omitempty"`
	// TimeoutS bounds OpDial's lease wait and connect, in seconds (0:
	// DefaultDialTimeout).
	TimeoutS float64 `json:"timeout_s,omitempty"`
}

// Response is the server's first line: one JSON object, then "\n". For
// OpConsole and OpDial a successful response is followed by the raw
// stream; an error response ends the connection.
type Response struct {
	// OK is false when the request failed; Error and Kind say why.
	OK bool `json:"ok"`
	// Error is the failure's message.
	Error string `json:"error,omitempty"`
	// Kind is its vmerr kind ("usage", "refused", "notfound", …).
	Kind string `json:"kind,omitempty"`
	// Run is the answer to OpInfo.
	Run *RunInfo `json:"run,omitempty"`
	// VM is the guest OpConsole and OpDial settled on.
	VM string `json:"vm,omitempty"`
	// Addr is the address OpDial connected to.
	Addr string `json:"addr,omitempty"`
}

// RunInfo describes a live run.
type RunInfo struct {
	Entry
	// State is what the run is doing: "script", "repl", "ending".
	State string `json:"state"`
	// VMs are the run's guests in the order they started, stopped ones
	// included.
	VMs []VMInfo `json:"vms"`
}

// VMInfo describes one guest of a run.
type VMInfo struct {
	// Name is the VM's name in the run.
	Name string `json:"name"`
	// PID is QEMU's process id.
	PID int `json:"pid"`
	// Accel is "kvm" or "tcg".
	Accel string `json:"accel"`
	// Running is false once QEMU has exited; Exit then says how.
	Running bool   `json:"running"`
	Exit    string `json:"exit,omitempty"`
	// Forwards are the user network's port forwards, host ports resolved.
	Forwards []qemu.Forward `json:"forwards"`
	// LAN are the VM's NICs on vmscript LANs and their leases.
	LAN []LANPort `json:"lan"`
	// ConsoleLog is the path of the raw console log.
	ConsoleLog string `json:"console_log"`
	// Lab is the lab image the VM boots ("" for none); SSHKey is its
	// private key, which logs in as root.
	Lab    string `json:"lab,omitempty"`
	SSHKey string `json:"ssh_key,omitempty"`
}

// LANPort is a VM's NIC on a vmscript LAN.
type LANPort struct {
	// LAN is the LAN's name.
	LAN string `json:"lan"`
	// MAC is the NIC's address.
	MAC string `json:"mac"`
	// IP is the address the LAN's DHCP server leased to it ("" for none
	// yet).
	IP string `json:"ip,omitempty"`
}

// writeLine writes v as one JSON line.
func writeLine(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// readLine reads one JSON line into v, reading nothing past its "\n" (the
// raw stream that may follow stays in r).
func readLine(r *bufio.Reader, v any) error {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return fmt.Errorf("protocol line longer than %d bytes", maxLine)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("protocol: %w", err)
	}
	return nil
}
