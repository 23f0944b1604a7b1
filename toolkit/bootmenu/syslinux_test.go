package bootmenu

import (
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/vmscript/vmscript/toolkit/record"
)

// mapFS builds an in-memory medium; a value "" makes an empty file.
func mapFS(files map[string]string) fstest.MapFS {
	m := fstest.MapFS{}
	for p, data := range files {
		m[strings.TrimPrefix(p, "/")] = &fstest.MapFile{Data: []byte(data)}
	}
	return m
}

func mustParse(t *testing.T, fsys fstest.MapFS, cfg, loader string) *Result {
	t.Helper()
	r, err := Parse(fsys, cfg, Options{Loader: loader})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range r.Entries {
		t.Log(e)
	}
	for _, w := range r.Warnings {
		t.Log("warning: ", w)
	}
	return r
}

// byName indexes entries by Name, else Label.
func byName(r *Result) map[string]Entry {
	m := map[string]Entry{}
	for _, e := range r.Entries {
		k := e.Name
		if k == "" {
			k = e.Label
		}
		m[k] = e
	}
	return m
}

func hasWarning(r *Result, source, text string) bool {
	for _, w := range r.Warnings {
		if (source == "" || w.Source == source) && strings.Contains(w.Message, text) {
			return true
		}
	}
	return false
}

const isolinuxCfg = `# A hand-written isolinux config with every directive
UI vesamenu.c32
PATH modules
Timeout 50
APPEND quiet
menu title Boot menu
INCLUDE sub/menu.cfg
label live
  MENU LABEL ^Live system
  MENU DEFAULT
  kernel /live/vmlinuz
  APPEND boot=live initrd=/live/initrd.img,/live/extra.img
  TEXT HELP
   Boots the live system.
   Second line.
  ENDTEXT
LaBeL failsafe
  MeNu LaBeL Live (^failsafe)
  LINUX ../live/vmlinuz
  initrd initrd.gz
  append boot=live noapic
label both
  kernel vmlinuz
  initrd second.gz
  append initrd=first.gz,more.gz root=/dev/sr0
label hdt
  menu label ^Hardware Detection Tool
  com32 hdt.c32
label local
  localboot 0x80
label chain
  KERNEL chain.c32 hd0 1
MENU BEGIN adv
  MENU LABEL ^Advanced options
  MENU TITLE Advanced
  label back
    menu label Back
    menu exit
  label expert
    menu label E^xpert
    kernel vmlinuz
    append priority=low
  menu separator
  label hidden
    menu hide
    kernel vmlinuz
    append hidden=1
  MENU BEGIN deeper
    MENU TITLE Deeper ^menu
    label deep
      kernel deep.krn
  MENU END
MENU END
MENU INCLUDE extra.cfg Extra ^things
label help
  menu label Help
  config help.cfg /isolinux
label noappend
  kernel vmlinuz
  append -
label plain
`

func isolinuxMedium() fstest.MapFS {
	return mapFS(map[string]string{
		"/isolinux/isolinux.cfg":    isolinuxCfg,
		"/isolinux/sub/menu.cfg":    "label included\n  kernel vmlinuz\n",
		"/isolinux/extra.cfg":       "label extra\n  kernel vmlinuz\n  append extra=1\n",
		"/isolinux/isolinux.bin":    "",
		"/isolinux/modules/hdt.c32": "",
		"/isolinux/chain.c32":       "",
		"/isolinux/vmlinuz":         "",
		"/isolinux/initrd.gz":       "",
		"/isolinux/first.gz":        "",
		"/isolinux/more.gz":         "",
		"/isolinux/help.cfg":        "",
		"/isolinux/plain":           "",
		"/live/vmlinuz":             "",
		"/live/initrd.img":          "",
		"/live/extra.img":           "",
	})
}

