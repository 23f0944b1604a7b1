package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/internal/version"
	lualib "github.com/vmscript/vmscript/lua"
	"github.com/vmscript/vmscript/toolkit/dur"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/luahost"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// DefaultWorkNotes is where runs go, relative to the current directory,
// unless --out says otherwise.
const DefaultWorkNotes = "docs/work-notes"

// cleanupGrace bounds how long a cancelled script may take to unwind before
// vmscript stops its children and exits anyway.
const cleanupGrace = 5 * time.Second

type runFlags struct {
	out      string
	timeout  string
	args     []string
	luaPath  string
	keepOpen string
	verbose  bool
	quiet    bool
	jsonOut  string
	junitOut string
}

// Values of --keep-open.
const (
	keepNever  = "never"
	keepFail   = "fail"
	keepAlways = "always"
)

// addRunFlags adds the flags run and repl share.
func addRunFlags(cmd *cobra.Command, f *runFlags) {
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "out", "o", "", "run directory (default docs/work-notes/<time>-<script>/)")
	fl.StringVarP(&f.timeout, "timeout", "t", "", `stop the whole run after this long ("90s", "10m", seconds); default none; the REPL is not bound by it`)
	fl.StringArrayVarP(&f.args, "arg", "a", nil, "script argument key=value, readable as args.key (repeatable)")
	fl.StringVar(&f.luaPath, "lua-path", "", `extra require templates ("dir/?.lua;…"); LUA_PATH is ignored unless passed here`)
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "mirror every console line live, prefixed with the VM's name")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "show only errors and the script's output (no progress)")
	fl.StringVar(&f.jsonOut, "json", "", "write a machine-readable result (steps, verdicts, error, durations, exit code) to FILE")
	fl.StringVar(&f.junitOut, "junit", "", "write a JUnit XML report (one test case per notes.step) to FILE")
	_ = cmd.MarkFlagFilename("json", "json")
	_ = cmd.MarkFlagFilename("junit", "xml")
	_ = cmd.MarkFlagDirname("out")
	cmd.MarkFlagsMutuallyExclusive("verbose", "quiet")
}

// luaFiles completes script arguments with *.lua files.
func luaFiles(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveDefault
	}
	return []string{"lua"}, cobra.ShellCompDirectiveFilterFileExt
}

