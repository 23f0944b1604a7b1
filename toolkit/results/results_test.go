package results

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRun writes a run directory as vmscript run leaves it.
func fakeRun(t testing.TB, root, task, info string, accel string) string {
	t.Helper()
	dir := filepath.Join(root, task)
	if err := os.MkdirAll(filepath.Join(dir, "artifacts"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "run.json"), []byte(info), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.md"), []byte("# notes\n"), 0o644)
	tl := `{"mono_ns":1,"wall":"2026-12-05T06:00:00.000Z","source":"run","kind":"start"}` + "\n"
	if accel != "" {
		tl += `{"mono_ns":2,"wall":"2026-12-05T06:00:00.100Z","source":"vm:mini","kind":"start","fields":{"accel":"` + accel + `"}}` + "\n"
	}
	os.WriteFile(filepath.Join(dir, "timeline.jsonl"), []byte(tl), 0o644)
	// An artifact that looks like a run must not be read as one.
	os.WriteFile(filepath.Join(dir, "artifacts", "run.json"), []byte("{}"), 0o644)
	return dir
}

func info(script, args string, end bool, code int, errText string) string {
	s := fmt.Sprintf(`{"script":%q,"args":{%s},"start":"2026-12-05T06:00:00.000Z"`, script, args)
	if end {
		s += fmt.Sprintf(`,"end":"2026-12-05T06:01:00.000Z","duration_s":60.25,"exit_code":%d`, code)
	}
	if errText != "" {
		s += fmt.Sprintf(`,"error":%q`, errText)
	}
	return s + "}"
}

func TestGatherAndRender(t *testing.T) {
	root := t.TempDir()
	fakeRun(t, root, "05-storage+iso=good", info("/s/05-storage.lua", `"iso":"good"`, true, 0, ""), "tcg")
	fakeRun(t, root, "05-storage+iso=tonight", info("/s/05-storage.lua", `"iso":"tonight"`, true, 1, "storage: status file missing\nstack traceback: …"), "tcg")
	fakeRun(t, root, "04-network+iso=good", info("/s/04-network.lua", `"iso":"good"`, false, 0, ""), "kvm")
	live := fakeRun(t, root, "04-network+iso=tonight", info("/s/04-network.lua", `"iso":"tonight"`, false, 0, ""), "")
	fakeRun(t, root, "broken", "{not json", "")
	runs, err := Gather(root, func(dir string) bool { return dir == live })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range runs {
		got = append(got, r.Task+":"+r.State+":"+r.Accel)
	}
	want := "04-network+iso=good:died:kvm 04-network+iso=tonight:running: 05-storage+iso=good:passed:tcg 05-storage+iso=tonight:failed:tcg broken:died:"
	if strings.Join(got, " ") != want {
		t.Fatalf("runs %q\nwant %q", strings.Join(got, " "), want)
	}
	if runs[3].Error != "storage: status file missing" || *runs[3].ExitCode != 1 || runs[3].Notes != "05-storage+iso=tonight/notes.md" {
		t.Errorf("failed run: %+v", runs[3])
	}
	if !strings.Contains(runs[4].Error, "run.json unreadable") {
		t.Errorf("broken run: %+v", runs[4])
	}

	var text, md, junit, page bytes.Buffer
	if err := WriteText(&text, runs); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"TASK", "05-storage+iso=tonight  failed   1", "1m0.2s", "5 runs: 1 passed, 1 failed, 1 running, 2 died"} {
		if !strings.Contains(text.String(), w) {
			t.Errorf("text lacks %q:\n%s", w, text.String())
		}
	}
	WriteMarkdown(&md, runs)
	if !strings.Contains(md.String(), "| 05-storage+iso=tonight | failed | 1 | 1m0.2s | tcg | storage: status file missing | [notes](05-storage+iso=tonight/notes.md) |") {
		t.Errorf("markdown:\n%s", md.String())
	}
	WriteJUnit(&junit, "nightly", runs)
	var suite junitSuite
	if err := xml.Unmarshal(junit.Bytes(), &suite); err != nil {
		t.Fatalf("junit: %v\n%s", err, junit.String())
	}
	if suite.Tests != 5 || suite.Failures != 1 || suite.Errors != 2 || suite.Skipped != 1 || suite.Cases[3].Failure == nil {
		t.Errorf("junit suite %+v", suite)
	}
	WriteHTML(&page, "nightly", runs)
	for _, w := range []string{"<th>04-network</th>", "<th><code>iso=good</code></th>", `<td class="passed"><a href="05-storage&#43;iso=good/notes.md">passed</a> (0)</td>`, `<td class="running">`} {
		if !strings.Contains(page.String(), w) {
			t.Errorf("html lacks %q", w)
		}
	}
	if _, err := Gather(filepath.Join(root, "nope"), nil); err == nil {
		t.Error("a missing root gathered")
	}
}

// BenchmarkGather1000: vmscript report over 1000 run directories.
func BenchmarkGather1000(b *testing.B) {
	root := b.TempDir()
	for i := range 1000 {
		fakeRun(b, root, fmt.Sprintf("task-%04d", i), info("/s/x.lua", `"i":"`+fmt.Sprint(i)+`"`, true, i%3, ""), "tcg")
	}
	b.ResetTimer()
	for range b.N {
		runs, err := Gather(root, nil)
		if err != nil || len(runs) != 1000 {
			b.Fatal(len(runs), err)
		}
		var out bytes.Buffer
		WriteHTML(&out, "x", runs)
	}
}

func TestCancelledAndNotRun(t *testing.T) {
	root := t.TempDir()
	fakeRun(t, root, "a", info("/s/a.lua", "", true, 143, "vmscript: interrupted by terminated; VMs stopped, logs flushed"), "tcg")
	runs, err := Gather(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	runs = AddMissing(runs, []Run{{Task: "a", Script: "/s/a.lua"}, {Task: "b", Script: "/s/b.lua", Args: map[string]string{"x": "1"}}})
	if len(runs) != 2 || runs[0].State != Cancelled || runs[1].State != NotRun || runs[1].Script != "/s/b.lua" {
		t.Fatalf("runs %+v", runs)
	}
	var text, junit bytes.Buffer
	WriteText(&text, runs)
	WriteJUnit(&junit, "x", runs)
	if !strings.Contains(text.String(), "2 runs: 1 cancelled, 1 not run") || !strings.Contains(junit.String(), `failures="1" errors="1"`) {
		t.Errorf("text:\n%s\njunit:\n%s", text.String(), junit.String())
	}
}
