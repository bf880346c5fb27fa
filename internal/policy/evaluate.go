package policy

import (
	"fmt"
	"sort"
	"strings"
)

// Decision is the outcome of an evaluation, named as by
// `aws iam simulate-principal-policy`.
type Decision string

// The three decisions.
const (
	Allowed      Decision = "allowed"
	ExplicitDeny Decision = "explicitDeny"
	ImplicitDeny Decision = "implicitDeny"
)

// Layer names the kind of policy a statement came from, for explanations.
type Layer string

// Policy layers in the order AWS combines them.
const (
	LayerIdentity Layer = "identity"
	LayerBoundary Layer = "boundary"
	LayerSession  Layer = "session"
	LayerTrust    Layer = "trust"
)

// Policy is a document with the name it is reported under, such as
// "user/alice/inline/extra" or a managed policy name or ARN.
type Policy struct {
	ID  string
	Doc *Document
}

// Set is every policy that applies to one principal's request.
type Set struct {
	Identity []Policy // the user's inline and attached policies and its groups', or the role's
	Boundary []Policy // permissions boundary; empty means none is set
	Session  []Policy // inline session policy and session PolicyArns; empty means none
}

// PrincipalRef identifies the caller for Principal and NotPrincipal matching
// in trust policies.
type PrincipalRef struct {
	// AWS lists every ARN and account id the caller is known by, e.g. the
	// session ARN, the role ARN and the account id for a role session.
	AWS       []string
	Federated string // OIDC/SAML provider ARN or issuer host-path
	Service   string // e.g. "ec2.amazonaws.com"
}

// Request is what is being decided.
type Request struct {
	Action    string        // e.g. "rds-db:connect"
	Resource  string        // e.g. "arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ABC/alice"
	Context   Context       // condition keys and variable values
	Principal *PrincipalRef // nil except for trust (and other resource-based) policies
}

// Match identifies a statement that took part in a decision. The JSON form
// is the MatchedStatements entry of `iamdb policy simulate --output json`.
type Match struct {
	SourcePolicyID string `json:"SourcePolicyId"`
	Sid            string `json:"Sid"`
	Index          int    `json:"-"` // 0-based position in the document's Statement list
	Effect         Effect `json:"-"`
	Layer          Layer  `json:"-"`
}

// Result is a decision with what it rests on. Its JSON form is the output of
// `iamdb policy simulate --output json`.
type Result struct {
	Decision Decision `json:"EvalDecision"`
	// Matched holds the Deny statements that applied for ExplicitDeny, the
	// Allow statements of every layer for Allowed, and nothing for
	// ImplicitDeny.
	Matched []Match `json:"MatchedStatements"`
	// ResolvedVariables maps each policy variable met during evaluation to
	// its value, its default, or Missing.
	ResolvedVariables map[string]string `json:"ResolvedVariables"`
	// Explanation is a one-line account for operators and audit events. It
	// may name policies and values, so it must not be sent to clients.
	Explanation string `json:"-"`
}

// Evaluate decides req against the policies in set the way AWS does: an
// applicable Deny in any policy wins; otherwise an identity policy must
// allow, and so must the permissions boundary and the session policies when
// there are any; otherwise the request is implicitly denied.
func Evaluate(set Set, req Request) Result {
	ev := evaluator{req: &req, ex: expander{ctx: req.Context, resolved: map[string]string{}}}
	idAllow, idDeny := ev.layer(LayerIdentity, set.Identity)
	bAllow, bDeny := ev.layer(LayerBoundary, set.Boundary)
	sAllow, sDeny := ev.layer(LayerSession, set.Session)

	res := Result{Matched: []Match{}, ResolvedVariables: ev.ex.resolved}
	denies := concat(idDeny, bDeny, sDeny)
	what := fmt.Sprintf("%s on %s", req.Action, req.Resource)
	var why string
	switch {
	case len(denies) > 0:
		res.Decision, res.Matched = ExplicitDeny, denies
		why = "denied by " + describe(denies)
	case len(idAllow) == 0:
		res.Decision = ImplicitDeny
		why = "no statement allowed it in the identity policies"
	case len(set.Boundary) > 0 && len(bAllow) == 0:
		res.Decision = ImplicitDeny
		why = "allowed by " + describe(idAllow) + " but no statement allowed it in the permissions boundary"
	case len(set.Session) > 0 && len(sAllow) == 0:
		res.Decision = ImplicitDeny
		why = "allowed by " + describe(concat(idAllow, bAllow)) + " but no statement allowed it in the session policies"
	default:
		res.Decision, res.Matched = Allowed, concat(idAllow, bAllow, sAllow)
		why = "allowed by " + describe(res.Matched)
	}
	res.Explanation = ev.explain(res.Decision, what, why)
	return res
}