func newRunCmd(stdout, stderr io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run SCRIPT.lua [flags] [-- extra args]",
		Short: "Run a Lua script",
		Long: `run executes SCRIPT.lua. Its evidence goes to a fresh run directory,
docs/work-notes/<YYYYMMDD-HHMMSS>-<script>/ under the current directory unless
--out names one: timeline.jsonl (every event on one clock), run.json, and the
logs and notes the script produces.

In the script, args holds the -a key=value pairs (args.key) and arg the
arguments after "--" (arg[1], arg[2], …; arg[0] is the script).

With --keep-open (-k), a failing script leaves its VMs running and opens a
Lua REPL with the script's globals (make the VMs you want to poke at globals:
top-level locals are gone once the script ends); --keep-open=always opens it
at the end of every run. Leaving the REPL (Ctrl-D) stops the VMs. The exit
code stays the script's.

Progress goes to stderr: on a terminal one status line (what is awaited, on
which VM, elapsed vs timeout, the last console line), otherwise plain
timestamped lines; -v mirrors every console line, --quiet shows only errors
and the script's output. --json and --junit write reports for machines.

Exit codes: 0 when the script ends normally, 1 when it raises an error or
hits --timeout, 2 for usage errors, 130 on SIGINT (143 on SIGTERM), or the
code given to vmscript.exit(code).`,
		Example: `  vmscript run scripts/demo.lua
  vmscript run scripts/04-network.lua -a iface=lan --timeout 10m
  vmscript run -k scripts/02-boot.lua        # on failure, a REPL with the VMs still up
  vmscript run bisect.lua --out /tmp/run1 --junit report.xml -- extra positional args`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			n := len(args)
			if dash >= 0 {
				n = dash
			}
			if n != 1 {
				return usageErr("run takes exactly one script before \"--\", got %d\nUsage: vmscript run SCRIPT.lua [flags] [-- extra args]", n)
			}
			return nil
		},
		ValidArgsFunction: luaFiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			var extra []string
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				extra = args[dash:]
			}
			switch f.keepOpen {
			case keepNever, keepFail, keepAlways:
			default:
				return usageErr("--keep-open=%q: want fail or always", f.keepOpen)
			}
			return runScript(args[0], extra, f, stdout, stderr)
		},
	}
	addRunFlags(cmd, &f)
	cmd.Flags().StringVarP(&f.keepOpen, "keep-open", "k", keepNever, "on failure keep the VMs up and open a Lua REPL (-k); --keep-open=always also after success")
	cmd.Flags().Lookup("keep-open").NoOptDefVal = keepFail
	_ = cmd.RegisterFlagCompletionFunc("keep-open", cobra.FixedCompletions([]string{keepFail, keepAlways, keepNever}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newREPLCmd(stdout, stderr io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "repl [SCRIPT.lua] [flags] [-- extra args]",
		Short: "Open a Lua REPL with the vmscript API, optionally after running a script",
		Long: `repl opens an interactive Lua prompt with the whole vmscript API (qemu,
ssh, lan, notes, …), after running SCRIPT.lua if one is given, whether it
succeeds or fails. Like run, it writes a run directory.

Type Lua; an expression (or =expr) prints its value, tables pretty-printed,
errors with their kind. An incomplete chunk continues on the next line.
Line editing and history (~/.cache/vmscript/repl_history) on a terminal.
vm.console:interact() attaches the terminal to a VM's console; Ctrl-]
returns. Ctrl-D or .quit leaves and stops the VMs.`,
		Example: `  vmscript repl
  vmscript repl scripts/boot-mini.lua`,
		Args: func(cmd *cobra.Command, args []string) error {
			n := len(args)
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				n = dash
			}
			if n > 1 {
				return usageErr("repl takes at most one script before \"--\", got %d", n)
			}
			return nil
		},
		ValidArgsFunction: luaFiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			var extra []string
			script := ""
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				extra = args[dash:]
				args = args[:dash]
			}
			if len(args) == 1 {
				script = args[0]
			}
			f.keepOpen = keepAlways
			return runScript(script, extra, f, stdout, stderr)
		},
	}
	addRunFlags(cmd, &f)
	return cmd
}

