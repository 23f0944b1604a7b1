package main

import (
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/control"
	"github.com/vmscript/vmscript/toolkit/matrix"
	"github.com/vmscript/vmscript/toolkit/results"
)

func newReportCmd(stdout io.Writer) *cobra.Command {
	var md, junit, html, matrixFile string
	cmd := &cobra.Command{
		Use:   "report DIR",
		Short: "One report of many runs: every run directory under DIR",
		Long: `report gathers every run directory under DIR (as vmscript run --matrix
leaves them in RESULTS/<task>/, or any runs) and prints one table: task,
verdict (passed, failed, running, died: no end and no process), exit code,
duration, accelerator and first error. --markdown, --junit and --html also
write it as Markdown, one JUnit file for CI, and one static HTML page with a
verdict grid (scripts against parameter sets) linking each run's notes; the
HTML and Markdown links are relative to DIR, so put those files in DIR.

Exit code 0 when every run passed (or still runs), 1 when one failed, was
cancelled, died or (with --matrix) never ran.`,
		Example: `  vmscript report results
  vmscript report results --html results/index.html --junit results/junit.xml`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			runs, err := results.Gather(args[0], liveRun())
			if err != nil {
				return usageErr("%v", err)
			}
			if matrixFile != "" {
				m, err := matrix.Load(matrixFile)
				if err != nil {
					return usageErr("%v", err)
				}
				runs = results.AddMissing(runs, plannedRuns(m))
			}
			if err := writeReports(args[0], runs, md, junit, html); err != nil {
				return err
			}
			return printReport(stdout, runs)
		},
	}
	cmd.Flags().StringVar(&matrixFile, "matrix", "", "the matrix DIR holds the results of: its tasks without a run are shown as not run")
	cmd.Flags().StringVar(&md, "markdown", "", "also write the report as Markdown to FILE")
	cmd.Flags().StringVar(&junit, "junit", "", "also write one JUnit XML file (a test case per run) to FILE")
	cmd.Flags().StringVar(&html, "html", "", "also write one static HTML page to FILE")
	return cmd
}

// printReport prints the table; it fails (exit 1) when a run did not pass
// and is not still running.
func printReport(stdout io.Writer, runs []results.Run) error {
	if err := results.WriteText(stdout, runs); err != nil {
		return err
	}
	c := results.Counts(runs)
	if c[results.Failed]+c[results.Cancelled]+c[results.Died]+c[results.NotRun] > 0 {
		return &exitError{code: exitFail}
	}
	return nil
}

// liveRun says whether a run directory belongs to a live run (its control
// socket answers).
func liveRun() func(string) bool {
	live := map[string]bool{}
	for _, e := range control.List() {
		live[e.RunDir] = true
	}
	return func(dir string) bool {
		abs, err := filepath.Abs(dir)
		return err == nil && live[abs]
	}
}

// writeReports writes the files asked for.
func writeReports(root string, runs []results.Run, md, junit, html string) error {
	title := "vmscript runs in " + root
	for _, out := range []struct {
		path  string
		write func(io.Writer) error
	}{
		{md, func(w io.Writer) error { return results.WriteMarkdown(w, runs) }},
		{junit, func(w io.Writer) error { return results.WriteJUnit(w, filepath.Base(root), runs) }},
		{html, func(w io.Writer) error { return results.WriteHTML(w, title, runs) }},
	} {
		if out.path == "" {
			continue
		}
		f, err := os.Create(out.path)
		if err != nil {
			return failErr("report: %v", err)
		}
		err = out.write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return failErr("report: writing %s: %v", out.path, err)
		}
	}
	return nil
}
