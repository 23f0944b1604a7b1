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
	out     string
	timeout string
	args    []string
	luaPath string
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

Exit codes: 0 when the script ends normally, 1 when it raises an error or
hits --timeout, 2 for usage errors, 130 on SIGINT (143 on SIGTERM), or the
code given to vmscript.exit(code).`,
		Example: `  vmscript run scripts/demo.lua
  vmscript run scripts/04-network.lua -a iface=lan --timeout 10m
  vmscript run bisect.lua --out /tmp/run1 -- extra positional args`,
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
		RunE: func(cmd *cobra.Command, args []string) error {
			var extra []string
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				extra = args[dash:]
			}
			return runScript(args[0], extra, f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.out, "out", "o", "", "run directory (default docs/work-notes/<time>-<script>/)")
	fl.StringVarP(&f.timeout, "timeout", "t", "", `stop the whole run after this long ("90s", "10m", seconds); default none`)
	fl.StringArrayVarP(&f.args, "arg", "a", nil, "script argument key=value, readable as args.key (repeatable)")
	fl.StringVar(&f.luaPath, "lua-path", "", `extra require templates ("dir/?.lua;…"); LUA_PATH is ignored unless passed here`)
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

	start := time.Now()
	var run *journal.Run
	if f.out != "" {
		run, err = journal.New(f.out, start)
	} else {
		run, err = journal.NewUnder(DefaultWorkNotes, script, start)
	}
	if err != nil {
		return usageErr("%v", err)
	}
	defer run.Close()

	host, _ := os.Hostname()
	absScript, _ := filepath.Abs(script)
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
	fmt.Fprintf(stderr, "vmscript: run directory %s\n", run.Dir())

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	if timeout > 0 {
		timer := time.AfterFunc(timeout, func() { cancel(luahost.TimedOut(timeout)) })
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
		Library: lualib.Library, Run: run, Stdout: stdout, Stderr: stderr,
	})
	if err != nil {
		return failErr("%v", err)
	}

	done := make(chan error, 1)
	go func() { done <- h.RunScript() }()
	var scriptErr error
	select {
	case scriptErr = <-done:
		h.Close()
	case <-ctx.Done():
		// Give the script a moment to unwind through its host calls; a host
		// call that ignores the context must not keep the children alive.
		select {
		case scriptErr = <-done:
			h.Close()
		case <-time.After(cleanupGrace):
			scriptErr = context.Cause(ctx)
			run.Event("run", "abandon", map[string]any{"reason": "script did not unwind within " + cleanupGrace.String()})
			h.RunCleanups()
		}
	}

	var sig os.Signal
	if p := gotSignal.Load(); p != nil {
		sig = *p
	}
	code, msg := classify(scriptErr, ctx, sig)
	end := time.Now()
	_ = run.SetInfo(func(i *journal.Info) {
		i.End = end.Format(journal.WallFormat)
		i.Duration = end.Sub(start).Seconds()
		i.ExitCode = &code
		if scriptErr != nil && code != exitOK {
			if _, isExit := scriptErr.(*luahost.ExitError); !isExit {
				i.Error = scriptErr.Error()
			}
		}
	})
	run.Event("run", "end", map[string]any{"exit_code": code, "duration_s": end.Sub(start).Seconds()})
	if msg != "" {
		fmt.Fprintln(stderr, msg)
	}
	if code != exitOK {
		fmt.Fprintf(stderr, "vmscript: evidence in %s\n", run.Dir())
	}
	return &exitError{code: code}
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
		var b strings.Builder
		b.WriteString("error: ")
		b.WriteString(se.Error())
		if se.Cause != nil {
			// The Go error carries the console tail and other context.
			if detail := strings.TrimPrefix(se.Cause.Error(), se.Cause.Message); detail != "" {
				b.WriteString(detail)
			}
		}
		if se.Traceback != "" {
			b.WriteString("\n")
			b.WriteString(se.Traceback)
		}
		return exitFail, b.String()
	}
	if vmerr.KindOf(err) != "" {
		return exitFail, "error: " + err.Error()
	}
	return exitFail, "error: " + err.Error()
}
