package results

import (
	"encoding/xml"
	"fmt"
	"html/template"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Counts tallies the runs by state.
func Counts(runs []Run) map[string]int {
	c := map[string]int{}
	for _, r := range runs {
		c[r.State]++
	}
	return c
}

// summary is "12 runs: 9 passed, 2 failed, 1 died".
func summary(runs []Run) string {
	c := Counts(runs)
	var parts []string
	for _, s := range []string{Passed, Failed, Cancelled, Running, Died, NotRun} {
		if c[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[s], s))
		}
	}
	return fmt.Sprintf("%d runs: %s", len(runs), strings.Join(parts, ", "))
}

func exitText(r Run) string {
	if r.ExitCode == nil {
		return "-"
	}
	return fmt.Sprint(*r.ExitCode)
}

func durationText(r Run) string {
	if r.DurationS == 0 {
		return "-"
	}
	return (time.Duration(r.DurationS*10) * time.Second / 10).String()
}

// WriteText writes the runs as an aligned table and a summary line.
func WriteText(w io.Writer, runs []Run) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tVERDICT\tEXIT\tDURATION\tACCEL\tFIRST ERROR")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Task, r.State, exitText(r), durationText(r), orDash(r.Accel), orDash(r.Error))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, summary(runs))
	return err
}

// WriteMarkdown writes the runs as a Markdown table linking each run's
// notes (paths relative to the root).
func WriteMarkdown(w io.Writer, runs []Run) error {
	fmt.Fprintf(w, "%s\n\n| task | verdict | exit | duration | accel | first error | notes |\n|---|---|---|---|---|---|---|\n", summary(runs))
	for _, r := range runs {
		notes := "-"
		if r.Notes != "" {
			notes = "[notes](" + filepath.ToSlash(r.Notes) + ")"
		}
		_, err := fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", mdCell(r.Task), r.State, exitText(r), durationText(r),
			orDash(r.Accel), mdCell(orDash(r.Error)), notes)
		if err != nil {
			return err
		}
	}
	return nil
}

func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// junitSuite is one JUnit test suite of every run.
type junitSuite struct {
	XMLName  xml.Name    `xml:"testsuite"`
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	ClassName string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Error     *junitMessage `xml:"error,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes one JUnit file: a test case per run; a failed run is a
// failure, a dead one an error, a running one skipped.
func WriteJUnit(w io.Writer, name string, runs []Run) error {
	s := junitSuite{Name: name, Tests: len(runs)}
	var total float64
	for _, r := range runs {
		c := junitCase{Name: r.Task, ClassName: strings.TrimSuffix(filepath.Base(r.Script), ".lua"), Time: fmt.Sprintf("%.3f", r.DurationS)}
		detail := fmt.Sprintf("%s\nexit code %s\nrun directory %s", r.Error, exitText(r), r.Dir)
		switch r.State {
		case Failed:
			c.Failure = &junitMessage{Message: orDash(r.Error), Text: detail}
			s.Failures++
		case Died:
			c.Error = &junitMessage{Message: "the run died without an end (killed, or its machine went away)", Text: detail}
			s.Errors++
		case Cancelled:
			c.Failure = &junitMessage{Message: "cancelled (" + orDash(r.Error) + ")", Text: detail}
			s.Failures++
		case Running:
			c.Skipped = &junitMessage{Message: "still running"}
			s.Skipped++
		case NotRun:
			c.Error = &junitMessage{Message: "the task never ran (still queued, or cancelled before it started)"}
			s.Errors++
		}
		total += r.DurationS
		s.Cases = append(s.Cases, c)
	}
	s.Time = fmt.Sprintf("%.3f", total)
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(s); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// grid is the verdict grid: a row per script, a column per parameter set.
type grid struct {
	Columns []string
	Rows    []gridRow
}

type gridRow struct {
	Script string
	Cells  []*Run // nil where the script did not run with that set
}

// makeGrid lays the runs out by script (rows) and arguments (columns).
func makeGrid(runs []Run) grid {
	var g grid
	col, row := map[string]int{}, map[string]int{}
	for i := range runs {
		r := &runs[i]
		c := paramSet(r.Args)
		if _, ok := col[c]; !ok {
			col[c] = len(g.Columns)
			g.Columns = append(g.Columns, c)
		}
		s := strings.TrimSuffix(filepath.Base(r.Script), ".lua")
		if _, ok := row[s]; !ok {
			row[s] = len(g.Rows)
			g.Rows = append(g.Rows, gridRow{Script: s})
		}
	}
	for i := range g.Rows {
		g.Rows[i].Cells = make([]*Run, len(g.Columns))
	}
	for i := range runs {
		r := &runs[i]
		g.Rows[row[strings.TrimSuffix(filepath.Base(r.Script), ".lua")]].Cells[col[paramSet(r.Args)]] = r
	}
	return g
}

// paramSet names a run's arguments: "firmware=uefi iso=/x.iso" ("(none)").
func paramSet(args map[string]string) string {
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+args[k])
	}
	if parts == nil {
		return "(none)"
	}
	return strings.Join(parts, " ")
}

// WriteHTML writes one static page: the summary, the verdict grid (scripts
// against parameter sets, each cell linking the run's notes) and the
// table of every run. Links are relative to the root, so the page belongs
// at the root.
func WriteHTML(w io.Writer, title string, runs []Run) error {
	return page.Execute(w, map[string]any{"Title": title, "Summary": summary(runs), "Grid": makeGrid(runs), "Runs": runs})
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"exit": exitText, "duration": durationText, "dash": orDash,
	"exitp": func(r *Run) string { return exitText(*r) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
.passed{background:#d8f5d8}.failed{background:#f8d4d4}.cancelled{background:#f8e0c8}.died{background:#e6d0f0}.running{background:#fff3c4}
td.none{background:#f4f4f4}code{font-size:12px}
</style></head><body>
<h1>{{.Title}}</h1>
<p>{{.Summary}}</p>
<h2>Verdicts</h2>
<table><tr><th>script</th>{{range .Grid.Columns}}<th><code>{{.}}</code></th>{{end}}</tr>
{{range .Grid.Rows}}<tr><th>{{.Script}}</th>{{range .Cells}}{{if .}}<td class="{{.State}}">{{if .Notes}}<a href="{{.Notes}}">{{.State}}</a>{{else}}{{.State}}{{end}} ({{exitp .}})</td>{{else}}<td class="none"></td>{{end}}{{end}}</tr>
{{end}}</table>
<h2>Runs</h2>
<table><tr><th>task</th><th>verdict</th><th>exit</th><th>duration</th><th>accel</th><th>first error</th></tr>
{{range $r := .Runs}}<tr class="{{$r.State}}"><td>{{if $r.Notes}}<a href="{{$r.Notes}}">{{$r.Task}}</a>{{else}}{{$r.Task}}{{end}}</td><td>{{$r.State}}</td><td>{{exit $r}}</td><td>{{duration $r}}</td><td>{{dash $r.Accel}}</td><td>{{dash $r.Error}}</td></tr>
{{end}}</table>
</body></html>
`))
