package identity

import (
	"context"
	"time"
)

// Store is the full persistence interface of the identity plane. Consumers
// declare the narrower interfaces they need; this one is what a store
// implements (sqlstore.Store for SQLite and PostgreSQL).
//
// Conventions every implementation follows:
//   - names of users, groups, roles and policies are unique per account
//     without regard to case, and looked up the same way, as AWS IAM;
//   - errors wrap ErrNotFound, ErrAlreadyExists, ErrLimitExceeded,
//     ErrConflict or ErrInvalidInput, with a message naming the record;
//   - every write happens in one transaction that also increments the
//     generation counter, so a failed call changes nothing and a cache can
//     poll Generation to notice any change. TouchAccessKeyLastUsed is the
//     one exception: it is bookkeeping, not authorization state, and runs
//     on every login;
//   - secrets are stored sealed and never returned in plaintext except by
//     the call that creates them.
type Store interface {
	// Generation returns a counter incremented by every committed write.
	Generation(ctx context.Context) (int64, error)
	Close() error

	// Accounts. CreateAccount generates a random id when a.ID is empty.
	CreateAccount(ctx context.Context, a Account) (Account, error)
	GetAccount(ctx context.Context, id string) (Account, error)
	ListAccounts(ctx context.Context) ([]Account, error)

	// Users. CreateUser uses AccountID, Name, Path (default "/"), Tags and
	// PermissionsBoundary of u; Groups must be empty (use AddUserToGroup).
	CreateUser(ctx context.Context, u User) (User, error)
	GetUser(ctx context.Context, account, name string) (User, error)
	GetUserByID(ctx context.Context, id string) (User, error)
	// ListUsers lists an account's users whose path starts with
	// pathPrefix ("" or "/" for all), sorted by name.
	ListUsers(ctx context.Context, account, pathPrefix string) ([]User, error)
	UpdateUser(ctx context.Context, account, name string, upd UserUpdate) (User, error)
	DeleteUser(ctx context.Context, account, name string, opts DeleteOptions) error

	// Groups.
	CreateGroup(ctx context.Context, g Group) (Group, error)
	GetGroup(ctx context.Context, account, name string) (Group, error)
	ListGroups(ctx context.Context, account, pathPrefix string) ([]Group, error)
	DeleteGroup(ctx context.Context, account, name string, opts DeleteOptions) error
	AddUserToGroup(ctx context.Context, account, group, user string) error
	RemoveUserFromGroup(ctx context.Context, account, group, user string) error
	ListGroupsForUser(ctx context.Context, account, user string) ([]Group, error)
	ListUsersInGroup(ctx context.Context, account, group string) ([]User, error)

	// Roles. CreateRole defaults MaxSessionDuration to one hour.
	CreateRole(ctx context.Context, r Role) (Role, error)
	GetRole(ctx context.Context, account, name string) (Role, error)
	GetRoleByID(ctx context.Context, id string) (Role, error)
	ListRoles(ctx context.Context, account, pathPrefix string) ([]Role, error)
	UpdateRole(ctx context.Context, account, name string, upd RoleUpdate) (Role, error)
	// DeleteRole also revokes the role's live sessions.
	DeleteRole(ctx context.Context, account, name string, opts DeleteOptions) error

	// Managed policies, addressed by ARN. CreatePolicy stores document as
	// version v1, the default.
	CreatePolicy(ctx context.Context, p ManagedPolicy, document string) (ManagedPolicy, error)
	GetPolicy(ctx context.Context, policyARN string) (ManagedPolicy, error)
	ListPolicies(ctx context.Context, account, pathPrefix string) ([]ManagedPolicy, error)
	// CreatePolicyVersion adds a version (ErrLimitExceeded beyond five) and
	// makes it the default when setDefault is true.
	CreatePolicyVersion(ctx context.Context, policyARN, document string, setDefault bool) (PolicyVersion, error)
	SetDefaultPolicyVersion(ctx context.Context, policyARN, versionID string) error
	// DeletePolicyVersion refuses the default version (ErrConflict).
	DeletePolicyVersion(ctx context.Context, policyARN, versionID string) error
	// DeletePolicy refuses while the policy is attached or used as a
	// permissions boundary (ErrConflict); it removes all its versions.
	DeletePolicy(ctx context.Context, policyARN string) error

	// Attachments of managed policies to users, groups and roles.
	AttachPolicy(ctx context.Context, h PolicyHolder, policyARN string) error
	DetachPolicy(ctx context.Context, h PolicyHolder, policyARN string) error
	ListAttachedPolicies(ctx context.Context, h PolicyHolder) ([]AttachedPolicy, error)

	// Inline policies. PutInlinePolicy creates or replaces.
	PutInlinePolicy(ctx context.Context, h PolicyHolder, name, document string) error
	GetInlinePolicy(ctx context.Context, h PolicyHolder, name string) (InlinePolicy, error)
	DeleteInlinePolicy(ctx context.Context, h PolicyHolder, name string) error
	ListInlinePolicies(ctx context.Context, h PolicyHolder) ([]InlinePolicy, error)

	// Access keys. CreateAccessKey returns the plaintext secret; it is
	// never available again. At most two keys per user.
	CreateAccessKey(ctx context.Context, account, user string) (AccessKey, string, error)
	ListAccessKeys(ctx context.Context, account, user string) ([]AccessKey, error)
	// GetAccessKey returns the key with its sealed secret (open it with
	// Sealer.OpenSecret(key.ID, key.SealedSecret)).
	GetAccessKey(ctx context.Context, id string) (AccessKey, error)
	UpdateAccessKeyStatus(ctx context.Context, id string, status AccessKeyStatus) error
	// DeleteAccessKey also revokes sessions the key asked for.
	DeleteAccessKey(ctx context.Context, id string) error
	// TouchAccessKeyLastUsed records a use at at. It is one statement, does
	// not bump the generation, and skips the write when the stored time is
	// less than a minute older.
	TouchAccessKeyLastUsed(ctx context.Context, id string, at time.Time) error

	// Sessions (temporary credentials). CreateSession generates the ASIA
	// key id, the secret and the session token, stores the secret sealed
	// and the token's SHA-256, and returns the plaintext credentials once.
	// s must carry AccountID, Expiration and RoleID or UserID.
	CreateSession(ctx context.Context, s Session) (Session, Credentials, error)
	GetSession(ctx context.Context, accessKeyID string) (Session, error)
	RevokeSession(ctx context.Context, accessKeyID string) error
	// ListSessions returns an account's sessions that are neither revoked
	// nor expired at now, oldest first.
	ListSessions(ctx context.Context, account string, now time.Time) ([]Session, error)
	RevokeSessionsByRole(ctx context.Context, roleID string) (int64, error)
	RevokeSessionsByParentKey(ctx context.Context, accessKeyID string) (int64, error)
	// DeleteExpiredSessions removes sessions that expired before before.
	DeleteExpiredSessions(ctx context.Context, before time.Time) (int64, error)

	// OIDC providers, per account, keyed by issuer URL (scheme and
	// trailing slash ignored).
	CreateOIDCProvider(ctx context.Context, p OIDCProvider) (OIDCProvider, error)
	GetOIDCProvider(ctx context.Context, account, issuerURL string) (OIDCProvider, error)
	ListOIDCProviders(ctx context.Context, account string) ([]OIDCProvider, error)
	// UpdateOIDCProvider replaces audiences, keys source and thumbprints.
	UpdateOIDCProvider(ctx context.Context, p OIDCProvider) (OIDCProvider, error)
	DeleteOIDCProvider(ctx context.Context, account, issuerURL string) error

	// PolicySetForUser returns the user's inline and attached policies and
	// those of its groups (managed policies once, however reached) and its
	// boundary. PolicySetForRole likewise for a role.
	PolicySetForUser(ctx context.Context, account, user string) (PolicySet, error)
	PolicySetForRole(ctx context.Context, account, role string) (PolicySet, error)
}

// InlinePolicyID is the id an inline policy carries in a PolicySet and in
// explanations: "user/alice/inline/extra".
func InlinePolicyID(kind PrincipalKind, holder, policy string) string {
	return string(kind) + "/" + holder + "/inline/" + policy
}
