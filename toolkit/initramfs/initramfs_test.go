package initramfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmscript/vmscript/toolkit/iso"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// tm is a member for the test's newc writer.
type tm struct {
	name  string
	mode  uint32
	data  string
	ino   uint32
	nlink uint32
}

// newc writes a cpio archive the way the kernel reads it (crc: the
// "070702" variant with data sums). Alignment counts from the start of
// the returned bytes.
func newc(crc bool, ms ...tm) []byte {
	var b bytes.Buffer
	pad := func() {
		for b.Len()%4 != 0 {
			b.WriteByte(0)
		}
	}
	write := func(m tm) {
		magic, sum := "070701", uint32(0)
		if crc {
			magic = "070702"
			for _, c := range []byte(m.data) {
				sum += uint32(c)
			}
		}
		if m.nlink == 0 {
			m.nlink = 1
		}
		fmt.Fprintf(&b, "%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x", magic, m.ino, m.mode, 0, 0, m.nlink,
			1700000000, len(m.data), 0, 0, 0, 0, len(m.name)+1, sum)
		b.WriteString(m.name + "\x00")
		pad()
		b.WriteString(m.data)
		pad()
	}
	for i, m := range ms {
		if m.ino == 0 {
			m.ino = uint32(100 + i)
		}
		write(m)
	}
	write(tm{name: "TRAILER!!!"})
	return b.Bytes()
}

const (
	dir  = 0o040755
	reg  = 0o100644
	exe  = 0o100755
	link = 0o120777
)

func tree() []tm {
	return []tm{
		{name: ".", mode: dir},
		{name: "bin", mode: dir},
		{name: "bin/busybox", mode: exe, data: "BUSYBOX"},
		{name: "bin/sh", mode: link, data: "busybox"},
		{name: "init", mode: exe, data: "#!/bin/sh\necho init\n"},
		{name: "etc", mode: dir},
		{name: "etc/motd", mode: reg, data: "hello"},
		{name: "lib/modules/6.1/virtio.ko", mode: reg, data: "module"}, // lib/ and lib/modules/ are implied
		{name: "sbin", mode: link, data: "/bin"},
		{name: "dangling", mode: link, data: "nowhere"},
	}
}

