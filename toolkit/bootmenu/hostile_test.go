package bootmenu

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// hostile parses a config that must fail with a clear "io" error naming
// the place, quickly.
func hostile(t *testing.T, files map[string]string, cfg, loader string, lim Limits, wantSrc, wantMsg string) {
	t.Helper()
	start := time.Now()
	_, err := Parse(mapFS(files), cfg, Options{Loader: loader, Limits: lim})
	took := time.Since(start)
	if err == nil {
		t.Fatalf("no error; want %q", wantMsg)
	}
	t.Logf("%v (%v)", err, took.Round(time.Millisecond))
	if vmerr.KindOf(err) != vmerr.IO {
		t.Errorf("kind %q, want io", vmerr.KindOf(err))
	}
	if !strings.Contains(err.Error(), wantMsg) || !strings.HasPrefix(err.Error(), wantSrc) {
		t.Errorf("error %q\nwant prefix %q and %q", err, wantSrc, wantMsg)
	}
	if took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

func TestHostileIncludeLoops(t *testing.T) {
	hostile(t, map[string]string{"/a.cfg": "label x\ninclude b.cfg\n", "/b.cfg": "\n\ninclude a.cfg\n"}, "/a.cfg", Syslinux, Limits{},
		"/b.cfg:3", "include loop: /a.cfg -> /b.cfg -> /a.cfg")
	hostile(t, map[string]string{"/a.cfg": "include /a.cfg\n"}, "/a.cfg", Syslinux, Limits{}, "/a.cfg:1", "include loop: /a.cfg -> /a.cfg")
	hostile(t, map[string]string{"/g.cfg": "source /h.cfg\n", "/h.cfg": "source $prefix/g.cfg\n"}, "/g.cfg", Grub, Limits{},
		"/h.cfg:1", "include loop: /g.cfg -> /h.cfg -> /g.cfg")
	hostile(t, map[string]string{"/g.cfg": "menuentry x { true; }\nconfigfile /g.cfg\n"}, "/g.cfg", Grub, Limits{},
		"/g.cfg:2", "include loop: /g.cfg -> /g.cfg")
}

func TestHostileMissing(t *testing.T) {
	for _, loader := range []string{Syslinux, Grub} {
		_, err := Parse(fstest.MapFS{}, "/nope.cfg", Options{Loader: loader})
		if vmerr.KindOf(err) != vmerr.NotFound || !strings.Contains(err.Error(), "/nope.cfg does not exist") {
			t.Errorf("%s: %v", loader, err)
		}
	}
	_, err := Parse(fstest.MapFS{}, "/x", Options{Loader: "lilo"})
	if vmerr.KindOf(err) != vmerr.Usage {
		t.Errorf("unknown loader: %v", err)
	}
	_, err = Parse(mapFS(map[string]string{"/dir/x": ""}), "/dir", Options{Loader: Grub})
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: %v", err)
	}
}

func TestHostileNesting(t *testing.T) {
	deepMenu := strings.Repeat("menu begin x\n", 100) + "label a\n kernel /a\n"
	hostile(t, map[string]string{"/s.cfg": deepMenu}, "/s.cfg", Syslinux, Limits{}, "/s.cfg:33", "MENU BEGIN nested more than 32 deep")
	chain := map[string]string{}
	for i := 0; i < 40; i++ {
		chain[fmt.Sprintf("/c%d.cfg", i)] = fmt.Sprintf("include /c%d.cfg\n", i+1)
	}
	hostile(t, chain, "/c0.cfg", Syslinux, Limits{}, "/c31.cfg:1", "includes nested more than 32 deep")
	deepIf := strings.Repeat("if true; then\n", 100) + strings.Repeat("fi\n", 100)
	hostile(t, map[string]string{"/g.cfg": deepIf}, "/g.cfg", Grub, Limits{}, "/g.cfg:", "blocks nested more than 32 deep")
	deepSub := strings.Repeat("submenu x {\n", 100) + strings.Repeat("}\n", 100)
	hostile(t, map[string]string{"/g.cfg": deepSub}, "/g.cfg", Grub, Limits{}, "/g.cfg:", "nested more than 32 deep")
	recursion := "function f { f; }\nf\n"
	hostile(t, map[string]string{"/g.cfg": recursion}, "/g.cfg", Grub, Limits{}, "/g.cfg:1", "nested more than 32 deep")
}

