// Package slurm fans a run matrix out as one Slurm array job: a batch
// script whose task N runs `vmscript run --matrix FILE` (Slurm sets
// SLURM_ARRAY_TASK_ID), with each task's CPUs, memory and time limit from
// the matrix, submitted with sbatch and waited for with squeue. vmscript
// schedules nothing itself.
package slurm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/matrix"
	"github.com/vmscript/vmscript/toolkit/qemu"
	"github.com/vmscript/vmscript/toolkit/shellquote"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Per-task defaults when the matrix does not declare them.
const (
	// DefaultCPUs is a task's CPUs: a TCG guest keeps one busy.
	DefaultCPUs = 1
	// OwnMemoryMiB is vmscript's own memory beside its VMs.
	OwnMemoryMiB = 256
	// TimeMargin is added to the matrix's timeout for the job's time
	// limit: vmscript stops its own run at the timeout and needs a moment
	// to write its reports.
	TimeMargin = 5 * time.Minute
)

// unsafeName is what a job name may not hold (#SBATCH lines split at
// white space).
var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._+=-]+`)

// Job is what a submission needs.
type Job struct {
	// Matrix is the loaded matrix; its Path is passed to the tasks.
	Matrix *matrix.Matrix
	// Results is the directory of the tasks' run directories.
	Results string
	// Binary is the vmscript binary the tasks run.
	Binary string
	// Name is the job's name (default "vmscript-" and the matrix's base name).
	Name string
	// Extra are more sbatch options ("--partition=x"), as given.
	Extra []string
}

// Resources are one task's: CPUs, memory in MiB, and a time limit (0:
// none).
type Resources struct {
	CPUs      int
	MemoryMiB int
	Time      time.Duration
}

// TaskResources derives a task's resources from the matrix: its cpus, its
// memory (the VMs', default QEMU's) plus QEMU's overhead and vmscript's
// own, its timeout plus TimeMargin.
func TaskResources(m *matrix.Matrix) (Resources, error) {
	r := Resources{CPUs: DefaultCPUs}
	if m.CPUs > 0 {
		r.CPUs = m.CPUs
	}
	mem := m.Memory
	if mem == "" {
		mem = qemu.DefaultMemory
	}
	mib, err := qemu.ParseMemory(mem)
	if err != nil {
		return r, vmerr.New(vmerr.Usage, "matrix %s: memory: %v", m.Path, err)
	}
	r.MemoryMiB = mib + qemu.MemoryOverhead>>20 + OwnMemoryMiB
	if m.Timeout != "" {
		d, err := time.ParseDuration(m.Timeout)
		if err != nil {
			return r, vmerr.New(vmerr.Usage, "matrix %s: timeout %q: %v", m.Path, m.Timeout, err)
		}
		r.Time = d + TimeMargin
	}
	return r, nil
}

// Script renders the batch script of the array job.
func Script(j Job) (string, error) {
	res, err := TaskResources(j.Matrix)
	if err != nil {
		return "", err
	}
	name := j.Name
	if name == "" {
		name = "vmscript-" + strings.TrimSuffix(filepath.Base(j.Matrix.Path), ".lua")
	}
	name = unsafeName.ReplaceAllString(name, "_")
	if strings.ContainsAny(j.Results, " \t\n") {
		// #SBATCH lines are split at white space.
		return "", vmerr.New(vmerr.Usage, "slurm: the results directory %q has white space, which #SBATCH --output cannot hold", j.Results)
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&b, "#SBATCH --job-name=%s\n", name)
	fmt.Fprintf(&b, "#SBATCH --array=0-%d\n", len(j.Matrix.Tasks)-1)
	fmt.Fprintf(&b, "#SBATCH --ntasks=1\n#SBATCH --cpus-per-task=%d\n#SBATCH --mem=%dM\n", res.CPUs, res.MemoryMiB)
	if res.Time > 0 {
		fmt.Fprintf(&b, "#SBATCH --time=%d\n", int((res.Time+time.Minute-1)/time.Minute))
	}
	fmt.Fprintf(&b, "#SBATCH --output=%s\n", filepath.Join(j.Results, "slurm-%A_%a.out"))
	for _, e := range j.Extra {
		fmt.Fprintf(&b, "#SBATCH %s\n", e)
	}
	b.WriteString("# Task N of the matrix (Slurm sets SLURM_ARRAY_TASK_ID); scancel's SIGTERM\n")
	b.WriteString("# reaches vmscript, which stops its VMs and keeps the evidence.\n")
	fmt.Fprintf(&b, "exec %s run --matrix %s --results %s --quiet\n",
		shellquote.Quote(j.Binary), shellquote.Quote(j.Matrix.Path), shellquote.Quote(j.Results))
	return b.String(), nil
}

// Submit writes the batch script into the results directory and submits
// it with sbatch; it returns the job id and the script's path. env is
// added to sbatch's environment (SLURM_CONF, …).
func Submit(ctx context.Context, j Job, env []string) (string, string, error) {
	text, err := Script(j)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(j.Results, 0o755); err != nil {
		return "", "", vmerr.Wrap(vmerr.IO, err, "slurm: results directory")
	}
	path := filepath.Join(j.Results, "slurm-array.sh")
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		return "", "", vmerr.Wrap(vmerr.IO, err, "slurm: batch script")
	}
	out, err := command(ctx, env, "sbatch", "--parsable", path)
	if err != nil {
		return "", path, err
	}
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";") // "ID;cluster" on federations
	if _, err := strconv.Atoi(id); err != nil {
		return "", path, vmerr.New(vmerr.Protocol, "slurm: sbatch printed %q, not a job id", out)
	}
	return id, path, nil
}

// Wait polls squeue until job id has no task pending or running, ctx ends,
// or squeue fails.
func Wait(ctx context.Context, id string, env []string, poll time.Duration) error {
	for {
		out, err := command(ctx, env, "squeue", "--noheader", "--array", "--jobs", id, "--format", "%i %T")
		if err != nil && !strings.Contains(err.Error(), "Invalid job id") {
			return err
		}
		if strings.TrimSpace(out) == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return vmerr.New(vmerr.DoneKind(ctx), "slurm: job %s still has tasks: %s", id, strings.TrimSpace(out))
		case <-time.After(poll):
		}
	}
}

// command runs a Slurm client and returns its standard output; a failure
// carries its standard error.
func command(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		kind := vmerr.Failed
		if _, ok := err.(*exec.Error); ok {
			kind = vmerr.NotFound
		}
		return out.String(), vmerr.Wrap(kind, err, "slurm: %s %s: %s", name, strings.Join(args, " "), strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
