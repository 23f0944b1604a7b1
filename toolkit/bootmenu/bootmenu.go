// Package bootmenu reads the boot menus of boot media as data: the entries
// of isolinux, syslinux and pxelinux configs and of GRUB configs, each with
// its kernel, initrds and command line, where it was defined (file:line)
// and whether the loader boots it by default. It evaluates what can be
// evaluated statically (includes, submenus, variables, functions, loops
// over literal lists) and reports the rest with file:line instead of
// guessing.
//
// Files are read through an io/fs.FS: an opened ISO (iso.Image.FS), a
// directory such as the Debian installer's netboot tree (os.Root.FS or
// os.DirFS), or an fstest.MapFS in tests. Paths in results are absolute
// inside that file system ("/install.amd/vmlinuz").
//
// # Errors and warnings
//
// A result the loader itself could not produce is an error (*vmerr.Error):
// kind "notfound" when the config to parse does not exist, kind "io" for a
// config that is binary, too large, has an over-long line, an include
// loop, nesting deeper than Limits.Depth, more entries, files, evaluation
// steps or variable bytes than Limits allows, or (GRUB) a syntax error. Its
// context has "source" (file:line) when one line is to blame.
//
// What can only be decided at boot, or what the loader would skip, is a
// Warning next to the entries, with its source: an included file that is
// missing (syslinux skips it silently; GRUB prints an error and goes on),
// an `if`, `while` or `for` whose outcome is not static (its entries are
// listed with their Condition), a variable whose value is only known at
// boot (its reference is kept verbatim, "${grub_platform}"), a kernel or
// initrd missing from the medium, pxelinux's IPAPPEND, a default that names
// nothing.
package bootmenu

import (
	"fmt"
	"strings"
	"time"
)

// Loaders.
const (
	Isolinux = "isolinux"
	Syslinux = "syslinux"
	Pxelinux = "pxelinux"
	Grub     = "grub"
)

// Kinds of entries (Entry.Kind).
const (
	// KindLinux boots Kernel with Initrd and Append.
	KindLinux = "linux"
	// KindConfig loads another config (Entry.Config) when chosen; it is not
	// followed.
	KindConfig = "config"
	// KindCom32 runs a syslinux module (Kernel is the .c32 file).
	KindCom32 = "com32"
	// KindChain chainloads a boot sector or EFI program (GRUB chainloader;
	// syslinux boot, bss, pxe, fdimage and comboot images).
	KindChain = "chain"
	// KindLocal boots the next local disk (syslinux LOCALBOOT).
	KindLocal = "localboot"
	// KindMultiboot boots Kernel with GRUB's multiboot or multiboot2.
	KindMultiboot = "multiboot"
	// KindBSD boots a BSD kernel (GRUB kfreebsd, knetbsd, kopenbsd).
	KindBSD = "bsd"
	// KindOther boots nothing the parser recognises (a GRUB entry that
	// only sets colours, reboots, or runs fwsetup).
	KindOther = "other"
)

// Entry is one boot menu entry. Its Lua form is the table
// {label, kernel, initrd, append, loader, source, ...} with the json names.
type Entry struct {
	// Label is the text the menu shows, hotkey markers ("^") removed.
	Label string `json:"label"`
	// Kernel is the kernel (or module, or chainloaded file) as an absolute
	// path on the medium ("/install.amd/vmlinuz"). A file elsewhere keeps
	// GRUB's device prefix ("(hd0,msdos1)/vmlinuz", "(loop)/casper/vmlinuz")
	// or its URL; "" when the entry boots no file.
	Kernel string `json:"kernel"`
	// Initrd lists the initrds in load order, as absolute paths like Kernel.
	Initrd []string `json:"initrd"`
	// Append is the kernel command line the loader passes. For syslinux it
	// includes initrd= (the loader passes it on); IPAPPEND additions made at
	// boot are not in it (a Warning says so).
	Append string `json:"append"`
	// Loader is Isolinux, Syslinux, Pxelinux or Grub.
	Loader string `json:"loader"`
	// Source is where the entry is defined: "/isolinux/txt.cfg:3" (the
	// LABEL or menuentry line).
	Source string `json:"source"`
	// Kind is what the entry does: KindLinux, KindConfig, ….
	Kind string `json:"kind"`
	// Name is the syslinux LABEL or GRUB --id ("" when none).
	Name string `json:"name,omitempty"`
	// Hotkey is the menu's hotkey for the entry (lowercase), "" when none.
	Hotkey string `json:"hotkey,omitempty"`
	// Menu lists the labels of the submenus the entry is in, outermost
	// first (empty for the top menu).
	Menu []string `json:"menu,omitempty"`
	// Default is true for the entry the loader boots without a key press
	// (on timeout or Enter): at most one per config, or per menu GRUB
	// shows at once (a configfile'd menu has its own default).
	Default bool `json:"default,omitempty"`
	// Hidden is true for a syslinux MENU HIDE entry (bootable by typing its
	// label, not shown).
	Hidden bool `json:"hidden,omitempty"`
	// Config is the config a KindConfig entry loads, absolute on the medium.
	Config string `json:"config,omitempty"`
	// Help is the syslinux TEXT HELP of the entry.
	Help string `json:"help,omitempty"`
	// Condition is set when the entry is defined inside a GRUB if, while or
	// for that is decided at boot: the conditions with their sources,
	// innermost last ("if [ \"$grub_platform\" = efi ] (/boot/grub/grub.cfg:30)").
	Condition string `json:"condition,omitempty"`
}

