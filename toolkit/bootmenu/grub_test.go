package bootmenu

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const grubCfg = `# A hand-written GRUB config with every construct
set timeout=7
set default="Nested>Inner two"
set kopts="quiet splash"
base=/casper
function add_entry {
  menuentry "From function $1" --id "fn-$1" {
    linux $base/vmlinuz fn=$1
  }
}
insmod gzio
if [ "$grub_platform" = "efi" ]; then
  set arch=efi
  menuentry 'UEFI settings' { fwsetup; }
elif [ -e /x ]; then
  menuentry "Elif entry" { linux /elif; }
else
  menuentry "Else entry" { linux /else; }
fi
menuentry "Live \"system\"" --class ubuntu --id=live --hotkey=l {
	linux	$base/vmlinuz boot=casper $kopts ---
	initrd	${base}/initrd.gz /casper/extra.img
}
menuentry 'Arch: $arch' --unrestricted {
	linuxefi /casper/vmlinuz arch=$arch
	initrdefi "/casper/initrd.gz"
}
submenu "Nested" --id nested {
	set kopts="nested"
	menuentry "Inner one" { linux16 /casper/vmlinuz $kopts; }
	menuentry "Inner two" --id inner2 {
		linux /casper/vmlinuz \
		  continued=yes
	}
}
for v in a b; do
  add_entry $v
done
for k in /casper/vmlinuz-*; do
  menuentry "Glob $k" { linux $k; }
done
source $prefix/extra.cfg
configfile /boot/grub/other.cfg
menuentry "Elsewhere" { set root=(hd0,1); linux /vmlinuz root=/dev/sda1; }
menuentry "UUID" { search --no-floppy --fs-uuid --set=root 1234-ABCD; linux /vmlinuz; }
menuentry "Found" { search --set=root --file /casper/vmlinuz ; linux /casper/vmlinuz; }
menuentry "Chain" { chainloader /EFI/boot/bootx64.efi; }
menuentry "Chained config" { configfile /boot/grub/other.cfg; }
menuentry "Multiboot" { multiboot /boot/xen.gz dom0_mem=1G ; module /casper/vmlinuz; }
menuentry "Conditional kernel" {
	if [ "$grub_platform" = efi ]; then linuxefi /casper/vmlinuz; fi
	linux /casper/vmlinuz plain
}
while true; do menuentry "Loop" { linux /casper/vmlinuz; } ; done
`

func grubMedium() map[string]string {
	return map[string]string{
		"/boot/grub/grub.cfg":   grubCfg,
		"/boot/grub/extra.cfg":  "menuentry \"Sourced $kopts\" { linux /casper/vmlinuz; }\n",
		"/boot/grub/other.cfg":  "set default=1\nmenuentry \"Other A\" { linux /a; }\nmenuentry \"Other B\" { linux /b; }\n",
		"/casper/vmlinuz":       "",
		"/casper/initrd.gz":     "",
		"/casper/extra.img":     "",
		"/EFI/boot/bootx64.efi": "",
		"/boot/xen.gz":          "",
		"/a":                    "",
		"/b":                    "",
	}
}

