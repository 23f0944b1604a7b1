package record

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

type inner struct {
	Port int `json:"port"`
}

type sample struct {
	IP       netip.Addr        `json:"ip"`
	At       time.Time         `json:"at"`
	Took     time.Duration     `json:"took"`
	Note     string            `json:"note,omitempty"`
	Code     int               `json:"code"`
	Data     json.RawMessage   `json:"data,omitempty"`
	Tags     []string          `json:"tags,omitempty"`
	Opts     map[string]string `json:"opts,omitempty"`
	Nested   inner             `json:"nested"`
	Hidden   string            `json:"-"`
	Untagged string
	inner
}

func TestMap(t *testing.T) {
	at := time.Date(2026, 12, 5, 1, 2, 3, 4000, time.UTC)
	s := sample{IP: netip.MustParseAddr("10.0.3.100"), At: at, Took: 1500 * time.Millisecond, Code: 7,
		Data: json.RawMessage(`{"reason":"guest-shutdown"}`), Tags: []string{"a"}, Nested: inner{Port: 22},
		Hidden: "x", Untagged: "y", inner: inner{Port: 9}}
	got := Map(&s)
	want := map[string]any{
		"ip": "10.0.3.100", "at": "2026-12-05T01:02:03.000004Z", "took": 1.5, "code": int64(7),
		"data": map[string]any{"reason": "guest-shutdown"}, "tags": []any{"a"},
		"nested": map[string]any{"port": int64(22)}, "port": int64(9),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Map:\n got %#v\nwant %#v", got, want)
	}
	if m := Map(sample{}); m["note"] != nil || m["tags"] != nil {
		t.Errorf("omitempty kept: %#v", m)
	}
	if m := Map(42); m["value"] != int64(42) {
		t.Errorf("non-struct: %#v", m)
	}
}

func TestLuaType(t *testing.T) {
	want := "{ip: string, at: string, took: number, note?: string, code: integer, data?: any, tags?: string[], opts?: table<string, string>, nested: {port: integer}, port: integer}"
	if got := LuaType(sample{}); got != want {
		t.Errorf("LuaType:\n got %s\nwant %s", got, want)
	}
}

type event struct {
	Type string `json:"type"`
}

func (e event) String() string { return "event " + e.Type }

// Record adds the event's line to its fields.
func (e event) Record() any {
	type fields event
	return struct {
		fields
		Line string `json:"line"`
	}{fields(e), e.String()}
}

func TestRecorder(t *testing.T) {
	want := map[string]any{"type": "ACK", "line": "event ACK"}
	if got := Map(event{Type: "ACK"}); !reflect.DeepEqual(got, want) {
		t.Errorf("Map: %#v", got)
	}
	if got := Value([]event{{Type: "ACK"}}); !reflect.DeepEqual(got, []any{want}) {
		t.Errorf("Value: %#v", got)
	}
	if got := LuaType(event{}); got != "{type: string, line: string}" {
		t.Errorf("LuaType: %s", got)
	}
}
