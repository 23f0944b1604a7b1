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
	"github.com/vmscript/vmscript/toolkit/control"
	"github.com/vmscript/vmscript/toolkit/dur"
	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/luahost"
	"github.com/vmscript/vmscript/toolkit/notes"
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
	var mf matrixFlags
	cmd := &cobra.Command{
		Use:   "run SCRIPT.lua [flags] [-- extra args] | run --matrix FILE [--task N]",
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

While the run lives (the REPL included), vmscript ps lists it, and
vmscript console RUN and vmscript ssh RUN attach another terminal to its
VMs; the run prints its id at its start.

Progress goes to stderr: on a terminal one status line (what is awaited, on
which VM, elapsed vs timeout, the last console line), otherwise plain
timestamped lines; -v mirrors every console line, --quiet shows only errors
and the script's output. --json and --junit write reports for machines.

Exit codes: 0 when the script ends normally, 1 when it raises an error or
hits --timeout, 2 for usage errors, 3 when the error that ended it is a
guest's kernel panic, 130 on SIGINT (143 on SIGTERM), or the code given to
vmscript.exit(code).`,
		Example: `  vmscript run scripts/demo.lua
  vmscript run scripts/04-network.lua -a iface=lan --timeout 10m
  vmscript run -k scripts/02-boot.lua        # on failure, a REPL with the VMs still up
  vmscript run bisect.lua --out /tmp/run1 --junit report.xml -- extra positional args
  vmscript run --matrix nightly.lua --task 3 --results /shared/results`,
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			n := len(args)
			if dash >= 0 {
				n = dash
			}
			if mf.file != "" && n != 0 {
				return usageErr("--matrix runs the task's script; give no script")
			}
			if mf.file == "" && n != 1 {
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
			script := ""
			if mf.file != "" {
				var err error
				if script, err = taskRun(mf, &f); err != nil {
					return err
				}
			} else {
				script = args[0]
			}
			return runScript(script, extra, f, stdout, stderr)
		},
	}
	addRunFlags(cmd, &f)
	addMatrixFlags(cmd, &mf)
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
returns; vmscript console RUN does the same from another terminal. Ctrl-D
or .quit leaves and stops the VMs.`,
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

// session is one `vmscript run` (or repl): its script, flags, run
// directory, progress display, context and host, through the phases of
// runScript.
type session struct {
	script     string
	extra      []string
	f          runFlags
	args       map[string]string
	timeout    time.Duration
	stdout     io.Writer
	stderr     io.Writer
	start      time.Time
	run        *journal.Run
	prog       *progress
	mode       progressMode
	ctx        context.Context
	cancel     context.CancelCauseFunc
	timer      *time.Timer
	gotSignal  atomic.Pointer[os.Signal]
	stopSignal func()
	host       *luahost.Host
	// control serves the run's control socket (nil when it failed).
	control *control.Server
}

// runScript runs script (none for a bare REPL) and, per f.keepOpen, the REPL
// after it, on one goroutine: the Lua state belongs to it.
func runScript(script string, extra []string, f runFlags, stdout, stderr io.Writer) error {
	s := &session{script: script, extra: extra, f: f, stdout: stdout, stderr: stderr}
	if err := s.check(); err != nil {
		return err
	}
	if err := s.openRun(); err != nil {
		return err
	}
	defer s.run.Close()
	defer s.prog.Close()
	s.watchContext()
	defer s.cancel(nil)
	defer s.stopSignal()
	if s.timer != nil {
		defer s.timer.Stop()
	}
	h, err := luahost.New(s.ctx, luahost.Options{
		Script: script, Args: s.args, Positional: extra, LuaPath: f.luaPath,
		Library: lualib.Library, Run: s.run, Stdout: s.prog.wrap(stdout), Stderr: s.prog.wrap(stderr),
	})
	if err != nil {
		return failErr("%v", err)
	}
	s.host = h
	s.startControl()
	res, abandoned := s.execute()
	nb := h.OpenNotebook()
	s.controlState("ending")
	if !abandoned {
		h.Close()
	}
	s.stopControl()
	s.prog.Close()
	return s.finish(res, nb)
}

// check reads the flags and compiles the script: a script that does not
// compile fails before anything is written.
func (s *session) check() error {
	var err error
	if s.args, err = parseArgs(s.f.args); err != nil {
		return err
	}
	if s.f.timeout != "" {
		if s.timeout, err = dur.Parse(s.f.timeout); err != nil {
			return usageErr("--timeout: %v", err)
		}
	}
	if s.script == "" {
		return nil
	}
	if err := checkReadable(s.script); err != nil {
		return usageErr("%v", err)
	}
	if err := luahost.Compile(s.script); err != nil {
		var se *luahost.SyntaxError
		if errors.As(err, &se) {
			return failErr("%v", se)
		}
		return usageErr("%s: %v", s.script, err)
	}
	return nil
}

// openRun makes the run directory, records what runs, and starts the
// progress display.
func (s *session) openRun() error {
	s.start = time.Now()
	dirScript := s.script
	if dirScript == "" {
		dirScript = "repl"
	}
	var err error
	if s.f.out != "" {
		s.run, err = journal.New(s.f.out, s.start)
	} else {
		s.run, err = journal.NewUnder(DefaultWorkNotes, dirScript, s.start)
	}
	if err != nil {
		return usageErr("%v", err)
	}
	s.mode = progressNormal
	switch {
	case s.f.quiet:
		s.mode = progressQuiet
	case s.f.verbose:
		s.mode = progressVerbose
	}
	s.prog = newProgress(s.stderr, s.mode)
	s.prog.Subscribe(s.run)
	s.recordStart()
	if s.mode != progressQuiet {
		fmt.Fprintf(s.stderr, "vmscript: run directory %s\n", s.run.Dir())
	}
	return nil
}

// recordStart writes run.json's start and the timeline's first event.
func (s *session) recordStart() {
	host, _ := os.Hostname()
	absScript := ""
	if s.script != "" {
		absScript, _ = filepath.Abs(s.script)
	}
	_ = s.run.SetInfo(func(i *journal.Info) {
		i.Script = absScript
		i.Args = s.args
		i.Extra = s.extra
		i.Version = version.String()
		i.Host = host
		i.GoOS = runtime.GOOS + "/" + runtime.GOARCH
		i.Start = s.start.Format(journal.WallFormat)
	})
	s.run.Event("run", "start", map[string]any{"script": absScript, "args": s.args, "extra": s.extra,
		"timeout_s": s.timeout.Seconds(), "pid": os.Getpid()})
}

// watchContext makes the run's context, cancelled by --timeout and by
// SIGINT/SIGTERM with the reason.
func (s *session) watchContext() {
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	if s.timeout > 0 {
		d := s.timeout
		s.timer = time.AfterFunc(d, func() { s.cancel(luahost.TimedOut(d)) })
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	s.stopSignal = func() { signal.Stop(sigs) }
	go func() {
		for sig := range sigs {
			s.gotSignal.CompareAndSwap(nil, &sig)
			s.run.Event("run", "signal", map[string]any{"signal": sig.String()})
			s.cancel(luahost.Interrupted(sig))
		}
	}()
}

// execute runs the script and the REPL on their goroutine and waits for
// them; a cancelled run gets cleanupGrace to unwind, else its children are
// stopped and the session is abandoned.
func (s *session) execute() (sessionResult, bool) {
	done := make(chan sessionResult, 1)
	go func() { done <- s.lua() }()
	select {
	case res := <-done:
		return res, false
	case <-s.ctx.Done():
	}
	// Give the script a moment to unwind through its host calls; a host
	// call that ignores the context must not keep the children alive.
	select {
	case res := <-done:
		return res, false
	case <-time.After(cleanupGrace):
		restoreTerminal()
		s.run.Event("run", "abandon", map[string]any{"reason": "script did not unwind within " + cleanupGrace.String()})
		s.host.RunCleanups()
		return sessionResult{err: context.Cause(s.ctx)}, true
	}
}

// lua is the Lua goroutine: the script, then the REPL when it is wanted.
func (s *session) lua() sessionResult {
	var res sessionResult
	if s.script != "" {
		res.err = s.host.RunScript()
		if res.err != nil {
			res.failedAt = time.Now()
		}
	}
	if !wantREPL(s.f.keepOpen, res.err) || s.ctx.Err() != nil {
		return res
	}
	if s.timer != nil {
		// The investigator is at the keyboard now: the run's --timeout no
		// longer applies.
		s.timer.Stop()
	}
	s.run.Event("run", "repl-start", nil)
	s.controlState("repl")
	s.prog.Sync()
	banner := ""
	if s.script != "" {
		banner = replBanner(res.err)
	}
	replErr := runREPL(s.host, s.prog, os.Stdin, s.stdout, s.stderr, banner)
	s.run.Event("run", "repl-end", nil)
	var exit *luahost.ExitError
	if errors.As(replErr, &exit) || s.ctx.Err() != nil || res.err == nil {
		res.err = replErr
	}
	return res
}

// finish settles the exit code, records the end, and writes the reports.
func (s *session) finish(res sessionResult, nb *notes.Notebook) error {
	var sig os.Signal
	if p := s.gotSignal.Load(); p != nil {
		sig = *p
	}
	code, msg := classify(res.err, s.ctx, sig)
	end := time.Now()
	_ = s.run.SetInfo(func(i *journal.Info) {
		i.End = end.Format(journal.WallFormat)
		i.Duration = end.Sub(s.start).Seconds()
		i.ExitCode = &code
		if res.err != nil && code != exitOK {
			if _, isExit := res.err.(*luahost.ExitError); !isExit {
				i.Error = res.err.Error()
			}
		}
	})
	s.run.Event("run", "end", map[string]any{"exit_code": code, "duration_s": end.Sub(s.start).Seconds()})
	if msg != "" {
		fmt.Fprintln(s.stderr, msg)
	}
	if s.f.jsonOut != "" || s.f.junitOut != "" {
		s.writeReports(buildReport(s.run, nb, res, code, s.start, end))
	}
	if code != exitOK {
		fmt.Fprintf(s.stderr, "vmscript: evidence in %s\n", s.run.Dir())
	}
	return &exitError{code: code}
}

// writeReports writes --json and --junit.
func (s *session) writeReports(rep *report) {
	if s.f.jsonOut != "" {
		if err := writeJSONReport(s.f.jsonOut, rep); err != nil {
			fmt.Fprintf(s.stderr, "vmscript: --json: %v\n", err)
		}
	}
	if s.f.junitOut != "" {
		if err := writeJUnitReport(s.f.junitOut, rep); err != nil {
			fmt.Fprintf(s.stderr, "vmscript: --junit: %v\n", err)
		}
	}
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
		if se.Cause != nil && se.Cause.Context["failure"] == "kernel-panic" {
			return exitPanic, msg
		}
		return exitFail, msg
	}
	return exitFail, "error: " + err.Error()
}