func TestSyslinuxDirectives(t *testing.T) {
	r := mustParse(t, isolinuxMedium(), "/isolinux/isolinux.cfg", Isolinux)
	e := byName(r)
	want := map[string]Entry{
		"included": {Label: "included", Kernel: "/isolinux/vmlinuz", Initrd: []string{}, Append: "quiet", Loader: Isolinux,
			Source: "/isolinux/sub/menu.cfg:1", Kind: KindLinux, Name: "included"},
		"live": {Label: "Live system", Kernel: "/live/vmlinuz", Initrd: []string{"/live/initrd.img", "/live/extra.img"},
			Append: "boot=live initrd=/live/initrd.img,/live/extra.img", Loader: Isolinux, Source: "/isolinux/isolinux.cfg:8",
			Kind: KindLinux, Name: "live", Hotkey: "l", Default: true, Help: "   Boots the live system.\n   Second line."},
		"failsafe": {Label: "Live (failsafe)", Kernel: "/live/vmlinuz", Initrd: []string{"/isolinux/initrd.gz"},
			Append: "boot=live noapic initrd=initrd.gz", Loader: Isolinux, Source: "/isolinux/isolinux.cfg:17",
			Kind: KindLinux, Name: "failsafe", Hotkey: "f"},
		// The APPEND's initrd= comes first on the line syslinux builds, so it wins over INITRD.
		"both": {Label: "both", Kernel: "/isolinux/vmlinuz", Initrd: []string{"/isolinux/first.gz", "/isolinux/more.gz"},
			Append: "initrd=first.gz,more.gz root=/dev/sr0 initrd=second.gz", Loader: Isolinux, Source: "/isolinux/isolinux.cfg:22",
			Kind: KindLinux, Name: "both"},
		"hdt": {Label: "Hardware Detection Tool", Kernel: "/isolinux/modules/hdt.c32", Initrd: []string{}, Append: "quiet",
			Loader: Isolinux, Source: "/isolinux/isolinux.cfg:26", Kind: KindCom32, Name: "hdt", Hotkey: "h"},
		"local": {Label: "local", Initrd: []string{}, Loader: Isolinux, Source: "/isolinux/isolinux.cfg:29", Kind: KindLocal, Name: "local"},
		"chain": {Label: "chain", Kernel: "/isolinux/chain.c32", Initrd: []string{}, Append: "hd0 1 quiet", Loader: Isolinux,
			Source: "/isolinux/isolinux.cfg:31", Kind: KindCom32, Name: "chain"},
		"expert": {Label: "Expert", Kernel: "/isolinux/vmlinuz", Initrd: []string{}, Append: "priority=low", Loader: Isolinux,
			Source: "/isolinux/isolinux.cfg:39", Kind: KindLinux, Name: "expert", Hotkey: "x", Menu: []string{"Advanced options"}},
		"hidden": {Label: "hidden", Kernel: "/isolinux/vmlinuz", Initrd: []string{}, Append: "hidden=1", Loader: Isolinux,
			Source: "/isolinux/isolinux.cfg:44", Kind: KindLinux, Name: "hidden", Hidden: true, Menu: []string{"Advanced options"}},
		"deep": {Label: "deep", Kernel: "/isolinux/deep.krn", Initrd: []string{}, Append: "quiet", Loader: Isolinux,
			Source: "/isolinux/isolinux.cfg:50", Kind: KindLinux, Name: "deep", Menu: []string{"Advanced options", "Deeper menu"}},
		"extra": {Label: "extra", Kernel: "/isolinux/vmlinuz", Initrd: []string{}, Append: "extra=1", Loader: Isolinux,
			Source: "/isolinux/extra.cfg:1", Kind: KindLinux, Name: "extra", Menu: []string{"Extra things"}},
		"help": {Label: "Help", Initrd: []string{}, Loader: Isolinux, Source: "/isolinux/isolinux.cfg:55", Kind: KindConfig,
			Name: "help", Config: "/isolinux/help.cfg"},
		"noappend": {Label: "noappend", Kernel: "/isolinux/vmlinuz", Initrd: []string{}, Loader: Isolinux,
			Source: "/isolinux/isolinux.cfg:58", Kind: KindLinux, Name: "noappend"},
		// A LABEL without KERNEL boots the file named like the label.
		"plain": {Label: "plain", Kernel: "/isolinux/plain", Initrd: []string{}, Append: "quiet", Loader: Isolinux,
			Source: "/isolinux/isolinux.cfg:61", Kind: KindLinux, Name: "plain"},
	}
	for name, w := range want {
		if got, ok := e[name]; !ok || !reflect.DeepEqual(got, w) {
			t.Errorf("%s:\n got %#v\nwant %#v", name, got, w)
		}
	}
	if len(r.Entries) != len(want) {
		t.Errorf("%d entries, want %d (navigation items and separators are not entries)", len(r.Entries), len(want))
	}
	order := []string{}
	for _, x := range r.Entries {
		order = append(order, x.Name)
	}
	if got := strings.Join(order, " "); got != "included live failsafe both hdt local chain expert hidden deep extra help noappend plain" {
		t.Errorf("order: %s", got)
	}
	if !hasWarning(r, "/isolinux/isolinux.cfg:44", "deep.krn") && !hasWarning(r, "/isolinux/isolinux.cfg:50", "deep.krn") {
		t.Errorf("no warning about the missing kernel deep.krn: %v", r.Warnings)
	}
	c := r.Configs[0]
	if c.UI != "vesamenu.c32" || *c.Timeout != 5*time.Second || c.Path != "/isolinux/isolinux.cfg" ||
		!reflect.DeepEqual(c.Files, []string{"/isolinux/isolinux.cfg", "/isolinux/sub/menu.cfg", "/isolinux/extra.cfg"}) {
		t.Errorf("config: %+v", c)
	}
}

