package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
)

// Store records every write to an identity store as an iam.iamdb event
// (CreateUser, CreateAccessKey, PutRolePolicy, RevokeSession …), success
// or failure, attributed to the operator running the command. Reads pass
// through. Secrets never reach the event: CreateAccessKey's records the
// key id, not the secret.
//
// When the emitter reports a failed log (Err) and fails closed, writes are
// refused before they happen rather than made unaudited.
type Store struct {
	identity.Store
	emit      Emitter
	actor     *UserIdentity
	userAgent string
	now       func() time.Time
}

var _ identity.Store = (*Store)(nil)

// NewStore wraps inner. actor is who is acting (see LocalOperator).
func NewStore(inner identity.Store, emit Emitter, actor *UserIdentity, userAgent string) *Store {
	return &Store{Store: inner, emit: emit, actor: actor, userAgent: userAgent, now: time.Now}
}

// LocalOperator is the userIdentity of a management command run on the
// machine: not an IAM principal, so type Unknown, named by the operating
// system account.
func LocalOperator() *UserIdentity {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return &UserIdentity{Type: TypeUnknown, PrincipalID: "local:" + strconv.Itoa(os.Getuid()), UserName: name}
}

type failer interface{ Err() error }

// ErrNotAudited refuses a write because the audit log cannot record it.
var ErrNotAudited = errors.New("the audit log cannot be written; refusing an unaudited change")

func (s *Store) check() error {
	if f, ok := s.emit.(failer); ok {
		if ff, ok := s.emit.(interface{ FailsClosed() bool }); ok && ff.FailsClosed() {
			if err := f.Err(); err != nil {
				return fmt.Errorf("%w: %v", ErrNotAudited, err)
			}
		}
	}
	return nil
}

// record emits the event of one write.
func (s *Store) record(ctx context.Context, name string, params, resp map[string]any, err error) error {
	e := &Event{
		EventSource:       SourceIAM,
		EventName:         name,
		RequestID:         NewID(),
		UserIdentity:      s.actor,
		SourceIPAddress:   "localhost",
		UserAgent:         s.userAgent,
		RequestParameters: params,
	}
	if err == nil {
		e.ResponseElements = resp
	} else {
		e.ErrorCode, e.ErrorMessage = iamErrorCode(err), err.Error()
	}
	if aerr := s.emit.Emit(ctx, e); aerr != nil {
		if err != nil {
			return err
		}
		return fmt.Errorf("%s was done but could not be recorded in the audit log: %w", name, aerr)
	}
	return err
}

// iamErrorCode is the AWS IAM error code of a store error.
func iamErrorCode(err error) string {
	switch {
	case errors.Is(err, identity.ErrNotFound):
		return "NoSuchEntity"
	case errors.Is(err, identity.ErrAlreadyExists):
		return "EntityAlreadyExists"
	case errors.Is(err, identity.ErrLimitExceeded):
		return "LimitExceeded"
	case errors.Is(err, identity.ErrConflict):
		return "DeleteConflict"
	case errors.Is(err, identity.ErrInvalidInput):
		return "ValidationError"
	}
	return "ServiceFailure"
}

type m = map[string]any