func TestHostileSize(t *testing.T) {
	var labels strings.Builder
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&labels, "label l%d\n kernel /k\n append n=%d\n", i, i)
	}
	hostile(t, map[string]string{"/s.cfg": labels.String(), "/k": ""}, "/s.cfg", Syslinux, Limits{}, "/s.cfg:", "more than 4096 boot entries")
	// Within a raised limit the same 10 000 entries parse, quickly.
	start := time.Now()
	r, err := Parse(mapFS(map[string]string{"/s.cfg": labels.String(), "/k": ""}), "/s.cfg", Options{Loader: Syslinux, Limits: Limits{Entries: 20000}})
	if err != nil || len(r.Entries) != 10000 {
		t.Fatalf("10000 entries: %v", err)
	}
	t.Logf("10 000 syslinux entries in %v", time.Since(start))
	var grub strings.Builder
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&grub, "menuentry 'e%d' { linux /k n=%d; }\n", i, i)
	}
	start = time.Now()
	r, err = Parse(mapFS(map[string]string{"/g.cfg": grub.String(), "/k": ""}), "/g.cfg", Options{Loader: Grub, Limits: Limits{Entries: 20000}})
	if err != nil || len(r.Entries) != 10000 {
		t.Fatalf("10000 GRUB entries: %v", err)
	}
	t.Logf("10 000 GRUB entries in %v", time.Since(start))

	huge := "label x\n append " + strings.Repeat("x", 100000) + "\n"
	hostile(t, map[string]string{"/s.cfg": huge}, "/s.cfg", Syslinux, Limits{}, "/s.cfg:2", "line is 100008 bytes, longer than 65536")
	big := strings.Repeat("# a comment line that is long enough to add up\n", 30000)
	hostile(t, map[string]string{"/s.cfg": big}, "/s.cfg", Grub, Limits{}, "/s.cfg", "larger than 1048576 bytes")
	fanout := map[string]string{}
	for i := 0; i < 6; i++ {
		fanout[fmt.Sprintf("/f%d.cfg", i)] = strings.Repeat(fmt.Sprintf("include /f%d.cfg\n", i+1), 4)
	}
	fanout["/f6.cfg"] = "label x\n"
	hostile(t, fanout, "/f0.cfg", Syslinux, Limits{}, "/f", "more than 512 config files read")
}

func TestHostileGrubBlowups(t *testing.T) {
	// Each level calls the next twice: 2^25 calls without a step limit.
	var fns strings.Builder
	for i := 0; i < 25; i++ {
		fmt.Fprintf(&fns, "function f%d { f%d; f%d; }\n", i, i+1, i+1)
	}
	fns.WriteString("function f25 { true; }\nf0\n")
	// (A lower step limit than the default keeps the test quick under -race.)
	hostile(t, map[string]string{"/g.cfg": fns.String()}, "/g.cfg", Grub, Limits{Steps: 20000}, "/g.cfg:", "more than 20000 GRUB commands evaluated")
	// Each line doubles a value: 2^60 bytes without a value limit.
	doubling := "a=x\n" + strings.Repeat("a=$a$a\n", 60)
	hostile(t, map[string]string{"/g.cfg": doubling}, "/g.cfg", Grub, Limits{}, "/g.cfg:18", "value of a is 131072 bytes, more than 65536")
	loop := "for i in 1 2 3 4 5 6 7 8 9 10; do for j in 1 2 3 4 5 6 7 8 9 10; do for k in 1 2 3 4 5 6 7 8 9 10; do " +
		"for l in 1 2 3 4 5 6 7 8 9 10; do for m in 1 2 3 4 5 6 7 8 9 10; do for n in 1 2 3 4 5 6 7 8 9 10; do true; done; done; done; done; done; done\n"
	hostile(t, map[string]string{"/g.cfg": loop}, "/g.cfg", Grub, Limits{Steps: 20000}, "/g.cfg:1", "more than 20000 GRUB commands evaluated")
	for _, c := range []struct{ cfg, src, msg string }{
		{"menuentry 'x {\n linux /k\n}\n", "/g.cfg:1", "unterminated ' quote"},
		{"menuentry \"x {\n", "/g.cfg:1", "unterminated \" quote"},
		{"menuentry x {\n linux /k\n", "/g.cfg:2", "no closing \"}\""},
		{"menuentry x\n{ linux /k; }\n", "/g.cfg:1", "without \"{\" on its line"},
		{"if true; then\n menuentry x { true; }\n", "/g.cfg:2", "expected \"fi\""},
		{"fi\n", "/g.cfg:1", "unexpected \"fi\""},
		{"}\n", "/g.cfg:1", "unexpected \"}\""},
		{"for 1\n", "/g.cfg:1", "expected \"in\""},
	} {
		hostile(t, map[string]string{"/g.cfg": c.cfg}, "/g.cfg", Grub, Limits{}, c.src, "GRUB syntax error: ")
		hostile(t, map[string]string{"/g.cfg": c.cfg}, "/g.cfg", Grub, Limits{}, c.src, c.msg)
	}
}

func TestHostileBinary(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	garbage := make([]byte, 64<<10)
	rng.Read(garbage)
	for i := range garbage {
		if garbage[i] == 0 {
			garbage[i] = 1
		}
	}
	for _, loader := range []string{Syslinux, Grub} {
		hostile(t, map[string]string{"/x.cfg": string(garbage)}, "/x.cfg", loader, Limits{}, "/x.cfg", "binary data")
		hostile(t, map[string]string{"/x.cfg": "label a\n\x00\x01\x02"}, "/x.cfg", loader, Limits{}, "/x.cfg:2", "binary data (a NUL byte")
	}
	// An included binary file is an error too (the loader would read
	// garbage), naming the include.
	hostile(t, map[string]string{"/x.cfg": "include /isolinux.bin\n", "/isolinux.bin": "\x00\x01binary"}, "/x.cfg", Syslinux, Limits{}, "/isolinux.bin:1", "NUL")
}
