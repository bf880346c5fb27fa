package policy

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Pattern runes that stand for wildcards once variables are expanded. They
// are negative so that no character of the subject can equal them, which is
// how an escaped ${*} stays a literal '*'.
const (
	wildStar int32 = -1
	wildOne  int32 = -2
)

// globString matches s against a pattern in which '*' is any run of
// characters (including ':' and '/') and '?' exactly one character. fold makes
// the comparison case-insensitive, as for actions.
func globString(pattern, s string, fold bool) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		r, size := utf8.DecodeRuneInString(s[si:])
		if pi < len(pattern) {
			c, csize := utf8.DecodeRuneInString(pattern[pi:])
			switch {
			case c == '*':
				starP, starS = pi, si
				pi += csize
				continue
			case c == '?' || c == r || (fold && foldEq(c, r)):
				pi += csize
				si += size
				continue
			}
		}
		if starP < 0 {
			return false
		}
		pi = starP + 1
		_, skip := utf8.DecodeRuneInString(s[starS:])
		starS += skip
		si = starS
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

// globRunes is globString for an expanded pattern, where wildcards are
// wildStar/wildOne and every other rune is literal.
func globRunes(pattern []int32, s string, fold bool) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		r, size := utf8.DecodeRuneInString(s[si:])
		if pi < len(pattern) {
			c := pattern[pi]
			switch {
			case c == wildStar:
				starP, starS = pi, si
				pi++
				continue
			case c == wildOne || c == r || (fold && c >= 0 && foldEq(c, r)):
				pi++
				si += size
				continue
			}
		}
		if starP < 0 {
			return false
		}
		pi = starP + 1
		_, skip := utf8.DecodeRuneInString(s[starS:])
		starS += skip
		si = starS
	}
	for pi < len(pattern) && pattern[pi] == wildStar {
		pi++
	}
	return pi == len(pattern)
}

func foldEq(a, b rune) bool {
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		return a == b
	}
	return unicode.ToLower(a) == unicode.ToLower(b)
}

// matchARN is the ArnLike/ArnEquals comparison: the six colon-separated
// parts of an ARN are matched one by one, so a '*' never crosses a ':' except
// in the last part, which holds the resource and may itself contain colons.
// A pattern that is not an ARN (such as a lone "*") is matched as a whole.
func matchARN(pattern []int32, value string) bool {
	pparts := splitRunes(pattern, 6)
	if len(pparts) < 6 {
		return globRunes(pattern, value, false)
	}
	vparts := strings.SplitN(value, ":", 6)
	if len(vparts) < 6 {
		return false
	}
	for i := range 6 {
		if !globRunes(pparts[i], vparts[i], false) {
			return false
		}
	}
	return true
}

func splitRunes(p []int32, n int) [][]int32 {
	var out [][]int32
	start := 0
	for i, c := range p {
		if len(out) == n-1 {
			break
		}
		if c == ':' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return append(out, p[start:])
}
