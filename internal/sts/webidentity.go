package sts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
)

// MaxWebIdentityToken is AWS's limit on WebIdentityToken.
const MaxWebIdentityToken = 20000

// TagsClaim is the claim AWS reads session tags from.
const TagsClaim = "https://aws.amazon.com/tags"

// signingAlgorithms are the JWS algorithms accepted from identity
// providers: asymmetric only, since a shared secret could not be a JWKS.
var signingAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// webClaims are the claims read besides the registered ones.
type webClaims struct {
	AMR  json.RawMessage `json:"amr"`
	Tags *struct {
		PrincipalTags     map[string]json.RawMessage `json:"principal_tags"`
		TransitiveTagKeys []string                   `json:"transitive_tag_keys"`
		SourceIdentity    string                     `json:"source_identity"`
	} `json:"https://aws.amazon.com/tags"`
}

func invalidToken(format string, args ...any) *apiError {
	return newError(CodeInvalidIdentityToken, http.StatusBadRequest, format, args...)
}

func (s *Service) assumeRoleWithWebIdentity(ctx context.Context, c *call) (any, error) {
	role, aerr := s.roleParam(ctx, c, ActionAssumeRoleWithWebIdentity)
	if aerr != nil {
		return nil, aerr
	}
	req := assumeRequest{role: role}
	if req.sessionName, aerr = sessionNameParam(c.form); aerr != nil {
		return nil, aerr
	}
	if req.duration, aerr = durationParam(c.form, min(DefaultRoleSessionDuration, role.MaxSessionDuration), role.MaxSessionDuration,
		"The requested DurationSeconds exceeds the MaxSessionDuration set for this role."); aerr != nil {
		return nil, aerr
	}
	if req.policies, aerr = s.parseSessionPolicies(c); aerr != nil {
		return nil, aerr
	}
	raw, ok := c.form["WebIdentityToken"]
	if !ok || raw == "" {
		return nil, newError(CodeMissingParameter, 400, "The request must contain the parameter WebIdentityToken")
	}
	if len(raw) > MaxWebIdentityToken {
		return nil, validation("1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length less than or equal to %d", MaxWebIdentityToken)
	}

	tok, err := jwt.ParseSigned(raw, signingAlgorithms)
	if err != nil {
		return nil, invalidToken("The ID Token provided is not a valid JWT. (You may see this error if you sent an Access Token)").withDetail(err.Error())
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil || unverified.Issuer == "" {
		return nil, invalidToken("The ID Token provided is not a valid JWT: it has no iss claim.")
	}
	prov, err := s.store.GetOIDCProvider(ctx, role.AccountID, unverified.Issuer)
	if errors.Is(err, identity.ErrNotFound) {
		return nil, invalidToken("No OpenIDConnect provider found in your account for %s", shortValue(unverified.Issuer))
	}
	if err != nil {
		return nil, internal(err)
	}
	var std jwt.Claims
	var extra webClaims
	if aerr := s.verifyToken(ctx, prov, tok, &std, &extra); aerr != nil {
		return nil, aerr
	}
	// Registered claims: exp is required, as AWS requires it.
	if std.Expiry == nil {
		return nil, invalidToken("The web identity token has no exp claim.")
	}
	if std.Subject == "" {
		return nil, invalidToken("The web identity token has no sub claim.")
	}
	now := s.now()
	if err := std.ValidateWithLeeway(jwt.Expected{Time: now}, s.skew); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return nil, newError(CodeExpiredTokenException, http.StatusBadRequest, "Token expired: current date/time %s must be before the expiration date/time %s",
				awsTime(now), awsTime(std.Expiry.Time()))
		default:
			return nil, invalidToken("The web identity token is not valid yet: its nbf or iat is in the future.").withDetail(err.Error())
		}
	}
	audience := ""
	for _, a := range std.Audience {
		if slices.Contains(prov.Audiences, a) {
			audience = a
			break
		}
	}
	if audience == "" {
		return nil, invalidToken("Incorrect token audience").
			withDetail(fmt.Sprintf("token audiences %q, provider %s accepts %q", []string(std.Audience), prov.URL, prov.Audiences))
	}

	// Session tags and source identity from the tags claim.
	if extra.Tags != nil {
		tags, transitive, aerr := claimTags(extra.Tags.PrincipalTags, extra.Tags.TransitiveTagKeys)
		if aerr != nil {
			return nil, aerr
		}
		req.requestTags, req.transitive = tags, transitive
		if si := extra.Tags.SourceIdentity; si != "" {
			if !sourceIdentityRE.MatchString(si) {
				return nil, newError(CodeIDPRejectedClaim, http.StatusForbidden, "The source_identity claim must be 2 to 64 characters of letters, digits and + = , . @ _ -.")
			}
			req.sourceIdentity = si
		}
	}
	req.tags = req.requestTags
	if req.tags == nil {
		req.tags = map[string]string{}
	}
	var fits bool
	if req.packed, fits = packedPolicySize(req.policies, req.tags); !fits {
		return nil, newError(CodePackedPolicyTooLarge, 400, "Packed size of the session policy and session tags consumes %d%% of allotted space, please use a smaller policy or fewer tags.", req.packed)
	}
	req.federated, req.subject = prov.ARN(), std.Subject

	// Trust policy: Federated principal = the provider's ARN, conditions
	// on HOST_PATH:sub / :aud / :amr.
	hostPath := identity.IssuerHostPath(prov.URL)
	pc := s.requestContext(c, nil)
	setRequestKeys(pc, req)
	pc.Set(hostPath+":sub", std.Subject)
	pc.Set(hostPath+":aud", audience)
	if amr := stringList(extra.AMR); len(amr) > 0 {
		pc.Set(hostPath+":amr", amr...)
	}
	pc.Set("aws:FederatedProvider", prov.ARN())
	actions := impliedActions(ActionAssumeRoleWithWebIdentity, req.requestTags, req.sourceIdentity != "")
	ref := &policy.PrincipalRef{Federated: prov.ARN()}
	if err := s.allowedByTrust(role, actions, pc, ref, "Federated user "+hostPath+" subject "+shortValue(std.Subject)); err != nil {
		if ae := asAPIError(err); ae.Code == CodeAccessDenied {
			// AWS says no more to an unauthenticated caller.
			return nil, accessDenied("Not authorized to perform %s", ActionAssumeRoleWithWebIdentity).withDetail(ae.Detail)
		}
		return nil, err
	}

	sess, creds, err := s.issue(ctx, c, req)
	if err != nil {
		return nil, err
	}
	var resp assumeRoleWithWebIdentityResponse
	resp.Xmlns = Namespace
	resp.Result.Credentials = credentialsOf(creds)
	resp.Result.SubjectFromWebIdentityToken = std.Subject
	resp.Result.AssumedRoleUser = assumedRoleUserXML{AssumedRoleID: role.ID + ":" + sess.SessionName, Arn: c.rec.Issued.ARN}
	if req.packed > 0 {
		resp.Result.PackedPolicySize = &req.packed
	}
	resp.Result.Provider = std.Issuer
	resp.Result.Audience = audience
	resp.Result.SourceIdentity = sess.SourceIdentity
	resp.Metadata = c.metadata()
	return resp, nil
}

