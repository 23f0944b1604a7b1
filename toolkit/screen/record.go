package screen

import "time"

// snapshotRecord is how a reading is reported (to Lua): its mode, text and
// lines, size, cursor, and how long it took.
type snapshotRecord struct {
	Mode   Mode     `json:"mode"`
	Text   string   `json:"text"`
	Lines  []string `json:"lines"`
	Cols   int      `json:"cols,omitempty"`
	Rows   int      `json:"rows,omitempty"`
	Cursor *struct {
		Row     int  `json:"row"`
		Col     int  `json:"col"`
		Visible bool `json:"visible"`
	} `json:"cursor,omitempty"`
	Width  int           `json:"width,omitempty"`
	Height int           `json:"height,omitempty"`
	At     time.Time     `json:"at"`
	Took   time.Duration `json:"took"`
}

// Record is the reading as vmscript reports it (see package record); a
// graphics mode has no cells, size in cells or cursor.
func (s *Snapshot) Record() any {
	r := snapshotRecord{Mode: s.Mode, Text: s.Text(), Lines: s.Lines, Cols: s.Cols, Rows: s.Rows,
		Width: s.Width, Height: s.Height, At: s.At, Took: s.Took}
	if s.Mode == ModeText {
		r.Cursor = &struct {
			Row     int  `json:"row"`
			Col     int  `json:"col"`
			Visible bool `json:"visible"`
		}{s.Cursor.Row, s.Cursor.Col, s.Cursor.Visible}
	}
	return r
}

// matchRecord is how a match is reported: index is 1-based, for Lua.
type matchRecord struct {
	Text     string        `json:"text"`
	Index    int           `json:"index"`
	Captures []string      `json:"captures"`
	Line     int           `json:"line"`
	Mode     Mode          `json:"mode"`
	Shot     string        `json:"shot,omitempty"`
	Waited   time.Duration `json:"waited"`
}

// Record is the match as a script sees it: the 1-based pattern index and
// line number (Lua counts from 1), the screen's mode, the screenshot.
func (m *Match) Record() any {
	r := matchRecord{Text: m.Text, Index: m.Index + 1, Captures: m.Captures, Line: m.Line + 1, Shot: m.Shot, Waited: m.Waited}
	if m.Screen != nil {
		r.Mode = m.Screen.Mode
	}
	return r
}