// parseArgs turns -a key=value pairs into a map, refusing malformed ones.
func parseArgs(pairs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, usageErr("-a %q: want key=value", p)
		}
		if k == "" {
			return nil, usageErr("-a %q: empty key", p)
		}
		if _, dup := out[k]; dup {
			return nil, usageErr("-a %s given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// sessionResult is how the Lua goroutine ended.
type sessionResult struct {
	err error
	// failedAt is when the script failed (zero when it did not), for the
	// reports: the step running then failed.
	failedAt time.Time
}

// runScript runs script (none for a bare REPL) and, per f.keepOpen, the REPL
// after it, on one goroutine: the Lua state belongs to it.
func runScript(script string, extra []string, f runFlags, stdout, stderr io.Writer) error {
	scriptArgs, err := parseArgs(f.args)
	if err != nil {
		return err
	}
	var timeout time.Duration
	if f.timeout != "" {
		if timeout, err = dur.Parse(f.timeout); err != nil {
			return usageErr("--timeout: %v", err)
		}
	}
	if script != "" {
		if err := checkReadable(script); err != nil {
			return usageErr("%v", err)
		}
		// A script that does not compile fails before anything is written.
		if err := luahost.Compile(script); err != nil {
			var se *luahost.SyntaxError
			if errors.As(err, &se) {
				return failErr("%v", se)
			}
			return usageErr("%s: %v", script, err)
		}
	}

	start := time.Now()
	var run *journal.Run
	dirScript := script
	if dirScript == "" {
		dirScript = "repl"
	}
	if f.out != "" {
		run, err = journal.New(f.out, start)
	} else {
		run, err = journal.NewUnder(DefaultWorkNotes, dirScript, start)
	}
	if err != nil {
		return usageErr("%v", err)
	}
	defer run.Close()

	mode := progressNormal
	switch {
	case f.quiet:
		mode = progressQuiet
	case f.verbose:
		mode = progressVerbose
	}
	prog := newProgress(stderr, mode)
	defer prog.Close()
	prog.Subscribe(run)

	host, _ := os.Hostname()
	absScript := ""
	if script != "" {
		absScript, _ = filepath.Abs(script)
	}
	_ = run.SetInfo(func(i *journal.Info) {
		i.Script = absScript
		i.Args = scriptArgs
		i.Extra = extra
		i.Version = version.String()
		i.Host = host
		i.GoOS = runtime.GOOS + "/" + runtime.GOARCH
		i.Start = start.Format(journal.WallFormat)
	})
	run.Event("run", "start", map[string]any{"script": absScript, "args": scriptArgs, "extra": extra,
		"timeout_s": timeout.Seconds(), "pid": os.Getpid()})
	if mode != progressQuiet {
		fmt.Fprintf(stderr, "vmscript: run directory %s\n", run.Dir())
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var timer *time.Timer
	if timeout > 0 {
		timer = time.AfterFunc(timeout, func() { cancel(luahost.TimedOut(timeout)) })
		defer timer.Stop()
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var gotSignal atomic.Pointer[os.Signal]
	go func() {
		for s := range sigs {
			gotSignal.CompareAndSwap(nil, &s)
			run.Event("run", "signal", map[string]any{"signal": s.String()})
			cancel(luahost.Interrupted(s))
		}
	}()

	h, err := luahost.New(ctx, luahost.Options{
		Script: script, Args: scriptArgs, Positional: extra, LuaPath: f.luaPath,
		Library: lualib.Library, Run: run, Stdout: prog.wrap(stdout), Stderr: prog.wrap(stderr),
	})
	if err != nil {
		return failErr("%v", err)
	}

	done := make(chan sessionResult, 1)
	go func() {
		var res sessionResult
		if script != "" {
			res.err = h.RunScript()
			if res.err != nil {
				res.failedAt = time.Now()
			}
		}
		if wantREPL(f.keepOpen, res.err) && ctx.Err() == nil {
			if timer != nil {
				// The investigator is at the keyboard now: the run's
				// --timeout no longer applies.
				timer.Stop()
			}
			run.Event("run", "repl-start", nil)
			prog.Sync()
			banner := ""
			if script != "" {
				banner = replBanner(res.err)
			}
			replErr := runREPL(h, prog, os.Stdin, stdout, stderr, banner)
			run.Event("run", "repl-end", nil)
			var exit *luahost.ExitError
			if errors.As(replErr, &exit) || ctx.Err() != nil || res.err == nil {
				res.err = replErr
			}
		}
		done <- res
	}()
	var res sessionResult
	abandoned := false
	select {
	case res = <-done:
	case <-ctx.Done():
		// Give the script a moment to unwind through its host calls; a host
		// call that ignores the context must not keep the children alive.
		select {
		case res = <-done:
		case <-time.After(cleanupGrace):
			restoreTerminal()
			res.err = context.Cause(ctx)
			run.Event("run", "abandon", map[string]any{"reason": "script did not unwind within " + cleanupGrace.String()})
			h.RunCleanups()
			abandoned = true
		}
	}
	nb := h.OpenNotebook()
	if !abandoned {
		h.Close()
	}
	prog.Close()

	var sig os.Signal
	if p := gotSignal.Load(); p != nil {
		sig = *p
	}
	code, msg := classify(res.err, ctx, sig)
	end := time.Now()
	_ = run.SetInfo(func(i *journal.Info) {
		i.End = end.Format(journal.WallFormat)
		i.Duration = end.Sub(start).Seconds()
		i.ExitCode = &code
		if res.err != nil && code != exitOK {
			if _, isExit := res.err.(*luahost.ExitError); !isExit {
				i.Error = res.err.Error()
			}
		}
	})
	run.Event("run", "end", map[string]any{"exit_code": code, "duration_s": end.Sub(start).Seconds()})
	if msg != "" {
		fmt.Fprintln(stderr, msg)
	}
	if f.jsonOut != "" || f.junitOut != "" {
		rep := buildReport(run, nb, res, code, start, end)
		if f.jsonOut != "" {
			if err := writeJSONReport(f.jsonOut, rep); err != nil {
				fmt.Fprintf(stderr, "vmscript: --json: %v\n", err)
			}
		}
		if f.junitOut != "" {
			if err := writeJUnitReport(f.junitOut, rep); err != nil {
				fmt.Fprintf(stderr, "vmscript: --junit: %v\n", err)
			}
		}
	}
	if code != exitOK {
		fmt.Fprintf(stderr, "vmscript: evidence in %s\n", run.Dir())
	}
	return &exitError{code: code}
}

// wantREPL says whether the REPL opens after the script ended with err.
func wantREPL(keep string, err error) bool {
	switch keep {
	case keepAlways:
		return true
	case keepFail:
		var exit *luahost.ExitError
		if errors.As(err, &exit) {
			return exit.Code != 0
		}
		return err != nil
	}
	return false
}

// replBanner says what failed and how to get out.
func replBanner(err error) string {
	var b strings.Builder
	if err == nil {
		b.WriteString("vmscript: the script ended; its VMs are still running.\n")
	} else {
		b.WriteString("vmscript: the script failed; its VMs are still running.\n")
		b.WriteString(describeError(err))
		b.WriteString("\n")
	}
	b.WriteString("vmscript: the script's globals are here (e.g. vm.console:tail(5)); Ctrl-D or .quit stops the VMs and exits.")
	return b.String()
}

// describeError renders a script error with its kind and context.
func describeError(err error) string {
	var exit *luahost.ExitError
	if errors.As(err, &exit) {
		return fmt.Sprintf("vmscript.exit(%d)", exit.Code)
	}
	var se *luahost.ScriptError
	if errors.As(err, &se) {
		var b strings.Builder
		b.WriteString("error: ")
		b.WriteString(se.Error())
		if se.Cause != nil {
			// The Go error carries the console tail and other context.
			if detail := strings.TrimPrefix(se.Cause.Error(), se.Cause.Message); detail != "" {
				b.WriteString(detail)
			}
		}
		return b.String()
	}
	if k := vmerr.KindOf(err); k != "" {
		return "error: " + err.Error() + " [kind=" + k + "]"
	}
	return "error: " + err.Error()
}

// classify maps how a script ended to an exit code and the text to print.
func classify(err error, ctx context.Context, sig os.Signal) (int, string) {
	if sig != nil {
		code := exitSIGINT
		if sig == syscall.SIGTERM {
			code = 128 + int(syscall.SIGTERM)
		}
		return code, fmt.Sprintf("vmscript: interrupted by %v; VMs stopped, logs flushed", sig)
	}
	if err == nil {
		return exitOK, ""
	}
	var exit *luahost.ExitError
	if errors.As(err, &exit) {
		return exit.Code, ""
	}
	if ctx.Err() != nil {
		return exitFail, "vmscript: " + context.Cause(ctx).Error() + "; VMs stopped, logs flushed"
	}
	var se *luahost.ScriptError
	if errors.As(err, &se) {
		msg := describeError(err)
		if se.Traceback != "" {
			msg += "\n" + se.Traceback
		}
		return exitFail, msg
	}
	return exitFail, "error: " + err.Error()
}
