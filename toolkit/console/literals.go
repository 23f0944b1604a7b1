package console

import (
	"regexp/syntax"
	"strings"
)

// maxLiterals bounds the literal set a watcher's regex may expand to.
const maxLiterals = 64

// literalSet returns the strings a regex matches when they are a small
// finite set of plain texts ("Kernel panic|Oops: ", "(You are in|Entering)
// emergency mode"), so that a watcher can look for them with
// strings.Contains instead of running the regex on every line (Go's regexp
// only skips ahead to a literal prefix, and an alternation has none). ok is
// false for anything else: classes, repeats, anchors, case folding.
func literalSet(expr string) (lits []string, ok bool) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, false
	}
	lits, ok = expand(re.Simplify())
	if !ok || len(lits) == 0 {
		return nil, false
	}
	for _, l := range lits {
		if l == "" || strings.Contains(l, "\n") {
			return nil, false // matches everywhere, or across lines
		}
	}
	return lits, true
}

// expand is literalSet's walk over the parsed regex.
func expand(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil, false
		}
		return []string{string(re.Rune)}, true
	case syntax.OpEmptyMatch:
		return []string{""}, true
	case syntax.OpCapture:
		return expand(re.Sub[0])
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			s, ok := expand(sub)
			if !ok || len(out)+len(s) > maxLiterals {
				return nil, false
			}
			out = append(out, s...)
		}
		return out, true
	case syntax.OpConcat:
		out := []string{""}
		for _, sub := range re.Sub {
			s, ok := expand(sub)
			if !ok || len(out)*len(s) > maxLiterals {
				return nil, false
			}
			next := make([]string, 0, len(out)*len(s))
			for _, a := range out {
				for _, b := range s {
					next = append(next, a+b)
				}
			}
			out = next
		}
		return out, true
	}
	return nil, false
}

// requiredLiteral returns the longest plain text every match of a regex
// contains, from the literals of its top-level concatenation
// (`\bBUG: (?:…)` → "BUG: "), or "" when it has none: a watcher skips the
// regex on lines without it.
func requiredLiteral(expr string) string {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return ""
	}
	re = re.Simplify()
	for re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	subs := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	}
	best := ""
	for _, s := range subs {
		if s.Op == syntax.OpLiteral && s.Flags&syntax.FoldCase == 0 && len(string(s.Rune)) > len(best) {
			best = string(s.Rune)
		}
	}
	if strings.Contains(best, "\n") {
		return ""
	}
	return best
}