func open(t *testing.T, data []byte) *Archive {
	t.Helper()
	a, err := Open(context.Background(), bytes.NewReader(data), int64(len(data)), "test.img", nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func read(t *testing.T, a *Archive, p string) string {
	t.Helper()
	d, tr, err := a.Read(p, 0)
	if err != nil || tr {
		t.Fatalf("read %s: %v %v", p, tr, err)
	}
	return string(d)
}

func wantKind(t *testing.T, err error, kind, mention string) {
	t.Helper()
	if vmerr.KindOf(err) != kind || !strings.Contains(fmt.Sprint(err), mention) {
		t.Fatalf("want %s error mentioning %q, got %v (kind %q)", kind, mention, err, vmerr.KindOf(err))
	}
}

func checkTree(t *testing.T, a *Archive) {
	t.Helper()
	if got := read(t, a, "/init"); got != "#!/bin/sh\necho init\n" {
		t.Errorf("/init: %q", got)
	}
	if got := read(t, a, "sbin/sh"); got != "BUSYBOX" {
		t.Errorf("through two links: %q", got)
	}
	d, tr, err := a.Read("/etc/motd", 3)
	if err != nil || !tr || string(d) != "hel" {
		t.Errorf("max: %q %v %v", d, tr, err)
	}
	e, err := a.Stat("/bin/sh")
	if err != nil || !e.IsLink() || e.Target != "busybox" || e.ModeString() != "lrwxrwxrwx" {
		t.Errorf("stat link: %+v %v", e, err)
	}
	if e, _ := a.Stat("/lib/modules"); !e.IsDir() || e.ModeString() != "drwxr-xr-x" {
		t.Errorf("implied dir: %+v", e)
	}
	if e, _ := a.Resolve("/sbin"); e.Path != "/bin" || !e.IsDir() {
		t.Errorf("resolve: %+v", e)
	}
	if ok, _ := a.Exists("dangling"); !ok {
		t.Error("dangling link does not exist")
	}
	_, _, err = a.Read("/dangling", 0)
	wantKind(t, err, vmerr.NotFound, "/dangling")
	_, _, err = a.Read("/bin", 0)
	wantKind(t, err, vmerr.Usage, "not a regular file")
	_, err = a.List("/init")
	wantKind(t, err, vmerr.Usage, "not a directory")
	_, err = a.Stat("/nope")
	wantKind(t, err, vmerr.NotFound, "/nope does not exist")
	want := "/bin /bin/busybox /bin/sh /dangling /etc /etc/motd /init /lib /lib/modules /lib/modules/6.1 /lib/modules/6.1/virtio.ko /sbin"
	var walked []string
	if err := a.Walk(func(e iso.Entry) error {
		if strings.Contains(want+" ", e.Path+" ") {
			walked = append(walked, e.Path)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(walked, " "); got != want {
		t.Errorf("walk:\n%s\nwant\n%s", got, want)
	}
	list, _ := a.List("/")
	for _, e := range list {
		t.Log(e)
	}
}

func TestNewcAndCrc(t *testing.T) {
	for _, crc := range []bool{false, true} {
		a := open(t, newc(crc, tree()...))
		checkTree(t, a)
		if s := a.Segments(); len(s) != 1 || s[0].Format != FormatCpio || s[0].Members != 10 {
			t.Errorf("segments %+v", s)
		}
	}
	bad := newc(true, tm{name: "x", mode: reg, data: "abc"})
	copy(bad[102:110], "00000001")
	_, err := Open(context.Background(), bytes.NewReader(bad), int64(len(bad)), "bad.img", nil)
	wantKind(t, err, vmerr.IO, "/x: the data sums to 00000126, the crc header says 00000001")
}

// rawZstd wraps data in a zstd frame of raw blocks (no compression), with
// the given window exponent: a valid frame any decoder reads.
func rawZstd(data []byte, windowLog byte) []byte {
	out := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (windowLog - 10) << 3}
	for len(data) > 0 || len(out) == 6 {
		n := min(len(data), 100000)
		h := uint32(n) << 3
		if n == len(data) {
			h |= 1
		}
		out = append(out, byte(h), byte(h>>8), byte(h>>16))
		out = append(out, data[:n]...)
		data = data[n:]
	}
	return out
}

func TestSegments(t *testing.T) {
	micro := newc(false, tm{name: "kernel", mode: dir}, tm{name: "kernel/x86", mode: dir},
		tm{name: "kernel/x86/microcode", mode: dir}, tm{name: "kernel/x86/microcode/GenuineIntel.bin", mode: reg, data: "UCODE"})
	// GNU cpio pads archives to 512 bytes; the kernel skips the zeros.
	micro = append(micro, make([]byte, 512-len(micro)%512)...)
	main := rawZstd(newc(false, tree()...), 20)
	img := append(append(append([]byte(nil), micro...), main...), make([]byte, 7)...)
	a := open(t, img)
	checkTree(t, a)
	if got := read(t, a, "/kernel/x86/microcode/GenuineIntel.bin"); got != "UCODE" {
		t.Errorf("microcode: %q", got)
	}
	segs := a.Segments()
	if len(segs) != 2 || segs[0].Format != FormatCpio || segs[0].Offset != 0 || segs[1].Format != FormatZstd ||
		segs[1].Offset != int64(len(micro)) || segs[1].Length != int64(len(main)) || a.Compression() != "cpio+zstd" {
		t.Errorf("segments %+v", segs)
	}
	members := a.Members()
	if members[0].Path != "/kernel" || members[len(members)-1].Path != "/dangling" {
		t.Errorf("members in archive order: first %s last %s", members[0].Path, members[len(members)-1].Path)
	}
	// Reading in archive order moves one decompressor forward.
	for _, m := range members {
		if m.IsRegular() {
			read(t, a, m.Path)
		}
	}
}

func TestReplacedAndHardLinks(t *testing.T) {
	a := open(t, newc(false,
		tm{name: "etc", mode: dir},
		tm{name: "etc/issue", mode: reg, data: "old"},
		tm{name: "a", mode: reg, ino: 7, nlink: 2},
		tm{name: "b", mode: reg, ino: 7, nlink: 2, data: "shared"},
		tm{name: "etc/issue", mode: reg, data: "new"},
	))
	if got := read(t, a, "/etc/issue"); got != "new" {
		t.Errorf("a later member replaces an earlier one: %q", got)
	}
	if got := read(t, a, "/a"); got != "shared" {
		t.Errorf("hard link: %q", got)
	}
	if e, _ := a.Stat("/a"); e.Size != 6 {
		t.Errorf("hard link size %d", e.Size)
	}
}

func TestOpenStreams(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16)
	a := open(t, rawZstd(newc(false, tm{name: "x", mode: reg, data: "x"}, tm{name: "big", mode: reg, data: big}), 22))
	rc, err := a.Open("/big")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(rc); err != nil || b.String() != big {
		t.Fatalf("Open: %d bytes, %v", b.Len(), err)
	}
	rc.Close()
	// The shared cursor goes backwards by starting over.
	if read(t, a, "/big") != big || read(t, a, "/x") != "x" || read(t, a, "/big") != big {
		t.Fatal("reads out of order")
	}
}

func TestHostile(t *testing.T) {
	good := newc(false, tree()...)
	cases := []struct {
		name, kind, mention string
		data                []byte
		lim                 *Limits
	}{
		{"empty", vmerr.Usage, "empty or all zero", make([]byte, 1000), nil},
		{"garbage", vmerr.IO, "unknown data at byte 0", []byte("this is not an initramfs at all"), nil},
		{"lzo", vmerr.Usage, "lzo, which is not supported", []byte{0x89, 'L', 'Z', 'O', 0, 1, 2}, nil},
		{"odc", vmerr.Usage, "odc cpio", []byte("070707000000"), nil},
		{"truncated cpio", vmerr.IO, "truncated in the data of /bin/busybox", good[:bytes.Index(good, []byte("BUSYBOX"))+3], nil},
		{"no trailer", vmerr.IO, "truncated in a cpio header", good[:len(good)-120], nil},
		{"bad hex", vmerr.IO, "not hexadecimal", append([]byte("070701zzzzzzzz"), make([]byte, 100)...), nil},
		{"huge name", vmerr.IO, "name size 1048576", []byte("070701" + strings.Repeat("00000000", 11) + "00100000" + "00000000"), nil},
		{"garbage after", vmerr.IO, fmt.Sprintf("unknown data at byte %d", len(good)), append(append([]byte(nil), good...), "junk"...), nil},
		{"members", vmerr.IO, "more than 3 members", good, &Limits{MaxMembers: 3}},
		{"bomb", vmerr.IO, "more than 100 uncompressed bytes", good, &Limits{MaxUncompressed: 100}},
		{"zstd window", vmerr.IO, "window", rawZstd(good, 30), nil},
		{"zstd truncated", vmerr.IO, "truncated", rawZstd(good, 20)[:200], nil},
		{"unaligned", vmerr.IO, "not 4-byte aligned", append([]byte{1, 0}, good...)[1:], nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(context.Background(), bytes.NewReader(c.data), int64(len(c.data)), "hostile.img", c.lim)
			wantKind(t, err, c.kind, c.mention)
			if !strings.Contains(err.Error(), "hostile.img") {
				t.Errorf("error does not name the archive: %v", err)
			}
			t.Log(err)
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Open(ctx, bytes.NewReader(good), int64(len(good)), "x", nil)
	wantKind(t, err, vmerr.Cancelled, "reading stopped")
}

// tool runs a command with stdin, skipping the test when it is missing.
func tool(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("VMSCRIPT_REQUIRE_QEMU") != "" {
			t.Fatalf("%s is required", name)
		}
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, errb.String())
	}
	return out.Bytes()
}

// compressors as Linux's scripts/gen_initramfs and mkinitramfs call them.
var compressors = []struct {
	format string
	cmd    []string
}{
	{FormatGzip, []string{"gzip", "-9n"}},
	{FormatXz, []string{"xz", "--check=crc32", "--lzma2=dict=1MiB"}},
	{FormatZstd, []string{"zstd", "-q", "-19"}},
	{FormatLzma, []string{"lzma", "-9"}},
	{FormatLz4, []string{"lz4", "-l", "-9", "-q"}},
	{FormatBzip2, []string{"bzip2", "-9"}},
}

// cpioTree builds an archive with GNU cpio (newc or crc) from a real
// directory, with a hard link.
func cpioTree(t *testing.T, format string) []byte {
	dirp := t.TempDir()
	for p, data := range map[string]string{"init": "#!/bin/sh\necho init\n", "bin/busybox": "BUSYBOX", "etc/motd": "hello",
		"lib/modules/6.1/virtio.ko": "module"} {
		os.MkdirAll(filepath.Join(dirp, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(dirp, p), []byte(data), 0o755)
	}
	os.Symlink("busybox", filepath.Join(dirp, "bin/sh"))
	os.Symlink("/bin", filepath.Join(dirp, "sbin"))
	os.Symlink("nowhere", filepath.Join(dirp, "dangling"))
	os.Link(filepath.Join(dirp, "bin/busybox"), filepath.Join(dirp, "bin/ash"))
	list := "."
	filepath.Walk(dirp, func(p string, _ os.FileInfo, _ error) error {
		if rel, _ := filepath.Rel(dirp, p); rel != "." {
			list += "\n" + rel
		}
		return nil
	})
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	cmd := exec.Command("cpio", "--quiet", "-o", "-H", format)
	cmd.Dir, cmd.Stdin = dirp, strings.NewReader(list+"\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRealTools(t *testing.T) {
	for _, format := range []string{"newc", "crc"} {
		plain := cpioTree(t, format)
		a := open(t, plain)
		checkTree(t, a)
		if read(t, a, "/bin/ash") != "BUSYBOX" {
			t.Errorf("%s: hard link", format)
		}
		for _, c := range compressors {
			t.Run(format+"/"+c.format, func(t *testing.T) {
				packed := tool(t, plain, c.cmd[0], c.cmd[1:]...)
				// A microcode-style uncompressed archive in front, and a
				// second compressed segment of the same kind behind.
				micro := newc(false, tm{name: "kernel/x86/microcode/AuthenticAMD.bin", mode: reg, data: "AMD"})
				// The kernel wants every uncompressed archive 4-byte aligned
				// in the file.
				pad := make([]byte, 8-(len(micro)+len(packed))%4)
				img := append(append(append(append([]byte(nil), micro...), packed...), pad...), newc(false, tm{name: "late", mode: reg, data: "L"})...)
				a := open(t, img)
				checkTree(t, a)
				if read(t, a, "/kernel/x86/microcode/AuthenticAMD.bin") != "AMD" || read(t, a, "/late") != "L" || read(t, a, "/bin/ash") != "BUSYBOX" {
					t.Error("segments around the compressed one")
				}
				segs := a.Segments()
				if len(segs) != 3 || segs[1].Format != c.format || segs[1].Length != int64(len(packed)) {
					t.Errorf("segments %+v (compressed length %d)", segs, len(packed))
				}
			})
		}
	}
}

func TestInsideISO(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed")
	}
	dirp := t.TempDir()
	micro := newc(false, tm{name: "kernel/x86/microcode/GenuineIntel.bin", mode: reg, data: "UCODE"})
	img := append(micro, tool(t, newc(false, tree()...), "gzip", "-n")...)
	os.MkdirAll(filepath.Join(dirp, "install.amd"), 0o755)
	os.WriteFile(filepath.Join(dirp, "install.amd/initrd.gz"), img, 0o644)
	out := filepath.Join(t.TempDir(), "x.iso")
	if b, err := exec.Command("xorriso", "-as", "mkisofs", "-quiet", "-R", "-o", out, dirp).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, b)
	}
	im, err := iso.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	f, err := im.Open("/install.amd/initrd.gz")
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(context.Background(), f, f.Size(), im.Name()+":/install.amd/initrd.gz", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, a)
	if a.Compression() != "cpio+gzip" || !strings.Contains(a.String(), "x.iso:/install.amd/initrd.gz") {
		t.Errorf("%s", a)
	}
}

func TestXzDictionaryLimit(t *testing.T) {
	packed := tool(t, newc(false, tree()...), "xz", "--check=crc32", "--lzma2=dict=1MiB")
	// The first block header follows the 12-byte stream header: size,
	// flags, then the LZMA2 filter (id 0x21, one property byte: the
	// dictionary size code). Ask for 1.5 GiB.
	h := packed[12:]
	i := bytes.Index(h[:16], []byte{0x21, 0x01})
	if i < 0 {
		t.Fatalf("no LZMA2 filter in % x", h[:16])
	}
	h[i+2] = 37
	_, err := Open(context.Background(), bytes.NewReader(packed), int64(len(packed)), "x", nil)
	wantKind(t, err, vmerr.IO, "needs a 1536 MiB dictionary, more than the 128 MiB allowed")
	_ = binary.LittleEndian
	_ = reflect.DeepEqual
}