func holderParams(h identity.PolicyHolder, extra m) m {
	key := map[identity.PrincipalKind]string{identity.KindUser: "userName", identity.KindGroup: "groupName", identity.KindRole: "roleName"}[h.Kind]
	out := m{"accountId": h.AccountID, key: h.Name}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// holderAction names an IAM action by its holder: AttachUserPolicy,
// PutRolePolicy, …
func holderAction(prefix string, h identity.PolicyHolder, suffix string) string {
	kind := map[identity.PrincipalKind]string{identity.KindUser: "User", identity.KindGroup: "Group", identity.KindRole: "Role"}[h.Kind]
	return prefix + kind + suffix
}

func (s *Store) CreateAccount(ctx context.Context, a identity.Account) (identity.Account, error) {
	if err := s.check(); err != nil {
		return identity.Account{}, err
	}
	out, err := s.Store.CreateAccount(ctx, a)
	return out, s.record(ctx, "CreateAccount", m{"accountId": a.ID, "alias": a.Alias}, m{"accountId": out.ID}, err)
}

func (s *Store) CreateUser(ctx context.Context, u identity.User) (identity.User, error) {
	if err := s.check(); err != nil {
		return identity.User{}, err
	}
	out, err := s.Store.CreateUser(ctx, u)
	p := m{"accountId": u.AccountID, "userName": u.Name, "path": u.Path}
	if len(u.Tags) > 0 {
		p["tags"] = u.Tags
	}
	if u.PermissionsBoundary != "" {
		p["permissionsBoundary"] = u.PermissionsBoundary
	}
	return out, s.record(ctx, "CreateUser", p, m{"user": m{"arn": out.ARN(), "userId": out.ID}}, err)
}

func (s *Store) UpdateUser(ctx context.Context, account, name string, upd identity.UserUpdate) (identity.User, error) {
	if err := s.check(); err != nil {
		return identity.User{}, err
	}
	out, err := s.Store.UpdateUser(ctx, account, name, upd)
	p := m{"accountId": account, "userName": name}
	if upd.NewName != nil {
		p["newUserName"] = *upd.NewName
	}
	if upd.Path != nil {
		p["newPath"] = *upd.Path
	}
	if upd.Tags != nil {
		p["tags"] = *upd.Tags
	}
	if upd.PermissionsBoundary != nil {
		p["permissionsBoundary"] = *upd.PermissionsBoundary
	}
	return out, s.record(ctx, "UpdateUser", p, nil, err)
}

func (s *Store) DeleteUser(ctx context.Context, account, name string, opts identity.DeleteOptions) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DeleteUser(ctx, account, name, opts)
	return s.record(ctx, "DeleteUser", m{"accountId": account, "userName": name, "force": opts.Force}, nil, err)
}

func (s *Store) CreateGroup(ctx context.Context, g identity.Group) (identity.Group, error) {
	if err := s.check(); err != nil {
		return identity.Group{}, err
	}
	out, err := s.Store.CreateGroup(ctx, g)
	return out, s.record(ctx, "CreateGroup", m{"accountId": g.AccountID, "groupName": g.Name, "path": g.Path},
		m{"group": m{"arn": out.ARN(), "groupId": out.ID}}, err)
}

func (s *Store) DeleteGroup(ctx context.Context, account, name string, opts identity.DeleteOptions) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DeleteGroup(ctx, account, name, opts)
	return s.record(ctx, "DeleteGroup", m{"accountId": account, "groupName": name, "force": opts.Force}, nil, err)
}

func (s *Store) AddUserToGroup(ctx context.Context, account, group, user string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.AddUserToGroup(ctx, account, group, user)
	return s.record(ctx, "AddUserToGroup", m{"accountId": account, "groupName": group, "userName": user}, nil, err)
}

func (s *Store) RemoveUserFromGroup(ctx context.Context, account, group, user string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.RemoveUserFromGroup(ctx, account, group, user)
	return s.record(ctx, "RemoveUserFromGroup", m{"accountId": account, "groupName": group, "userName": user}, nil, err)
}

func (s *Store) CreateRole(ctx context.Context, r identity.Role) (identity.Role, error) {
	if err := s.check(); err != nil {
		return identity.Role{}, err
	}
	out, err := s.Store.CreateRole(ctx, r)
	p := m{"accountId": r.AccountID, "roleName": r.Name, "path": r.Path, "assumeRolePolicyDocument": r.TrustPolicy}
	if r.MaxSessionDuration > 0 {
		p["maxSessionDuration"] = int64(r.MaxSessionDuration / time.Second)
	}
	if len(r.Tags) > 0 {
		p["tags"] = r.Tags
	}
	if r.PermissionsBoundary != "" {
		p["permissionsBoundary"] = r.PermissionsBoundary
	}
	return out, s.record(ctx, "CreateRole", p, m{"role": m{"arn": out.ARN(), "roleId": out.ID}}, err)
}

func (s *Store) UpdateRole(ctx context.Context, account, name string, upd identity.RoleUpdate) (identity.Role, error) {
	if err := s.check(); err != nil {
		return identity.Role{}, err
	}
	out, err := s.Store.UpdateRole(ctx, account, name, upd)
	p := m{"accountId": account, "roleName": name}
	if upd.Description != nil {
		p["description"] = *upd.Description
	}
	if upd.TrustPolicy != nil {
		p["assumeRolePolicyDocument"] = *upd.TrustPolicy
	}
	if upd.MaxSessionDuration != nil {
		p["maxSessionDuration"] = int64(*upd.MaxSessionDuration / time.Second)
	}
	if upd.Tags != nil {
		p["tags"] = *upd.Tags
	}
	if upd.PermissionsBoundary != nil {
		p["permissionsBoundary"] = *upd.PermissionsBoundary
	}
	return out, s.record(ctx, "UpdateRole", p, nil, err)
}

