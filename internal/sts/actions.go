package sts

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
)

// STS actions as policies name them.
const (
	ActionAssumeRole                = "sts:AssumeRole"
	ActionAssumeRoleWithWebIdentity = "sts:AssumeRoleWithWebIdentity"
	ActionTagSession                = "sts:TagSession"
	ActionSetSourceIdentity         = "sts:SetSourceIdentity"
)

func (s *Service) getCallerIdentity(_ context.Context, c *call) (any, error) {
	p := c.caller.principal
	var resp getCallerIdentityResponse
	resp.Xmlns = Namespace
	resp.Result.Arn, resp.Result.UserID, resp.Result.Account = p.ARN, p.PrincipalID, p.AccountID
	resp.Metadata = c.metadata()
	return resp, nil
}

func (s *Service) getSessionToken(ctx context.Context, c *call) (any, error) {
	p := c.caller.principal
	if c.caller.session != nil {
		return nil, accessDenied("Cannot call GetSessionToken with session credentials")
	}
	if p.Type != authn.TypeIAMUser {
		return nil, accessDenied("GetSessionToken is only for IAM users")
	}
	d, aerr := durationParam(c.form, DefaultUserSessionDuration, MaxUserSessionDuration,
		fmt.Sprintf("1 validation error detected: Value at 'durationSeconds' failed to satisfy constraint: Member must have value less than or equal to %d", int(MaxUserSessionDuration/time.Second)))
	if aerr != nil {
		return nil, aerr
	}
	sess, creds, err := s.store.CreateSession(ctx, identity.Session{
		AccountID:         p.AccountID,
		UserID:            p.PrincipalID,
		Expiration:        s.now().Add(d),
		ParentAccessKeyID: c.caller.accessKeyID,
	})
	if err != nil {
		return nil, internal(fmt.Errorf("create session for %s: %w", p.ARN, err))
	}
	c.rec.Issued = &IssuedSession{AccessKeyID: sess.AccessKeyID, ARN: p.ARN, PrincipalID: p.PrincipalID, Expiration: sess.Expiration}
	var resp getSessionTokenResponse
	resp.Xmlns = Namespace
	resp.Result.Credentials = credentialsOf(creds)
	resp.Metadata = c.metadata()
	return resp, nil
}

// assumeRequest is what AssumeRole and AssumeRoleWithWebIdentity have in
// common once their credentials are checked.
type assumeRequest struct {
	role        identity.Role
	sessionName string
	duration    time.Duration
	policies    sessionPolicies
	// tags are the effective session tags (request tags plus tags carried
	// by role chaining); requestTags only those of the request.
	tags           map[string]string
	requestTags    map[string]string
	transitive     []string
	sourceIdentity string
	parentKey      string
	federated      string // provider ARN
	subject        string
	packed         int
}

