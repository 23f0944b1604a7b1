package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// aptCandidates returns the candidate version of each package, from
// `apt-cache policy`. A package without a candidate is an error naming it.
func aptCandidates(ctx context.Context, b *build, pkgs []string) (map[string]string, error) {
	out, err := tool{ctx: ctx, log: b.log()}.run("apt-cache", append([]string{"policy"}, pkgs...)...)
	if err != nil {
		return nil, err
	}
	got := map[string]string{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line != "" && line[0] != ' ' && strings.HasSuffix(line, ":") {
			cur = strings.TrimSuffix(line, ":")
			continue
		}
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "Candidate:") && cur != "" {
			got[cur] = strings.TrimSpace(strings.TrimPrefix(t, "Candidate:"))
		}
	}
	res := map[string]string{}
	var missing []string
	for _, p := range pkgs {
		v, ok := got[p]
		if !ok {
			v, ok = got[p+":amd64"]
		}
		if !ok || v == "" || v == "(none)" {
			missing = append(missing, p)
			continue
		}
		res[p] = v
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("apt-cache policy: no candidate version for package(s) %s (is it in the machine's apt sources? run apt-get update)", strings.Join(missing, ", "))
	}
	return res, nil
}

// aptDependsRecurse returns pkgs and everything they depend on (Depends and
// PreDepends, recursively), from `apt-cache depends --recurse`. Virtual
// packages are dropped; their providers are kept.
func aptDependsRecurse(ctx context.Context, b *build, pkgs []string) ([]string, error) {
	args := []string{"depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
		"--no-breaks", "--no-replaces", "--no-enhances"}
	out, err := tool{ctx: ctx, log: b.log()}.run("apt-cache", append(args, pkgs...)...)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == ' ' || line[0] == '<' {
			continue
		}
		name := strings.TrimSpace(line)
		if i := strings.IndexByte(name, ':'); i >= 0 {
			if name[i+1:] != "amd64" {
				continue
			}
			name = name[:i]
		}
		seen[name] = true
	}
	for _, p := range pkgs {
		seen[p] = true
	}
	var res []string
	for p := range seen {
		res = append(res, p)
	}
	sort.Strings(res)
	return res, nil
}

// kernelPackage resolves the package that linux-image-amd64 currently
// depends on (linux-image-6.1.0-NN-amd64) and its candidate version.
func kernelPackage(ctx context.Context, b *build) (string, string, error) {
	out, err := tool{ctx: ctx, log: b.log()}.run("apt-cache", "depends", "linux-image-amd64")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(out), "\n") {
		t := strings.TrimSpace(strings.TrimLeft(line, " |"))
		if strings.HasPrefix(t, "Depends:") {
			p := strings.TrimSpace(strings.TrimPrefix(t, "Depends:"))
			if strings.HasPrefix(p, "linux-image-") {
				c, err := aptCandidates(ctx, b, []string{p})
				if err != nil {
					return "", "", err
				}
				return p, c[p], nil
			}
		}
	}
	return "", "", fmt.Errorf("apt-cache depends linux-image-amd64: no linux-image-* dependency in %q", out)
}

// aptEssential lists the packages a minbase mmdebstrap installs besides
// the requested ones: Essential: yes and Priority: required, plus apt.
func aptEssential(ctx context.Context, b *build) ([]string, error) {
	out, err := tool{ctx: ctx, log: b.log()}.run("apt-cache", "dumpavail")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{"apt": true}
	var pkg string
	var take bool
	flush := func() {
		if pkg != "" && take {
			seen[pkg] = true
		}
		pkg, take = "", false
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package: "):
			pkg = strings.TrimSpace(line[len("Package: "):])
		case line == "Essential: yes", line == "Priority: required":
			take = true
		case strings.HasPrefix(line, "Architecture: "):
			a := strings.TrimSpace(line[len("Architecture: "):])
			if a != "amd64" && a != "all" {
				pkg = ""
			}
		}
	}
	flush()
	var res []string
	for p := range seen {
		res = append(res, p)
	}
	sort.Strings(res)
	return res, nil
}

// debFileName is the name apt-get download gives a package's file, without
// the architecture part.
func debFilePrefix(pkg, version string) string {
	return pkg + "_" + strings.ReplaceAll(version, ":", "%3a") + "_"
}

// aptDownload makes sure every pkg=version is in the shared download cache
// (cache/debs) and returns the path of each .deb.
func aptDownload(ctx context.Context, b *build, pkgs map[string]string) (map[string]string, error) {
	debs := filepath.Join(b.cache, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	find := func(p, v string) string {
		m, _ := filepath.Glob(filepath.Join(debs, globEscape(debFilePrefix(p, v))+"*.deb"))
		if len(m) > 0 {
			return m[0]
		}
		return ""
	}
	res := map[string]string{}
	var need []string
	for p, v := range pkgs {
		if f := find(p, v); f != "" {
			res[p] = f
		} else {
			need = append(need, p)
		}
	}
	sort.Strings(need)
	if len(need) == 0 {
		return res, nil
	}
	b.progress("download", strings.Join(need, " "))
	tmp, err := os.MkdirTemp(debs, ".dl-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	t := tool{ctx: ctx, log: b.log(), dir: tmp, logOut: true}
	base := []string{"download"}
	if os.Geteuid() == 0 {
		// apt drops to _apt for downloads, which cannot write our dir.
		base = append(base, "-o", "APT::Sandbox::User=root")
	}
	args := append([]string(nil), base...)
	for _, p := range need {
		args = append(args, p+"="+pkgs[p])
	}
	if _, err := t.run("apt-get", args...); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		// Name the failing package(s): retry one by one.
		var msgs []string
		for _, p := range need {
			if _, err1 := t.run("apt-get", append(append([]string(nil), base...), p+"="+pkgs[p])...); err1 != nil {
				msgs = append(msgs, fmt.Sprintf("package %s=%s: %v", p, pkgs[p], err1))
			}
		}
		if len(msgs) == 0 {
			return nil, fmt.Errorf("apt-get download: %w", err)
		}
		return nil, fmt.Errorf("apt-get download failed: %s", strings.Join(msgs, "; "))
	}
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".deb") {
			if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(debs, e.Name())); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range need {
		f := find(p, pkgs[p])
		if f == "" {
			return nil, fmt.Errorf("apt-get download %s=%s: no .deb file appeared", p, pkgs[p])
		}
		res[p] = f
	}
	return res, nil
}

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}

// debExtract unpacks a .deb's data into dir.
func debExtract(ctx context.Context, b *build, deb, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_, err := tool{ctx: ctx, log: b.log(), logOut: true}.run("dpkg-deb", "-x", deb, dir)
	return err
}