func (s *Store) DeleteRole(ctx context.Context, account, name string, opts identity.DeleteOptions) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DeleteRole(ctx, account, name, opts)
	return s.record(ctx, "DeleteRole", m{"accountId": account, "roleName": name, "force": opts.Force}, nil, err)
}

func (s *Store) CreatePolicy(ctx context.Context, p identity.ManagedPolicy, document string) (identity.ManagedPolicy, error) {
	if err := s.check(); err != nil {
		return identity.ManagedPolicy{}, err
	}
	out, err := s.Store.CreatePolicy(ctx, p, document)
	return out, s.record(ctx, "CreatePolicy",
		m{"accountId": p.AccountID, "policyName": p.Name, "path": p.Path, "description": p.Description, "policyDocument": document},
		m{"policy": m{"arn": out.ARN(), "policyId": out.ID, "defaultVersionId": out.DefaultVersion}}, err)
}

func (s *Store) CreatePolicyVersion(ctx context.Context, policyARN, document string, setDefault bool) (identity.PolicyVersion, error) {
	if err := s.check(); err != nil {
		return identity.PolicyVersion{}, err
	}
	out, err := s.Store.CreatePolicyVersion(ctx, policyARN, document, setDefault)
	return out, s.record(ctx, "CreatePolicyVersion",
		m{"policyArn": policyARN, "policyDocument": document, "setAsDefault": setDefault},
		m{"policyVersion": m{"versionId": out.VersionID, "isDefaultVersion": out.IsDefault}}, err)
}

func (s *Store) SetDefaultPolicyVersion(ctx context.Context, policyARN, versionID string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.SetDefaultPolicyVersion(ctx, policyARN, versionID)
	return s.record(ctx, "SetDefaultPolicyVersion", m{"policyArn": policyARN, "versionId": versionID}, nil, err)
}

func (s *Store) DeletePolicyVersion(ctx context.Context, policyARN, versionID string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DeletePolicyVersion(ctx, policyARN, versionID)
	return s.record(ctx, "DeletePolicyVersion", m{"policyArn": policyARN, "versionId": versionID}, nil, err)
}

func (s *Store) DeletePolicy(ctx context.Context, policyARN string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DeletePolicy(ctx, policyARN)
	return s.record(ctx, "DeletePolicy", m{"policyArn": policyARN}, nil, err)
}

func (s *Store) AttachPolicy(ctx context.Context, h identity.PolicyHolder, policyARN string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.AttachPolicy(ctx, h, policyARN)
	return s.record(ctx, holderAction("Attach", h, "Policy"), holderParams(h, m{"policyArn": policyARN}), nil, err)
}

func (s *Store) DetachPolicy(ctx context.Context, h identity.PolicyHolder, policyARN string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DetachPolicy(ctx, h, policyARN)
	return s.record(ctx, holderAction("Detach", h, "Policy"), holderParams(h, m{"policyArn": policyARN}), nil, err)
}

func (s *Store) PutInlinePolicy(ctx context.Context, h identity.PolicyHolder, name, document string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.PutInlinePolicy(ctx, h, name, document)
	return s.record(ctx, holderAction("Put", h, "Policy"), holderParams(h, m{"policyName": name, "policyDocument": document}), nil, err)
}

func (s *Store) DeleteInlinePolicy(ctx context.Context, h identity.PolicyHolder, name string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DeleteInlinePolicy(ctx, h, name)
	return s.record(ctx, holderAction("Delete", h, "Policy"), holderParams(h, m{"policyName": name}), nil, err)
}

// CreateAccessKey records the new key's id and status; the secret is
// returned to the caller only.
func (s *Store) CreateAccessKey(ctx context.Context, account, user string) (identity.AccessKey, string, error) {
	if err := s.check(); err != nil {
		return identity.AccessKey{}, "", err
	}
	k, secret, err := s.Store.CreateAccessKey(ctx, account, user)
	resp := m{"accessKey": m{"accessKeyId": k.ID, "userName": k.UserName, "status": string(k.Status)}}
	return k, secret, s.record(ctx, "CreateAccessKey", m{"accountId": account, "userName": user}, resp, err)
}