func TestSyslinuxDefaults(t *testing.T) {
	for _, c := range []struct {
		name, cfg   string
		wantDefault string
		timeout     time.Duration
		warning     string
	}{
		{"DEFAULT label without UI", "prompt 1\ntimeout 0\ndefault b\nlabel a\n kernel /a\nlabel b\n kernel /b\n", "b", Forever, ""},
		{"DEFAULT overrides MENU DEFAULT", "ui menu.c32\ntimeout 30\ndefault b\nlabel a\n menu default\n kernel /a\nlabel b\n kernel /b\n", "b", 3 * time.Second, ""},
		{"the last DEFAULT wins", "default a\nlabel a\n kernel /a\nlabel b\n kernel /b\ndefault b\n", "b", 0, ""},
		{"DEFAULT in a submenu", "ui menu.c32\ndefault deep\nlabel a\n kernel /a\nmenu begin x\nlabel deep\n kernel /d\nmenu end\n", "deep", Forever, ""},
		{"first entry of the top menu", "default vesamenu.c32\nmenu begin x\nlabel deep\n kernel /d\nmenu end\nlabel a\n kernel /a\n", "", Forever, ""},
		{"first entry is a boot entry", "ui menu.c32\nlabel a\n kernel /a\nlabel b\n kernel /b\n", "a", Forever, ""},
		{"DEFAULT naming no label with UI", "ui menu.c32\ndefault nothing\nlabel a\n kernel /a\n", "a", Forever, "names no label"},
		{"no DEFAULT, no UI", "label a\n kernel /a\n", "", Forever, "boot: prompt"},
		{"hidden label is not the default", "ui menu.c32\ndefault h\nlabel a\n kernel /a\nlabel h\n menu hide\n kernel /h\n", "a", Forever, "names no label"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := mustParse(t, mapFS(map[string]string{"/syslinux.cfg": c.cfg}), "/syslinux.cfg", Syslinux)
			got := ""
			for _, e := range r.Entries {
				if e.Default {
					if got != "" {
						t.Fatalf("two defaults: %s and %s", got, e.Name)
					}
					got = e.Name
				}
			}
			if got != c.wantDefault {
				t.Errorf("default %q, want %q", got, c.wantDefault)
			}
			if tm := r.Configs[0].Timeout; tm == nil || *tm != c.timeout {
				t.Errorf("timeout %v, want %v", tm, c.timeout)
			}
			if c.warning != "" && !hasWarning(r, "", c.warning) {
				t.Errorf("no warning %q: %v", c.warning, r.Warnings)
			}
		})
	}
}

