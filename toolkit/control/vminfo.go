package control

import (
	"context"
	"os"
	"path/filepath"

	"github.com/vmscript/vmscript/toolkit/machine"
	"github.com/vmscript/vmscript/toolkit/qemu"
)

// vmInfo describes a guest for OpInfo.
func vmInfo(m *machine.Machine) VMInfo {
	v := VMInfo{Name: m.Name(), PID: m.VM.PID(), Accel: m.VM.Accel(), Running: true,
		Forwards: m.VM.Forwards(), LAN: []LANPort{}, ConsoleLog: m.ConsoleLog}
	if v.Forwards == nil {
		v.Forwards = []qemu.Forward{}
	}
	if !vmRunning(m) {
		v.Running = false
		st, _ := m.VM.Wait(context.Background()) // returns at once: QEMU has exited
		v.Exit = st.String()
	}
	for _, p := range m.Ports() {
		lp := LANPort{LAN: p.LAN.Name(), MAC: p.MAC}
		if l, ok := p.LAN.DHCP().Lease(p.MAC); ok {
			lp.IP = l.IP.String()
		}
		v.LAN = append(v.LAN, lp)
	}
	if img := m.Lab(); img != nil {
		v.Lab = img.Name
		v.SSHKey = img.Files["ssh-key"]
	}
	return v
}

// vmRunning reports whether the guest's QEMU has not exited.
func vmRunning(m *machine.Machine) bool {
	select {
	case <-m.VM.Exited():
		return false
	default:
		return true
	}
}

func pid() int { return os.Getpid() }

// absPath makes p absolute (as is when that fails).
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
