package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

func mustParse(t testing.TB, src string) *Document {
	t.Helper()
	d, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const testARN = "arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ORDERS0000000000000000000/alice"

func TestExplanationNamesTheFailingLayer(t *testing.T) {
	allow := mustParse(t, `{"Version":"2012-10-17","Statement":[{"Sid":"Self","Effect":"Allow","Action":"rds-db:connect","Resource":"arn:aws:rds-db:*:*:dbuser:*/${aws:username}"}]}`)
	s3 := mustParse(t, `{"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}`)
	deny := mustParse(t, `{"Statement":[{"Sid":"NoAlice","Effect":"Deny","Action":"rds-db:*","Resource":"*"}]}`)
	req := Request{Action: "rds-db:connect", Resource: testARN, Context: Context{"aws:username": {"alice"}}}
	tests := []struct {
		name string
		set  Set
		want []string
	}{
		{"no identity allow", Set{Identity: []Policy{{"user/alice/inline/s3", s3}}},
			[]string{"implicitDeny: rds-db:connect on " + testARN, "no statement allowed it in the identity policies"}},
		{"boundary", Set{Identity: []Policy{{"self", allow}}, Boundary: []Policy{{"b-s3", s3}}},
			[]string{"implicitDeny", `allowed by identity policy "self" statement 0 (Sid "Self")`, "permissions boundary", "${aws:username}=alice"}},
		{"session", Set{Identity: []Policy{{"self", allow}}, Session: []Policy{{"session", s3}}},
			[]string{"implicitDeny", "session policies"}},
		{"explicit deny", Set{Identity: []Policy{{"self", allow}}, Boundary: []Policy{{"b-deny", deny}}},
			[]string{"explicitDeny", `denied by boundary policy "b-deny" statement 0 (Sid "NoAlice")`}},
		{"allowed", Set{Identity: []Policy{{"self", allow}}},
			[]string{"allowed: rds-db:connect", `identity policy "self" statement 0 (Sid "Self")`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Evaluate(tt.set, req)
			for _, w := range tt.want {
				if !strings.Contains(res.Explanation, w) {
					t.Errorf("explanation %q lacks %q", res.Explanation, w)
				}
			}
		})
	}
}

func TestResultJSONShape(t *testing.T) {
	d := mustParse(t, `{"Version":"2012-10-17","Statement":[{"Sid":"Self","Effect":"Allow","Action":"rds-db:connect","Resource":"arn:aws:rds-db:*:*:dbuser:*/${aws:username}"}]}`)
	res := Evaluate(Set{Identity: []Policy{{"user/alice/inline/extra", d}}},
		Request{Action: "rds-db:connect", Resource: testARN, Context: Context{"aws:username": {"alice"}}})
	got, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"EvalDecision":"allowed","MatchedStatements":[{"SourcePolicyId":"user/alice/inline/extra","Sid":"Self"}],"ResolvedVariables":{"aws:username":"alice"}}`
	if string(got) != want {
		t.Errorf("json = %s\nwant   %s", got, want)
	}
	denied, _ := json.Marshal(Evaluate(Set{}, Request{Action: "rds-db:connect", Resource: testARN}))
	if want := `{"EvalDecision":"implicitDeny","MatchedStatements":[],"ResolvedVariables":{}}`; string(denied) != want {
		t.Errorf("json = %s\nwant   %s", denied, want)
	}
}

func TestContextIsCaseInsensitive(t *testing.T) {
	c := Context{}
	c.Set("aws:PrincipalTag/Team", "payments")
	c.Set("AWS:principaltag/team", "orders") // replaces, not duplicates
	if len(c) != 1 {
		t.Fatalf("context has %d keys, want 1: %v", len(c), c)
	}
	v, ok := c.Get("aws:principaltag/TEAM")
	if !ok || len(v) != 1 || v[0] != "orders" {
		t.Errorf("Get = %v, %v", v, ok)
	}
	if _, ok := c.Get("aws:username"); ok {
		t.Error("absent key reported present")
	}
	c.Set("empty")
	if _, ok := c.Get("empty"); ok {
		t.Error("a key without values must count as absent")
	}
}

func TestBuiltDocumentWithBadValueFailsClosed(t *testing.T) {
	// Documents assembled in code skip Parse's checks; a value that cannot
	// be compared must neither grant access nor switch a Deny off.
	bad := []Condition{{Operator: "NumericLessThan", Key: "k", Values: []string{"ten"}}}
	allow := &Document{Version: Version2012, Statements: []Statement{{Effect: Allow, Action: []string{"*"}, Resource: []string{"*"}, Condition: bad}}}
	deny := &Document{Version: Version2012, Statements: []Statement{{Effect: Deny, Action: []string{"*"}, Resource: []string{"*"}, Condition: bad}}}
	star := &Document{Statements: []Statement{{Effect: Allow, Action: []string{"*"}, Resource: []string{"*"}}}}
	req := Request{Action: "rds-db:connect", Resource: testARN, Context: Context{"k": {"1"}}}
	if res := Evaluate(Set{Identity: []Policy{{"a", allow}}}, req); res.Decision != ImplicitDeny || !strings.Contains(res.Explanation, "error:") {
		t.Errorf("bad Allow: %s / %s", res.Decision, res.Explanation)
	}
	if res := Evaluate(Set{Identity: []Policy{{"s", star}, {"d", deny}}}, req); res.Decision != ExplicitDeny {
		t.Errorf("bad Deny: %s / %s", res.Decision, res.Explanation)
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		fold, want bool
	}{
		{"", "", false, true},
		{"*", "", false, true},
		{"a*", "a", false, true},
		{"*a", "ba", false, true},
		{"*a", "ab", false, false},
		{"a?c", "abc", false, true},
		{"a?c", "ac", false, false},
		{"a*b*c", "axxbyyc", false, true},
		{"a*b*c", "axxbyy", false, false},
		{"é?", "éü", false, true}, // '?' is one character, not one byte
		{"RDS-DB:*", "rds-db:connect", true, true},
		{"RDS-DB:*", "rds-db:connect", false, false},
		{"**x", "x", false, true},
	}
	for _, tt := range tests {
		if got := globString(tt.pattern, tt.s, tt.fold); got != tt.want {
			t.Errorf("globString(%q, %q, %v) = %v", tt.pattern, tt.s, tt.fold, got)
		}
		if got := globRunes(plainPattern(tt.pattern), tt.s, tt.fold); got != tt.want {
			t.Errorf("globRunes(%q, %q, %v) = %v", tt.pattern, tt.s, tt.fold, got)
		}
	}
}
