package audit

import (
	"maps"
	"strings"
	"time"

	"github.com/iamdb/iamdb/internal/sts"
)

// STSEvent is the audit event of one call to the STS-compatible API, from
// the record the API produces for every call (sts.Config.OnCall).
// Credentials issued are named by their access key id only; the web
// identity token and any request signature are never recorded.
func STSEvent(rec sts.CallRecord) *Event {
	e := &Event{
		EventSource:     SourceSTS,
		EventName:       rec.Action,
		RequestID:       rec.RequestID,
		SourceIPAddress: rec.SourceIP,
		UserAgent:       rec.UserAgent,
		ErrorCode:       rec.ErrorCode,
		ErrorMessage:    rec.ErrorMessage,
	}
	if e.EventName == "" {
		e.EventName = "Unknown"
	}
	if !rec.Time.IsZero() {
		e.EventTime = FormatTime(rec.Time)
	}
	switch {
	case rec.Caller != nil:
		e.UserIdentity = Identity(rec.Caller)
	case rec.Issued != nil && rec.Issued.FederatedProvider != "":
		// AssumeRoleWithWebIdentity is unsigned: the caller is the
		// federated subject, as CloudTrail records it.
		e.UserIdentity = &UserIdentity{
			Type:             TypeWebIdentityUser,
			PrincipalID:      rec.Issued.FederatedProvider + ":" + rec.Issued.FederatedSubject,
			UserName:         rec.Issued.FederatedSubject,
			IdentityProvider: rec.Issued.FederatedProvider,
		}
	default:
		e.UserIdentity = &UserIdentity{Type: TypeUnknown, AccessKeyID: rec.AccessKeyID}
	}
	if e.UserIdentity.AccessKeyID == "" && rec.Caller != nil {
		e.UserIdentity.AccessKeyID = rec.AccessKeyID
	}
	if len(rec.Parameters) > 0 {
		e.RequestParameters = map[string]any{}
		for k, v := range rec.Parameters {
			if !safeParameter(k) {
				continue
			}
			e.RequestParameters[lowerFirst(k)] = v
		}
	}
	if is := rec.Issued; is != nil {
		re := map[string]any{
			"credentials": map[string]any{
				"accessKeyId": is.AccessKeyID,
				"expiration":  is.Expiration.UTC().Format(time.RFC3339),
			},
		}
		if is.RoleARN != "" {
			re["assumedRoleUser"] = map[string]any{"arn": is.ARN, "assumedRoleId": is.PrincipalID}
		} else {
			re["federatedUser"] = map[string]any{"arn": is.ARN, "federatedUserId": is.PrincipalID}
		}
		if is.SourceIdentity != "" {
			re["sourceIdentity"] = is.SourceIdentity
		}
		if len(is.SessionTags) > 0 {
			re["sessionTags"] = maps.Clone(is.SessionTags)
		}
		if is.FederatedProvider != "" {
			re["provider"] = is.FederatedProvider
			re["subjectFromWebIdentityToken"] = is.FederatedSubject
		}
		e.ResponseElements = re
	}
	return e
}

// safeParameter keeps credentials and signatures out of the record even
// if a request carried them as form parameters (query-string signing).
func safeParameter(k string) bool {
	l := strings.ToLower(k)
	switch {
	case strings.HasPrefix(l, "x-amz-"), l == "webidentitytoken", l == "samlassertion", l == "tokencode",
		strings.Contains(l, "secret"), strings.Contains(l, "password"), strings.Contains(l, "signature"):
		return false
	}
	return true
}

func lowerFirst(s string) string {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return s
	}
	return string(s[0]+'a'-'A') + s[1:]
}
