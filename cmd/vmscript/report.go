package main

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/journal"
	"github.com/vmscript/vmscript/toolkit/luahost"
	"github.com/vmscript/vmscript/toolkit/notes"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// report is what --json writes, and what --junit is made from.
type report struct {
	Script    string            `json:"script"`
	Args      map[string]string `json:"args,omitempty"`
	Extra     []string          `json:"extra_args,omitempty"`
	RunDir    string            `json:"run_dir"`
	Notes     string            `json:"notes,omitempty"`
	Start     string            `json:"start"`
	End       string            `json:"end"`
	DurationS float64           `json:"duration_s"`
	ExitCode  int               `json:"exit_code"`
	Passed    bool              `json:"passed"`
	Error     *reportError      `json:"error,omitempty"`
	// Verdicts are every conclusion of the run, in order.
	Verdicts []string     `json:"verdicts"`
	Steps    []reportStep `json:"steps"`
}

type reportError struct {
	Kind      string `json:"kind,omitempty"`
	Message   string `json:"message"`
	Where     string `json:"where,omitempty"`
	Traceback string `json:"traceback,omitempty"`
}

type reportStep struct {
	Number    int      `json:"number"`
	Title     string   `json:"title"`
	StartS    float64  `json:"start_s"`
	DurationS float64  `json:"duration_s"`
	Verdicts  []string `json:"verdicts"`
	Entries   int      `json:"entries"`
	Failed    bool     `json:"failed"`
	Failure   string   `json:"failure,omitempty"`
}

// failingVerdict says whether a conclusion reports a failure: by
// convention its text starts with "FAIL" (any case) or "✗".
func failingVerdict(text string) bool {
	t := strings.TrimSpace(text)
	return strings.HasPrefix(strings.ToLower(t), "fail") || strings.HasPrefix(t, "✗")
}

func buildReport(run *journal.Run, nb *notes.Notebook, res sessionResult, code int, start, end time.Time) *report {
	info := run.Info()
	r := &report{
		Script: info.Script, Args: info.Args, Extra: info.Extra, RunDir: run.Dir(),
		Start: start.Format(journal.WallFormat), End: end.Format(journal.WallFormat),
		DurationS: end.Sub(start).Seconds(), ExitCode: code, Passed: code == exitOK,
		Verdicts: []string{}, Steps: []reportStep{},
	}
	if res.err != nil && code != exitOK {
		var exit *luahost.ExitError
		if !errors.As(res.err, &exit) {
			e := &reportError{Message: res.err.Error(), Kind: vmerr.KindOf(res.err)}
			var se *luahost.ScriptError
			if errors.As(res.err, &se) {
				e.Message, e.Kind, e.Where, e.Traceback = se.Message, se.Kind, se.Where, se.Traceback
				if se.Cause != nil {
					e.Message = se.Cause.Error()
				}
			}
			r.Error = e
		}
	}
	var failOffset time.Duration = -1
	if !res.failedAt.IsZero() {
		failOffset = res.failedAt.Sub(run.Start())
	}
	if nb != nil {
		r.Notes = nb.Path()
		steps := nb.Steps()
		for i, s := range steps {
			rs := reportStep{Number: s.Number, Title: s.Title, StartS: s.Start.Seconds(), DurationS: s.Duration().Seconds(),
				Verdicts: append([]string{}, s.Conclusions...), Entries: len(s.Entries)}
			if rs.Title == "" {
				rs.Title = "(before the first step)"
			}
			for _, v := range s.Conclusions {
				r.Verdicts = append(r.Verdicts, v)
				if failingVerdict(v) && !rs.Failed {
					rs.Failed, rs.Failure = true, "verdict: "+v
				}
			}
			// The script failed during this step: at or after its start,
			// and before the next one.
			last := i == len(steps)-1
			if r.Error != nil && failOffset >= s.Start && (last || failOffset < steps[i+1].Start) {
				rs.Failed = true
				msg := "script failed: " + r.Error.Message
				if rs.Failure != "" {
					msg = rs.Failure + "; " + msg
				}
				rs.Failure = msg
			}
			r.Steps = append(r.Steps, rs)
		}
	}
	return r
}

func writeJSONReport(path string, r *report) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'))
}

// JUnit XML, the subset CI systems read.
type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name      string          `xml:"name,attr"`
	Tests     int             `xml:"tests,attr"`
	Failures  int             `xml:"failures,attr"`
	Errors    int             `xml:"errors,attr"`
	Time      string          `xml:"time,attr"`
	Timestamp string          `xml:"timestamp,attr"`
	Props     []junitProperty `xml:"properties>property,omitempty"`
	Cases     []junitCase     `xml:"testcase"`
	SystemOut string          `xml:"system-out,omitempty"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitFailure `xml:"failure,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

func writeJUnitReport(path string, r *report) error {
	name := strings.TrimSuffix(filepath.Base(r.Script), filepath.Ext(r.Script))
	if name == "" {
		name = "repl"
	}
	s := junitSuite{
		Name: name, Time: fmt.Sprintf("%.3f", r.DurationS), Timestamp: r.Start,
		Props: []junitProperty{{"run_dir", r.RunDir}, {"exit_code", fmt.Sprint(r.ExitCode)}},
	}
	if r.Notes != "" {
		s.Props = append(s.Props, junitProperty{"notes", r.Notes})
	}
	failedStep := false
	for _, st := range r.Steps {
		c := junitCase{Name: fmt.Sprintf("%d. %s", st.Number, st.Title), Classname: name, Time: fmt.Sprintf("%.3f", st.DurationS)}
		if len(st.Verdicts) > 0 {
			c.SystemOut = strings.Join(st.Verdicts, "\n")
		}
		if st.Failed {
			failedStep = true
			typ := "verdict"
			if r.Error != nil && strings.Contains(st.Failure, "script failed") {
				typ = r.Error.Kind
				if typ == "" {
					typ = "error"
				}
			}
			text := st.Failure
			if r.Error != nil && r.Error.Traceback != "" && typ != "verdict" {
				text += "\n" + r.Error.Traceback
			}
			c.Failure = &junitFailure{Message: st.Failure, Type: typ, Text: text}
			s.Failures++
		}
		s.Cases = append(s.Cases, c)
	}
	// A failure that no step holds (no steps, or before the first) is a
	// test case of its own, so the suite never reads green when the run
	// was not.
	if r.ExitCode != exitOK && !failedStep {
		msg := fmt.Sprintf("exit code %d", r.ExitCode)
		typ := "exit"
		if r.Error != nil {
			msg, typ = r.Error.Message, r.Error.Kind
			if typ == "" {
				typ = "error"
			}
		}
		s.Cases = append(s.Cases, junitCase{Name: "script", Classname: name, Time: fmt.Sprintf("%.3f", r.DurationS),
			Failure: &junitFailure{Message: msg, Type: typ, Text: msg}})
		s.Errors++
	}
	if len(s.Cases) == 0 {
		s.Cases = append(s.Cases, junitCase{Name: "script", Classname: name, Time: fmt.Sprintf("%.3f", r.DurationS)})
	}
	s.Tests = len(s.Cases)
	data, err := xml.MarshalIndent(junitSuites{Suites: []junitSuite{s}}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append([]byte(xml.Header), append(data, '\n')...))
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
