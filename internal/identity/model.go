package identity

import (
	"time"
)

// Account is an isolated namespace of principals and policies, identified
// like an AWS account by 12 digits.
type Account struct {
	ID        string // 12 digits
	Alias     string // optional, informational
	CreatedAt time.Time
}

// User is a long-term IAM principal that signs with access keys.
type User struct {
	ID                  string // "AIDA" + 16 base32 characters
	AccountID           string
	Name                string
	Path                string // "/" or "/a/b/"
	Tags                map[string]string
	Groups              []string // group names, sorted; filled by reads
	PermissionsBoundary string   // managed policy ARN or ""
	CreatedAt           time.Time
	// Partition is the ARN partition of the store that returned the record
	// ("aws" when empty).
	Partition string
}

// ARN returns arn:PARTITION:iam::ACCOUNT:user/PATH/NAME.
func (u User) ARN() string {
	return PrincipalARN(u.Partition, u.AccountID, "user", u.Path, u.Name)
}

// Group is a set of users sharing policies. Groups are not principals.
type Group struct {
	ID        string // "AGPA" + 16
	AccountID string
	Name      string
	Path      string
	CreatedAt time.Time
	Partition string
}

// ARN returns arn:PARTITION:iam::ACCOUNT:group/PATH/NAME.
func (g Group) ARN() string {
	return PrincipalARN(g.Partition, g.AccountID, "group", g.Path, g.Name)
}

// Role limits for MaxSessionDuration, as AWS.
const (
	DefaultMaxSessionDuration = time.Hour
	MinMaxSessionDuration     = time.Hour
	MaxMaxSessionDuration     = 12 * time.Hour
)

// Role is an assumable principal: whoever its trust policy admits receives
// temporary credentials (a Session) carrying the role's permissions.
type Role struct {
	ID                  string // "AROA" + 16
	AccountID           string
	Name                string
	Path                string
	Description         string
	TrustPolicy         string        // JSON document
	MaxSessionDuration  time.Duration // 1h–12h; zero on create means 1h
	Tags                map[string]string
	PermissionsBoundary string // managed policy ARN or ""
	CreatedAt           time.Time
	Partition           string
}

// ARN returns arn:PARTITION:iam::ACCOUNT:role/PATH/NAME.
func (r Role) ARN() string {
	return PrincipalARN(r.Partition, r.AccountID, "role", r.Path, r.Name)
}

// MaxPolicyVersions is the number of versions a managed policy may keep.
const MaxPolicyVersions = 5

// PolicyVersion is one immutable document of a managed policy.
type PolicyVersion struct {
	VersionID string // "v1", "v2", … never reused
	Document  string // JSON
	IsDefault bool
	CreatedAt time.Time
}

// ManagedPolicy is a standalone, versioned policy that can be attached to
// users, groups and roles, or used as a permissions boundary.
type ManagedPolicy struct {
	ID             string // "ANPA" + 16
	AccountID      string
	Name           string
	Path           string
	Description    string
	DefaultVersion string          // e.g. "v1"
	Versions       []PolicyVersion // ascending by creation
	// AttachmentCount counts users, groups and roles the policy is attached
	// to; BoundaryCount counts users and roles using it as boundary.
	AttachmentCount int
	BoundaryCount   int
	CreatedAt       time.Time
	UpdatedAt       time.Time
	Partition       string
}

// ARN returns arn:PARTITION:iam::ACCOUNT:policy/PATH/NAME.
func (p ManagedPolicy) ARN() string {
	return PrincipalARN(p.Partition, p.AccountID, "policy", p.Path, p.Name)
}

// DefaultDocument returns the document of the default version.
func (p ManagedPolicy) DefaultDocument() string {
	for _, v := range p.Versions {
		if v.VersionID == p.DefaultVersion {
			return v.Document
		}
	}
	return ""
}

// PrincipalKind names the holders of policies.
type PrincipalKind string

// Policy holders.
const (
	KindUser  PrincipalKind = "user"
	KindGroup PrincipalKind = "group"
	KindRole  PrincipalKind = "role"
)

// PolicyHolder names a user, group or role within an account; it is the
// subject of inline policy and attachment calls.
type PolicyHolder struct {
	Kind      PrincipalKind
	AccountID string
	Name      string
}

// UserRef, GroupRef and RoleRef build a PolicyHolder.
func UserRef(account, name string) PolicyHolder  { return PolicyHolder{KindUser, account, name} }
func GroupRef(account, name string) PolicyHolder { return PolicyHolder{KindGroup, account, name} }
func RoleRef(account, name string) PolicyHolder  { return PolicyHolder{KindRole, account, name} }