// TrustPolicyID is the SourcePolicyID EvaluateTrust reports: a role has one
// trust policy, which has no name of its own.
const TrustPolicyID = "trust-policy"

// EvaluateTrust decides whether req.Principal may perform req.Action
// (sts:AssumeRole, sts:AssumeRoleWithWebIdentity, sts:TagSession, ...) under a
// role's trust policy. Only statements whose Principal or NotPrincipal
// matches the caller apply; a statement naming no principal never does.
func EvaluateTrust(doc *Document, req Request) Result {
	ev := evaluator{req: &req, ex: expander{ctx: req.Context, resolved: map[string]string{}}, trust: true}
	allow, deny := ev.layer(LayerTrust, []Policy{{ID: TrustPolicyID, Doc: doc}})
	res := Result{Matched: []Match{}, ResolvedVariables: ev.ex.resolved}
	what := req.Action
	if req.Principal != nil {
		what = fmt.Sprintf("%s by %s", req.Action, req.Principal)
	}
	var why string
	switch {
	case len(deny) > 0:
		res.Decision, res.Matched = ExplicitDeny, deny
		why = "denied by " + describe(deny)
	case len(allow) > 0:
		res.Decision, res.Matched = Allowed, allow
		why = "allowed by " + describe(allow)
	default:
		res.Decision = ImplicitDeny
		why = "no statement of the trust policy allowed it"
	}
	res.Explanation = ev.explain(res.Decision, what, why)
	return res
}

// String renders the caller for explanations.
func (p *PrincipalRef) String() string {
	var parts []string
	if len(p.AWS) > 0 {
		parts = append(parts, "AWS "+strings.Join(p.AWS, ","))
	}
	if p.Federated != "" {
		parts = append(parts, "Federated "+p.Federated)
	}
	if p.Service != "" {
		parts = append(parts, "Service "+p.Service)
	}
	if len(parts) == 0 {
		return "anonymous"
	}
	return strings.Join(parts, " ")
}

type evaluator struct {
	req      *Request
	ex       expander
	trust    bool
	problems []string
}

func (ev *evaluator) layer(layer Layer, policies []Policy) (allow, deny []Match) {
	for _, p := range policies {
		if p.Doc == nil {
			continue
		}
		ev.ex.enabled = p.Doc.Version == Version2012
		for i := range p.Doc.Statements {
			st := &p.Doc.Statements[i]
			applies, err := ev.applies(st)
			if err != nil {
				// Only documents built in code can carry values Parse
				// would reject. Fail closed: such a Deny applies and such
				// an Allow does not.
				ev.problems = append(ev.problems, fmt.Sprintf("policy %q statement %d: %v", p.ID, i, err))
				applies = st.Effect == Deny
			}
			if !applies {
				continue
			}
			m := Match{SourcePolicyID: p.ID, Sid: st.Sid, Index: i, Effect: st.Effect, Layer: layer}
			if st.Effect == Deny {
				deny = append(deny, m)
			} else {
				allow = append(allow, m)
			}
		}
	}
	return allow, deny
}

