package warm

import (
	"fmt"
	"regexp"
)

// Explain says why no entry of the cache is the state key names: for each
// entry of the same name, the inputs that differ.
func (c *Cache) Explain(key Key) []string {
	all, err := c.List()
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range all {
		if e.Key.Name != key.Name || e.Key.Hash == key.Hash {
			continue
		}
		for _, d := range Diff(key, e.Key) {
			out = append(out, fmt.Sprintf("entry %s (made %s): %s", e.Key.Hash[:12], e.Created.Local().Format("2006-01-02 15:04"), d))
		}
	}
	if len(out) == 0 {
		out = append(out, fmt.Sprintf("no warm state of %q in the cache yet", key.Name))
	}
	return out
}

// Diff lists how the inputs of have differ from those of want: an input
// changed, only in want, only in have.
func Diff(want, have Key) []string {
	index := func(k Key) map[string]Input {
		m := map[string]Input{}
		for _, in := range k.Inputs {
			m[in.Kind+" "+in.Name] = in
		}
		return m
	}
	w, h := index(want), index(have)
	var out []string
	for _, in := range want.Inputs {
		id := in.Kind + " " + in.Name
		old, ok := h[id]
		switch {
		case !ok:
			out = append(out, id+": new (the entry has none)")
		case old.Hash != in.Hash:
			out = append(out, id+": changed"+detailChange(old.Detail, in.Detail))
		}
	}
	for _, in := range have.Inputs {
		if _, ok := w[in.Kind+" "+in.Name]; !ok {
			out = append(out, in.Kind+" "+in.Name+": gone (only the entry has it)")
		}
	}
	return out
}

var spaces = regexp.MustCompile(`\s+`)

// detailChange shows an input's readable form before and after, when it has
// one short enough.
func detailChange(old, now string) string {
	old, now = spaces.ReplaceAllString(old, " "), spaces.ReplaceAllString(now, " ")
	if old == "" || now == "" || len(old)+len(now) > 300 {
		return ""
	}
	return fmt.Sprintf(" (%q, was %q)", now, old)
}

// safeName makes a name usable as a file name.
func safeName(s string) string {
	return regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(s, "_")
}