func (s *Service) assumeRole(ctx context.Context, c *call) (any, error) {
	role, aerr := s.roleParam(ctx, c, ActionAssumeRole)
	if aerr != nil {
		return nil, aerr
	}
	req := assumeRequest{role: role, parentKey: c.caller.accessKeyID}
	if req.sessionName, aerr = sessionNameParam(c.form); aerr != nil {
		return nil, aerr
	}
	chained := c.caller.roleSession()
	max, over := role.MaxSessionDuration, "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
	if chained {
		max, over = min(max, RoleChainingMaxDuration), "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining."
	}
	if req.duration, aerr = durationParam(c.form, min(DefaultRoleSessionDuration, max), max, over); aerr != nil {
		return nil, aerr
	}
	if req.policies, aerr = s.parseSessionPolicies(c); aerr != nil {
		return nil, aerr
	}
	var transitive []string
	if req.requestTags, transitive, aerr = requestTags(c.form); aerr != nil {
		return nil, aerr
	}
	externalID, hasExternal := c.form["ExternalId"]
	if hasExternal && (len(externalID) < 2 || len(externalID) > 1224 || !externalIDRE.MatchString(externalID)) {
		return nil, validation("1 validation error detected: Value at 'externalId' failed to satisfy constraint: Member must have length between 2 and 1224 and match [\\w+=,.@:/-]*")
	}
	requested, hasSource := c.form["SourceIdentity"]
	if hasSource && !sourceIdentityRE.MatchString(requested) {
		return nil, validation("1 validation error detected: Value at 'sourceIdentity' failed to satisfy constraint: Member must have length between 2 and 64 and match [\\w+=,.@-]*")
	}

	// Role chaining: transitive tags and the source identity carry over
	// and cannot be replaced.
	req.tags = maps.Clone(req.requestTags)
	req.transitive = transitive
	req.sourceIdentity = requested
	if prev := c.caller.session; chained {
		for _, k := range prev.TransitiveTagKeys {
			for rk := range req.requestTags {
				if strings.EqualFold(rk, k) {
					return nil, validation("The tag %s is a transitive tag of the calling session and cannot be set again.", shortValue(rk))
				}
			}
			if v, ok := prev.SessionTags[k]; ok {
				req.tags[k] = v
				req.transitive = append(req.transitive, k)
			}
		}
		req.transitive = dedupe(req.transitive)
		if prev.SourceIdentity != "" {
			if hasSource && requested != prev.SourceIdentity {
				return nil, accessDenied("The source identity %s of the calling session cannot be changed.", prev.SourceIdentity).
					withDetail(fmt.Sprintf("requested source identity %q differs from the calling session's %q", requested, prev.SourceIdentity))
			}
			req.sourceIdentity = prev.SourceIdentity
		}
	}
	var ok bool
	if req.packed, ok = packedPolicySize(req.policies, req.tags); !ok {
		return nil, newError(CodePackedPolicyTooLarge, 400, "Packed size of the session policy and session tags consumes %d%% of allotted space, please use a smaller policy or fewer tags.", req.packed)
	}

	// Authorization: the caller's identity policies and the role's trust
	// policy must both allow every action the request implies.
	p := c.caller.principal
	pc := s.requestContext(c, p.Context(s.now()))
	setRequestKeys(pc, req)
	if hasExternal {
		pc.Set("sts:ExternalId", externalID)
	}
	actions := impliedActions(ActionAssumeRole, req.requestTags, hasSource)
	if err := s.allowedByIdentity(ctx, p, role, actions, pc); err != nil {
		return nil, err
	}
	ref := &policy.PrincipalRef{AWS: []string{p.ARN, s.rootARN(p), p.AccountID}}
	if p.RoleARN != "" {
		ref.AWS = append(ref.AWS, p.RoleARN)
	}
	if err := s.allowedByTrust(role, actions, pc, ref, p.ARN); err != nil {
		return nil, err
	}

	sess, creds, err := s.issue(ctx, c, req)
	if err != nil {
		return nil, err
	}
	var resp assumeRoleResponse
	resp.Xmlns = Namespace
	resp.Result.Credentials = credentialsOf(creds)
	resp.Result.AssumedRoleUser = assumedRoleUserXML{AssumedRoleID: role.ID + ":" + sess.SessionName, Arn: c.rec.Issued.ARN}
	if req.packed > 0 {
		resp.Result.PackedPolicySize = &req.packed
	}
	resp.Result.SourceIdentity = sess.SourceIdentity
	resp.Metadata = c.metadata()
	return resp, nil
}

