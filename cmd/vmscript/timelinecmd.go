package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/console"
	"github.com/vmscript/vmscript/toolkit/journal"
)

func newTimelineCmd(stdout io.Writer) *cobra.Command {
	var source string
	cmd := &cobra.Command{
		Use:   "timeline RUNDIR",
		Short: "A run's timeline for a person: every event in order, console output in place",
		Long: `timeline prints a run directory's timeline.jsonl one event per line: the time
since the run started, the wall clock, the source and the kind, then the
event's fields. The timeline refers to console output by byte ranges of the
console log ("output" events) instead of copying it; timeline reads those
lines back from <vm>.console.log and prints them in place, indented.

--source keeps the events whose source starts with the text given
("console:mini", "vm:", "lan").`,
		Example: `  vmscript timeline runs/20261205-120000-investigate
  vmscript timeline runs/20261205-120000-investigate --source console:bad`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			f, err := os.Open(filepath.Join(args[0], journal.TimelineFile))
			if err != nil {
				return usageErr("%v", err)
			}
			defer f.Close()
			evs, truncated, err := journal.ReadTimeline(f)
			if err != nil {
				return usageErr("%s: %v", f.Name(), err)
			}
			for _, ev := range evs {
				if strings.HasPrefix(ev.Source, source) {
					printEvent(stdout, args[0], ev)
				}
			}
			if truncated {
				fmt.Fprintln(stdout, "(the timeline's last line was cut short: the run was killed while writing it)")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&source, "source", "", "only events whose source starts with this")
	return cmd
}

// printEvent prints one event; an output event with its console lines.
func printEvent(w io.Writer, dir string, ev journal.Event) {
	at := time.Duration(ev.Mono).Truncate(time.Millisecond)
	wall := ev.Wall
	if i := strings.IndexByte(wall, 'T'); i >= 0 {
		wall = wall[i+1:]
	}
	fmt.Fprintf(w, "%10.3fs %s %s %s%s\n", at.Seconds(), wall, ev.Source, ev.Kind, fieldText(ev.Fields))
	if ev.Kind != "output" {
		return
	}
	for _, l := range outputLines(dir, ev.Fields) {
		fmt.Fprintf(w, "%24s| %s\n", "", l)
	}
}

// outputLines reads an output event's lines back from its console log.
func outputLines(dir string, f map[string]any) []string {
	log, _ := f["log"].(string)
	r, _ := f["raw"].([]any)
	if log == "" || len(r) != 2 {
		return []string{"(no console log to read these lines from)"}
	}
	from, _ := r[0].(float64)
	to, _ := r[1].(float64)
	lines, err := console.ReadLog(filepath.Join(dir, log), int64(from), int64(to))
	if err != nil {
		return []string{"(" + err.Error() + ")"}
	}
	return lines
}

// fieldText is the fields as " key=value …", sorted by key.
func fieldText(f map[string]any) string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v, err := json.Marshal(f[k])
		if err != nil {
			v = []byte(fmt.Sprint(f[k]))
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	return b.String()
}
