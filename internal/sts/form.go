package sts

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// Limits of the AWS Query protocol decoder. STS's largest parameter, a web
// identity token, is at most 20,000 characters; a session policy 2,048; 50
// tags take 100 parameters.
const (
	MaxBodySize   = 64 << 10
	MaxFormParams = 200
)

// Form is a decoded AWS Query request: parameter name → value. Names are
// case-sensitive, as in AWS.
type Form map[string]string

// DecodeForm parses application/x-www-form-urlencoded text (a POST body or
// a query string) with the limits above. A parameter given twice is
// refused: the AWS SDKs never send one twice, and accepting it would leave
// the signature check and the action reading different values.
func DecodeForm(s string) (Form, error) {
	if len(s) > MaxBodySize {
		return nil, fmt.Errorf("request parameters are %d bytes; at most %d are accepted", len(s), MaxBodySize)
	}
	f := Form{}
	if s == "" {
		return f, nil
	}
	n := 0
	for part := range strings.SplitSeq(s, "&") {
		if part == "" {
			continue
		}
		n++
		if n > MaxFormParams {
			return nil, fmt.Errorf("more than %d request parameters", MaxFormParams)
		}
		rawKey, rawValue, _ := strings.Cut(part, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			return nil, fmt.Errorf("parameter %d: name is not valid URL encoding", n)
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return nil, fmt.Errorf("parameter %s: value is not valid URL encoding", shorten(key))
		}
		if key == "" {
			return nil, fmt.Errorf("parameter %d has an empty name", n)
		}
		if _, dup := f[key]; dup {
			return nil, fmt.Errorf("parameter %s is given more than once", shorten(key))
		}
		f[key] = value
	}
	return f, nil
}

// Has reports whether the parameter is present (possibly empty).
func (f Form) Has(name string) bool {
	_, ok := f[name]
	return ok
}

// Members returns the list NAME.member.1, NAME.member.2, … (when field is
// "") or NAME.member.N.FIELD, ordered by N. Indexes must be positive
// decimal numbers without leading zeros; gaps are allowed, as AWS allows
// them. "NAME=" alone is how botocore sends an empty list.
func (f Form) Members(name, field string) ([]string, error) {
	prefix := name + ".member."
	type item struct {
		n int
		v string
	}
	var items []item
	for k, v := range f {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		idx, sub, hasSub := strings.Cut(rest, ".")
		if hasSub != (field != "") || (hasSub && sub != field) {
			if hasSub && field != "" {
				// Another field of the same member (Key vs Value): read by
				// its own call.
				continue
			}
			return nil, fmt.Errorf("parameter %s is not %s%s", shorten(k), prefix, memberShape(field))
		}
		n, err := strconv.Atoi(idx)
		if err != nil || n < 1 || n > MaxFormParams || idx[0] == '0' {
			return nil, fmt.Errorf("parameter %s: list index must be a number from 1 to %d", shorten(k), MaxFormParams)
		}
		items = append(items, item{n, v})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].n < items[j].n })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out, nil
}

// Pairs returns NAME.member.N.KEYFIELD / NAME.member.N.VALUEFIELD pairs in
// index order. Every member must have both fields.
func (f Form) Pairs(name, keyField, valueField string) ([][2]string, error) {
	prefix := name + ".member."
	byIndex := map[int]*[2]string{}
	seen := map[int]uint8{}
	for k, v := range f {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		idx, sub, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(idx)
		if err != nil || n < 1 || n > MaxFormParams || idx == "" || idx[0] == '0' {
			return nil, fmt.Errorf("parameter %s: list index must be a number from 1 to %d", shorten(k), MaxFormParams)
		}
		p := byIndex[n]
		if p == nil {
			p = &[2]string{}
			byIndex[n] = p
		}
		switch sub {
		case keyField:
			p[0] = v
			seen[n] |= 1
		case valueField:
			p[1] = v
			seen[n] |= 2
		default:
			return nil, fmt.Errorf("parameter %s is not %s.member.N.%s or .%s", shorten(k), name, keyField, valueField)
		}
	}
	idx := make([]int, 0, len(byIndex))
	for n := range byIndex {
		if seen[n] != 3 {
			return nil, fmt.Errorf("%s.member.%d needs both %s and %s", name, n, keyField, valueField)
		}
		idx = append(idx, n)
	}
	sort.Ints(idx)
	out := make([][2]string, len(idx))
	for i, n := range idx {
		out[i] = *byIndex[n]
	}
	return out, nil
}

func memberShape(field string) string {
	if field == "" {
		return "N"
	}
	return "N." + field
}

// shorten keeps attacker-chosen parameter names from flooding messages.
func shorten(s string) string {
	const limit = 64
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "…"
	}
	return strconv.Quote(s)
}
