package iso

import "time"

// entryRecord is how an entry is reported (to Lua, the timeline): its
// fields as `ls -l` shows them, and the ls -l line.
type entryRecord struct {
	Path   string `json:"path"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	Mode   string `json:"mode"`
	Perm   uint32 `json:"perm"`
	Size   int64  `json:"size"`
	MTime  string `json:"mtime"`
	Target string `json:"target,omitempty"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Line   string `json:"line"`
}

// Record is the entry as vmscript reports it (see package record): type
// ("file", "dir", "symlink", …), mode as ls -l writes it, permission bits,
// the modification time in UTC to the second, and the ls -l line.
func (e Entry) Record() any {
	return entryRecord{Path: e.Path, Name: e.Name, Type: e.Type(), Mode: e.ModeString(), Perm: uint32(e.Mode.Perm()),
		Size: e.Size, MTime: e.ModTime.UTC().Format(time.RFC3339), Target: e.Target, UID: e.UID, GID: e.GID, Line: e.String()}
}

// Record is the change as vmscript reports it: its fields and its one-line
// summary.
func (c Change) Record() any {
	type fields Change
	return struct {
		fields
		Line string `json:"line"`
	}{fields(c), c.String()}
}
