package matrix

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadCrossProductAndTasks(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "scripts/05-storage.lua", "")
	write(t, dir, "scripts/04-network.lua", "")
	write(t, dir, "scripts/00-shell.lua", "")
	path := write(t, dir, "nightly.lua", `
		local isos = { tonight = "/srv/tonight.iso", good = "/srv/good.iso" }
		return {
		  scripts = { "scripts/05-storage.lua", "scripts/04-network.lua" },
		  params = { iso = isos, firmware = { "bios", "uefi" } },
		  args = { cold = 1, firmware = "ignored" },
		  tasks = { { script = "scripts/00-shell.lua", args = { via = "menu" } },
		            { script = "scripts/00-shell.lua", args = { via = "screen" }, name = "shell-on-vga" } },
		  timeout = "20m", cpus = 2, memory = "3G",
		}`)
	m, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, task := range m.Tasks {
		if task.Index != i {
			t.Errorf("task %d has index %d", i, task.Index)
		}
		names = append(names, task.Name)
	}
	want := []string{
		"05-storage+firmware=bios+iso=good", "05-storage+firmware=bios+iso=tonight",
		"05-storage+firmware=uefi+iso=good", "05-storage+firmware=uefi+iso=tonight",
		"04-network+firmware=bios+iso=good", "04-network+firmware=bios+iso=tonight",
		"04-network+firmware=uefi+iso=good", "04-network+firmware=uefi+iso=tonight",
		"00-shell+via=menu", "shell-on-vga",
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("names:\n%s\nwant\n%s", strings.Join(names, "\n"), strings.Join(want, "\n"))
	}
	t1 := m.Tasks[1]
	if t1.Script != filepath.Join(dir, "scripts/05-storage.lua") || t1.Args["iso"] != "/srv/tonight.iso" || t1.Args["firmware"] != "bios" || t1.Args["cold"] != "1" {
		t.Errorf("task 1: %+v", t1)
	}
	if m.Tasks[9].Args["via"] != "screen" || m.Tasks[9].Args["cold"] != "1" {
		t.Errorf("task 9: %+v", m.Tasks[9])
	}
	if m.Timeout != "20m" || m.CPUs != 2 || m.Memory != "3G" {
		t.Errorf("resources: %+v", m)
	}
	if _, err := m.Task(10); !vmerr.Is(err, vmerr.Usage) || !strings.Contains(err.Error(), "tasks 0 to 9, not 10") {
		t.Errorf("Task(10): %v", err)
	}
}

func TestLoadRefusesBadMatrices(t *testing.T) {
	loadTimeout = 300 * time.Millisecond
	dir := t.TempDir()
	write(t, dir, "a.lua", "")
	for name, c := range map[string]struct{ src, want string }{
		"not a table":    {`return 42`, "must return a table"},
		"syntax":         {`return {`, "matrix"},
		"runtime":        {`error("boom")`, "boom"},
		"endless":        {`while true do end`, "context deadline exceeded"},
		"no os":          {`return { scripts = { os.getenv("HOME") } }`, "os"},
		"unknown key":    {`return { script = { "a.lua" } }`, "unknown key script"},
		"empty":          {`return {}`, "no tasks"},
		"missing script": {`return { scripts = { "nope.lua" } }`, "scripts[1]: no script"},
		"scripts map":    {`return { scripts = { x = "a.lua" } }`, "scripts must be a list"},
		"bad value":      {`return { scripts = { "a.lua" }, params = { iso = { {} } } }`, "params.iso[1] must be a string"},
		"empty axis":     {`return { scripts = { "a.lua" }, params = { iso = {} } }`, "params.iso has no values"},
		"params only":    {`return { params = { iso = { "x" } } }`, "params without scripts"},
		"duplicate":      {`return { tasks = { { script = "a.lua" }, { script = "a.lua" } } }`, "both named \"a\""},
		"unsafe name":    {`return { tasks = { { script = "a.lua", name = "../x" } } }`, "name \"../x\""},
		"too many": {`local v = {} for i = 1, 400 do v[i] = i end
			return { scripts = { "a.lua" }, params = { a = v, b = v } }`, "more than 100000 tasks"},
		"cpus":    {`return { scripts = { "a.lua" }, cpus = 0.5 }`, "cpus must be a whole number"},
		"no file": {"", "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, "nope-"+strings.ReplaceAll(name, " ", "-")+".lua")
			if c.src != "" {
				path = write(t, dir, "m-"+strings.ReplaceAll(name, " ", "-")+".lua", c.src)
			}
			_, err := Load(path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
}
