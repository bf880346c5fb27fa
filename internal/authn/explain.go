package authn

import (
	"context"

	"github.com/iamdb/iamdb/internal/policy"
	"github.com/iamdb/iamdb/internal/sigv4"
)

// Explanation is every check of a login, for an operator: unlike
// Authenticate it does not stop at the first failure.
type Explanation struct {
	Token     *sigv4.Token  // nil when the token does not parse
	Checks    []sigv4.Check // format, scope, time, endpoint, user, key, signature
	Principal *Principal    // set once the key is known
	Resource  string
	Policy    *policy.Result // set when every token check passed and the instance has a resource id
	Accepted  bool
}

// Explain runs the checks of Authenticate and reports each of them.
func (a *Authenticator) Explain(ctx context.Context, req Request) *Explanation {
	a.maybeRefresh(ctx)
	target := sigv4.Target{Region: req.Instance.Region, Endpoints: req.Instance.Endpoints, DBUser: req.DBUser}
	tok, checks := a.verifier.Explain(ctx, req.Token, target)
	ex := &Explanation{Token: tok, Checks: checks}
	if tok == nil {
		return ex
	}
	if creds, err := a.lookupKey(ctx, tok.AccessKeyID); err == nil {
		ex.Principal, _ = creds.Owner.(*Principal)
	}
	for _, c := range checks {
		if c.Err != nil {
			return ex
		}
	}
	if checks[len(checks)-1].Step != "signature" || ex.Principal == nil || req.Instance.ResourceID == "" {
		return ex
	}
	ex.Resource = req.Instance.ResourceARN(req.DBUser)
	res, err := a.authorize(ctx, ex.Principal, ex.Resource, req)
	if err != nil {
		return ex
	}
	ex.Policy = &res
	ex.Accepted = res.Decision == policy.Allowed
	return ex
}