// roleParam resolves RoleArn. An unknown role is refused like a denied
// one, as AWS does, so that callers cannot probe for role names.
func (s *Service) roleParam(ctx context.Context, c *call, act string) (identity.Role, *apiError) {
	raw, ok := c.form["RoleArn"]
	if !ok || raw == "" {
		return identity.Role{}, newError(CodeMissingParameter, 400, "The request must contain the parameter RoleArn")
	}
	if len(raw) < 20 || len(raw) > 2048 {
		return identity.Role{}, validation("1 validation error detected: Value at 'roleArn' failed to satisfy constraint: Member must have length between 20 and 2048")
	}
	arn, err := identity.ParseARN(raw)
	if err != nil || arn.Service != "iam" || arn.Type != "role" || identity.ValidateAccountID(arn.Account) != nil {
		return identity.Role{}, validation("%s is not a role ARN (arn:%s:iam::ACCOUNT:role/NAME)", shortValue(raw), s.partition)
	}
	who := "An anonymous caller"
	if c.caller != nil {
		who = "User: " + c.caller.principal.ARN
	}
	denied := accessDenied("%s is not authorized to perform: %s on resource: %s", who, act, raw)
	if arn.Partition != s.partition {
		return identity.Role{}, denied.withDetail("role ARN partition " + arn.Partition + " is not " + s.partition)
	}
	role, err := s.store.GetRole(ctx, arn.Account, arn.Name)
	if errors.Is(err, identity.ErrNotFound) {
		return identity.Role{}, denied.withDetail("no role " + raw)
	}
	if err != nil {
		return identity.Role{}, internal(err)
	}
	if role.ARN() != raw {
		return identity.Role{}, denied.withDetail("role " + arn.Name + " has ARN " + role.ARN() + ", not " + raw)
	}
	return role, nil
}

func sessionNameParam(f Form) (string, *apiError) {
	name, ok := f["RoleSessionName"]
	if !ok {
		return "", newError(CodeMissingParameter, 400, "The request must contain the parameter RoleSessionName")
	}
	if err := identity.ValidateSessionName(name); err != nil {
		return "", validation("1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must have length between 2 and 64 and satisfy regular expression pattern: [\\w+=,.@-]*", shortValue(name))
	}
	return name, nil
}

// impliedActions lists what a request needs permission for: the assume
// action, sts:TagSession when it passes tags, sts:SetSourceIdentity when it
// sets a source identity.
func impliedActions(base string, requestTags map[string]string, sourceIdentity bool) []string {
	acts := []string{base}
	if len(requestTags) > 0 {
		acts = append(acts, ActionTagSession)
	}
	if sourceIdentity {
		acts = append(acts, ActionSetSourceIdentity)
	}
	return acts
}

// requestContext adds the connection's condition keys.
func (s *Service) requestContext(c *call, pc policy.Context) policy.Context {
	if pc == nil {
		pc = policy.Context{}
		pc.Set("aws:CurrentTime", s.now().UTC().Format(time.RFC3339))
		pc.Set("aws:EpochTime", strconv.FormatInt(s.now().Unix(), 10))
	}
	if c.rec.SourceIP != "" {
		pc.Set("aws:SourceIp", c.rec.SourceIP)
	}
	pc.Set("aws:SecureTransport", strconv.FormatBool(c.r.TLS != nil))
	if ua := c.r.UserAgent(); ua != "" {
		pc.Set("aws:UserAgent", ua)
	}
	return pc
}

// setRequestKeys adds the keys describing the session asked for:
// aws:RequestTag/*, aws:TagKeys, sts:TransitiveTagKeys,
// sts:RoleSessionName, sts:SourceIdentity.
func setRequestKeys(pc policy.Context, req assumeRequest) {
	for k, v := range req.requestTags {
		pc.Set("aws:RequestTag/"+k, v)
	}
	if len(req.requestTags) > 0 {
		pc.Set("aws:TagKeys", sortedKeys(req.requestTags)...)
	}
	if len(req.transitive) > 0 {
		pc.Set("sts:TransitiveTagKeys", req.transitive...)
	}
	pc.Set("sts:RoleSessionName", req.sessionName)
	if req.sourceIdentity != "" {
		pc.Set("sts:SourceIdentity", req.sourceIdentity)
	}
}

