package control

import (
	"strings"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// pickVM returns the index of the guest name names among a run's guests
// (names, and whether each still runs); "" is the run's only guest, or its
// only running one.
func pickVM(run string, names []string, running []bool, name string) (int, error) {
	only, nrunning := -1, 0
	for i, n := range names {
		if n == name {
			return i, nil
		}
		if running[i] {
			only, nrunning = i, nrunning+1
		}
	}
	list := strings.Join(names, ", ")
	switch {
	case len(names) == 0:
		return 0, vmerr.New(vmerr.NotFound, "run %s has no VM (yet)", run)
	case name != "":
		return 0, vmerr.New(vmerr.NotFound, "run %s has no VM %q; its VMs: %s", run, name, list)
	case len(names) == 1:
		return 0, nil
	case nrunning == 1:
		return only, nil
	}
	return 0, vmerr.New(vmerr.Usage, "run %s has %d VMs (%s); name one", run, len(names), list)
}

// PickVM picks the guest name names in a run's info as the server picks
// for a console or a dial: "" is the run's only VM, or its only running
// one.
func PickVM(info *RunInfo, name string) (VMInfo, error) {
	names := make([]string, len(info.VMs))
	running := make([]bool, len(info.VMs))
	for i, v := range info.VMs {
		names[i], running[i] = v.Name, v.Running
	}
	i, err := pickVM(info.ID, names, running, name)
	if err != nil {
		return VMInfo{}, err
	}
	return info.VMs[i], nil
}