func TestSyslinuxImplicitDefault(t *testing.T) {
	r := mustParse(t, mapFS(map[string]string{"/syslinux.cfg": "DEFAULT vmlinuz initrd=initrd.gz root=/dev/ram0\nAPPEND ignored\n", "/vmlinuz": "", "/initrd.gz": ""}), "/syslinux.cfg", Syslinux)
	want := []Entry{{Label: "vmlinuz", Kernel: "/vmlinuz", Initrd: []string{"/initrd.gz"}, Append: "initrd=initrd.gz root=/dev/ram0",
		Loader: Syslinux, Source: "/syslinux.cfg:1", Kind: KindLinux, Default: true}}
	if !reflect.DeepEqual(r.Entries, want) {
		t.Fatalf("got %#v", r.Entries)
	}
}

func TestPxelinuxPaths(t *testing.T) {
	fsys := mapFS(map[string]string{
		"/pxelinux.cfg/default": "path boot-screens\ndefault vesamenu.c32\ninclude boot-screens/menu.cfg\n",
		"/boot-screens/menu.cfg": "label install\n  kernel d-i/linux\n  append initrd=d-i/initrd.gz\n  ipappend 2\n" +
			"label abs\n  kernel ::/srv/linux\n  append initrd=::/srv/initrd.gz\n" +
			"label web\n  kernel http://10.0.2.2/linux\n",
		"/boot-screens/vesamenu.c32": "", "/d-i/linux": "", "/d-i/initrd.gz": "", "/srv/linux": "", "/srv/initrd.gz": "",
	})
	r := mustParse(t, fsys, "pxelinux.cfg/default", Pxelinux)
	e := byName(r)
	if e["install"].Kernel != "/d-i/linux" || !reflect.DeepEqual(e["install"].Initrd, []string{"/d-i/initrd.gz"}) || !e["install"].Default {
		t.Errorf("install: %+v (paths are relative to the TFTP prefix, not pxelinux.cfg/)", e["install"])
	}
	if e["abs"].Kernel != "/srv/linux" || e["abs"].Initrd[0] != "/srv/initrd.gz" {
		t.Errorf("abs: %+v", e["abs"])
	}
	if e["web"].Kernel != "http://10.0.2.2/linux" {
		t.Errorf("web: %+v", e["web"])
	}
	if !hasWarning(r, "/boot-screens/menu.cfg:1", "IPAPPEND") {
		t.Errorf("no IPAPPEND warning: %v", r.Warnings)
	}
	if r.Configs[0].UI != "vesamenu.c32" {
		t.Errorf("UI %q", r.Configs[0].UI)
	}
	if len(r.Warnings) != 1 {
		t.Errorf("warnings: %v", r.Warnings)
	}
}

func TestSyslinuxWarnings(t *testing.T) {
	cfg := "default a\ninclude missing.cfg\nmenu end\ninitrd /x\nkernel /y\nlabel a\n kernel /a\n text help\n never ends\n"
	r := mustParse(t, mapFS(map[string]string{"/syslinux/syslinux.cfg": cfg + "\nmenu begin open\n"}), "/syslinux/syslinux.cfg", Syslinux)
	for _, w := range []struct{ src, text string }{
		{"/syslinux/syslinux.cfg:2", "included file /syslinux/missing.cfg does not exist"},
		{"/syslinux/syslinux.cfg:3", "MENU END without MENU BEGIN"},
		{"/syslinux/syslinux.cfg:4", "INITRD outside a LABEL"},
		{"/syslinux/syslinux.cfg:5", "KERNEL outside a LABEL"},
		{"/syslinux/syslinux.cfg:8", "TEXT without ENDTEXT"},
		{"/syslinux/syslinux.cfg:6", "kernel /a of entry \"a\" is not on the medium"},
	} {
		if !hasWarning(r, w.src, w.text) {
			t.Errorf("no warning %s: %s in %v", w.src, w.text, r.Warnings)
		}
	}
	long := "label x\n kernel /x\n append " + strings.Repeat("a", 5000) + "\n"
	r = mustParse(t, mapFS(map[string]string{"/syslinux.cfg": long, "/x": ""}), "/syslinux.cfg", Syslinux)
	if !hasWarning(r, "/syslinux.cfg:3", "reads the bytes after 4095") {
		t.Errorf("no long-line warning: %v", r.Warnings)
	}
}