// allowedByIdentity evaluates the caller's identity policies (with its
// boundary and, for a role session, its session policies) for each action
// on the role.
func (s *Service) allowedByIdentity(ctx context.Context, p *authn.Principal, role identity.Role, actions []string, pc policy.Context) error {
	set, err := authn.LoadPolicySet(ctx, s.store, p)
	if err != nil {
		return internal(err)
	}
	for _, act := range actions {
		res := policy.Evaluate(*set, policy.Request{Action: act, Resource: role.ARN(), Context: pc})
		if res.Decision != policy.Allowed {
			return accessDenied("User: %s is not authorized to perform: %s on resource: %s", p.ARN, act, role.ARN()).
				withDetail("identity policies: " + res.Explanation)
		}
	}
	return nil
}

// allowedByTrust evaluates the role's trust policy for each action.
func (s *Service) allowedByTrust(role identity.Role, actions []string, pc policy.Context, ref *policy.PrincipalRef, who string) error {
	doc, err := policy.Parse([]byte(role.TrustPolicy))
	if err != nil {
		return internal(fmt.Errorf("trust policy of role %s does not parse: %w", role.ARN(), err))
	}
	for _, act := range actions {
		res := policy.EvaluateTrust(doc, policy.Request{Action: act, Resource: role.ARN(), Context: pc, Principal: ref})
		if res.Decision != policy.Allowed {
			return accessDenied("%s is not authorized to perform: %s on resource: %s", who, act, role.ARN()).
				withDetail("trust policy of " + role.ARN() + ": " + res.Explanation)
		}
	}
	return nil
}

func (s *Service) rootARN(p *authn.Principal) string {
	part := p.Partition
	if part == "" {
		part = s.partition
	}
	return "arn:" + part + ":iam::" + p.AccountID + ":root"
}

// issue creates the role session and records it on the call.
func (s *Service) issue(ctx context.Context, c *call, req assumeRequest) (identity.Session, identity.Credentials, error) {
	sess, creds, err := s.store.CreateSession(ctx, identity.Session{
		AccountID:         req.role.AccountID,
		Expiration:        s.now().Add(req.duration),
		RoleID:            req.role.ID,
		RoleARN:           req.role.ARN(),
		SessionName:       req.sessionName,
		SourceIdentity:    req.sourceIdentity,
		SessionTags:       req.tags,
		TransitiveTagKeys: req.transitive,
		SessionPolicy:     req.policies.inline,
		PolicyARNs:        req.policies.arns,
		ParentAccessKeyID: req.parentKey,
		FederatedProvider: req.federated,
		FederatedSubject:  req.subject,
	})
	if errors.Is(err, identity.ErrNotFound) {
		// The role was deleted between the checks and now.
		return sess, creds, accessDenied("Not authorized to perform %s on resource: %s", ActionAssumeRole, req.role.ARN()).withDetail(err.Error())
	}
	if err != nil {
		return sess, creds, internal(fmt.Errorf("create session of %s: %w", req.role.ARN(), err))
	}
	c.rec.Issued = &IssuedSession{
		AccessKeyID:       sess.AccessKeyID,
		ARN:               identity.AssumedRoleARN(req.role.Partition, req.role.AccountID, req.role.Name, sess.SessionName),
		PrincipalID:       req.role.ID + ":" + sess.SessionName,
		Expiration:        sess.Expiration,
		RoleARN:           req.role.ARN(),
		SessionName:       sess.SessionName,
		SourceIdentity:    sess.SourceIdentity,
		SessionTags:       maps.Clone(sess.SessionTags),
		FederatedProvider: sess.FederatedProvider,
		FederatedSubject:  sess.FederatedSubject,
	}
	return sess, creds, nil
}

func credentialsOf(c identity.Credentials) credentialsXML {
	return credentialsXML{
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey,
		SessionToken: c.SessionToken, Expiration: awsTime(c.Expiration),
	}
}
