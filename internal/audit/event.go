package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"time"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/policy"
)

// EventVersion is the CloudTrail record version the events follow.
const EventVersion = "1.08"

// Event sources: the database listeners, the STS-compatible API and the
// management of identities.
const (
	SourceDB  = "rds-db.iamdb"
	SourceSTS = "sts.iamdb"
	SourceIAM = "iam.iamdb"
)

// Event names of the database listeners. The STS and management events
// are named after the API call (AssumeRole, CreateAccessKey, …).
const (
	NameConnect    = "connect"
	NameDisconnect = "disconnect"
	NameStatement  = "statement"
)

// User identity types besides authn.TypeIAMUser and authn.TypeAssumedRole.
const (
	TypeWebIdentityUser = "WebIdentityUser"
	TypeUnknown         = "Unknown"
)

// TimeFormat is eventTime's layout: RFC 3339, milliseconds, UTC.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// Event is one audit record, shaped like a CloudTrail event so that tools
// and habits built for CloudTrail carry over. Field order is the order of
// the JSON object and part of the hash chain: do not reorder.
//
// No field may ever hold a token, a signature, a secret key or a password.
type Event struct {
	EventVersion      string         `json:"eventVersion"`
	EventID           string         `json:"eventID"`
	RequestID         string         `json:"requestID,omitempty"`
	EventTime         string         `json:"eventTime"`
	EventSource       string         `json:"eventSource"`
	EventName         string         `json:"eventName"`
	UserIdentity      *UserIdentity  `json:"userIdentity,omitempty"`
	SourceIPAddress   string         `json:"sourceIPAddress,omitempty"`
	UserAgent         string         `json:"userAgent,omitempty"`
	RequestParameters map[string]any `json:"requestParameters,omitempty"`
	ResponseElements  map[string]any `json:"responseElements,omitempty"`
	ErrorCode         string         `json:"errorCode,omitempty"`
	ErrorMessage      string         `json:"errorMessage,omitempty"`
	TLSDetails        *TLSDetails    `json:"tlsDetails,omitempty"`
	Decision          *Decision      `json:"decision,omitempty"`
	// PrevHash and Hash are set by the file sink: producers leave them
	// empty.
	PrevHash string `json:"prevHash,omitempty"`
	Hash     string `json:"hash,omitempty"`
}

// UserIdentity is who acted, as CloudTrail's userIdentity.
type UserIdentity struct {
	Type             string          `json:"type"`
	PrincipalID      string          `json:"principalId,omitempty"`
	ARN              string          `json:"arn,omitempty"`
	AccountID        string          `json:"accountId,omitempty"`
	AccessKeyID      string          `json:"accessKeyId,omitempty"`
	UserName         string          `json:"userName,omitempty"`
	IdentityProvider string          `json:"identityProvider,omitempty"`
	SessionContext   *SessionContext `json:"sessionContext,omitempty"`
}

// SessionContext describes temporary credentials.
type SessionContext struct {
	SessionIssuer       *SessionIssuer       `json:"sessionIssuer,omitempty"`
	WebIDFederationData *WebIDFederationData `json:"webIdFederationData,omitempty"`
	Attributes          *SessionAttributes   `json:"attributes,omitempty"`
	SourceIdentity      string               `json:"sourceIdentity,omitempty"`
	SessionTags         map[string]string    `json:"sessionTags,omitempty"`
}

// SessionIssuer is the role a session was issued for.
type SessionIssuer struct {
	Type        string `json:"type"`
	PrincipalID string `json:"principalId,omitempty"`
	ARN         string `json:"arn"`
	AccountID   string `json:"accountId,omitempty"`
	UserName    string `json:"userName"`
}

// WebIDFederationData names the OIDC provider and subject of a federated
// session.
type WebIDFederationData struct {
	FederatedProvider string            `json:"federatedProvider"`
	Attributes        map[string]string `json:"attributes,omitempty"`
}

// SessionAttributes are when the session was created and whether MFA was
// used (never, in iamdb).
type SessionAttributes struct {
	CreationDate     string `json:"creationDate,omitempty"`
	MFAAuthenticated string `json:"mfaAuthenticated"`
}

// TLSDetails describes the client's TLS session.
type TLSDetails struct {
	TLSVersion               string `json:"tlsVersion,omitempty"`
	CipherSuite              string `json:"cipherSuite,omitempty"`
	ClientProvidedHostHeader string `json:"clientProvidedHostHeader,omitempty"`
}