func TestGrubConstructs(t *testing.T) {
	r := mustParse(t, mapFS(grubMedium()), "/boot/grub/grub.cfg", Grub)
	src := func(n int) string { return "/boot/grub/grub.cfg:" + itoa(n) }
	ifCond := `if [ "$grub_platform" = "efi" ] (` + src(12) + `)`
	e := func(label, kernel string, initrd []string, app string, line int, kind string) Entry {
		if initrd == nil {
			initrd = []string{}
		}
		return Entry{Label: label, Kernel: kernel, Initrd: initrd, Append: app, Loader: Grub, Source: src(line), Kind: kind}
	}
	var want []Entry
	add := func(x Entry, f func(*Entry)) {
		if f != nil {
			f(&x)
		}
		want = append(want, x)
	}
	add(e("Other A", "/a", nil, "", 2, KindLinux), func(x *Entry) { x.Source = "/boot/grub/other.cfg:2" })
	add(e("Other B", "/b", nil, "", 3, KindLinux), func(x *Entry) { x.Source, x.Default = "/boot/grub/other.cfg:3", true })
	add(e("UEFI settings", "", nil, "", 14, KindOther), func(x *Entry) { x.Condition = ifCond })
	add(e("Elif entry", "/elif", nil, "", 16, KindLinux), func(x *Entry) { x.Condition = "elif [ -e /x ] (" + src(12) + ")" })
	add(e("Else entry", "/else", nil, "", 18, KindLinux), func(x *Entry) {
		x.Condition = `else of if [ "$grub_platform" = "efi" ] (` + src(12) + ")"
	})
	add(e(`Live "system"`, "/casper/vmlinuz", []string{"/casper/initrd.gz", "/casper/extra.img"}, "boot=casper quiet splash ---", 20, KindLinux),
		func(x *Entry) { x.Name, x.Hotkey = "live", "l" })
	add(e("Arch: $arch", "/casper/vmlinuz", []string{"/casper/initrd.gz"}, "arch=${arch}", 24, KindLinux), nil)
	add(e("Inner one", "/casper/vmlinuz", nil, "nested", 30, KindLinux), func(x *Entry) { x.Menu = []string{"Nested"} })
	add(e("Inner two", "/casper/vmlinuz", nil, "continued=yes", 31, KindLinux), func(x *Entry) {
		x.Menu, x.Name, x.Default = []string{"Nested"}, "inner2", true
	})
	// A menuentry's body sees its own arguments as $1, not the function's.
	add(e("From function a", "/casper/vmlinuz", nil, "fn=", 7, KindLinux), func(x *Entry) { x.Name = "fn-a" })
	add(e("From function b", "/casper/vmlinuz", nil, "fn=", 7, KindLinux), func(x *Entry) { x.Name = "fn-b" })
	add(e("Glob ${k}", "${k}", nil, "", 40, KindLinux), func(x *Entry) { x.Condition = "for k in /casper/vmlinuz-* (" + src(39) + ")" })
	add(e("Sourced quiet splash", "/casper/vmlinuz", nil, "", 1, KindLinux), func(x *Entry) { x.Source = "/boot/grub/extra.cfg:1" })
	add(e("Elsewhere", "(hd0,1)/vmlinuz", nil, "root=/dev/sda1", 44, KindLinux), nil)
	add(e("UUID", "(${root})/vmlinuz", nil, "", 45, KindLinux), nil)
	add(e("Found", "/casper/vmlinuz", nil, "", 46, KindLinux), nil)
	add(e("Chain", "/EFI/boot/bootx64.efi", nil, "", 47, KindChain), nil)
	add(e("Chained config", "", nil, "", 48, KindConfig), func(x *Entry) { x.Config = "/boot/grub/other.cfg" })
	add(e("Multiboot", "/boot/xen.gz", nil, "dom0_mem=1G", 49, KindMultiboot), nil)
	add(e("Conditional kernel", "/casper/vmlinuz", nil, "plain", 50, KindLinux), nil)
	add(e("Loop", "/casper/vmlinuz", nil, "", 54, KindLinux), func(x *Entry) { x.Condition = "while true (" + src(54) + ")" })
	if len(r.Entries) != len(want) {
		t.Errorf("%d entries, want %d", len(r.Entries), len(want))
	}
	for i := range want {
		if i >= len(r.Entries) || !reflect.DeepEqual(r.Entries[i], want[i]) {
			var got any
			if i < len(r.Entries) {
				got = r.Entries[i]
			}
			t.Errorf("entry %d:\n got %#v\nwant %#v", i, got, want[i])
		}
	}
	for _, w := range []struct{ src, text string }{
		{src(24), "${arch} (set at " + src(13) + " only " + ifCond + ")"},
		{src(40), "${k} (the loop variable of for k in /casper/vmlinuz-*"},
		{src(45), "${root} (set by search 1234-ABCD at " + src(45)},
		{src(51), `"linuxefi /casper/vmlinuz" runs only if [ "$grub_platform" = efi ]`},
	} {
		if !hasWarning(r, w.src, w.text) {
			t.Errorf("no warning %s: %s", w.src, w.text)
		}
	}
	c := r.Configs[0]
	if c.Default != "1" || c.Timeout == nil || *c.Timeout != Forever {
		t.Errorf("config of the menu shown first (other.cfg, default 1, no timeout): %+v", c)
	}
	want3 := []string{"/boot/grub/grub.cfg", "/boot/grub/extra.cfg", "/boot/grub/other.cfg"}
	if !reflect.DeepEqual(c.Files, want3) {
		t.Errorf("files %v", c.Files)
	}
}

func TestGrubDefaults(t *testing.T) {
	entries := "menuentry A --id a { linux /a; }\nsubmenu S { menuentry B { linux /b; }\nmenuentry C { linux /c; } }\nmenuentry D { linux /d; }\n"
	for _, c := range []struct {
		set, want, warning string
		timeout            time.Duration
	}{
		{"", "A", "", Forever},
		{"set default=2\nset timeout=0\n", "D", "", 0},
		{"set default=a\nset timeout=-1\n", "A", "", Forever},
		{"set default='1>1'\nset timeout=3\n", "C", "", 3 * time.Second},
		{"set default='S>B'\n", "B", "", Forever},
		{"set default=1\n", "", "is a submenu", Forever},
		{"set default=9\n", "", "names no entry", Forever},
		{"load_env\nset default=\"${saved_entry}\"\n", "", "only known at boot", Forever},
	} {
		t.Run(c.set, func(t *testing.T) {
			r := mustParse(t, mapFS(map[string]string{"/grub.cfg": c.set + entries}), "/grub.cfg", Grub)
			got := ""
			for _, e := range r.Entries {
				if e.Default {
					got += e.Label
				}
			}
			if got != c.want || (c.warning != "" && !hasWarning(r, "", c.warning)) {
				t.Errorf("default %q, want %q; warnings %v", got, c.want, r.Warnings)
			}
			if tm := r.Configs[0].Timeout; tm == nil || *tm != c.timeout {
				t.Errorf("timeout %v, want %v", tm, c.timeout)
			}
		})
	}
}

