package matrix

import (
	"fmt"
	"sort"

	lua "github.com/yuin/gopher-lua"
)

// axis is one parameter: its values with the names they take in task names.
type axis struct {
	key    string
	names  []string
	values []string
}

// combo is one combination of the axes: the args and the name suffix.
type combo struct {
	args   map[string]string
	suffix string
}

// readAxes reads params: {key = {v1, v2} or {name1 = v1, name2 = v2}}, in
// key order.
func readAxes(v lua.LValue) ([]axis, error) {
	if v == lua.LNil {
		return nil, nil
	}
	t, ok := v.(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("params must be a table {name = {values…}}, got %s", v.Type())
	}
	var axes []axis
	var err error
	t.ForEach(func(k, vals lua.LValue) {
		if err != nil {
			return
		}
		key, ok := k.(lua.LString)
		if !ok {
			err = fmt.Errorf("params: keys must be argument names, got %s", lua.LVAsString(k))
			return
		}
		var a axis
		a, err = readAxis(string(key), vals)
		axes = append(axes, a)
	})
	sort.Slice(axes, func(i, j int) bool { return axes[i].key < axes[j].key })
	return axes, err
}

// readAxis reads one axis: a list of values (named by themselves) or a map
// of names to values (in name order).
func readAxis(key string, v lua.LValue) (axis, error) {
	a := axis{key: key}
	t, ok := v.(*lua.LTable)
	if !ok {
		return a, fmt.Errorf("params.%s must be a list of values or a map of names to values, got %s", key, v.Type())
	}
	if t.Len() > 0 {
		vals, err := stringList(t, "params."+key)
		for _, x := range vals {
			a.names, a.values = append(a.names, sanitize(x)), append(a.values, x)
		}
		return a, err
	}
	m, err := stringMap(t, "params."+key)
	if err != nil {
		return a, err
	}
	for _, name := range sortedKeys(m) {
		a.names, a.values = append(a.names, name), append(a.values, m[name])
	}
	if len(a.values) == 0 {
		return a, fmt.Errorf("params.%s has no values", key)
	}
	return a, nil
}

// combinations is the cross product of the axes (one empty combination
// without any).
func combinations(axes []axis) []combo {
	out := []combo{{args: map[string]string{}}}
	for _, a := range axes {
		var next []combo
		for _, c := range out {
			for i, v := range a.values {
				args := merge(c.args, map[string]string{a.key: v})
				next = append(next, combo{args: args, suffix: c.suffix + "+" + a.key + "=" + a.names[i]})
			}
		}
		out = next
		if len(out) > maxTasks {
			return out
		}
	}
	return out
}

// stringList reads a list of strings (numbers as written).
func stringList(v lua.LValue, where string) ([]string, error) {
	if v == lua.LNil {
		return nil, nil
	}
	t, ok := v.(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("%s must be a list, got %s", where, v.Type())
	}
	n := 0
	t.ForEach(func(lua.LValue, lua.LValue) { n++ })
	if n != t.Len() {
		return nil, fmt.Errorf("%s must be a list (1, 2, …), not a map", where)
	}
	out := make([]string, 0, n)
	for i := 1; i <= t.Len(); i++ {
		s, err := scalar(t.RawGetInt(i), fmt.Sprintf("%s[%d]", where, i))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// stringMap reads a table of names to strings (numbers and booleans as
// written).
func stringMap(v lua.LValue, where string) (map[string]string, error) {
	out := map[string]string{}
	if v == lua.LNil {
		return out, nil
	}
	t, ok := v.(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("%s must be a table {name = value}, got %s", where, v.Type())
	}
	var err error
	t.ForEach(func(k, x lua.LValue) {
		key, ok := k.(lua.LString)
		if err != nil {
			return
		}
		if !ok || key == "" {
			err = fmt.Errorf("%s: keys must be names, got %s", where, lua.LVAsString(k))
			return
		}
		out[string(key)], err = scalar(x, where+"."+string(key))
	})
	return out, err
}

// scalar is a string, number or boolean as text.
func scalar(v lua.LValue, where string) (string, error) {
	switch x := v.(type) {
	case lua.LString, lua.LNumber, lua.LBool:
		return x.String(), nil
	}
	return "", fmt.Errorf("%s must be a string, number or boolean, got %s", where, v.Type())
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
