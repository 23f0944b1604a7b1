package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/control"
	"github.com/vmscript/vmscript/toolkit/shellquote"
)

// proxyCmdName is the hidden subcommand ssh runs as its ProxyCommand.
const proxyCmdName = "__proxy"

func newSSHCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh RUN [VM] [-- ssh options and command]",
		Short: "Open an OpenSSH session to a live run's VM through the run's route",
		Long: `ssh runs the system's ssh into a VM of a live run, through the route the
run itself uses: the user network's forward to the guest's port 22, or the
guest's DHCP lease on a vmscript LAN, dialled through the LAN's own stack
(no route from the host needed). ssh reaches it through a ProxyCommand that
asks the run's control socket to dial the guest.

The user is root and, for a lab guest, the lab's key is passed; host keys
are not checked (StrictHostKeyChecking=no, UserKnownHostsFile=/dev/null).
After "--" come ssh's own options, then the remote command; options given
there win over these (-l alice, -i key, -o StrictHostKeyChecking=yes).

` + attachHelp,
		Example: `  vmscript ssh 20250101-120000-boot
  vmscript ssh 20250101 mini -- uname -a
  vmscript ssh 20250101 mini -- -l alice -L 8080:localhost:80`,
		Args: func(cmd *cobra.Command, args []string) error {
			n := len(args)
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				n = dash
			}
			if n < 1 || n > 2 {
				return usageErr("ssh takes RUN and an optional VM before \"--\", got %d arguments\nUsage: vmscript ssh RUN [VM] [-- ssh options and command]", n)
			}
			return nil
		},
		ValidArgsFunction: completeRunVM,
		RunE: func(cmd *cobra.Command, args []string) error {
			var extra []string
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				args, extra = args[:dash], args[dash:]
			}
			return runSSH(args, extra)
		},
	}
}

// runSSH resolves the run and its VM, then replaces this process with ssh.
func runSSH(args, extra []string) error {
	e, name, err := findRun(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), infoTimeout)
	info, err := control.Info(ctx, e.Socket)
	cancel()
	if err != nil {
		return failErr("%v", err)
	}
	vm, err := control.PickVM(info, name)
	if err != nil {
		return failErr("%v", err)
	}
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		return failErr("ssh: %v (install openssh-client)", err)
	}
	self, err := os.Executable()
	if err != nil {
		return failErr("%v", err)
	}
	argv := sshArgv(self, e.Socket, vm, extra)
	if err := syscall.Exec(sshPath, argv, os.Environ()); err != nil {
		return failErr("exec %s: %v", sshPath, err)
	}
	return nil
}

// sshArgv is ssh's command line: the user's options first (for ssh the
// first value of an option wins), then the ProxyCommand (to the guest's
// port 22, or the one -p names), root, the lab's key and no host key
// checks, the destination, and the user's command.
func sshArgv(self, socket string, vm control.VMInfo, extra []string) []string {
	opts, command := splitSSHArgs(extra)
	// %p is ssh's port: 22 unless the user passes -p.
	proxy := strings.ReplaceAll(shellquote.Join([]string{self, proxyCmdName, socket, vm.Name}), "%", "%%") + " %p"
	argv := append([]string{"ssh"}, opts...)
	argv = append(argv,
		"-o", "ProxyCommand="+proxy,
		"-o", "User=root",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
	)
	if vm.SSHKey != "" {
		argv = append(argv, "-i", vm.SSHKey, "-o", "IdentitiesOnly=yes")
	}
	argv = append(argv, "--", sshHost(vm.Name))
	return append(argv, command...)
}

// sshOptsWithArg are ssh's option letters that take an argument.
const sshOptsWithArg = "BbcDEeFIiJLlmOoPpQRSWw"

// splitSSHArgs splits the words after "--" into ssh options and the remote
// command: options are words that start with "-" (with the next word when
// the last letter takes an argument), up to the first other word or "--".
func splitSSHArgs(words []string) (opts, command []string) {
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			return opts, words[i+1:]
		}
		if len(w) < 2 || w[0] != '-' {
			return opts, words[i:]
		}
		opts = append(opts, w)
		for j := 1; j < len(w); j++ {
			if strings.IndexByte(sshOptsWithArg, w[j]) >= 0 {
				if j == len(w)-1 && i+1 < len(words) {
					i++
					opts = append(opts, words[i])
				}
				break
			}
		}
	}
	return opts, nil
}

// sshHost is the destination ssh shows: the VM's name when it is a plain
// host name (the ProxyCommand ignores it).
func sshHost(name string) string {
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "guest"
		}
	}
	if name == "" || name[0] == '-' {
		return "guest"
	}
	return name
}

func newProxyCmd() *cobra.Command {
	return &cobra.Command{
		Use:    proxyCmdName + " RUN|SOCKET VM PORT",
		Short:  "Pipe stdin and stdout to a TCP port of a live run's VM (ssh's ProxyCommand)",
		Hidden: true,
		Args:   cobra.ExactArgs(3),
		RunE: func(_ *cobra.Command, args []string) error {
			port, err := strconv.Atoi(args[2])
			if err != nil || port < 1 || port > 65535 {
				return usageErr("port %q: want 1-65535", args[2])
			}
			socket := args[0]
			if fi, err := os.Stat(socket); err != nil || fi.Mode()&os.ModeSocket == 0 || !filepath.IsAbs(socket) {
				e, err := control.Find(args[0])
				if err != nil {
					return failErr("%v", err)
				}
				socket = e.Socket
			}
			s, err := control.Dial(context.Background(), socket, args[1], port, 0)
			if err != nil {
				return failErr("%v", err)
			}
			defer s.Close()
			if err := control.Pipe(s, os.Stdin, os.Stdout); err != nil {
				return failErr("%v", err)
			}
			return nil
		},
	}
}
