// Command vmscript runs short Lua scripts against virtual machines: QEMU
// lifecycle, serial-console expect, SSH, netboot and a virtual LAN, exposed
// to Lua so each question about a boot image is a few lines of script.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes, fixed because git bisect and CI read them.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
	// exitPanic: the error that ended the script is a guest's kernel
	// panic (the console's kernel-panic failure pattern), so a bisect or
	// CI tells "the image panics" from "the script found a fault".
	exitPanic  = 3
	exitSIGINT = 130
)

// exitError carries an exit code and a one-line message for main to print.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErr(format string, a ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, a...)}
}

func failErr(format string, a ...any) error {
	return &exitError{code: exitFail, msg: fmt.Sprintf(format, a...)}
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// execute runs the CLI with args and returns the process exit code.
func execute(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "vmscript: "+ee.msg)
		}
		return ee.code
	}
	// Anything else comes from cobra's argument and flag parsing.
	fmt.Fprintln(stderr, "vmscript: "+err.Error())
	fmt.Fprintln(stderr, "Run 'vmscript --help' for usage.")
	return exitUsage
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "vmscript",
		Short: "Run Lua scripts against virtual machines to find out why a boot image regressed",
		Long: strings.TrimSpace(`
vmscript runs short Lua scripts against QEMU virtual machines. The host gives
Lua QEMU lifecycle, serial-console expect, SSH, TFTP/HTTP netboot and a
virtual LAN with its own DHCP server, so each question about a boot image —
does the ISO boot, does the lan interface get a lease, what does poweroff
print — is one short script, run without recompiling.

Every run writes its evidence to a run directory (docs/work-notes/<time>-<script>/
by default): timeline.jsonl, run.json, console logs, notes.`),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr("%v\nRun '%s --help' for usage.", err, c.CommandPath())
	})
	root.AddCommand(newMatrixCmd(stdout), newReportCmd(stdout), newTimelineCmd(stdout), newSlurmCmd(stdout), newRunCmd(stdout, stderr), newREPLCmd(stdout, stderr), newCheckCmd(stdout, stderr),
		newDocCmd(stdout), newLabCmd(stdout, stderr), newWarmCmd(stdout, stderr), newVersionCmd(stdout),
		newPSCmd(stdout), newConsoleCmd(stdout), newSSHCmd(), newProxyCmd())
	return root
}