// Decision is the policy decision behind an authorization: Allow or Deny,
// and the statement that decided ("policy/Sid"; empty for an implicit
// deny).
type Decision struct {
	Effect    string `json:"effect"`
	Statement string `json:"statement,omitempty"`
}

// Emitter records audit events. Every producer (the database listeners,
// the STS API, the management commands) writes through one. Emit returns
// once the event is durable, or an error when it could not be recorded and
// the sink is configured to fail closed: the caller must then refuse what
// it was about to allow. Implementations are safe for concurrent use.
//
// Emit fills in EventVersion, EventID and EventTime when they are empty.
type Emitter interface {
	Emit(ctx context.Context, e *Event) error
}

// Nop is an Emitter that records nothing.
type Nop struct{}

// Emit does nothing.
func (Nop) Emit(context.Context, *Event) error { return nil }

// deferredKey marks a context whose events need not be durable before
// Emit returns.
type deferredKey struct{}

// Deferred returns a context under which Emit only queues the event: it is
// written in order and made durable within the sink's fsync interval, but
// the caller does not wait for the disk. Statement events use it so that
// auditing never adds a disk flush to a query's latency; connect events
// must not.
func Deferred(ctx context.Context) context.Context {
	return context.WithValue(ctx, deferredKey{}, true)
}

// IsDeferred reports whether ctx came from Deferred.
func IsDeferred(ctx context.Context) bool {
	v, _ := ctx.Value(deferredKey{}).(bool)
	return v
}

// NewID returns a random (version 4) UUID for eventID and requestID.
func NewID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails since Go 1.24
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// FormatTime formats t as eventTime.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// fill sets the fields every event carries.
func (e *Event) fill(now time.Time) {
	if e.EventVersion == "" {
		e.EventVersion = EventVersion
	}
	if e.EventID == "" {
		e.EventID = NewID()
	}
	if e.EventTime == "" {
		e.EventTime = FormatTime(now)
	}
}

// Time parses eventTime; the zero time when it does not parse.
func (e *Event) Time() time.Time {
	t, err := time.Parse(time.RFC3339Nano, e.EventTime)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Identity is the userIdentity of a principal: an IAM user (long-term or
// GetSessionToken credentials) or a role session, federated or not.
// Never a secret: a Principal holds none.
func Identity(p *authn.Principal) *UserIdentity {
	if p == nil {
		return nil
	}
	u := &UserIdentity{
		Type:        p.Type,
		PrincipalID: p.PrincipalID,
		ARN:         p.ARN,
		AccountID:   p.AccountID,
		AccessKeyID: p.AccessKeyID,
	}
	switch p.Type {
	case authn.TypeIAMUser:
		u.UserName = p.UserName
		if p.Temporary {
			u.SessionContext = &SessionContext{Attributes: attributes(p.SessionCreated)}
		}
	case authn.TypeAssumedRole:
		sc := &SessionContext{
			SessionIssuer: &SessionIssuer{
				Type: "Role", PrincipalID: p.RoleID, ARN: p.RoleARN, AccountID: p.AccountID, UserName: p.RoleName,
			},
			Attributes:     attributes(p.SessionCreated),
			SourceIdentity: p.SourceIdentity,
		}
		if len(p.Tags) > 0 {
			sc.SessionTags = maps.Clone(p.Tags)
		}
		if p.FederatedProvider != "" {
			sc.WebIDFederationData = &WebIDFederationData{FederatedProvider: p.FederatedProvider}
			if p.FederatedSubject != "" {
				sc.WebIDFederationData.Attributes = map[string]string{"sub": p.FederatedSubject}
			}
		}
		u.SessionContext = sc
	}
	return u
}

func attributes(created time.Time) *SessionAttributes {
	a := &SessionAttributes{MFAAuthenticated: "false"}
	if !created.IsZero() {
		a.CreationDate = created.UTC().Format(time.RFC3339)
	}
	return a
}

// PolicyDecision summarises a policy result: Allow with the first allowing
// statement, or Deny with the first explicitly denying statement (none for
// an implicit deny).
func PolicyDecision(r *policy.Result) *Decision {
	if r == nil {
		return nil
	}
	d := &Decision{Effect: "Deny"}
	if r.Decision == policy.Allowed {
		d.Effect = "Allow"
	}
	if r.Decision == policy.Allowed || r.Decision == policy.ExplicitDeny {
		if len(r.Matched) > 0 {
			m := r.Matched[0]
			d.Statement = m.SourcePolicyID + "/" + m.Sid
			if m.Sid == "" {
				d.Statement = fmt.Sprintf("%s/Statement[%d]", m.SourcePolicyID, m.Index)
			}
		}
	}
	return d
}
