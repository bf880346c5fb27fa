package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Policy language versions. A document without Version is read as
// Version2008, which is what AWS does; only Version2012 substitutes policy
// variables.
const (
	Version2012 = "2012-10-17"
	Version2008 = "2008-10-17"
)

// Effect is the Effect element of a statement.
type Effect string

// The two effects a statement may have; the spelling is exact, as in AWS.
const (
	Allow Effect = "Allow"
	Deny  Effect = "Deny"
)

// Document is a parsed IAM policy document. Single strings and lists are
// both normalised to slices, and condition values of any JSON scalar type to
// strings, so two documents that AWS reads alike compare equal.
type Document struct {
	// Version is "2012-10-17", "2008-10-17" or "" when the element is absent.
	Version    string
	ID         string
	Statements []Statement
}

// Statement is one element of the Statement array.
type Statement struct {
	Sid          string
	Effect       Effect
	Principal    *Principal // nil when absent; only in trust and resource policies
	NotPrincipal *Principal
	Action       []string // exactly one of Action and NotAction is non-nil
	NotAction    []string
	Resource     []string // both nil only in statements that name a principal
	NotResource  []string
	Condition    []Condition // in document order; nil when absent or empty
}

// Principal is the Principal or NotPrincipal element.
type Principal struct {
	// Wildcard is the bare string "*": everyone, signed or not.
	Wildcard      bool
	AWS           []string
	Federated     []string
	Service       []string
	CanonicalUser []string
}

// Condition is one operator × key test of a Condition block. A block
// {"StringEquals": {"a": "x", "b": "y"}} becomes two Conditions sharing the
// operator; all Conditions of a statement must hold.
type Condition struct {
	Operator string   // as written, e.g. "ForAnyValue:StringLikeIfExists"
	Key      string   // as written; matched case-insensitively
	Values   []string // ORed; JSON numbers and booleans kept as their literal text

	spec opSpec // Operator, parsed once by Parse
}

// ParseError reports why a document was rejected. Statement is the 0-based
// index of the offending statement, or -1 for the document itself.
type ParseError struct {
	Statement int
	Sid       string // Sid of the statement when it has one, for the message
	Field     string // element name, e.g. "Action"; "" for malformed JSON
	Msg       string
}

