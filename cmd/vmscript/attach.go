package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/control"
)

// infoTimeout bounds asking a live run about itself.
const infoTimeout = 5 * time.Second

// attachHelp is the part of the attach commands' help they share.
const attachHelp = `RUN is a live run's id (as vmscript ps shows it: its run directory's name,
with -2, -3, … when that is taken), its run directory, or a prefix of exactly
one id. VM may be left out when the run has one VM (or one still running).
Only the user who started a run may attach to it.`

func newPSCmd(stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ps [--json]",
		Short: "List the live runs and their VMs",
		Long: `ps lists the runs of this user that are live now — a script running, or the
REPL after it (run -k, repl) — and their VMs: QEMU's pid, the accelerator,
whether it still runs, its port forwards (host address -> guest port), its
NICs on vmscript LANs with their DHCP leases, and its console log.

Runs register in $XDG_RUNTIME_DIR/vmscript (else /tmp/vmscript-UID), a
directory only their user can enter; the entries of runs that died (kill -9)
are removed here. --json prints the same as a JSON array.`,
		Example: `  vmscript ps
  vmscript ps --json | jq '.[].vms[].name'`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			runs := liveRuns()
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(runs)
			}
			printRuns(stdout, runs, time.Now())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array of runs")
	return cmd
}

// liveRuns asks every live run about itself; a run that does not answer is
// listed with the state "unreachable".
func liveRuns() []*control.RunInfo {
	runs := []*control.RunInfo{}
	for _, e := range control.List() {
		ctx, cancel := context.WithTimeout(context.Background(), infoTimeout)
		info, err := control.Info(ctx, e.Socket)
		cancel()
		if err != nil {
			info = &control.RunInfo{Entry: e, State: "unreachable: " + err.Error(), VMs: []control.VMInfo{}}
		}
		runs = append(runs, info)
	}
	return runs
}

// printRuns writes a block per run: its line, its directory, a table of
// its VMs.
func printRuns(w io.Writer, runs []*control.RunInfo, now time.Time) {
	if len(runs) == 0 {
		fmt.Fprintln(w, "no live runs")
		return
	}
	for i, r := range runs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		script := r.Script
		if script == "" {
			script = "(repl)"
		}
		fmt.Fprintf(w, "run %s  pid %d  %s  up %s  %s\n", r.ID, r.PID, r.State, now.Sub(r.Start).Round(time.Second), script)
		fmt.Fprintf(w, "  dir %s\n", r.RunDir)
		if len(r.VMs) == 0 {
			fmt.Fprintln(w, "  no VMs")
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  VM\tPID\tACCEL\tSTATE\tFORWARDS\tLAN\tCONSOLE LOG")
		for _, v := range r.VMs {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.PID, v.Accel, vmState(v), forwards(v), lanPorts(v), v.ConsoleLog)
		}
		tw.Flush()
	}
}

func vmState(v control.VMInfo) string {
	if v.Running {
		return "running"
	}
	return "exited " + v.Exit
}

// forwards reads "127.0.0.1:40123->22" for each forward, "-" for none.
func forwards(v control.VMInfo) string {
	var out []string
	for _, f := range v.Forwards {
		s := fmt.Sprintf("%s:%d->%d", f.HostAddr, f.HostPort, f.GuestPort)
		if f.Proto != "" && f.Proto != "tcp" {
			s += "/" + f.Proto
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " ")
}

// lanPorts reads "lan 52:54:00:…=10.0.3.100" for each LAN NIC, "-" for none.
func lanPorts(v control.VMInfo) string {
	var out []string
	for _, p := range v.LAN {
		ip := p.IP
		if ip == "" {
			ip = "no-lease"
		}
		out = append(out, p.LAN+" "+p.MAC+"="+ip)
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

func newConsoleCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "console RUN [VM]",
		Short: "Attach this terminal to the serial console of a live run's VM",
		Long: `console attaches this terminal to the serial console of a VM of a live run,
while its script runs (or in the REPL after it), without disturbing it: the
run's console keeps every byte, the keys typed here are sent through it (so
they are in the timeline and the guest's echo in the console log, and the
script's expect sees them), and this terminal shows the console's last lines
and then every byte from there on. Ctrl-] detaches; Ctrl-C goes to the guest.

` + attachHelp,
		Example: `  vmscript console 20250101-120000-boot
  vmscript console docs/work-notes/20250101-120000-boot mini`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeRunVM,
		RunE: func(_ *cobra.Command, args []string) error {
			e, vm, err := findRun(args)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
			defer stop()
			s, err := control.Console(ctx, e.Socket, vm)
			if err != nil {
				return failErr("%v", err)
			}
			err = control.Attach(ctx, s, os.Stdin, stdout, s.VM+" in run "+e.ID)
			switch {
			case errors.Is(err, control.ErrEnded):
				return &exitError{code: exitFail}
			case err != nil:
				return failErr("%v", err)
			}
			return nil
		},
	}
}

// findRun resolves RUN (and passes VM on) for the attach commands.
func findRun(args []string) (control.Entry, string, error) {
	e, err := control.Find(args[0])
	if err != nil {
		return e, "", failErr("%v", err)
	}
	vm := ""
	if len(args) > 1 {
		vm = args[1]
	}
	return e, vm, nil
}

// completeRunVM completes RUN with the live runs' ids, then VM with that
// run's VMs.
func completeRunVM(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	var out []string
	switch len(args) {
	case 0:
		for _, e := range control.List() {
			out = append(out, e.ID)
		}
	case 1:
		e, err := control.Find(args[0])
		if err != nil {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), infoTimeout)
		defer cancel()
		if info, err := control.Info(ctx, e.Socket); err == nil {
			for _, v := range info.VMs {
				out = append(out, v.Name)
			}
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