func (h PolicyHolder) String() string {
	return string(h.Kind) + " " + h.Name + " in account " + h.AccountID
}

// InlinePolicy is a policy embedded in one user, group or role.
type InlinePolicy struct {
	Name     string
	Document string
}

// AttachedPolicy is a managed policy attached to a holder.
type AttachedPolicy struct {
	Name string
	ARN  string
}

// AccessKeyStatus is Active or Inactive, as AWS.
type AccessKeyStatus string

// Access key states.
const (
	KeyActive   AccessKeyStatus = "Active"
	KeyInactive AccessKeyStatus = "Inactive"
)

// MaxAccessKeysPerUser is the AWS quota.
const MaxAccessKeysPerUser = 2

// AccessKey is a long-term credential of a user. SealedSecret is the secret
// access key sealed with the store's Sealer (additional data: the key id);
// the plaintext is returned once, by CreateAccessKey.
type AccessKey struct {
	ID           string // "AKIA" + 16
	AccountID    string
	UserID       string
	UserName     string
	Status       AccessKeyStatus
	CreatedAt    time.Time
	LastUsedAt   time.Time // zero when never used
	SealedSecret []byte
}

// Session is a set of temporary credentials ("ASIA…" key id) issued by the
// STS layer, for a role (AssumeRole*, RoleID set) or a user
// (GetSessionToken, UserID set). The secret is sealed (additional data: the
// key id); the session token is kept only as its SHA-256.
type Session struct {
	AccessKeyID        string // "ASIA" + 16
	AccountID          string
	SealedSecret       []byte
	SessionTokenSHA256 []byte
	Expiration         time.Time

	RoleID  string // role sessions
	RoleARN string
	UserID  string // GetSessionToken sessions

	SessionName       string
	SourceIdentity    string
	SessionTags       map[string]string
	TransitiveTagKeys []string
	SessionPolicy     string   // inline session policy JSON or ""
	PolicyARNs        []string // managed session policies
	ParentAccessKeyID string   // the key (AKIA or ASIA) that asked for it
	FederatedProvider string   // OIDC provider ARN for web identity sessions
	FederatedSubject  string   // the token's sub
	Revoked           bool
	CreatedAt         time.Time
}

// Valid reports whether the session can still be used at now.
func (s Session) Valid(now time.Time) bool {
	return !s.Revoked && now.Before(s.Expiration)
}

// Credentials are the plaintext temporary credentials returned once by
// CreateSession.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expiration      time.Time
}

// OIDCProvider is a trusted OpenID Connect issuer for
// AssumeRoleWithWebIdentity. Keys come from JWKSURL or JWKSFile.
type OIDCProvider struct {
	AccountID   string
	URL         string // issuer, https://host[/path]
	Audiences   []string
	JWKSURL     string
	JWKSFile    string
	Thumbprints []string
	CreatedAt   time.Time
	Partition   string
}

// ARN returns arn:PARTITION:iam::ACCOUNT:oidc-provider/HOST_PATH.
func (p OIDCProvider) ARN() string {
	return OIDCProviderARN(p.Partition, p.AccountID, p.URL)
}

// PolicyDocument is one policy that applies to a principal, with the id the
// authorizer reports in explanations: "user/NAME/inline/POLICY",
// "group/NAME/inline/POLICY", "role/NAME/inline/POLICY", or the managed
// policy's ARN.
type PolicyDocument struct {
	ID       string
	Document string // raw JSON
}

// PolicySet is everything the authorizer needs about a principal's
// identity-based policies: the documents (user + its groups, or role) and
// the permissions boundary document, if any.
type PolicySet struct {
	PrincipalARN string
	Policies     []PolicyDocument
	Boundary     *PolicyDocument
}

// UserUpdate changes a user; nil fields are left alone.
type UserUpdate struct {
	NewName             *string
	Path                *string
	Tags                *map[string]string // replaces all tags
	PermissionsBoundary *string            // policy ARN, "" removes
}

// RoleUpdate changes a role; nil fields are left alone.
type RoleUpdate struct {
	Description         *string
	TrustPolicy         *string
	MaxSessionDuration  *time.Duration
	Tags                *map[string]string
	PermissionsBoundary *string
}

// DeleteOptions control deleting users, groups and roles. Without Force a
// delete is refused with ErrConflict while the principal still has access
// keys, policies, group memberships or members (the message lists what to
// remove), as AWS does. With Force those are removed in the same
// transaction, and live sessions derived from the principal are revoked.
type DeleteOptions struct {
	Force bool
}
