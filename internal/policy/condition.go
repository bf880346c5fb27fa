package policy

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// family groups the operators that share a comparison.
type family uint8

const (
	famString family = iota + 1
	famStringIgnoreCase
	famStringLike
	famNumeric
	famDate
	famBool
	famBinary
	famIP
	famARN
	famNull
)

// cmp is the comparison a numeric or date operator applies.
type cmp uint8

const (
	cmpEq cmp = iota
	cmpLt
	cmpLe
	cmpGt
	cmpGe
)

type qualifier uint8

const (
	qualNone qualifier = iota
	qualForAll
	qualForAny
)

// opSpec is a parsed operator name such as "ForAnyValue:StringNotLikeIfExists".
type opSpec struct {
	fam      family
	cmp      cmp
	negated  bool
	ifExists bool
	qual     qualifier
	// vars tells whether policy variables are substituted in the values;
	// AWS does so only for the string, ARN and Bool operators.
	vars bool
}

var baseOperators = map[string]opSpec{
	"stringequals":              {fam: famString, vars: true},
	"stringnotequals":           {fam: famString, negated: true, vars: true},
	"stringequalsignorecase":    {fam: famStringIgnoreCase, vars: true},
	"stringnotequalsignorecase": {fam: famStringIgnoreCase, negated: true, vars: true},
	"stringlike":                {fam: famStringLike, vars: true},
	"stringnotlike":             {fam: famStringLike, negated: true, vars: true},
	"numericequals":             {fam: famNumeric, cmp: cmpEq},
	"numericnotequals":          {fam: famNumeric, cmp: cmpEq, negated: true},
	"numericlessthan":           {fam: famNumeric, cmp: cmpLt},
	"numericlessthanequals":     {fam: famNumeric, cmp: cmpLe},
	"numericgreaterthan":        {fam: famNumeric, cmp: cmpGt},
	"numericgreaterthanequals":  {fam: famNumeric, cmp: cmpGe},
	"dateequals":                {fam: famDate, cmp: cmpEq},
	"datenotequals":             {fam: famDate, cmp: cmpEq, negated: true},
	"datelessthan":              {fam: famDate, cmp: cmpLt},
	"datelessthanequals":        {fam: famDate, cmp: cmpLe},
	"dategreaterthan":           {fam: famDate, cmp: cmpGt},
	"dategreaterthanequals":     {fam: famDate, cmp: cmpGe},
	"bool":                      {fam: famBool, vars: true},
	"binaryequals":              {fam: famBinary},
	"ipaddress":                 {fam: famIP},
	"notipaddress":              {fam: famIP, negated: true},
	"arnequals":                 {fam: famARN, vars: true},
	"arnlike":                   {fam: famARN, vars: true},
	"arnnotequals":              {fam: famARN, negated: true, vars: true},
	"arnnotlike":                {fam: famARN, negated: true, vars: true},
	"null":                      {fam: famNull},
}

// parseOperator reads an operator name. Names are matched without regard to
// case, like condition keys.
func parseOperator(name string) (opSpec, error) {
	base := name
	var qual qualifier
	if q, rest, ok := strings.Cut(name, ":"); ok {
		switch strings.ToLower(q) {
		case "forallvalues":
			qual = qualForAll
		case "foranyvalue":
			qual = qualForAny
		default:
			return opSpec{}, fmt.Errorf("unknown set operator %q in %q (want ForAllValues or ForAnyValue)", q, name)
		}
		base = rest
	}
	lower := strings.ToLower(base)
	ifExists := false
	if strings.HasSuffix(lower, "ifexists") {
		ifExists = true
		lower = strings.TrimSuffix(lower, "ifexists")
	}
	spec, ok := baseOperators[lower]
	if !ok {
		return opSpec{}, fmt.Errorf("unknown condition operator %q", name)
	}
	if ifExists && spec.fam == famNull {
		return opSpec{}, fmt.Errorf("condition operator %q: Null cannot take IfExists", name)
	}
	spec.ifExists = ifExists
	spec.qual = qual
	return spec, nil
}

// validate rejects values that can never compare, as AWS does when a policy
// is saved, so that a typo in a CIDR or a date does not silently turn a Deny
// off. Values that may hold variables are checked after substitution.
func (s opSpec) validate(v string) error {
	switch s.fam {
	case famNumeric:
		if _, err := parseNumber(v); err != nil {
			return err
		}
	case famDate:
		if _, err := parseDate(v); err != nil {
			return err
		}
	case famIP:
		if _, err := parsePrefix(v); err != nil {
			return err
		}
	case famBinary:
		if _, err := base64.StdEncoding.DecodeString(v); err != nil {
			return fmt.Errorf("value %q is not base64: %w", v, err)
		}
	case famNull:
		if !strings.EqualFold(v, "true") && !strings.EqualFold(v, "false") {
			return fmt.Errorf("Null takes true or false, got %q", v)
		}
	}
	return nil
}

