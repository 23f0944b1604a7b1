// Package lab builds the lab guest images that vmscript's tests and demo
// scripts boot: small Linux guests assembled from Debian packages taken
// through the machine's own apt configuration (never a hard-coded mirror).
//
// Two images exist:
//
//   - "mini": the Debian kernel, its virtio modules, busybox-static and
//     dropbear in a gzip'ed newc initramfs. Prompt "mini# " on ttyS0.
//   - "systemd": a minbase Debian with systemd, networkd, openssh-server,
//     dbus, sudo and a user, as an initramfs, as two bootable ISOs (one with
//     the regression's knobs on, one clean) and as a netboot tree.
//
// Images live in a cache directory named after the image and a key that
// covers the builder version, the embedded guest-side files and the
// candidate versions of every Debian package used; building twice with the
// same inputs returns the cached image.
package lab

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// BuilderVersion is mixed into every cache key. Bump it when a change to the
// builder's Go code changes what it produces.
const BuilderVersion = "vmscript-lab/1"

//go:embed files
var embedded embed.FS

// Names lists the buildable images.
func Names() []string { return []string{"mini", "systemd"} }

// Options controls Build and Lookup.
type Options struct {
	// CacheDir holds the built images; empty means DefaultCacheDir().
	CacheDir string
	// Force rebuilds even when a cached image exists for the current inputs.
	Force bool
	// Progress, if not nil, is called at the start of each stage
	// ("resolve", "download", "extract", "initramfs", "iso", "netboot",
	// "manifest", ...) with a short detail.
	Progress func(stage, detail string)
	// Log, if not nil, receives the verbose output of the tools run (apt,
	// mmdebstrap, grub-mkrescue, ...).
	Log io.Writer
}

// DefaultCacheDir returns ${XDG_CACHE_HOME:-$HOME/.cache}/vmscript/lab
// (os.UserCacheDir), or a directory under the temporary directory when
// neither is set.
func DefaultCacheDir() string {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	return filepath.Join(base, "vmscript", "lab")
}

// Image is a built lab image.
type Image struct {
	// Name is the image name, one of Names().
	Name string
	// Dir is the absolute path of the image's cache directory.
	Dir string
	// Cached is true when Build found the image already built.
	Cached bool
	// Files maps logical names ("vmlinuz", "initramfs", "iso", "good-iso",
	// "netboot", "ssh-key", "ssh-key.pub") to absolute paths.
	Files map[string]string
	// Manifest is the content of Dir/manifest.json.
	Manifest Manifest
}

// Manifest describes a built image; it is written as manifest.json in the
// image directory.
type Manifest struct {
	// Name is the image name.
	Name string `json:"name"`
	// Key is the full hex cache key; the directory name carries its first 16
	// characters.
	Key string `json:"key"`
	// Built is when the build finished.
	Built time.Time `json:"built"`
	// Packages maps each Debian package used to its version.
	Packages map[string]string `json:"packages"`
	// Files maps each file's path relative to the image directory to its
	// hex SHA-256.
	Files map[string]string `json:"files"`
	// Kernel is the kernel release (uname -r) of the image's kernel.
	Kernel string `json:"kernel"`
	// Append is the default kernel command line for a direct kernel boot.
	Append string `json:"append"`
}

// StageError is the error returned by Build when a stage fails.
type StageError struct {
	// Image is the image being built.
	Image string
	// Stage is the failing stage ("resolve", "download", ...).
	Stage string
	// Err is the underlying error.
	Err error
}

// Error names the image, the stage and the cause.
func (e *StageError) Error() string {
	return fmt.Sprintf("lab: build %s: stage %s: %v", e.Image, e.Stage, e.Err)
}

// Unwrap returns the underlying error.
func (e *StageError) Unwrap() error { return e.Err }