// claimTags converts principal_tags (tag → [value], as AWS's claim has it)
// and transitive_tag_keys into session tags.
func claimTags(principal map[string]json.RawMessage, transitive []string) (map[string]string, []string, *apiError) {
	rejected := func(format string, args ...any) *apiError {
		return newError(CodeIDPRejectedClaim, http.StatusForbidden, format, args...)
	}
	tags := map[string]string{}
	lower := map[string]bool{}
	for k, raw := range principal {
		var v string
		var list []string
		switch {
		case json.Unmarshal(raw, &list) == nil && len(list) == 1:
			v = list[0]
		case json.Unmarshal(raw, &v) == nil:
		default:
			return nil, nil, rejected("The session tag %s in the %s claim must have exactly one string value.", shortValue(k), TagsClaim)
		}
		if lower[strings.ToLower(k)] {
			return nil, nil, rejected("Duplicate tag keys found in the %s claim. Please note that Tag keys are case insensitive.", TagsClaim)
		}
		lower[strings.ToLower(k)] = true
		tags[k] = v
	}
	if len(tags) > MaxSessionTags {
		return nil, nil, rejected("The %s claim has %d session tags; at most %d are allowed.", TagsClaim, len(tags), MaxSessionTags)
	}
	if err := identity.ValidateTags(tags); err != nil {
		return nil, nil, rejected("Invalid session tag in the %s claim: %s", TagsClaim, strings.TrimPrefix(err.Error(), identity.ErrInvalidInput.Error()+": "))
	}
	var keys []string
	for _, k := range transitive {
		found := ""
		for tk := range tags {
			if strings.EqualFold(tk, k) {
				found = tk
			}
		}
		if found == "" {
			return nil, nil, rejected("The transitive tag key %s is not among the principal_tags of the %s claim.", shortValue(k), TagsClaim)
		}
		keys = append(keys, found)
	}
	return tags, dedupe(keys), nil
}