// evalCondition decides one operator × key test.
//
// Absent keys follow the IAM User Guide, "IAM JSON policy elements: Condition
// operators" (reference_policies_elements_condition_operators): "If the key
// that you specify in a policy condition is not present in the request
// context, the values do not match and the condition is false. If the policy
// condition requires that the key is not matched, such as StringNotLike or
// ArnNotLike, and the right key is not present, the condition is true. This
// logic applies to all condition operators except ...IfExists and Null
// check." ForAllValues over an absent key is true and ForAnyValue false
// ("Creating a condition with multiple keys or values").
func evalCondition(c *Condition, ctx Context, ex *expander) (bool, error) {
	spec := c.spec
	if spec.fam == 0 { // built in code rather than by Parse
		var err error
		if spec, err = parseOperator(c.Operator); err != nil {
			return false, err
		}
	}
	ctxVals, present := ctx.Get(c.Key)
	if spec.fam == famNull {
		for _, v := range c.Values {
			if strings.EqualFold(v, "true") == !present {
				return true, nil
			}
		}
		return false, nil
	}
	if !present {
		switch {
		case spec.ifExists:
			return true, nil
		case spec.qual == qualForAll:
			return true, nil
		case spec.qual == qualForAny:
			return false, nil
		default:
			return spec.negated, nil
		}
	}
	policyVals, ok := resolveValues(spec, c.Values, ex)
	if !ok {
		// A variable without a value makes the condition unusable; AWS
		// then treats the statement as not applying, whatever the operator.
		return false, nil
	}
	anyMatch := func(v string) (bool, error) {
		for _, p := range policyVals {
			m, err := compare(spec, p, v)
			if err != nil {
				return false, err
			}
			if m {
				return true, nil
			}
		}
		return false, nil
	}
	switch spec.qual {
	case qualForAll:
		for _, v := range ctxVals {
			m, err := anyMatch(v)
			if err != nil {
				return false, err
			}
			if m == spec.negated {
				return false, nil
			}
		}
		return true, nil
	case qualForAny:
		for _, v := range ctxVals {
			m, err := anyMatch(v)
			if err != nil {
				return false, err
			}
			if m != spec.negated {
				return true, nil
			}
		}
		return false, nil
	default:
		// A plain operator on a multi-valued key matches when any value
		// does; its negation holds when none does.
		for _, v := range ctxVals {
			m, err := anyMatch(v)
			if err != nil {
				return false, err
			}
			if m {
				return !spec.negated, nil
			}
		}
		return spec.negated, nil
	}
}

// policyValue is one condition value after variable substitution: text for
// exact comparisons, a pattern for the wildcard ones.
type policyValue struct {
	text    string
	pattern []int32
}

func resolveValues(spec opSpec, vals []string, ex *expander) ([]policyValue, bool) {
	out := make([]policyValue, 0, len(vals))
	usesPattern := spec.fam == famStringLike || spec.fam == famARN
	for _, v := range vals {
		if !spec.vars || !ex.hasVariable(v) {
			pv := policyValue{text: v}
			if usesPattern {
				pv.pattern = plainPattern(v)
			}
			out = append(out, pv)
			continue
		}
		p, ok := ex.expand(v)
		if !ok {
			return nil, false
		}
		out = append(out, policyValue{text: literal(p), pattern: p})
	}
	return out, true
}

// plainPattern is expand without variables: '*' and '?' are wildcards.
func plainPattern(s string) []int32 {
	p := make([]int32, 0, len(s))
	for _, r := range s {
		switch r {
		case '*':
			p = append(p, wildStar)
		case '?':
			p = append(p, wildOne)
		default:
			p = append(p, r)
		}
	}
	return p
}

// compare reports whether a context value matches one policy value, before
// negation.
func compare(spec opSpec, p policyValue, v string) (bool, error) {
	switch spec.fam {
	case famString:
		return p.text == v, nil
	case famStringIgnoreCase:
		return strings.EqualFold(p.text, v), nil
	case famStringLike:
		return globRunes(p.pattern, v, false), nil
	case famARN:
		return matchARN(p.pattern, v), nil
	case famBool:
		return strings.EqualFold(p.text, v), nil
	case famBinary:
		want, err := base64.StdEncoding.DecodeString(p.text)
		if err != nil {
			return false, fmt.Errorf("condition value %q is not base64: %w", p.text, err)
		}
		got, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return false, nil
		}
		return string(want) == string(got), nil
	case famNumeric:
		want, err := parseNumber(p.text)
		if err != nil {
			return false, err
		}
		got, err := parseNumber(v)
		if err != nil {
			return false, nil // a non-numeric context value matches nothing
		}
		return compareOrdered(spec.cmp, got, want), nil
	case famDate:
		want, err := parseDate(p.text)
		if err != nil {
			return false, err
		}
		got, err := parseDate(v)
		if err != nil {
			return false, nil
		}
		return compareOrdered(spec.cmp, got.UnixNano(), want.UnixNano()), nil
	case famIP:
		prefix, err := parsePrefix(p.text)
		if err != nil {
			return false, err
		}
		addr, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil {
			return false, nil
		}
		return prefix.Contains(addr.Unmap()), nil
	}
	return false, errors.New("unsupported operator family")
}

func compareOrdered[T int64 | float64](c cmp, got, want T) bool {
	switch c {
	case cmpLt:
		return got < want
	case cmpLe:
		return got <= want
	case cmpGt:
		return got > want
	case cmpGe:
		return got >= want
	default:
		return got == want
	}
}

func parseNumber(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("value %q is not a number", s)
	}
	return f, nil
}

// dateLayouts are the W3C profiles of ISO 8601 that AWS accepts, longest
// first; a value without a zone is UTC.
var dateLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04",
	"2006-01-02",
	"2006-01",
	"2006",
}

// parseDate reads an ISO 8601 date or epoch seconds (aws:EpochTime).
func parseDate(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s != "" && strings.Trim(s, "0123456789") == "" && len(s) != 4 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			return time.Unix(n, 0).UTC(), nil
		}
	}
	for _, layout := range dateLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("value %q is not an ISO 8601 date or epoch seconds", s)
}

// parsePrefix reads a CIDR block; a bare address is a /32 or /128 as in AWS.
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("value %q is not a CIDR block: %w", s, err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("value %q is not an IP address: %w", s, err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
