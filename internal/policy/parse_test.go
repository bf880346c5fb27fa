package policy

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	const okStmt = `{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"}`
	tests := []struct {
		name      string
		doc       string
		statement int
		field     string
		msg       string // substring of the message
	}{
		{"malformed json", `{"Version":`, -1, "", "malformed JSON"},
		{"not an object", `[]`, -1, "", "must be a JSON object"},
		{"trailing data", `{"Statement":` + okStmt + `} {}`, -1, "", "unexpected data"},
		{"unknown doc field", `{"Version":"2012-10-17","Statements":[` + okStmt + `]}`, -1, "Statements", "unknown element"},
		{"lower-case element name", `{"version":"2012-10-17","Statement":[` + okStmt + `]}`, -1, "version", "unknown element"},
		{"bad version", `{"Version":"2012-10-18","Statement":[` + okStmt + `]}`, -1, "Version", "unsupported version"},
		{"empty version", `{"Version":"","Statement":[` + okStmt + `]}`, -1, "Version", "unsupported version"},
		{"version not a string", `{"Version":2012,"Statement":[` + okStmt + `]}`, -1, "Version", "must be a string, got a number"},
		{"missing statement", `{"Version":"2012-10-17"}`, -1, "Statement", "missing"},
		{"empty statement list", `{"Statement":[]}`, -1, "Statement", "at least one"},
		{"statement a string", `{"Statement":"x"}`, -1, "Statement", "got a string"},
		{"duplicate doc element", `{"Statement":[` + okStmt + `],"Statement":[` + okStmt + `]}`, -1, "", "duplicate element"},
		{"statement not object", `{"Statement":[` + okStmt + `, 3]}`, 1, "", "statement must be an object"},
		{"unknown statement field", `{"Statement":[` + okStmt + `,{"Sid":"X","Effect":"Allow","Action":"a:b","Resource":"*","Resources":"*"}]}`, 1, "Resources", "unknown element"},
		{"missing effect", `{"Statement":[{"Sid":"NoEffect","Action":"a:b","Resource":"*"}]}`, 0, "Effect", "missing"},
		{"bad effect", `{"Statement":[{"Effect":"allow","Action":"a:b","Resource":"*"}]}`, 0, "Effect", `must be "Allow" or "Deny"`},
		{"effect not a string", `{"Statement":[{"Effect":true,"Action":"a:b","Resource":"*"}]}`, 0, "Effect", "got a boolean"},
		{"action and notaction", `{"Statement":[` + okStmt + `,` + okStmt + `,{"Sid":"Both","Effect":"Allow","Action":"a:b","NotAction":"c:d","Resource":"*"}]}`, 2, "Action", "cannot both"},
		{"neither action", `{"Statement":[{"Effect":"Allow","Resource":"*"}]}`, 0, "Action", "one of Action or NotAction"},
		{"resource and notresource", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","NotResource":"x"}]}`, 0, "Resource", "cannot both"},
		{"neither resource", `{"Statement":[{"Effect":"Allow","Action":"a:b"}]}`, 0, "Resource", "one of Resource or NotResource"},
		{"principal and notprincipal", `{"Statement":[{"Effect":"Allow","Action":"a:b","Principal":"*","NotPrincipal":"*"}]}`, 0, "Principal", "cannot both"},
		{"action a number", `{"Statement":[{"Effect":"Allow","Action":3,"Resource":"*"}]}`, 0, "Action", "got a number"},
		{"action list with number", `{"Statement":[{"Effect":"Allow","Action":["a:b",3],"Resource":"*"}]}`, 0, "Action", "item 1"},
		{"empty action list", `{"Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}`, 0, "Action", "must not be empty"},
		{"resource an object", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":{}}]}`, 0, "Resource", "got an object"},
		{"sid not a string", `{"Statement":[{"Sid":1,"Effect":"Allow","Action":"a:b","Resource":"*"}]}`, 0, "Sid", "must be a string"},
		{"duplicate statement element", `{"Statement":[{"Effect":"Allow","Effect":"Deny","Action":"a:b","Resource":"*"}]}`, 0, "", "duplicate element"},
		{"principal string not star", `{"Statement":[{"Effect":"Allow","Action":"a:b","Principal":"arn:aws:iam::123456789012:root"}]}`, 0, "Principal", `must be "*"`},
		{"principal unknown type", `{"Statement":[{"Effect":"Allow","Action":"a:b","Principal":{"Amazon":"x"}}]}`, 0, "Principal", "unknown principal type"},
		{"principal empty object", `{"Statement":[{"Effect":"Allow","Action":"a:b","Principal":{}}]}`, 0, "Principal", "at least one"},
		{"unknown operator", `{"Statement":[{"Sid":"C","Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"StringEqualz":{"k":"v"}}}]}`, 0, "Condition", `unknown condition operator "StringEqualz"`},
		{"unknown set operator", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"ForSomeValues:StringEquals":{"k":"v"}}}]}`, 0, "Condition", "unknown set operator"},
		{"null ifexists", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"NullIfExists":{"k":"true"}}}]}`, 0, "Condition", "Null cannot take IfExists"},
		{"condition not an object", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":[]}]}`, 0, "Condition", "must be an object"},
		{"condition keys not an object", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"StringEquals":"x"}}]}`, 0, "Condition", "must be an object of condition keys"},
		{"condition value object", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"StringEquals":{"k":{"a":1}}}}]}`, 0, "Condition", "string, number or boolean"},
		{"condition value null", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"StringEquals":{"k":null}}}]}`, 0, "Condition", "got null"},
		{"condition empty list", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"StringEquals":{"k":[]}}}]}`, 0, "Condition", "must not be empty"},
		{"bad cidr", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/33"}}}]}`, 0, "Condition", "not a CIDR"},
		{"bad number", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"NumericLessThan":{"k":"ten"}}}]}`, 0, "Condition", "not a number"},
		{"bad date", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"DateLessThan":{"aws:CurrentTime":"yesterday"}}}]}`, 0, "Condition", "not an ISO 8601 date"},
		{"bad null value", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"Null":{"k":"maybe"}}}]}`, 0, "Condition", "true or false"},
		{"bad base64", `{"Statement":[{"Effect":"Allow","Action":"a:b","Resource":"*","Condition":{"BinaryEquals":{"k":"!!"}}}]}`, 0, "Condition", "not base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse accepted %s: %+v", tt.doc, d)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *ParseError", err, err)
			}
			if pe.Statement != tt.statement || pe.Field != tt.field {
				t.Errorf("statement, field = %d, %q; want %d, %q (%v)", pe.Statement, pe.Field, tt.statement, tt.field, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message %q does not contain %q", err.Error(), tt.msg)
			}
		})
	}
}

func TestParseErrorMessageNamesStatementAndSid(t *testing.T) {
	_, err := Parse([]byte(`{"Statement":[
		{"Effect":"Allow","Action":"a:b","Resource":"*"},
		{"Effect":"Allow","Action":"a:b","Resource":"*"},
		{"Sid":"X","Effect":"Allow","Action":3,"Resource":"*"}]}`))
	want := `policy: statement 2 (Sid "X"): field "Action": must be a string or a list of strings, got a number`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant    %s", err, want)
	}
	_, err = Parse([]byte(`{"Version":"1.0","Statement":[]}`))
	want = `policy: field "Version": unsupported version "1.0" (want "2012-10-17" or "2008-10-17")`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant    %s", err, want)
	}
}

func TestParseNormalises(t *testing.T) {
	d, err := Parse([]byte(`{
		"Version": "2012-10-17",
		"Id": "doc-1",
		"Statement": {
			"Sid": "S",
			"Effect": "Deny",
			"Action": "rds-db:connect",
			"NotResource": ["a", "b"],
			"Condition": {
				"NumericLessThan": {"k1": 10, "k2": [1.50, "2"]},
				"Bool": {"aws:SecureTransport": false}
			}
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Document{Version: Version2012, ID: "doc-1", Statements: []Statement{{
		Sid: "S", Effect: Deny, Action: []string{"rds-db:connect"}, NotResource: []string{"a", "b"},
		Condition: []Condition{
			{Operator: "NumericLessThan", Key: "k1", Values: []string{"10"}},
			{Operator: "NumericLessThan", Key: "k2", Values: []string{"1.50", "2"}},
			{Operator: "Bool", Key: "aws:SecureTransport", Values: []string{"false"}},
		},
	}}}
	// The parsed operator cache is an implementation detail; compare the
	// documented fields only.
	for i := range d.Statements[0].Condition {
		d.Statements[0].Condition[i].spec = opSpec{}
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("got  %+v\nwant %+v", d, want)
	}
}

func TestParseAcceptsTrustPolicyWithoutResource(t *testing.T) {
	d, err := Parse([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
		"Principal":{"AWS":["123456789012","arn:aws:iam::123456789012:user/a"],"Federated":"cognito-identity.amazonaws.com","Service":"ec2.amazonaws.com","CanonicalUser":"79a5"},
		"Action":"sts:AssumeRole"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	p := d.Statements[0].Principal
	if len(p.AWS) != 2 || p.Federated[0] != "cognito-identity.amazonaws.com" || p.Service[0] != "ec2.amazonaws.com" || p.CanonicalUser[0] != "79a5" {
		t.Errorf("principal = %+v", p)
	}
	if err := d.ValidateTrust(); err != nil {
		t.Errorf("ValidateTrust: %v", err)
	}
	var pe *ParseError
	if err := d.ValidateIdentity(); !errors.As(err, &pe) || pe.Field != "Principal" || pe.Statement != 0 {
		t.Errorf("ValidateIdentity = %v, want a Principal error for statement 0", err)
	}
	id, _ := Parse([]byte(`{"Statement":{"Effect":"Allow","Action":"a:b","Resource":"*"}}`))
	if err := id.ValidateIdentity(); err != nil {
		t.Errorf("ValidateIdentity on an identity policy: %v", err)
	}
	if err := id.ValidateTrust(); !errors.As(err, &pe) || pe.Field != "Principal" {
		t.Errorf("ValidateTrust on an identity policy = %v, want a Principal error", err)
	}
}

func TestMarshalCanonical(t *testing.T) {
	src := `{"Statement":{"Effect":"Allow","Principal":"*","Action":["a:b"],"Condition":{"Bool":{"k":true},"StringLike":{"x":["1","2"]}}},"Id":"i","Version":"2008-10-17"}`
	d, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Version":"2008-10-17","Id":"i","Statement":[{"Effect":"Allow","Principal":"*","Action":"a:b","Condition":{"Bool":{"k":"true"},"StringLike":{"x":["1","2"]}}}]}`
	if string(got) != want {
		t.Errorf("marshal = %s\nwant      %s", got, want)
	}
	back, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("round trip changed the document:\n%+v\n%+v", back, d)
	}
}

func TestDocumentUnmarshalJSONIsStrict(t *testing.T) {
	var wrapper struct {
		Doc Document `json:"doc"`
	}
	err := json.Unmarshal([]byte(`{"doc":{"Statement":{"Effect":"Allow","Action":"a:b","Resource":"*","Extra":1}}}`), &wrapper)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Field != "Extra" {
		t.Fatalf("err = %v, want a ParseError for Extra", err)
	}
	if err := json.Unmarshal([]byte(`{"doc":{"Statement":{"Effect":"Allow","Action":"a:b","Resource":"*"}}}`), &wrapper); err != nil {
		t.Fatal(err)
	}
	if wrapper.Doc.Statements[0].Action[0] != "a:b" {
		t.Errorf("embedded document not decoded: %+v", wrapper.Doc)
	}
}