// stringList reads a claim that is a string or a list of strings.
func stringList(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var one string
	if json.Unmarshal(raw, &one) == nil && one != "" {
		return []string{one}
	}
	return nil
}

// verifyToken checks the token's signature with the provider's keys and
// decodes its claims. An unknown key id refreshes the keys once, so a
// provider's key rotation is picked up without waiting for the cache.
func (s *Service) verifyToken(ctx context.Context, prov identity.OIDCProvider, tok *jwt.JSONWebToken, dest ...any) *apiError {
	if len(tok.Headers) != 1 {
		return invalidToken("The web identity token must carry exactly one signature.")
	}
	kid := tok.Headers[0].KeyID
	for attempt := 0; attempt < 2; attempt++ {
		set, err := s.jwks.get(ctx, prov, attempt > 0)
		if err != nil {
			return newError(CodeIDPCommunicationError, http.StatusBadRequest, "Could not obtain the signing keys of the identity provider %s.", prov.URL).withDetail(err.Error())
		}
		candidates := set.Keys
		if kid != "" {
			candidates = set.Key(kid)
		}
		for _, k := range candidates {
			if k.Use != "" && k.Use != "sig" {
				continue
			}
			if err := tok.Claims(k.Key, dest...); err == nil {
				return nil
			}
		}
		if kid == "" || len(candidates) > 0 {
			break // the key was there and did not verify: refetching will not help
		}
	}
	return invalidToken("The web identity token's signature could not be verified with the keys of %s.", prov.URL).
		withDetail(fmt.Sprintf("no key of %s (kid %q) verifies the token", prov.URL, kid))
}

// jwksCache keeps each provider's key set for a while.
type jwksCache struct {
	client *http.Client
	ttl    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]jwksEntry
}

type jwksEntry struct {
	set     *jose.JSONWebKeySet
	fetched time.Time
}

// minRefresh bounds forced refreshes: tokens with made-up key ids must not
// turn iamdb into a request amplifier against the provider.
const minRefresh = 10 * time.Second

// maxJWKSSize bounds what is read from a provider.
const maxJWKSSize = 1 << 20

func newJWKSCache(client *http.Client, ttl time.Duration, now func() time.Time) *jwksCache {
	return &jwksCache{client: client, ttl: ttl, now: now, entries: map[string]jwksEntry{}}
}

func (j *jwksCache) get(ctx context.Context, prov identity.OIDCProvider, refresh bool) (*jose.JSONWebKeySet, error) {
	key := prov.AccountID + "|" + prov.URL + "|" + prov.JWKSURL + "|" + prov.JWKSFile
	now := j.now()
	j.mu.Lock()
	e, ok := j.entries[key]
	j.mu.Unlock()
	if ok && now.Sub(e.fetched) < j.ttl && (!refresh || now.Sub(e.fetched) < minRefresh) {
		return e.set, nil
	}
	set, err := j.load(ctx, prov)
	if err != nil {
		if ok {
			// Keep serving the keys we have while the provider is away.
			return e.set, nil
		}
		return nil, err
	}
	j.mu.Lock()
	j.entries[key] = jwksEntry{set: set, fetched: now}
	j.mu.Unlock()
	return set, nil
}

// load reads the provider's keys: from JWKSFile, from JWKSURL, or from the
// jwks_uri of the issuer's discovery document.
func (j *jwksCache) load(ctx context.Context, prov identity.OIDCProvider) (*jose.JSONWebKeySet, error) {
	var raw []byte
	var err error
	switch {
	case prov.JWKSFile != "":
		raw, err = os.ReadFile(prov.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("reading JWKS file of %s: %w", prov.URL, err)
		}
	case prov.JWKSURL != "":
		raw, err = j.fetch(ctx, prov.JWKSURL)
	default:
		var disc []byte
		disc, err = j.fetch(ctx, strings.TrimRight(prov.URL, "/")+"/.well-known/openid-configuration")
		if err != nil {
			return nil, err
		}
		var doc struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(disc, &doc); err != nil || doc.JWKSURI == "" {
			return nil, fmt.Errorf("discovery document of %s has no jwks_uri", prov.URL)
		}
		raw, err = j.fetch(ctx, doc.JWKSURI)
	}
	if err != nil {
		return nil, err
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("JWKS of %s does not parse: %w", prov.URL, err)
	}
	return &set, nil
}

func (j *jwksCache) fetch(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: HTTP %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", url, err)
	}
	if len(body) > maxJWKSSize {
		return nil, fmt.Errorf("fetch %s: more than %d bytes", url, maxJWKSSize)
	}
	return body, nil
}
