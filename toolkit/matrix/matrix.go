// Package matrix reads a run matrix: many runs of vmscript — scripts ×
// parameter sets — named as data in a Lua file that returns a table, so
// that an engine that fans work out by index (a Slurm array, a Kubernetes
// Indexed Job, a CI matrix) can run task N without knowing more:
//
//	return {
//	  scripts = { "scripts/05-storage.lua", "scripts/04-network.lua" },
//	  params = {                                   -- every combination
//	    iso = { tonight = "/srv/tonight.iso", good = "/srv/good.iso" },
//	    firmware = { "bios", "uefi" },
//	  },
//	  args = { cold = "1" },                       -- every task
//	  tasks = { { script = "scripts/00-shell.lua", args = { via = "menu" } } },
//	  timeout = "20m", cpus = 2, memory = "3G",    -- per task, for engines
//	}
//
// Tasks are the scripts in order, each with every combination of the
// params (axes in name order, values in the order written, a map's values
// by their names), then the tasks listed as such; they are numbered from 0.
// Script paths are relative to the matrix file.
package matrix

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
	lua "github.com/yuin/gopher-lua"
)

// Task is one run of the matrix.
type Task struct {
	// Index is the task's number, from 0.
	Index int `json:"index"`
	// Name is unique in the matrix and safe as a directory name:
	// the script's base name and the combination ("05-storage+firmware=bios").
	Name string `json:"name"`
	// Script is the script's path.
	Script string `json:"script"`
	// Args are the script's -a arguments.
	Args map[string]string `json:"args"`
}

// Matrix is a loaded matrix file.
type Matrix struct {
	// Path is the file it was read from.
	Path string `json:"path"`
	// Tasks are its tasks in index order.
	Tasks []Task `json:"tasks"`
	// Timeout bounds each task's run ("" when not set).
	Timeout string `json:"timeout,omitempty"`
	// CPUs and Memory are what each task needs from an engine (0 and ""
	// when not set).
	CPUs   int    `json:"cpus,omitempty"`
	Memory string `json:"memory,omitempty"`
}

// loadTimeout bounds evaluating the file (a matrix is data, not a program).
var loadTimeout = 5 * time.Second

// maxTasks bounds a matrix: a typo in an axis should not make a million.
const maxTasks = 100000

// Load reads and checks the matrix file at path.
func Load(path string) (*Matrix, error) {
	t, err := evaluate(path)
	if err != nil {
		return nil, err
	}
	m := &Matrix{Path: path}
	if err := m.read(t, filepath.Dir(path)); err != nil {
		return nil, vmerr.Wrap(vmerr.Usage, err, "matrix %s", path)
	}
	return m, nil
}

// evaluate runs the file in a Lua state with only the base, table, string
// and math libraries, under loadTimeout, and returns the table it returns.
func evaluate(path string) (*lua.LTable, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, vmerr.Wrap(vmerr.NotFound, err, "matrix")
	}
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	for _, lib := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.fn))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	L.SetContext(ctx)
	fn, err := L.LoadFile(path)
	if err != nil {
		return nil, vmerr.Wrap(vmerr.Usage, err, "matrix %s", path)
	}
	L.Push(fn)
	if err := L.PCall(0, 1, nil); err != nil {
		return nil, vmerr.Wrap(vmerr.Usage, err, "matrix %s", path)
	}
	t, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return nil, vmerr.New(vmerr.Usage, "matrix %s: the file must return a table, it returned %s", path, L.Get(-1).Type())
	}
	return t, nil
}

// known are the keys a matrix table may have.
var known = map[string]bool{"scripts": true, "params": true, "args": true, "tasks": true, "timeout": true, "cpus": true, "memory": true}

// read fills m from the matrix table; dir resolves script paths.
func (m *Matrix) read(t *lua.LTable, dir string) error {
	var err error
	t.ForEach(func(k, _ lua.LValue) {
		if s, ok := k.(lua.LString); (!ok || !known[string(s)]) && err == nil {
			err = fmt.Errorf("unknown key %s (want scripts, params, args, tasks, timeout, cpus, memory)", lua.LVAsString(k))
		}
	})
	if err != nil {
		return err
	}
	if err := m.readResources(t); err != nil {
		return err
	}
	common, err := stringMap(t.RawGetString("args"), "args")
	if err != nil {
		return err
	}
	if err := m.readCross(t, dir, common); err != nil {
		return err
	}
	if err := m.readTasks(t.RawGetString("tasks"), dir, common); err != nil {
		return err
	}
	if len(m.Tasks) == 0 {
		return fmt.Errorf("no tasks: give scripts (with params) or tasks")
	}
	return checkNames(m.Tasks)
}

// readResources reads timeout, cpus and memory.
func (m *Matrix) readResources(t *lua.LTable) error {
	if v := t.RawGetString("timeout"); v != lua.LNil {
		if _, ok := v.(lua.LString); !ok {
			return fmt.Errorf("timeout must be a duration such as \"20m\", got %s", v.Type())
		}
		m.Timeout = string(v.(lua.LString))
	}
	if v := t.RawGetString("cpus"); v != lua.LNil {
		n, ok := v.(lua.LNumber)
		if !ok || n < 1 || float64(n) != float64(int(n)) {
			return fmt.Errorf("cpus must be a whole number from 1, got %s", lua.LVAsString(v))
		}
		m.CPUs = int(n)
	}
	if v := t.RawGetString("memory"); v != lua.LNil {
		if _, ok := v.(lua.LString); !ok {
			return fmt.Errorf("memory must be a size such as \"3G\", got %s", v.Type())
		}
		m.Memory = string(v.(lua.LString))
	}
	return nil
}