func TestFindLoaders(t *testing.T) {
	fsys := isolinuxMedium()
	fsys["syslinux/syslinux.cfg"] = &fstest.MapFile{Data: []byte("default usb\nlabel usb\n kernel /live/vmlinuz\n")}
	fsys["boot/grub/grub.cfg"] = &fstest.MapFile{Data: []byte("menuentry 'Live' {\n linux /live/vmlinuz boot=live\n initrd /live/initrd.img\n}\n")}
	fsys["EFI/BOOT/grub.cfg"] = &fstest.MapFile{Data: []byte("search --set=root --file /live/vmlinuz\nset prefix=($root)/boot/grub\nconfigfile $prefix/grub.cfg\n")}
	fsys["boot/grub/loopback.cfg"] = &fstest.MapFile{Data: []byte("menuentry 'Loop' {\n linux /live/vmlinuz findiso=${iso_path}\n}\n")}
	r, err := Find(fsys)
	if err != nil {
		t.Fatal(err)
	}
	var loaders []string
	for _, c := range r.Configs {
		loaders = append(loaders, c.Loader+" "+c.Path)
	}
	want := []string{"isolinux /isolinux/isolinux.cfg", "syslinux /syslinux/syslinux.cfg", "grub /boot/grub/grub.cfg",
		"grub /EFI/BOOT/grub.cfg", "grub /boot/grub/loopback.cfg"}
	if !reflect.DeepEqual(loaders, want) {
		t.Errorf("configs:\n%s\nwant\n%s", strings.Join(loaders, "\n"), strings.Join(want, "\n"))
	}
	grubLive := 0
	for _, e := range r.Entries {
		if e.Loader == Grub && e.Label == "Live" {
			grubLive++
		}
	}
	if grubLive != 1 {
		t.Errorf("the entry reached from grub.cfg and EFI/BOOT/grub.cfg is listed %d times", grubLive)
	}
	if !hasWarning(r, "/boot/grub/loopback.cfg:1", "${iso_path}") {
		t.Errorf("no warning for ${iso_path}: %v", r.Warnings)
	}
	empty, err := Find(fstest.MapFS{"README": &fstest.MapFile{}})
	if err != nil || len(empty.Entries) != 0 || !hasWarning(empty, "/", "no isolinux") {
		t.Errorf("empty medium: %+v %v", empty, err)
	}
}

func TestRecords(t *testing.T) {
	r := mustParse(t, isolinuxMedium(), "/isolinux/isolinux.cfg", Isolinux)
	m := record.Map(r.Entries[1])
	for _, k := range []string{"label", "kernel", "initrd", "append", "loader", "source", "kind", "name", "hotkey", "default", "help", "line"} {
		if _, ok := m[k]; !ok {
			t.Errorf("record of an entry has no %q: %v", k, m)
		}
	}
	if m["line"] != r.Entries[1].String() || m["default"] != true {
		t.Errorf("record %v", m)
	}
	c := record.Map(r.Configs[0])
	if c["timeout"] != 5.0 {
		t.Errorf("timeout in seconds: %v", c["timeout"])
	}
	forever := Forever
	if v := record.Value(Config{Timeout: &forever}); v.(map[string]any)["timeout"] != -1.0 {
		t.Errorf("forever: %v", v)
	}
	w := record.Map(Warning{Source: "/a:1", Message: "m"})
	if w["line"] != "/a:1: m" {
		t.Errorf("warning record %v", w)
	}
}