func (e *ParseError) Error() string {
	var b strings.Builder
	b.WriteString("policy: ")
	if e.Statement >= 0 {
		fmt.Fprintf(&b, "statement %d", e.Statement)
		if e.Sid != "" {
			fmt.Fprintf(&b, " (Sid %q)", e.Sid)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Parse reads a policy document strictly: unknown or duplicate elements,
// wrong JSON types, a missing Effect, conflicting or missing
// Action/NotAction and Resource/NotResource, unknown condition operators and
// malformed condition values are all rejected with a *ParseError naming the
// statement and element.
func Parse(doc []byte) (*Document, error) {
	members, err := objectMembers(doc, true)
	if err != nil {
		return nil, &ParseError{Statement: -1, Msg: err.Error()}
	}
	d := &Document{}
	var stmts json.RawMessage
	for _, m := range members {
		switch m.key {
		case "Version":
			v, err := stringValue(m.val)
			if err != nil {
				return nil, docErr("Version", err.Error())
			}
			if v != Version2012 && v != Version2008 {
				return nil, docErr("Version", fmt.Sprintf("unsupported version %q (want %q or %q)", v, Version2012, Version2008))
			}
			d.Version = v
		case "Id":
			v, err := stringValue(m.val)
			if err != nil {
				return nil, docErr("Id", err.Error())
			}
			d.ID = v
		case "Statement":
			stmts = m.val
		default:
			return nil, docErr(m.key, "unknown element")
		}
	}
	if stmts == nil {
		return nil, docErr("Statement", "required element is missing")
	}
	var raws []json.RawMessage
	switch firstByte(stmts) {
	case '{':
		raws = []json.RawMessage{stmts}
	case '[':
		if err := json.Unmarshal(stmts, &raws); err != nil {
			return nil, docErr("Statement", "malformed list: "+err.Error())
		}
		if len(raws) == 0 {
			return nil, docErr("Statement", "must contain at least one statement")
		}
	default:
		return nil, docErr("Statement", "must be an object or a list of objects, got "+jsonKind(stmts))
	}
	d.Statements = make([]Statement, 0, len(raws))
	for i, raw := range raws {
		st, err := parseStatement(i, raw)
		if err != nil {
			return nil, err
		}
		d.Statements = append(d.Statements, st)
	}
	return d, nil
}

// UnmarshalJSON lets a Document be embedded in other JSON with the same
// strictness as Parse.
func (d *Document) UnmarshalJSON(b []byte) error {
	p, err := Parse(b)
	if err != nil {
		return err
	}
	*d = *p
	return nil
}

// ValidateIdentity checks what Parse cannot know: that the document is meant
// for a user, group or role (or a boundary or session policy), where AWS
// forbids Principal and NotPrincipal.
func (d *Document) ValidateIdentity() error {
	for i, st := range d.Statements {
		field := ""
		switch {
		case st.Principal != nil:
			field = "Principal"
		case st.NotPrincipal != nil:
			field = "NotPrincipal"
		}
		if field != "" {
			return &ParseError{Statement: i, Sid: st.Sid, Field: field, Msg: "not allowed in an identity-based policy"}
		}
	}
	return nil
}

// ValidateTrust checks that every statement of a role trust policy names a
// principal, which AWS requires.
func (d *Document) ValidateTrust() error {
	for i, st := range d.Statements {
		if st.Principal == nil && st.NotPrincipal == nil {
			return &ParseError{Statement: i, Sid: st.Sid, Field: "Principal", Msg: "a trust policy statement must name a Principal or NotPrincipal"}
		}
	}
	return nil
}

func docErr(field, msg string) *ParseError {
	return &ParseError{Statement: -1, Field: field, Msg: msg}
}

func parseStatement(idx int, raw json.RawMessage) (Statement, error) {
	var st Statement
	if firstByte(raw) != '{' {
		return st, &ParseError{Statement: idx, Msg: "statement must be an object, got " + jsonKind(raw)}
	}
	members, err := objectMembers(raw, false)
	if err != nil {
		return st, &ParseError{Statement: idx, Msg: err.Error()}
	}
	// The Sid is read first so that every later error can name it.
	for _, m := range members {
		if m.key == "Sid" {
			sid, err := stringValue(m.val)
			if err != nil {
				return st, &ParseError{Statement: idx, Field: "Sid", Msg: err.Error()}
			}
			st.Sid = sid
		}
	}
	fail := func(field, format string, args ...any) (Statement, error) {
		return Statement{}, &ParseError{Statement: idx, Sid: st.Sid, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	haveEffect := false
	for _, m := range members {
		var err error
		switch m.key {
		case "Sid":
		case "Effect":
			var e string
			if e, err = stringValue(m.val); err == nil {
				if Effect(e) != Allow && Effect(e) != Deny {
					return fail("Effect", "must be %q or %q, got %q", Allow, Deny, e)
				}
				st.Effect, haveEffect = Effect(e), true
			}
		case "Principal":
			st.Principal, err = parsePrincipal(m.val)
		case "NotPrincipal":
			st.NotPrincipal, err = parsePrincipal(m.val)
		case "Action":
			st.Action, err = stringList(m.val)
		case "NotAction":
			st.NotAction, err = stringList(m.val)
		case "Resource":
			st.Resource, err = stringList(m.val)
		case "NotResource":
			st.NotResource, err = stringList(m.val)
		case "Condition":
			st.Condition, err = parseConditionBlock(m.val)
		default:
			return fail(m.key, "unknown element")
		}
		if err != nil {
			return fail(m.key, "%s", err.Error())
		}
	}
	switch {
	case !haveEffect:
		return fail("Effect", "required element is missing")
	case st.Action != nil && st.NotAction != nil:
		return fail("Action", "Action and NotAction cannot both be present")
	case st.Action == nil && st.NotAction == nil:
		return fail("Action", "one of Action or NotAction is required")
	case st.Resource != nil && st.NotResource != nil:
		return fail("Resource", "Resource and NotResource cannot both be present")
	case st.Principal != nil && st.NotPrincipal != nil:
		return fail("Principal", "Principal and NotPrincipal cannot both be present")
	case st.Resource == nil && st.NotResource == nil && st.Principal == nil && st.NotPrincipal == nil:
		// Trust policies name a principal and may leave out Resource;
		// identity policies must always say which resources they cover.
		return fail("Resource", "one of Resource or NotResource is required")
	}
	return st, nil
}

func parsePrincipal(raw json.RawMessage) (*Principal, error) {
	switch firstByte(raw) {
	case '"':
		s, err := stringValue(raw)
		if err != nil {
			return nil, err
		}
		if s != "*" {
			return nil, fmt.Errorf(`a string principal must be "*", got %q (use {"AWS": ...})`, s)
		}
		return &Principal{Wildcard: true}, nil
	case '{':
	default:
		return nil, fmt.Errorf(`must be "*" or an object, got %s`, jsonKind(raw))
	}
	members, err := objectMembers(raw, false)
	if err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, errors.New("must name at least one principal")
	}
	p := &Principal{}
	for _, m := range members {
		list, err := stringList(m.val)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.key, err)
		}
		switch m.key {
		case "AWS":
			p.AWS = list
		case "Federated":
			p.Federated = list
		case "Service":
			p.Service = list
		case "CanonicalUser":
			p.CanonicalUser = list
		default:
			return nil, fmt.Errorf("unknown principal type %q (want AWS, Federated, Service or CanonicalUser)", m.key)
		}
	}
	return p, nil
}

func parseConditionBlock(raw json.RawMessage) ([]Condition, error) {
	if firstByte(raw) != '{' {
		return nil, fmt.Errorf("must be an object of operators, got %s", jsonKind(raw))
	}
	ops, err := objectMembers(raw, false)
	if err != nil {
		return nil, err
	}
	var out []Condition
	for _, op := range ops {
		spec, err := parseOperator(op.key)
		if err != nil {
			return nil, err
		}
		if firstByte(op.val) != '{' {
			return nil, fmt.Errorf("operator %s: must be an object of condition keys, got %s", op.key, jsonKind(op.val))
		}
		keys, err := objectMembers(op.val, false)
		if err != nil {
			return nil, fmt.Errorf("operator %s: %w", op.key, err)
		}
		for _, k := range keys {
			vals, err := conditionValues(k.val)
			if err != nil {
				return nil, fmt.Errorf("operator %s, key %q: %w", op.key, k.key, err)
			}
			for _, v := range vals {
				if err := spec.validate(v); err != nil {
					return nil, fmt.Errorf("operator %s, key %q: %w", op.key, k.key, err)
				}
			}
			out = append(out, Condition{Operator: op.key, Key: k.key, Values: vals, spec: spec})
		}
	}
	return out, nil
}

// conditionValues accepts a string, number or boolean, or a non-empty list of
// them, and returns their text: AWS compares condition values as strings.
func conditionValues(raw json.RawMessage) ([]string, error) {
	if firstByte(raw) == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("malformed list: %w", err)
		}
		if len(items) == 0 {
			return nil, errors.New("list of values must not be empty")
		}
		out := make([]string, 0, len(items))
		for _, it := range items {
			s, err := scalarText(it)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	s, err := scalarText(raw)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

func scalarText(raw json.RawMessage) (string, error) {
	switch c := firstByte(raw); {
	case c == '"':
		return stringValue(raw)
	case c == 't' || c == 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", err
		}
		return strconv.FormatBool(b), nil
	case c == '-' || (c >= '0' && c <= '9'):
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return "", err
		}
		return n.String(), nil
	default:
		return "", fmt.Errorf("condition value must be a string, number or boolean, got %s", jsonKind(raw))
	}
}

// stringList accepts a string or a non-empty list of strings.
func stringList(raw json.RawMessage) ([]string, error) {
	switch firstByte(raw) {
	case '"':
		s, err := stringValue(raw)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("malformed list: %w", err)
		}
		if len(items) == 0 {
			return nil, errors.New("list must not be empty")
		}
		out := make([]string, 0, len(items))
		for i, it := range items {
			s, err := stringValue(it)
			if err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("must be a string or a list of strings, got %s", jsonKind(raw))
	}
}

func stringValue(raw json.RawMessage) (string, error) {
	if firstByte(raw) != '"' {
		return "", fmt.Errorf("must be a string, got %s", jsonKind(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

type member struct {
	key string
	val json.RawMessage
}

// objectMembers returns the members of a JSON object in document order. It
// rejects duplicate names, which encoding/json would silently collapse and
// which AWS refuses. top also rejects trailing data after the object.
func objectMembers(raw []byte, top bool) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("must be a JSON object, got %s", jsonKind(raw))
	}
	var out []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("malformed JSON: %w", err)
		}
		key := tok.(string) // the decoder guarantees object keys are strings
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("malformed JSON in %q: %w", key, err)
		}
		if seen[key] {
			return nil, fmt.Errorf("duplicate element %q", key)
		}
		seen[key] = true
		out = append(out, member{key: key, val: val})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if top {
		if _, err := dec.Token(); err != io.EOF {
			return nil, errors.New("malformed JSON: unexpected data after the document")
		}
	}
	return out, nil
}

func firstByte(raw []byte) byte {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

func jsonKind(raw []byte) string {
	switch c := firstByte(raw); {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "a list"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "a number"
	default:
		return "malformed JSON"
	}
}
