package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/matrix"
	"github.com/vmscript/vmscript/toolkit/results"
	"github.com/vmscript/vmscript/toolkit/slurm"
)

func newSlurmCmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "slurm",
		Short: "Fan a run matrix out with Slurm",
	}
	var resultsDir, name string
	var wait bool
	var extra []string
	submit := &cobra.Command{
		Use:   "submit MATRIX.lua",
		Short: "Submit a matrix as one Slurm array job; with --wait, report when it ends",
		Long: `submit writes RESULTS/slurm-array.sh, an sbatch array job whose task N runs
vmscript run --matrix MATRIX.lua (task N from SLURM_ARRAY_TASK_ID) into
RESULTS/<task name>/, with each task's CPUs (the matrix's cpus, default 1),
memory (the matrix's memory, default QEMU's 1G, plus 128M for QEMU and 256M
for vmscript) and time limit (the matrix's timeout plus 5m), and submits it.
It prints the job id. With --wait it waits for every task to end, writes
RESULTS/index.html and RESULTS/junit.xml, prints the report (tasks that never
ran included) and exits as vmscript report does. scancel of a task stops its
VMs and keeps its evidence (the run is reported as cancelled). Slurm's clients
must be on PATH and configured (SLURM_CONF, as for sbatch).`,
		Example: `  vmscript slurm submit nightly.lua --results /shared/results --wait
  vmscript slurm submit nightly.lua --sbatch=--partition=vms --sbatch=--nice=10`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			job, err := slurmJob(args[0], resultsDir, name, extra)
			if err != nil {
				return err
			}
			id, script, err := slurm.Submit(context.Background(), job, nil)
			if err != nil {
				return failErr("%v", err)
			}
			fmt.Fprintf(stdout, "job %s: %d tasks (%s)\n", id, len(job.Matrix.Tasks), script)
			if !wait {
				return nil
			}
			if err := slurm.Wait(context.Background(), id, nil, 2*time.Second); err != nil {
				return failErr("%v", err)
			}
			return reportMatrix(stdout, job.Results, job.Matrix)
		},
	}
	fl := submit.Flags()
	fl.StringVar(&resultsDir, "results", "results", "the directory of the tasks' run directories (shared by the nodes)")
	fl.StringVar(&name, "name", "", "the job's name (default vmscript-<matrix name>)")
	fl.BoolVar(&wait, "wait", false, "wait for every task, then write and print the report")
	fl.StringArrayVar(&extra, "sbatch", nil, "another sbatch option for the job, e.g. --sbatch=--partition=vms (repeatable)")
	cmd.AddCommand(submit)
	return cmd
}

// slurmJob loads the matrix and settles absolute paths: the tasks run in
// Slurm's working directory, on another node perhaps.
func slurmJob(file, resultsDir, name string, extra []string) (slurm.Job, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return slurm.Job{}, usageErr("%v", err)
	}
	m, err := matrix.Load(abs)
	if err != nil {
		return slurm.Job{}, usageErr("%v", err)
	}
	res, err := filepath.Abs(resultsDir)
	if err != nil {
		return slurm.Job{}, usageErr("%v", err)
	}
	bin, err := os.Executable()
	if err != nil {
		return slurm.Job{}, failErr("the vmscript binary: %v", err)
	}
	return slurm.Job{Matrix: m, Results: res, Binary: bin, Name: name, Extra: extra}, nil
}

// reportMatrix writes DIR/index.html and DIR/junit.xml and prints the
// report of a matrix's results, its tasks that never ran included.
func reportMatrix(stdout io.Writer, dir string, m *matrix.Matrix) error {
	runs, err := results.Gather(dir, liveRun())
	if err != nil {
		return usageErr("%v", err)
	}
	runs = results.AddMissing(runs, plannedRuns(m))
	if err := writeReports(dir, runs, "", filepath.Join(dir, "junit.xml"), filepath.Join(dir, "index.html")); err != nil {
		return err
	}
	return printReport(stdout, runs)
}

// plannedRuns are a matrix's tasks as the rows they would be.
func plannedRuns(m *matrix.Matrix) []results.Run {
	var out []results.Run
	for _, t := range m.Tasks {
		out = append(out, results.Run{Task: t.Name, Script: t.Script, Args: t.Args})
	}
	return out
}