func (s *Store) UpdateAccessKeyStatus(ctx context.Context, id string, status identity.AccessKeyStatus) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.UpdateAccessKeyStatus(ctx, id, status)
	return s.record(ctx, "UpdateAccessKey", m{"accessKeyId": id, "status": string(status)}, nil, err)
}

func (s *Store) DeleteAccessKey(ctx context.Context, id string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DeleteAccessKey(ctx, id)
	return s.record(ctx, "DeleteAccessKey", m{"accessKeyId": id}, nil, err)
}

// CreateSession is the STS API's business, which audits its own calls;
// a management command issuing credentials is still recorded, by key id.
func (s *Store) CreateSession(ctx context.Context, sess identity.Session) (identity.Session, identity.Credentials, error) {
	if err := s.check(); err != nil {
		return identity.Session{}, identity.Credentials{}, err
	}
	out, creds, err := s.Store.CreateSession(ctx, sess)
	return out, creds, s.record(ctx, "CreateSession", m{"accountId": sess.AccountID, "roleId": sess.RoleID, "userId": sess.UserID},
		m{"accessKeyId": out.AccessKeyID}, err)
}

func (s *Store) RevokeSession(ctx context.Context, accessKeyID string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.RevokeSession(ctx, accessKeyID)
	return s.record(ctx, "RevokeSession", m{"accessKeyId": accessKeyID}, nil, err)
}

func (s *Store) RevokeSessionsByRole(ctx context.Context, roleID string) (int64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	n, err := s.Store.RevokeSessionsByRole(ctx, roleID)
	return n, s.record(ctx, "RevokeSessionsByRole", m{"roleId": roleID}, m{"revoked": n}, err)
}

func (s *Store) RevokeSessionsByParentKey(ctx context.Context, accessKeyID string) (int64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	n, err := s.Store.RevokeSessionsByParentKey(ctx, accessKeyID)
	return n, s.record(ctx, "RevokeSessionsByParentKey", m{"accessKeyId": accessKeyID}, m{"revoked": n}, err)
}

func (s *Store) DeleteExpiredSessions(ctx context.Context, before time.Time) (int64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	n, err := s.Store.DeleteExpiredSessions(ctx, before)
	return n, s.record(ctx, "DeleteExpiredSessions", m{"before": before.UTC().Format(time.RFC3339)}, m{"deleted": n}, err)
}

func (s *Store) CreateOIDCProvider(ctx context.Context, p identity.OIDCProvider) (identity.OIDCProvider, error) {
	if err := s.check(); err != nil {
		return identity.OIDCProvider{}, err
	}
	out, err := s.Store.CreateOIDCProvider(ctx, p)
	return out, s.record(ctx, "CreateOpenIDConnectProvider", oidcParams(p), m{"openIDConnectProviderArn": out.ARN()}, err)
}

func (s *Store) UpdateOIDCProvider(ctx context.Context, p identity.OIDCProvider) (identity.OIDCProvider, error) {
	if err := s.check(); err != nil {
		return identity.OIDCProvider{}, err
	}
	out, err := s.Store.UpdateOIDCProvider(ctx, p)
	return out, s.record(ctx, "UpdateOpenIDConnectProvider", oidcParams(p), nil, err)
}

func (s *Store) DeleteOIDCProvider(ctx context.Context, account, issuerURL string) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.Store.DeleteOIDCProvider(ctx, account, issuerURL)
	return s.record(ctx, "DeleteOpenIDConnectProvider", m{"accountId": account, "url": issuerURL}, nil, err)
}

func oidcParams(p identity.OIDCProvider) m {
	out := m{"accountId": p.AccountID, "url": p.URL, "clientIDList": p.Audiences}
	if p.JWKSURL != "" {
		out["jwksUrl"] = p.JWKSURL
	}
	if p.JWKSFile != "" {
		out["jwksFile"] = p.JWKSFile
	}
	if len(p.Thumbprints) > 0 {
		out["thumbprintList"] = p.Thumbprints
	}
	return out
}
