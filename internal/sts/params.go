package sts

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
)

// Limits of session parameters, as AWS documents them.
const (
	MinSessionDuration         = 900 * time.Second
	DefaultRoleSessionDuration = time.Hour
	// RoleChainingMaxDuration caps sessions a role session obtains.
	RoleChainingMaxDuration = time.Hour
	// User sessions (GetSessionToken).
	DefaultUserSessionDuration = 12 * time.Hour
	MaxUserSessionDuration     = 36 * time.Hour

	MaxSessionPolicySize = 2048
	MaxPolicyARNs        = 10
	MaxSessionTags       = 50
	// packedLimit is the budget of the packed (compressed) session policy
	// and tags; PackedPolicySize reports the share used, in percent.
	packedLimit = 2048
)

var (
	sourceIdentityRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	externalIDRE     = regexp.MustCompile(`^[\w+=,.@:/-]+$`)
)

// durationParam reads DurationSeconds: def when absent, else whole seconds
// from MinSessionDuration to max. overMax is the message when above max.
func durationParam(f Form, def, max time.Duration, overMax string) (time.Duration, *apiError) {
	raw, ok := f["DurationSeconds"]
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
	if err != nil {
		return 0, validation("1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must be a whole number of seconds", shortValue(raw))
	}
	d := time.Duration(n) * time.Second
	if n < int64(MinSessionDuration/time.Second) {
		return 0, validation("1 validation error detected: Value '%d' at 'durationSeconds' failed to satisfy constraint: Member must have value greater than or equal to %d", n, int(MinSessionDuration/time.Second))
	}
	if n > int64(MaxUserSessionDuration/time.Second) || d > max {
		return 0, validation("%s", overMax)
	}
	return d, nil
}

// sessionPolicies are the optional Policy and PolicyArns of a request.
type sessionPolicies struct {
	inline string
	arns   []string
}

// parseSessionPolicies validates the inline session policy (IAM grammar,
// identity-policy form) and the managed policy ARNs (at most 10, each an
// existing policy).
func (s *Service) parseSessionPolicies(c *call) (sessionPolicies, *apiError) {
	var sp sessionPolicies
	if raw, ok := c.form["Policy"]; ok {
		if len(raw) == 0 || len(raw) > MaxSessionPolicySize {
			return sp, validation("1 validation error detected: Value at 'policy' failed to satisfy constraint: Member must have length between 1 and %d", MaxSessionPolicySize)
		}
		doc, err := policy.Parse([]byte(raw))
		if err == nil {
			err = doc.ValidateIdentity()
		}
		if err != nil {
			return sp, newError(CodeMalformedPolicyDocument, http.StatusBadRequest, "The session policy is not valid: %s", err)
		}
		sp.inline = raw
	}
	arns, err := c.form.Members("PolicyArns", "arn")
	if err != nil {
		return sp, validation("%s", err)
	}
	if len(arns) > MaxPolicyARNs {
		return sp, validation("1 validation error detected: Value at 'policyArns' failed to satisfy constraint: Member must have length less than or equal to %d", MaxPolicyARNs)
	}
	for _, a := range arns {
		parsed, err := identity.ParseARN(a)
		if err != nil || parsed.Service != "iam" || parsed.Type != "policy" {
			return sp, validation("%s is not a managed policy ARN (arn:%s:iam::ACCOUNT:policy/NAME)", shortValue(a), s.partition)
		}
		if _, err := s.store.GetPolicy(c.r.Context(), a); err != nil {
			if errors.Is(err, identity.ErrNotFound) {
				return sp, validation("Policy %s does not exist or is not attachable.", a)
			}
			return sp, internal(err)
		}
		sp.arns = append(sp.arns, a)
	}
	return sp, nil
}

// requestTags reads Tags.member.N.Key/Value and TransitiveTagKeys.member.N:
// at most 50 tags, AWS's key and value rules, keys unique regardless of
// case, and every transitive key among the tags.
func requestTags(f Form) (map[string]string, []string, *apiError) {
	pairs, err := f.Pairs("Tags", "Key", "Value")
	if err != nil {
		return nil, nil, validation("%s", err)
	}
	if len(pairs) > MaxSessionTags {
		return nil, nil, validation("1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to %d", MaxSessionTags)
	}
	tags := map[string]string{}
	lower := map[string]bool{}
	for _, p := range pairs {
		if lower[strings.ToLower(p[0])] {
			return nil, nil, validation("Duplicate tag keys found. Please note that Tag keys are case insensitive.")
		}
		lower[strings.ToLower(p[0])] = true
		tags[p[0]] = p[1]
	}
	if err := identity.ValidateTags(tags); err != nil {
		return nil, nil, validation("%s", strings.TrimPrefix(err.Error(), identity.ErrInvalidInput.Error()+": "))
	}
	transitive, err := f.Members("TransitiveTagKeys", "")
	if err != nil {
		return nil, nil, validation("%s", err)
	}
	if len(transitive) > MaxSessionTags {
		return nil, nil, validation("1 validation error detected: Value at 'transitiveTagKeys' failed to satisfy constraint: Member must have length less than or equal to %d", MaxSessionTags)
	}
	for i, k := range transitive {
		found := ""
		for tk := range tags {
			if strings.EqualFold(tk, k) {
				found = tk
			}
		}
		if found == "" {
			return nil, nil, validation("The transitive tag key %s is not among the session tags; every TransitiveTagKeys entry must also be passed in Tags.", shortValue(k))
		}
		transitive[i] = found
	}
	return tags, dedupe(transitive), nil
}

// packedPolicySize is the share, in percent, of the packed-policy budget
// the session policy, policy ARNs and session tags use, and whether they
// fit. AWS compresses them into a binary format of its own; iamdb
// measures gzip, which behaves the same way: repetitive text packs well.
func packedPolicySize(sp sessionPolicies, tags map[string]string) (int, bool) {
	if sp.inline == "" && len(sp.arns) == 0 && len(tags) == 0 {
		return 0, true
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	keys := sortedKeys(tags)
	doc, _ := json.Marshal(struct {
		P string
		A []string
		T []string
	}{compactJSON(sp.inline), sp.arns, flattenTags(keys, tags)})
	_, _ = zw.Write(doc)
	_ = zw.Close()
	// The gzip header and trailer are not part of the packed size.
	n := max(buf.Len()-18, 1)
	pct := (n*100 + packedLimit - 1) / packedLimit
	return pct, pct <= 100
}

func compactJSON(s string) string {
	if s == "" {
		return ""
	}
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		return s
	}
	return b.String()
}

func flattenTags(keys []string, tags map[string]string) []string {
	out := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		out = append(out, k, tags[k])
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func dedupe(list []string) []string {
	seen := map[string]bool{}
	out := list[:0]
	for _, v := range list {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// shortValue shows a client-supplied value in a message without letting it
// flood the response.
func shortValue(s string) string {
	const limit = 128
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