// builder is one image's recipe.
type builder interface {
	// resolve returns the Debian packages (name -> candidate version) the
	// image is built from; it feeds the cache key.
	resolve(ctx context.Context, b *build) (map[string]string, error)
	// build writes the image into b.dir.
	build(ctx context.Context, b *build) error
	// outputs maps logical names to paths relative to the image directory.
	outputs() map[string]string
	// recipe describes the Go-side choices (package and module lists,
	// command lines) that shape the image; it is part of the cache key.
	recipe() string
}

func builderFor(name string) (builder, error) {
	switch name {
	case "mini":
		return miniBuilder{}, nil
	case "systemd":
		return systemdBuilder{}, nil
	}
	return nil, fmt.Errorf("lab: unknown image %q (known: %s)", name, strings.Join(Names(), ", "))
}

// build carries the state of one Build call.
type build struct {
	name     string
	opt      Options
	cache    string
	dir      string // the temporary image directory being filled
	work     string // scratch space inside dir, removed before the rename
	stage    string
	packages map[string]string // candidate versions (from resolve)
	man      Manifest
}

func (b *build) progress(stage, detail string) {
	b.stage = stage
	if b.opt.Progress != nil {
		b.opt.Progress(stage, detail)
	}
}

func (b *build) fail(err error) error {
	if err == nil {
		return nil
	}
	var se *StageError
	if errors.As(err, &se) {
		return err
	}
	return &StageError{Image: b.name, Stage: b.stage, Err: err}
}

func (b *build) log() io.Writer {
	if b.opt.Log == nil {
		return io.Discard
	}
	return b.opt.Log
}

func cacheDir(opt Options) (string, error) {
	d := opt.CacheDir
	if d == "" {
		d = DefaultCacheDir()
	}
	return filepath.Abs(d)
}

// imageKey computes the cache key of an image from the builder version, the
// recipe, the embedded files under files/<name> in fsys, and the package
// versions.
func imageKey(name, recipe string, fsys fs.FS, pkgs map[string]string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "builder %s\nimage %s\nrecipe %q\n", BuilderVersion, name, recipe)
	root := path.Join("files", name)
	var names []string
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	for _, p := range names {
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(h, "file %s %x\n", p, sum)
	}
	var pk []string
	for p := range pkgs {
		pk = append(pk, p)
	}
	sort.Strings(pk)
	for _, p := range pk {
		fmt.Fprintf(h, "pkg %s %s\n", p, pkgs[p])
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// resolveMemo remembers resolved package sets within the process while
// apt's state (lists, caches, sources, preferences) is unchanged: Lookup
// is called often by tests and costs a few apt-cache runs otherwise.
var resolveMemo struct {
	sync.Mutex
	m map[string]memoEntry
}

type memoEntry struct {
	stamp string
	pkgs  map[string]string
}

// aptStamp summarises the modification times of apt's inputs.
func aptStamp() string {
	var sb strings.Builder
	for _, p := range []string{"/var/lib/apt/lists", "/var/cache/apt/pkgcache.bin", "/var/cache/apt/srcpkgcache.bin",
		"/etc/apt/sources.list", "/etc/apt/sources.list.d", "/etc/apt/preferences", "/etc/apt/preferences.d",
		"/etc/apt/apt.conf.d", "/var/lib/dpkg/status", "/etc/os-release"} {
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&sb, "%s %d %d;", p, st.ModTime().UnixNano(), st.Size())
		}
	}
	return sb.String()
}

