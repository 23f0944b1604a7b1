package bootmenu

import (
	"testing"
	"testing/fstest"
)

// fuzzLimits keep each fuzz input cheap; the parsers must stay within
// them (or fail with an error), never panic or hang.
var fuzzLimits = Limits{FileSize: 64 << 10, TotalSize: 256 << 10, Files: 32, Depth: 16, Entries: 256, Line: 4096, Steps: 20000, Value: 4096}

// fuzzFS puts the input at the config path and at an include target, so
// includes of either reach fuzzed text.
func fuzzFS(cfg string, data []byte) fstest.MapFS {
	return fstest.MapFS{
		cfg:         &fstest.MapFile{Data: data},
		"inc.cfg":   &fstest.MapFile{Data: data},
		"boot/x":    &fstest.MapFile{Data: []byte("kernel")},
		"other.cfg": &fstest.MapFile{Data: []byte("label o\n kernel /boot/x\nmenuentry o { linux /boot/x; }\n")},
	}
}

func checkFuzz(t *testing.T, r *Result, err error) {
	if err != nil {
		return
	}
	if len(r.Entries) > fuzzLimits.Entries {
		t.Fatalf("%d entries, over the limit", len(r.Entries))
	}
	for _, e := range r.Entries {
		if e.Loader == "" || e.Source == "" || e.Kind == "" || e.Initrd == nil {
			t.Fatalf("incomplete entry %#v", e)
		}
	}
}

func FuzzSyslinux(f *testing.F) {
	f.Add([]byte(isolinuxCfg))
	f.Add([]byte("default a\nlabel a\n kernel /boot/x\n append initrd=/boot/x,b\ninclude inc.cfg\n"))
	f.Add([]byte("menu begin x\nmenu label ^X\nlabel y\n menu default\n config other.cfg\nmenu end\nmenu include other.cfg T\ntext help\nx\nendtext\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(fuzzFS("syslinux.cfg", data), "syslinux.cfg", Options{Loader: Syslinux, Limits: fuzzLimits})
		checkFuzz(t, r, err)
	})
}

func FuzzGrub(f *testing.F) {
	f.Add([]byte(grubCfg))
	f.Add([]byte("set default=1\nmenuentry 'a' --id=x { linux /boot/x $1; initrd /boot/x; }\nsubmenu s { source /inc.cfg; }\n"))
	f.Add([]byte("function f { menuentry \"$1\" { linux ($root)/boot/x; }; f x; }\nfor a in 1 2; do f $a; done\nif a; then configfile /other.cfg; fi\n"))
	f.Add([]byte("a=\"${b}x\"\\\n'q'$1${#}\"\\$\" # c\nwhile x; do :; done\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(fuzzFS("grub.cfg", data), "grub.cfg", Options{Loader: Grub, Limits: fuzzLimits})
		checkFuzz(t, r, err)
	})
}
