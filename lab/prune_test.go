package lab

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestPrune: stale images and interrupted builds go; the current image key,
// the package cache, the resolved sets and unrelated entries stay; a dry
// run removes nothing.
func TestPrune(t *testing.T) {
	if _, err := os.Stat("/usr/bin/apt-cache"); err != nil {
		t.Skip("needs apt-cache to resolve the current image keys")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cache := t.TempDir()
	opt := Options{CacheDir: cache}
	bl, err := builderFor("mini")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := currentDir(ctx, "mini", bl, opt, cache)
	if err != nil {
		t.Fatal(err)
	}
	current := filepath.Base(dir)
	stale := []string{"mini-0123456789abcdef", "systemd-fedcba9876543210", ".tmp-systemd-123"}
	kept := []string{current, "debs", "mini-notahexkey", "other-0123456789abcdef"}
	for _, d := range append(append([]string{}, stale...), kept...) {
		if err := os.MkdirAll(filepath.Join(cache, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cache, d, "f"), []byte("12345"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	dry, err := Prune(ctx, opt, true)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range dry {
		names = append(names, filepath.Base(p.Path))
		if p.Bytes != 5 || p.Why == "" {
			t.Errorf("%+v", p)
		}
	}
	sort.Strings(names)
	want := append([]string{}, stale...)
	sort.Strings(want)
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("dry run would prune %v, want %v", names, want)
	}
	for _, d := range stale {
		if _, err := os.Stat(filepath.Join(cache, d)); err != nil {
			t.Fatalf("dry run removed %s", d)
		}
	}

	if _, err := Prune(ctx, opt, false); err != nil {
		t.Fatal(err)
	}
	for _, d := range stale {
		if _, err := os.Stat(filepath.Join(cache, d)); !os.IsNotExist(err) {
			t.Errorf("%s still there (%v)", d, err)
		}
	}
	for _, d := range kept {
		if _, err := os.Stat(filepath.Join(cache, d, "f")); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
	// Nothing left to prune.
	if again, err := Prune(ctx, opt, true); err != nil || len(again) != 0 {
		t.Fatalf("second prune: %v %v", again, err)
	}
}
