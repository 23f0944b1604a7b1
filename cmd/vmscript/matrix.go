package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/matrix"
)

// taskIndexVars name a task's index where an engine puts it, in the order
// they are read when --task is not given.
var taskIndexVars = []string{"SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"}

func newMatrixCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "matrix",
		Short: "Read a run matrix: many runs (scripts × parameters) as data",
		Long: `A run matrix is a Lua file that returns a table of scripts, parameter
axes (every combination is a task), arguments for every task and tasks listed
one by one; tasks are numbered from 0. Script paths are relative to the file.

  return {
    scripts = { "scripts/05-storage.lua", "scripts/04-network.lua" },
    params = { iso = { tonight = "/srv/tonight.iso", good = "/srv/good.iso" },
               firmware = { "bios", "uefi" } },
    args = { cold = "1" },
    tasks = { { script = "scripts/00-shell.lua", args = { via = "menu" } } },
    timeout = "20m", cpus = 2, memory = "3G",
  }

vmscript run --matrix FILE --task N runs task N into RESULTS/<task name>/
(with result.json and junit.xml there); N comes from --task, else
SLURM_ARRAY_TASK_ID (a Slurm array), else JOB_COMPLETION_INDEX (a Kubernetes
Indexed Job). vmscript report RESULTS gathers them.`,
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list FILE",
		Short: "Print the matrix's tasks with their index",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			m, err := matrix.Load(args[0])
			if err != nil {
				return usageErr("%v", err)
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(m)
			}
			printTasks(stdout, m)
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print the matrix as JSON")
	cmd.AddCommand(list)
	return cmd
}

// printTasks writes one line per task: index, name, script, arguments.
func printTasks(w io.Writer, m *matrix.Matrix) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tNAME\tSCRIPT\tARGS")
	for _, t := range m.Tasks {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", t.Index, t.Name, t.Script, argsText(t.Args))
	}
	tw.Flush()
}

// argsText is "k=v k=v" in key order.
func argsText(args map[string]string) string {
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + args[k]
	}
	return strings.Join(parts, " ")
}

// matrixFlags are run's flags for a matrix task.
type matrixFlags struct {
	file    string
	task    string
	results string
}

func addMatrixFlags(cmd *cobra.Command, mf *matrixFlags) {
	fl := cmd.Flags()
	fl.StringVar(&mf.file, "matrix", "", "run a task of this run matrix instead of a script (see vmscript matrix)")
	fl.StringVar(&mf.task, "task", "", "the task's index (default $SLURM_ARRAY_TASK_ID, else $JOB_COMPLETION_INDEX)")
	fl.StringVar(&mf.results, "results", "results", "with --matrix: the directory of every task's run directory")
	_ = cmd.MarkFlagFilename("matrix", "lua")
	_ = cmd.MarkFlagDirname("results")
}

// taskRun settles script and flags for a matrix task: the task's script and
// arguments (a -a of the same key wins), its run directory
// RESULTS/<name>/ with result.json and junit.xml, the matrix's timeout.
func taskRun(mf matrixFlags, f *runFlags) (string, error) {
	m, err := matrix.Load(mf.file)
	if err != nil {
		return "", usageErr("%v", err)
	}
	idx, err := taskIndex(mf.task)
	if err != nil {
		return "", err
	}
	t, err := m.Task(idx)
	if err != nil {
		return "", usageErr("%v", err)
	}
	given, err := parseArgs(f.args)
	if err != nil {
		return "", err
	}
	for _, kv := range strings.Fields(argsText(t.Args)) {
		if k, _, _ := strings.Cut(kv, "="); given[k] == "" {
			f.args = append(f.args, k+"="+t.Args[k])
		}
	}
	if f.out != "" {
		return "", usageErr("--out with --matrix: the task's run directory is RESULTS/<task name>; use --results")
	}
	f.out = filepath.Join(mf.results, t.Name)
	f.jsonOut = orDefault(f.jsonOut, filepath.Join(f.out, "result.json"))
	f.junitOut = orDefault(f.junitOut, filepath.Join(f.out, "junit.xml"))
	f.timeout = orDefault(f.timeout, m.Timeout)
	return t.Script, nil
}

// taskIndex reads the task's index from --task or the engines' variables.
func taskIndex(flag string) (int, error) {
	from, s := "--task", flag
	for _, v := range taskIndexVars {
		if s != "" {
			break
		}
		from, s = "$"+v, os.Getenv(v)
	}
	if s == "" {
		return 0, usageErr("--matrix needs a task: --task N, or $%s", strings.Join(taskIndexVars, " or $"))
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, usageErr("%s=%q: want a task index from 0", from, s)
	}
	return n, nil
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
