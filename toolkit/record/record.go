// Package record gives every record vmscript reports — a QMP event, a DHCP
// lease or message, a netboot request, a command's result, an ISO entry —
// one shape wherever it goes: the timeline, the Lua table a script gets,
// and the type the API reference shows. The shape comes from the struct's
// json tags, so a field has one name everywhere:
//
//	type Lease struct {
//		IP      netip.Addr `json:"ip"`
//		Expires time.Time  `json:"expires"`
//		Took    time.Duration `json:"took"`          // seconds, a number
//		Note    string     `json:"note,omitempty"` // left out when empty
//	}
//
// Durations become seconds (a number), times RFC 3339 strings with
// nanoseconds, addresses and other text marshalers their text, raw JSON its
// decoded value; untagged fields and fields tagged "-" are not part of the
// record; an embedded struct's fields are the record's own. A type whose
// record holds computed values too (a log line) implements Recorder.
package record

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Recorder is a type whose record is another value: its fields plus
// computed ones, such as the line it is logged as. Record must not return a
// Recorder (a struct that embeds a method-less copy of the type's fields
// does not).
type Recorder interface {
	Record() any
}

var (
	recorderType = reflect.TypeFor[Recorder]()
	durationType = reflect.TypeFor[time.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
	rawType      = reflect.TypeFor[json.RawMessage]()
	textType     = reflect.TypeFor[encoding.TextMarshaler]()
)

// Map returns v's fields as a map: v is a struct or a pointer to one.
// Anything else is returned as Value(v) would (not a map) inside "value".
func Map(v any) map[string]any {
	if r, ok := v.(Recorder); ok {
		v = r.Record()
	}
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct || rv.Type() == timeType {
		return map[string]any{"value": Value(v)}
	}
	out := map[string]any{}
	addFields(out, rv)
	return out
}

// Value converts any value the way Map converts a field: structs to maps,
// slices to []any, maps to map[string]any, durations to seconds, times to
// RFC 3339, text marshalers to their text.
func Value(v any) any {
	if v == nil {
		return nil
	}
	return value(reflect.ValueOf(v))
}

func addFields(out map[string]any, rv reflect.Value) {
	t := rv.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, omitEmpty, ok := fieldName(f)
		if f.Anonymous && f.Type.Kind() == reflect.Struct && name == "" {
			addFields(out, rv.Field(i))
			continue
		}
		if !ok || !f.IsExported() {
			continue
		}
		fv := rv.Field(i)
		if omitEmpty && fv.IsZero() {
			continue
		}
		out[name] = value(fv)
	}
}

// fieldName reads a field's json tag: its name, omitempty, and whether the
// field is part of the record at all.
func fieldName(f reflect.StructField) (name string, omitEmpty, ok bool) {
	tag, has := f.Tag.Lookup("json")
	if !has || tag == "-" {
		return "", false, false
	}
	name, opts, _ := strings.Cut(tag, ",")
	return name, strings.Contains(","+opts+",", ",omitempty,"), name != ""
}

func value(rv reflect.Value) any {
	if !rv.IsValid() {
		return nil
	}
	if rv.Type().Implements(recorderType) && (rv.Kind() != reflect.Pointer || !rv.IsNil()) {
		return value(reflect.ValueOf(rv.Interface().(Recorder).Record()))
	}
	switch rv.Type() {
	case durationType:
		return time.Duration(rv.Int()).Seconds()
	case timeType:
		return rv.Interface().(time.Time).Format(time.RFC3339Nano)
	case rawType:
		var x any
		if err := json.Unmarshal(rv.Bytes(), &x); err != nil {
			return string(rv.Bytes())
		}
		return x
	}
	if rv.Type().Implements(textType) && rv.Kind() != reflect.Pointer {
		b, err := rv.Interface().(encoding.TextMarshaler).MarshalText()
		if err == nil {
			return string(b)
		}
	}
	return kindValue(rv)
}

func kindValue(rv reflect.Value) any {
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		return value(rv.Elem())
	case reflect.Struct:
		out := map[string]any{}
		addFields(out, rv)
		return out
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8 {
			return string(rv.Bytes())
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = value(rv.Index(i))
		}
		return out
	case reflect.Map:
		out := make(map[string]any, rv.Len())
		iter := rv.MapRange()
		for iter.Next() {
			out[fmt.Sprint(iter.Key().Interface())] = value(iter.Value())
		}
		return out
	case reflect.Bool:
		return rv.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return rv.Uint()
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	case reflect.String:
		return rv.String()
	}
	return fmt.Sprint(rv.Interface())
}

// LuaType describes the record type of v (a struct value) as a LuaCATS
// table type for the API reference: "{ip: string, took: number,
// note?: string}", fields in declaration order, "?" on omitempty ones.
func LuaType(v any) string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return luaType(t)
}

func luaType(t reflect.Type) string {
	if t.Implements(recorderType) && t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface {
		return luaType(reflect.TypeOf(reflect.Zero(t).Interface().(Recorder).Record()))
	}
	switch t {
	case durationType:
		return "number"
	case timeType:
		return "string"
	case rawType:
		return "any"
	}
	if t.Implements(textType) {
		return "string"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return luaType(t.Elem())
	case reflect.Struct:
		return "{" + strings.Join(luaFields(t), ", ") + "}"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "string"
		}
		return luaType(t.Elem()) + "[]"
	case reflect.Map:
		return "table<string, " + luaType(t.Elem()) + ">"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	}
	return "any"
}

func luaFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, omitEmpty, ok := fieldName(f)
		if f.Anonymous && f.Type.Kind() == reflect.Struct && name == "" {
			out = append(out, luaFields(f.Type)...)
			continue
		}
		if !ok || !f.IsExported() {
			continue
		}
		if omitEmpty {
			name += "?"
		}
		out = append(out, name+": "+luaType(f.Type))
	}
	return out
}
