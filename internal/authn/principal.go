package authn

import (
	"maps"
	"strconv"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
)

// Principal types, as CloudTrail's userIdentity.type names them.
const (
	TypeIAMUser     = "IAMUser"
	TypeAssumedRole = "AssumedRole"
)

// Principal is who signed a token: an IAM user, or a role session (possibly
// federated through OIDC). It is what audit events attribute a login to.
type Principal struct {
	Type        string // IAMUser | AssumedRole
	ARN         string // user ARN, or arn:…:sts::ACCT:assumed-role/ROLE/SESSION
	PrincipalID string // AIDA… for users, AROA…:SESSION for role sessions
	AccountID   string
	Partition   string
	UserName    string // IAM users only
	AccessKeyID string
	Temporary   bool

	// Role sessions.
	RoleID            string
	RoleName          string
	RoleARN           string
	SessionName       string
	SourceIdentity    string
	SessionCreated    time.Time
	SessionPolicy     string
	SessionPolicyARNs []string
	FederatedProvider string // OIDC provider ARN
	FederatedSubject  string

	// Tags are the effective principal tags: the user's, or the role's
	// overridden by the session's.
	Tags map[string]string
}

func userPrincipal(u identity.User) *Principal {
	return &Principal{
		Type:        TypeIAMUser,
		ARN:         u.ARN(),
		PrincipalID: u.ID,
		AccountID:   u.AccountID,
		Partition:   u.Partition,
		UserName:    u.Name,
		Tags:        maps.Clone(u.Tags),
	}
}

func rolePrincipal(r identity.Role, s identity.Session) *Principal {
	tags := maps.Clone(r.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	maps.Copy(tags, s.SessionTags) // session tags win, as in AWS
	return &Principal{
		Type:              TypeAssumedRole,
		ARN:               identity.AssumedRoleARN(r.Partition, r.AccountID, r.Name, s.SessionName),
		PrincipalID:       r.ID + ":" + s.SessionName,
		AccountID:         r.AccountID,
		Partition:         r.Partition,
		AccessKeyID:       s.AccessKeyID,
		Temporary:         true,
		RoleID:            r.ID,
		RoleName:          r.Name,
		RoleARN:           r.ARN(),
		SessionName:       s.SessionName,
		SourceIdentity:    s.SourceIdentity,
		SessionCreated:    s.CreatedAt,
		SessionPolicy:     s.SessionPolicy,
		SessionPolicyARNs: s.PolicyARNs,
		FederatedProvider: s.FederatedProvider,
		FederatedSubject:  s.FederatedSubject,
		Tags:              tags,
	}
}

// UserPrincipal is the principal of an IAM user acting with long-term
// credentials (used by policy simulation).
func UserPrincipal(u identity.User) *Principal { return userPrincipal(u) }

// RolePrincipal is the principal of a session of role r (used by policy
// simulation; sessionName may be empty).
func RolePrincipal(r identity.Role, sessionName string) *Principal {
	return rolePrincipal(r, identity.Session{SessionName: sessionName})
}

func (p *Principal) cacheKey() string {
	if p.RoleName != "" {
		// Sessions of one role differ in session policies and tags only
		// through the principal itself; the policy set depends on the
		// session policies, so they are part of the key.
		return "session/" + p.AccessKeyID + "/" + p.RoleID
	}
	return "user/" + p.PrincipalID
}

// Context returns the global condition keys AWS supplies for a request by
// p at now. Connection-specific keys (aws:SourceIp, aws:SecureTransport,
// iamdb:*) are added by the caller.
func (p *Principal) Context(now time.Time) policy.Context {
	c := policy.Context{}
	c.Set("aws:PrincipalAccount", p.AccountID)
	c.Set("aws:CurrentTime", now.UTC().Format(time.RFC3339))
	c.Set("aws:EpochTime", strconv.FormatInt(now.Unix(), 10))
	c.Set("aws:MultiFactorAuthPresent", "false")
	for k, v := range p.Tags {
		c.Set("aws:PrincipalTag/"+k, v)
	}
	if len(p.Tags) > 0 {
		keys := make([]string, 0, len(p.Tags))
		for k := range p.Tags {
			keys = append(keys, k)
		}
		c.Set("aws:PrincipalTagKeys", keys...)
	}
	switch p.Type {
	case TypeIAMUser:
		c.Set("aws:username", p.UserName)
		c.Set("aws:userid", p.PrincipalID)
		c.Set("aws:PrincipalArn", p.ARN)
		c.Set("aws:PrincipalType", "User")
	case TypeAssumedRole:
		// AWS gives the role's ARN, not the session's, and no username.
		c.Set("aws:userid", p.PrincipalID)
		c.Set("aws:PrincipalArn", p.RoleARN)
		c.Set("aws:PrincipalType", "AssumedRole")
		if p.SourceIdentity != "" {
			c.Set("aws:SourceIdentity", p.SourceIdentity)
		}
		if p.FederatedProvider != "" {
			if arn, err := identity.ParseARN(p.FederatedProvider); err == nil {
				hostPath := arn.Name
				if arn.Path != "" && arn.Path != "/" {
					hostPath = arn.Path[1:] + arn.Name
				}
				c.Set(hostPath+":sub", p.FederatedSubject)
			}
		}
	}
	if p.Temporary && !p.SessionCreated.IsZero() {
		c.Set("aws:TokenIssueTime", p.SessionCreated.UTC().Format(time.RFC3339))
	}
	return c
}
