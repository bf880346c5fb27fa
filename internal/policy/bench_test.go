package policy

import "testing"

// BenchmarkEvaluate is one rds-db:connect decision as the data plane makes
// it: a user with a group policy, an attached ABAC policy using
// ${aws:PrincipalTag/dbuser}, an inline policy with a Deny and a source-IP
// condition, and a permissions boundary.
func BenchmarkEvaluate(b *testing.B) {
	set := Set{
		Identity: []Policy{
			{"group/developers/db-readonly", mustParse(b, `{"Version":"2012-10-17","Statement":[
				{"Sid":"ReadOnly","Effect":"Allow","Action":"rds-db:connect","Resource":"arn:aws:rds-db:us-east-1:123456789012:dbuser:*/readonly"}]}`)},
			{"db-connect-self", mustParse(b, `{"Version":"2012-10-17","Statement":[
				{"Sid":"ConnectAsTaggedUser","Effect":"Allow","Action":["rds-db:connect"],
				 "Resource":["arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ORDERS0000000000000000000/${aws:PrincipalTag/dbuser}"]}]}`)},
			{"user/alice/inline/office", mustParse(b, `{"Version":"2012-10-17","Statement":[
				{"Sid":"DenyOutsideOffice","Effect":"Deny","Action":"rds-db:*","Resource":"*",
				 "Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}},
				{"Sid":"DenyAdmin","Effect":"Deny","Action":"rds-db:connect","Resource":"arn:aws:rds-db:*:*:dbuser:*/admin"}]}`)},
		},
		Boundary: []Policy{
			{"boundary-rds-only", mustParse(b, `{"Version":"2012-10-17","Statement":[
				{"Sid":"RDSOnly","Effect":"Allow","Action":"rds-db:*","Resource":"arn:aws:rds-db:*:123456789012:dbuser:*/*"}]}`)},
		},
	}
	req := Request{
		Action:   "rds-db:connect",
		Resource: "arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ORDERS0000000000000000000/app_ro",
		Context: Context{
			"aws:username":            {"alice"},
			"aws:PrincipalTag/dbuser": {"app_ro"},
			"aws:SourceIp":            {"10.1.2.3"},
			"aws:SecureTransport":     {"true"},
			"iamdb:Database":          {"orders"},
		},
	}
	if res := Evaluate(set, req); res.Decision != Allowed {
		b.Fatalf("decision = %s: %s", res.Decision, res.Explanation)
	}
	b.ReportAllocs()
	for b.Loop() {
		Evaluate(set, req)
	}
}