// applies reports whether every element of the statement matches the
// request; cheap checks run first so that variables are only resolved for
// statements about the requested action.
func (ev *evaluator) applies(st *Statement) (bool, error) {
	if st.Effect != Allow && st.Effect != Deny {
		return false, fmt.Errorf("invalid Effect %q", st.Effect)
	}
	switch {
	case st.Principal != nil:
		if ev.req.Principal == nil || !principalMatches(st.Principal, ev.req.Principal) {
			return false, nil
		}
	case st.NotPrincipal != nil:
		if ev.req.Principal == nil || principalMatches(st.NotPrincipal, ev.req.Principal) {
			return false, nil
		}
	case ev.trust:
		return false, nil
	}
	switch {
	case st.Action != nil:
		if !anyAction(st.Action, ev.req.Action) {
			return false, nil
		}
	case st.NotAction != nil:
		if anyAction(st.NotAction, ev.req.Action) {
			return false, nil
		}
	default:
		return false, nil
	}
	switch {
	case st.Resource != nil:
		if !ev.anyResource(st.Resource, false) {
			return false, nil
		}
	case st.NotResource != nil:
		if !ev.anyResource(st.NotResource, true) {
			return false, nil
		}
	}
	for i := range st.Condition {
		ok, err := evalCondition(&st.Condition[i], ev.req.Context, &ev.ex)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

func anyAction(patterns []string, action string) bool {
	for _, p := range patterns {
		if globString(p, action, true) {
			return true
		}
	}
	return false
}

// anyResource matches the requested resource against Resource entries, or
// with negate against NotResource entries, where the statement applies only
// when no entry matches. Resource matching is a case-sensitive glob over the
// whole ARN: a '*' may span ':' and '/', as in "dbuser:*/*". An entry whose
// variable has no value matches nothing; in NotResource that leaves the
// statement undecidable, so it does not apply.
func (ev *evaluator) anyResource(entries []string, negate bool) bool {
	for _, e := range entries {
		var m bool
		if ev.ex.hasVariable(e) {
			p, ok := ev.ex.expand(e)
			if !ok {
				if negate {
					return false
				}
				continue
			}
			m = globRunes(p, ev.req.Resource, false)
		} else {
			m = globString(e, ev.req.Resource, false)
		}
		if m {
			return !negate
		}
	}
	return negate
}

// principalMatches follows the Principal element rules: "*" is everyone;
// an account id or arn:PARTITION:iam::ACCOUNT:root stands for every principal
// of that account; other ARNs, federated providers and services must match
// exactly.
func principalMatches(p *Principal, who *PrincipalRef) bool {
	if p.Wildcard {
		return true
	}
	for _, a := range p.AWS {
		if a == "*" {
			if len(who.AWS) > 0 {
				return true
			}
			continue
		}
		if acct, ok := accountPrincipal(a); ok {
			for _, c := range who.AWS {
				if accountOf(c) == acct {
					return true
				}
			}
			continue
		}
		for _, c := range who.AWS {
			if c == a {
				return true
			}
		}
	}
	for _, f := range p.Federated {
		if who.Federated != "" && (f == who.Federated || f == "*") {
			return true
		}
	}
	for _, s := range p.Service {
		if who.Service != "" && (strings.EqualFold(s, who.Service) || s == "*") {
			return true
		}
	}
	return false
}

// accountPrincipal recognises the two spellings of "the whole account":
// "123456789012" and "arn:aws:iam::123456789012:root".
func accountPrincipal(s string) (string, bool) {
	if isAccountID(s) {
		return s, true
	}
	parts := strings.Split(s, ":")
	if len(parts) == 6 && parts[0] == "arn" && parts[2] == "iam" && parts[5] == "root" && isAccountID(parts[4]) {
		return parts[4], true
	}
	return "", false
}

// accountOf returns the account of a caller identity: an account id itself
// or the account field of an ARN.
func accountOf(s string) string {
	if isAccountID(s) {
		return s
	}
	parts := strings.SplitN(s, ":", 6)
	if len(parts) == 6 && parts[0] == "arn" {
		return parts[4]
	}
	return ""
}

func isAccountID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (ev *evaluator) explain(d Decision, what, why string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: %s", d, what, why)
	if len(ev.ex.resolved) > 0 {
		names := make([]string, 0, len(ev.ex.resolved))
		for k := range ev.ex.resolved {
			names = append(names, k)
		}
		sort.Strings(names)
		b.WriteString("; variables:")
		for _, k := range names {
			fmt.Fprintf(&b, " ${%s}=%s", k, ev.ex.resolved[k])
		}
	}
	for _, p := range ev.problems {
		b.WriteString("; error: ")
		b.WriteString(p)
	}
	return b.String()
}

// describe names the deciding statements: layer, policy and Sid or index.
func describe(ms []Match) string {
	parts := make([]string, 0, len(ms))
	for _, m := range ms {
		s := fmt.Sprintf("%s policy %q statement %d", m.Layer, m.SourcePolicyID, m.Index)
		if m.Sid != "" {
			s += fmt.Sprintf(" (Sid %q)", m.Sid)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func concat(lists ...[]Match) []Match {
	var out []Match
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}
