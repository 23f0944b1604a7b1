package slurm

import (
	"strings"
	"testing"

	"github.com/vmscript/vmscript/toolkit/matrix"
)

func TestScriptAndResources(t *testing.T) {
	m := &matrix.Matrix{Path: "/m/night ly.lua", Tasks: make([]matrix.Task, 6), Timeout: "20m", CPUs: 2, Memory: "1536M"}
	s, err := Script(Job{Matrix: m, Results: "/shared/res", Binary: "/opt/vmscript", Extra: []string{"--partition=vms"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#SBATCH --job-name=vmscript-night_ly", "#SBATCH --array=0-5", "#SBATCH --cpus-per-task=2",
		"#SBATCH --mem=1920M", "#SBATCH --time=25", "#SBATCH --output=/shared/res/slurm-%A_%a.out", "#SBATCH --partition=vms",
		"exec '/opt/vmscript' run --matrix '/m/night ly.lua' --results '/shared/res' --quiet"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if _, err := Script(Job{Matrix: m, Results: "/my results", Binary: "/opt/vmscript"}); err == nil || !strings.Contains(err.Error(), "white space") {
		t.Errorf("results with a space: %v", err)
	}
	r, err := TaskResources(&matrix.Matrix{})
	if err != nil || r.CPUs != 1 || r.MemoryMiB != 1024+128+256 || r.Time != 0 {
		t.Errorf("defaults: %+v %v", r, err)
	}
	if _, err := TaskResources(&matrix.Matrix{Timeout: "soon"}); err == nil {
		t.Error("a bad timeout passed")
	}
	if _, err := TaskResources(&matrix.Matrix{Memory: "lots"}); err == nil {
		t.Error("a bad memory passed")
	}
}