func resolveKey(ctx context.Context, b *build, bl builder) (string, error) {
	b.progress("resolve", "apt-cache policy/depends")
	stamp := aptStamp()
	resolveMemo.Lock()
	e, ok := resolveMemo.m[b.name]
	resolveMemo.Unlock()
	var pkgs map[string]string
	if ok && e.stamp == stamp {
		pkgs = e.pkgs
	} else if saved, ok := loadResolved(b.cache, b.name, stamp, bl.recipe()); ok {
		pkgs = saved
		resolveMemo.Lock()
		if resolveMemo.m == nil {
			resolveMemo.m = map[string]memoEntry{}
		}
		resolveMemo.m[b.name] = memoEntry{stamp: stamp, pkgs: pkgs}
		resolveMemo.Unlock()
	} else {
		var err error
		pkgs, err = bl.resolve(ctx, b)
		if err != nil {
			return "", b.fail(err)
		}
		saveResolved(b.cache, b.name, stamp, bl.recipe(), pkgs)
		resolveMemo.Lock()
		if resolveMemo.m == nil {
			resolveMemo.m = map[string]memoEntry{}
		}
		resolveMemo.m[b.name] = memoEntry{stamp: stamp, pkgs: pkgs}
		resolveMemo.Unlock()
	}
	b.packages = pkgs
	key, err := imageKey(b.name, bl.recipe(), embedded, pkgs)
	if err != nil {
		return "", b.fail(err)
	}
	return key, nil
}

// resolvedFile keeps the resolved package set between processes: every
// `vmscript run` that boots a lab image looks it up, and resolving costs
// 1.5–3 s of apt-cache — measured as most of vmscript's start-up overhead
// over bare QEMU. It is valid while apt's state (aptStamp) and the
// recipe are unchanged.
type resolvedFile struct {
	Stamp    string            `json:"apt_stamp"`
	Recipe   string            `json:"recipe"`
	Packages map[string]string `json:"packages"`
}

func resolvedPath(cache, name string) string {
	return filepath.Join(cache, "resolved-"+name+".json")
}

func loadResolved(cache, name, stamp, recipe string) (map[string]string, bool) {
	data, err := os.ReadFile(resolvedPath(cache, name))
	if err != nil {
		return nil, false
	}
	var r resolvedFile
	if json.Unmarshal(data, &r) != nil || r.Stamp != stamp || r.Recipe != recipe || len(r.Packages) == 0 {
		return nil, false
	}
	return r.Packages, true
}

func saveResolved(cache, name, stamp, recipe string, pkgs map[string]string) {
	data, err := json.Marshal(resolvedFile{Stamp: stamp, Recipe: recipe, Packages: pkgs})
	if err != nil || os.MkdirAll(cache, 0o755) != nil {
		return
	}
	tmp := fmt.Sprintf("%s.%d.tmp", resolvedPath(cache, name), os.Getpid())
	if os.WriteFile(tmp, data, 0o644) == nil {
		_ = os.Rename(tmp, resolvedPath(cache, name))
	}
}

func finalDir(cache, name, key string) string {
	return filepath.Join(cache, name+"-"+key[:16])
}

func loadImage(dir, name string, bl builder, cached bool) (*Image, error) {
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	img := &Image{Name: name, Dir: dir, Cached: cached, Files: map[string]string{}}
	if err := json.Unmarshal(data, &img.Manifest); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", filepath.Join(dir, "manifest.json"), err)
	}
	for k, rel := range bl.outputs() {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("lab: image %s is incomplete: %w", dir, err)
		}
		img.Files[k] = p
	}
	return img, nil
}

// currentDir is the cache directory of the image of name for the current
// inputs, built or not.
func currentDir(ctx context.Context, name string, bl builder, opt Options, cache string) (string, error) {
	key, err := resolveKey(ctx, &build{name: name, opt: Options{Log: opt.Log}, cache: cache}, bl)
	if err != nil {
		return "", err
	}
	return finalDir(cache, name, key), nil
}

// Lookup returns the image built for the current inputs, or an error saying
// to run `vmscript lab build NAME` when there is none. It does not build.
func Lookup(name string, opt Options) (*Image, error) {
	bl, err := builderFor(name)
	if err != nil {
		return nil, err
	}
	cache, err := cacheDir(opt)
	if err != nil {
		return nil, err
	}
	dir, err := currentDir(context.Background(), name, bl, opt, cache)
	if err != nil {
		return nil, err
	}
	img, err := loadImage(dir, name, bl, true)
	if err != nil {
		return nil, fmt.Errorf("lab: image %q is not built for the current inputs (%s: %v); run `vmscript lab build %s`", name, dir, err, name)
	}
	return img, nil
}

