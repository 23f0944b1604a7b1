// Package version reports vmscript's version: the value set at link time
// (-ldflags "-X …/version.Version=v1.2.3"), else the VCS revision Go embedded.
package version

import "runtime/debug"

// Version is set at link time for releases.
var Version = ""

// String returns the version, "devel+<revision>" for a source build, or "devel".
func String() string {
	if Version != "" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel+" + rev
}
