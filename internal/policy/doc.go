// Package policy parses AWS IAM policy documents and evaluates requests
// against them exactly as AWS does, explaining every decision.
//
// iamdb decides `rds-db:connect` on
// arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID/DBUSER with this package,
// and the STS API decides sts:AssumeRole* with it against role trust
// policies. Policies written for Amazon RDS must keep working unchanged, so
// the rules below follow the IAM User Guide rather than intuition.
//
// # Reading documents
//
// [Parse] is strict. Unknown or duplicate elements, wrong JSON types, a
// missing or misspelt Effect, both or neither of Action/NotAction, both
// Resource and NotResource, unknown condition operators and condition values
// that can never compare (a bad CIDR, date or number) are rejected with a
// [*ParseError] that names the 0-based statement index, its Sid and the
// element:
//
//	policy: statement 2 (Sid "X"): field "Action": must be a string or a list of strings, got a number
//
// Every "string or list" element accepts both forms and is stored as a
// slice; condition values may be JSON strings, numbers or booleans and are
// stored as their text. Resource may be left out only by statements that
// name a Principal (trust policies). [Document.MarshalJSON] writes a
// canonical form that parses back to an equal Document; FuzzParse checks it.
//
// # Deciding
//
// [Evaluate] combines the layers of a [Set] in AWS order:
//
//  1. an applicable Deny in any identity, boundary or session policy gives
//     [ExplicitDeny];
//  2. otherwise an identity policy must Allow;
//  3. a non-empty permissions boundary must also Allow;
//  4. non-empty session policies must also Allow;
//  5. anything else is [ImplicitDeny].
//
// A statement applies when its action, resource, principal (trust policies
// only) and every condition match:
//
//   - Actions match case-insensitively with '*' and '?' wildcards, service
//     prefix included ("rds-db:*", "*"). NotAction applies to every action
//     not listed; NotResource likewise.
//   - Resources match case-sensitively, as a glob over the whole ARN: a '*'
//     may span ':' and '/', so "dbuser:*/*" covers every database user.
//   - Conditions: operators in a block, and keys under an operator, are
//     ANDed; the values of one key are ORed. Keys are case-insensitive,
//     values case-sensitive unless the operator says otherwise.
//   - A key absent from the request makes a condition false, except that
//     negated operators (StringNotEquals, NotIpAddress, ArnNotLike, ...) are
//     then true, ...IfExists is true, ForAllValues is true and ForAnyValue is
//     false; Null tests presence itself. This is the documented AWS
//     behaviour (IAM User Guide, "Condition operators").
//   - ForAllValues holds when every request value matches some policy value;
//     ForAnyValue when at least one does. ArnLike/ArnEquals compare the six
//     colon-separated ARN parts one by one.
//
// # Policy variables
//
// In Version 2012-10-17 documents, ${...} in Resource entries and in the
// values of string, ARN and Bool conditions is replaced from the request
// [Context]: ${aws:username}, ${aws:PrincipalTag/dbuser}, ${iamdb:Database}
// or any key present. ${aws:x, 'default'} supplies a default; ${*}, ${?} and
// ${$} are literal characters that never act as wildcards; substituted
// values are literal too. A variable with no value makes its Resource entry
// match nothing and its condition false, so the statement does not apply.
// Documents with Version 2008-10-17 or no Version take ${...} literally.
// Every variable met is reported in [Result.ResolvedVariables], with
// [Missing] for those without a value.
//
// # Explaining
//
// A [Result] names the statements that decided it ([Match]: policy id, Sid,
// index, layer) and carries a one-line Explanation for operators and audit
// events, e.g.
//
//	implicitDeny: rds-db:connect on arn:aws:rds-db:...:dbuser:db-ABC/bob: allowed by identity policy "dev" statement 0 but no statement allowed it in the permissions boundary; variables: ${aws:username}=bob
//
// The explanation names policies and values and is never sent to database
// clients. Result marshals to the `iamdb policy simulate --output json`
// shape: EvalDecision, MatchedStatements, ResolvedVariables.
//
// # Trust policies
//
// [EvaluateTrust] evaluates a role's trust policy for a [PrincipalRef]:
// "*" matches anyone; an account id or arn:aws:iam::ACCOUNT:root matches
// every principal of that account; other AWS ARNs, Federated providers and
// Service names match exactly. Statements without a principal never apply.
//
// The golden cases in testdata/golden pin all of the above, including every
// example policy of the RDS documentation ("Creating and using an IAM policy
// for IAM database access").
package policy