// Build builds the named image into the cache, or returns the cached image
// when one exists for the current inputs and opt.Force is false. A build is
// made in a temporary directory next to the final one and renamed into place,
// so an interrupted build leaves no partial image. Cancelling ctx kills the
// tools being run.
func Build(ctx context.Context, name string, opt Options) (*Image, error) {
	bl, err := builderFor(name)
	if err != nil {
		return nil, err
	}
	cache, err := cacheDir(opt)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	b := &build{name: name, opt: opt, cache: cache}
	key, err := resolveKey(ctx, b, bl)
	if err != nil {
		return nil, err
	}
	final := finalDir(cache, name, key)
	if !opt.Force {
		if img, err := loadImage(final, name, bl, true); err == nil {
			return img, nil
		}
	}

	unlock, err := lockImage(ctx, cache, name)
	if err != nil {
		return nil, b.fail(err)
	}
	defer unlock()
	// Someone else may have built it while we waited for the lock.
	if !opt.Force {
		if img, err := loadImage(final, name, bl, true); err == nil {
			return img, nil
		}
	}
	// Leftovers of interrupted builds of this image (we hold the lock).
	if old, _ := filepath.Glob(filepath.Join(cache, ".tmp-"+name+"-*")); len(old) > 0 {
		for _, o := range old {
			os.RemoveAll(o)
		}
	}

	tmp, err := os.MkdirTemp(cache, ".tmp-"+name+"-")
	if err != nil {
		return nil, b.fail(err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := b.run(ctx, bl, tmp, key); err != nil {
		return nil, b.fail(err)
	}
	if err := replaceDir(cache, name, key, tmp, final); err != nil {
		return nil, b.fail(err)
	}
	ok = true
	return loadImage(final, name, bl, false)
}

// run builds the image into tmp with bl and writes its manifest.
func (b *build) run(ctx context.Context, bl builder, tmp, key string) error {
	b.dir = tmp
	b.work = filepath.Join(tmp, ".work")
	if err := os.Mkdir(b.work, 0o755); err != nil {
		return err
	}
	b.man = Manifest{Name: b.name, Key: key, Packages: map[string]string{}}
	for p, v := range b.packages {
		b.man.Packages[p] = v
	}
	if err := bl.build(ctx, b); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.RemoveAll(b.work); err != nil {
		return err
	}
	return b.writeManifest()
}

// writeManifest hashes the built tree and writes manifest.json into it.
func (b *build) writeManifest() error {
	b.progress("manifest", "manifest.json")
	files, err := hashTree(b.dir)
	if err != nil {
		return err
	}
	b.man.Files = files
	b.man.Built = time.Now().UTC()
	data, err := json.MarshalIndent(&b.man, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.dir, "manifest.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Chmod(b.dir, 0o755)
}

// replaceDir moves an existing image at final (Force, or a broken one) out
// of the way, then renames the new one, tmp, into place.
func replaceDir(cache, name, key, tmp, final string) error {
	if _, err := os.Lstat(final); err == nil {
		trash := filepath.Join(cache, ".tmp-"+name+"-old-"+key[:8])
		os.RemoveAll(trash)
		if err := os.Rename(final, trash); err != nil {
			return err
		}
		defer os.RemoveAll(trash)
	}
	return os.Rename(tmp, final)
}

// lockImage takes an exclusive flock on cache/.lock-name, polling so that
// ctx can cancel the wait.
func lockImage(ctx context.Context, cache, name string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(cache, ".lock-"+name), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// hashTree returns relpath -> sha256 for every regular file under dir.
func hashTree(dir string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		sum, err := fileSHA256(p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = sum
		return nil
	})
	return out, err
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