func TestGrubLexing(t *testing.T) {
	cfg := `set a='single $quoted'   # a comment
set b="double \"q\" \$x \\ $a"
set c=x\ y
set empty=
menuentry "$a" "$b" "$c" arg2 {
	echo unused
	linux /k one=$1 two="$2" all="$@" count=$# empty=$empty split=$sp
}
sp="x  y"
menuentry "" {
	linux /k $sp "$sp"
}
`
	r := mustParse(t, mapFS(map[string]string{"/grub.cfg": cfg, "/k": ""}), "/grub.cfg", Grub)
	if len(r.Entries) != 2 {
		t.Fatalf("entries: %v", r.Entries)
	}
	e := r.Entries[0]
	if e.Label != "single $quoted" {
		t.Errorf("label %q", e.Label)
	}
	// Arguments after the title are the body's $1, $2, …; the body sees
	// variables as the script left them (sp is set after the entry).
	if want := `one=double "q" $x \ single $quoted two=x y all=double "q" $x \ single $quoted x y arg2 count=3 empty= split=x y`; e.Append != want {
		t.Errorf("append\n got %q\nwant %q", e.Append, want)
	}
	if e2 := r.Entries[1]; e2.Label != "" || e2.Append != "x y x  y" {
		t.Errorf("second: %+v", e2)
	}
}

func TestGrubEFIStub(t *testing.T) {
	files := map[string]string{
		"/EFI/debian/grub.cfg":           "search --file --set=root /.disk/id/abc\nset prefix=($root)/boot/grub\nsource $prefix/x86_64-efi/grub.cfg\n",
		"/.disk/id/abc":                  "",
		"/boot/grub/x86_64-efi/grub.cfg": "insmod part_acorn\nconfigfile $prefix/grub.cfg\n",
		"/boot/grub/grub.cfg":            "menuentry Install { linux /install.amd/vmlinuz; initrd /install.amd/initrd.gz; }\n",
		"/install.amd/vmlinuz":           "",
		"/install.amd/initrd.gz":         "",
	}
	r := mustParse(t, mapFS(files), "EFI/debian/grub.cfg", Grub)
	if len(r.Entries) != 1 || r.Entries[0].Kernel != "/install.amd/vmlinuz" || !r.Entries[0].Default || len(r.Warnings) != 0 {
		t.Fatalf("entries %v warnings %v", r.Entries, r.Warnings)
	}
	if got := strings.Join(r.Configs[0].Files, " "); got != "/EFI/debian/grub.cfg /boot/grub/x86_64-efi/grub.cfg /boot/grub/grub.cfg" {
		t.Errorf("files %s", got)
	}
	files["/EFI/debian/grub.cfg"] = "search --label --set=root DEBIAN\nset prefix=($root)/boot/grub\nsource $prefix/x86_64-efi/grub.cfg\n"
	r = mustParse(t, mapFS(files), "EFI/debian/grub.cfg", Grub)
	if len(r.Entries) != 0 || !hasWarning(r, "/EFI/debian/grub.cfg:3", "(${root})/boot/grub/x86_64-efi/grub.cfg is not on this medium") {
		t.Fatalf("a label search is decided at boot: %v %v", r.Entries, r.Warnings)
	}
}

func TestGrubWarnings(t *testing.T) {
	cfg := "source /missing.cfg\nconfigfile /gone.cfg\nextract_entries_source /x.cfg\nmenuentry X { menuentry Y { true; }; linux; }\nmenuentry { true; }\n"
	r := mustParse(t, mapFS(map[string]string{"/grub.cfg": cfg}), "/grub.cfg", Grub)
	for _, w := range []struct{ src, text string }{
		{"/grub.cfg:1", "sourced file /missing.cfg does not exist"},
		{"/grub.cfg:2", "config file /gone.cfg does not exist"},
		{"/grub.cfg:3", "extract_entries_source is not evaluated"},
		{"/grub.cfg:4", "menuentry inside the body of entry \"X\""},
		{"/grub.cfg:4", "linux without a file"},
		{"/grub.cfg:5", "menuentry without a title"},
	} {
		if !hasWarning(r, w.src, w.text) {
			t.Errorf("no warning %s: %s in %v", w.src, w.text, r.Warnings)
		}
	}
}
