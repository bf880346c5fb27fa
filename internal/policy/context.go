package policy

import (
	"strings"
	"unicode/utf8"
)

// Context holds the request's condition keys. Keys are case-insensitive, as
// in AWS, including the tag-key part of aws:PrincipalTag/KEY; a key with no
// values is treated as absent.
type Context map[string][]string

// Set stores values under key, replacing any key that differs only in case.
func (c Context) Set(key string, values ...string) {
	for k := range c {
		if k != key && strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[key] = values
}

// Get returns the values of key, matched case-insensitively, and whether it
// is present with at least one value.
func (c Context) Get(key string) ([]string, bool) {
	if v, ok := c[key]; ok {
		return v, len(v) > 0
	}
	for k, v := range c {
		if strings.EqualFold(k, key) {
			return v, len(v) > 0
		}
	}
	return nil, false
}

// Missing is the value ResolvedVariables records for a variable that had no
// value and no default.
const Missing = "<missing>"

// expander substitutes policy variables for one evaluation and records what
// each variable resolved to.
type expander struct {
	ctx      Context
	enabled  bool // only Version 2012-10-17 documents substitute variables
	resolved map[string]string
}

// expand turns a Resource entry or condition value into a pattern. ok is
// false when a variable has neither a value nor a default: AWS then treats
// the entry as matching nothing. Escapes ${*}, ${?} and ${$} yield literal
// characters that are not wildcards.
func (e *expander) expand(s string) (pattern []int32, ok bool) {
	ok = true
	pattern = make([]int32, 0, len(s))
	for i := 0; i < len(s); {
		if e.enabled && strings.HasPrefix(s[i:], "${") {
			if end := strings.IndexByte(s[i+2:], '}'); end >= 0 {
				inner := s[i+2 : i+2+end]
				i += end + 3
				switch inner {
				case "*", "?", "$":
					pattern = append(pattern, int32(inner[0]))
					continue
				}
				val, found := e.lookup(inner)
				if !found {
					// Keep scanning so that every variable of the entry is
					// reported, but the entry can no longer match.
					ok = false
					continue
				}
				for _, r := range val {
					pattern = append(pattern, r)
				}
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '*':
			pattern = append(pattern, wildStar)
		case '?':
			pattern = append(pattern, wildOne)
		default:
			pattern = append(pattern, r)
		}
		i += size
	}
	return pattern, ok
}

// lookup resolves the text between "${" and "}": a context key, optionally
// followed by ", 'default'", and records the outcome for the explanation.
func (e *expander) lookup(inner string) (string, bool) {
	name, _, _ := splitDefault(inner)
	val, ok := e.lookupQuiet(inner)
	if e.resolved != nil {
		if ok {
			e.resolved[name] = val
		} else {
			e.resolved[name] = Missing
		}
	}
	return val, ok
}

func (e *expander) lookupQuiet(inner string) (string, bool) {
	name, def, hasDef := splitDefault(inner)
	if vals, ok := e.ctx.Get(name); ok && len(vals) == 1 {
		return vals[0], true
	}
	// A variable stands for one value; a multi-valued key has none that
	// could be substituted, so it behaves as missing.
	if hasDef {
		return def, true
	}
	return "", false
}

// splitDefault parses "aws:PrincipalTag/team, 'company-wide'". A malformed
// default leaves the whole text as the name, which then resolves to nothing.
func splitDefault(inner string) (name, def string, ok bool) {
	comma := strings.IndexByte(inner, ',')
	if comma < 0 {
		return strings.TrimSpace(inner), "", false
	}
	rest := strings.TrimSpace(inner[comma+1:])
	if len(rest) < 2 || rest[0] != '\'' || rest[len(rest)-1] != '\'' {
		return inner, "", false
	}
	return strings.TrimSpace(inner[:comma]), rest[1 : len(rest)-1], true
}

// hasVariable reports whether s needs expand at all; most entries do not,
// and matching them directly avoids an allocation per comparison.
func (e *expander) hasVariable(s string) bool {
	return e.enabled && strings.Contains(s, "${")
}

// literal renders an expanded pattern back to text for the operators that do
// not interpret wildcards, where '*' and '?' are ordinary characters.
func literal(p []int32) string {
	var b strings.Builder
	b.Grow(len(p))
	for _, r := range p {
		switch r {
		case wildStar:
			b.WriteByte('*')
		case wildOne:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