// String is a one-line summary: `grub "Install" /linux (/boot/grub/grub.cfg:12)`.
func (e Entry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", e.Loader, strings.Join(append(append([]string(nil), e.Menu...), e.Label), " > "))
	if e.Default {
		b.WriteString(" [default]")
	}
	if e.Kernel != "" {
		b.WriteString(" " + e.Kernel)
	} else {
		b.WriteString(" (" + e.Kind + ")")
	}
	if len(e.Initrd) > 0 {
		b.WriteString(" initrd=" + strings.Join(e.Initrd, ","))
	}
	if e.Append != "" {
		b.WriteString(" append=" + fmt.Sprintf("%q", e.Append))
	}
	if e.Config != "" {
		b.WriteString(" config=" + e.Config)
	}
	b.WriteString(" (" + e.Source + ")")
	return b.String()
}

// Record is the entry as vmscript reports it (see package record): its
// fields and its one-line summary as "line".
func (e Entry) Record() any {
	type fields Entry
	return struct {
		fields
		Line string `json:"line"`
	}{fields(e), e.String()}
}

// Warning is something the parser could not decide statically or that the
// loader would skip.
type Warning struct {
	// Source is file:line ("/boot/grub/grub.cfg:12"), or the file alone.
	Source string `json:"source"`
	// Message says what and why.
	Message string `json:"message"`
}

// String is "source: message".
func (w Warning) String() string { return w.Source + ": " + w.Message }

// Record is the warning's fields and its line ("source: message").
func (w Warning) Record() any {
	type fields Warning
	return struct {
		fields
		Line string `json:"line"`
	}{fields(w), w.String()}
}

// Forever is the Config.Timeout of a menu that waits for a key press (a
// record shows it as -1 seconds).
const Forever = -time.Second

// Config describes one top-level config file that was parsed.
type Config struct {
	// Path is the config's absolute path on the medium.
	Path string `json:"path"`
	// Loader is the loader that reads it.
	Loader string `json:"loader"`
	// Files lists every config file read for it (includes, sourced and
	// chained files), in the order first read.
	Files []string `json:"files"`
	// Default is the raw default setting: syslinux DEFAULT, GRUB's
	// "default" variable ("" when unset).
	Default string `json:"default,omitempty"`
	// UI is the syslinux menu module (UI, or a DEFAULT naming a .c32).
	UI string `json:"ui,omitempty"`
	// Timeout is how long the menu waits before booting the default entry:
	// Forever when it waits for a key press, nil when it is only known at
	// boot.
	Timeout *time.Duration `json:"timeout,omitempty"`
}

// Result is what parsing produced.
type Result struct {
	// Entries are the boot entries in menu order, configs in the order
	// parsed; navigation items (syslinux MENU EXIT/GOTO, separators) and
	// submenus themselves are not entries.
	Entries []Entry `json:"entries"`
	// Warnings are the constructs that could not be evaluated statically.
	Warnings []Warning `json:"warnings"`
	// Configs are the top-level configs parsed.
	Configs []Config `json:"configs"`
}

// Limits bound the work and memory a hostile config can cause. A zero
// field takes the DefaultLimits value.
type Limits struct {
	// FileSize is the largest config file read, in bytes.
	FileSize int64
	// TotalSize bounds the bytes of all config files read by one parse.
	TotalSize int64
	// Files bounds how many config files one parse reads (each include
	// counts, also of a file read before).
	Files int
	// Depth bounds include, source and block nesting.
	Depth int
	// Entries bounds the entries of one parse.
	Entries int
	// Line is the longest line accepted, in bytes.
	Line int
	// Steps bounds the GRUB commands evaluated (loops and functions).
	Steps int
	// Value is the longest GRUB variable value, in bytes.
	Value int
}

// DefaultLimits are generous for real media: Debian's netboot menus read
// 20 files and define ~40 entries.
var DefaultLimits = Limits{
	FileSize:  1 << 20,
	TotalSize: 16 << 20,
	Files:     512,
	Depth:     32,
	Entries:   4096,
	Line:      64 << 10,
	Steps:     200000,
	Value:     64 << 10,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.FileSize > 0 {
		d.FileSize = l.FileSize
	}
	if l.TotalSize > 0 {
		d.TotalSize = l.TotalSize
	}
	if l.Files > 0 {
		d.Files = l.Files
	}
	if l.Depth > 0 {
		d.Depth = l.Depth
	}
	if l.Entries > 0 {
		d.Entries = l.Entries
	}
	if l.Line > 0 {
		d.Line = l.Line
	}
	if l.Steps > 0 {
		d.Steps = l.Steps
	}
	if l.Value > 0 {
		d.Value = l.Value
	}
	return d
}

// Options say how to parse one config.
type Options struct {
	// Loader is Isolinux, Syslinux, Pxelinux or Grub.
	Loader string
	// Dir is the working directory relative paths resolve against. For
	// syslinux it defaults to the config's directory (isolinux, syslinux)
	// or "/" (pxelinux: the TFTP prefix). For GRUB it is $prefix and
	// defaults to the config's directory.
	Dir string
	// Limits bound the parse; zero fields take DefaultLimits.
	Limits Limits
}