// readCross adds every script with every combination of the params.
func (m *Matrix) readCross(t *lua.LTable, dir string, common map[string]string) error {
	scripts, err := stringList(t.RawGetString("scripts"), "scripts")
	if err != nil {
		return err
	}
	axes, err := readAxes(t.RawGetString("params"))
	if err != nil {
		return err
	}
	if len(scripts) == 0 && len(axes) > 0 {
		return fmt.Errorf("params without scripts")
	}
	combos := combinations(axes)
	if len(scripts)*len(combos) > maxTasks {
		return fmt.Errorf("%d scripts × %d combinations is more than %d tasks", len(scripts), len(combos), maxTasks)
	}
	for i, s := range scripts {
		path, err := scriptPath(dir, s, fmt.Sprintf("scripts[%d]", i+1))
		if err != nil {
			return err
		}
		for _, c := range combos {
			args := merge(common, c.args)
			m.add(Task{Name: base(s) + c.suffix, Script: path, Args: args})
		}
	}
	return nil
}

// readTasks adds the tasks listed one by one.
func (m *Matrix) readTasks(v lua.LValue, dir string, common map[string]string) error {
	if v == lua.LNil {
		return nil
	}
	list, ok := v.(*lua.LTable)
	if !ok {
		return fmt.Errorf("tasks must be a list of {script=, args=, name=}, got %s", v.Type())
	}
	for i := 1; i <= list.Len(); i++ {
		where := fmt.Sprintf("tasks[%d]", i)
		t, ok := list.RawGetInt(i).(*lua.LTable)
		if !ok {
			return fmt.Errorf("%s must be a table {script=, args=, name=}", where)
		}
		script, ok := t.RawGetString("script").(lua.LString)
		if !ok || script == "" {
			return fmt.Errorf("%s needs a script", where)
		}
		path, err := scriptPath(dir, string(script), where+".script")
		if err != nil {
			return err
		}
		own, err := stringMap(t.RawGetString("args"), where+".args")
		if err != nil {
			return err
		}
		args := merge(common, own)
		name := lua.LVAsString(t.RawGetString("name"))
		if name == "" {
			name = base(string(script)) + suffixOf(own)
		}
		m.add(Task{Name: name, Script: path, Args: args})
	}
	return nil
}

func (m *Matrix) add(t Task) {
	t.Index = len(m.Tasks)
	m.Tasks = append(m.Tasks, t)
}

// Task returns task i, or an error that says how many there are.
func (m *Matrix) Task(i int) (Task, error) {
	if i < 0 || i >= len(m.Tasks) {
		return Task{}, vmerr.New(vmerr.Usage, "matrix %s has tasks 0 to %d, not %d", m.Path, len(m.Tasks)-1, i)
	}
	return m.Tasks[i], nil
}

// safeName is what a task name may hold (it names a directory).
var safeName = regexp.MustCompile(`^[A-Za-z0-9._+=,@-]+$`)

// checkNames refuses duplicate and unsafe task names.
func checkNames(tasks []Task) error {
	seen := map[string]int{}
	for _, t := range tasks {
		if !safeName.MatchString(t.Name) || t.Name == "." || t.Name == ".." {
			return fmt.Errorf("task %d: name %q: use letters, digits and . _ + = , @ - (it names the task's directory)", t.Index, t.Name)
		}
		if j, dup := seen[t.Name]; dup {
			return fmt.Errorf("tasks %d and %d are both named %q: give one a name", j, t.Index, t.Name)
		}
		seen[t.Name] = t.Index
	}
	return nil
}

// scriptPath resolves a script against the matrix file's directory and
// checks it exists.
func scriptPath(dir, s, where string) (string, error) {
	p := s
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() {
		return "", fmt.Errorf("%s: no script %s", where, p)
	}
	return p, nil
}

// base is a script's file name without ".lua".
func base(script string) string {
	return strings.TrimSuffix(filepath.Base(script), ".lua")
}

// merge returns common overridden by own.
func merge(common, own map[string]string) map[string]string {
	out := make(map[string]string, len(common)+len(own))
	for k, v := range common {
		out[k] = v
	}
	for k, v := range own {
		out[k] = v
	}
	return out
}

// suffixOf names a task's own arguments: "+k=v" in key order.
func suffixOf(args map[string]string) string {
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString("+" + k + "=" + sanitize(args[k]))
	}
	return b.String()
}

// unsafeChars are what sanitize replaces.
var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._,@-]+`)

// sanitize makes a value usable in a task name: a path by its base name
// without extension.
func sanitize(v string) string {
	v = strings.TrimSuffix(filepath.Base(v), filepath.Ext(v))
	return unsafeChars.ReplaceAllString(v, "_")
}
