package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
)

// CreateSession stores temporary credentials and returns them in plaintext,
// once. The principal (RoleID or UserID) must exist in s.AccountID, so a
// session cannot be issued for a role deleted meanwhile.
func (s *Store) CreateSession(ctx context.Context, sess identity.Session) (identity.Session, identity.Credentials, error) {
	fail := func(err error) (identity.Session, identity.Credentials, error) {
		return identity.Session{}, identity.Credentials{}, fmt.Errorf("create session: %w", err)
	}
	now := s.stamp()
	if (sess.RoleID == "") == (sess.UserID == "") {
		return fail(fmt.Errorf("%w: a session belongs to exactly one role or one user", identity.ErrInvalidInput))
	}
	if !sess.Expiration.After(now) {
		return fail(fmt.Errorf("%w: expiration %s is not in the future", identity.ErrInvalidInput, sess.Expiration.UTC().Format("2006-01-02T15:04:05Z")))
	}
	if err := identity.ValidateTags(sess.SessionTags); err != nil {
		return fail(err)
	}
	if sess.SessionPolicy != "" {
		if err := identity.ValidateDocument("session policy", sess.SessionPolicy); err != nil {
			return fail(err)
		}
	}
	id, err := s.ids.UniqueID(identity.PrefixTemporaryKey)
	if err != nil {
		return fail(err)
	}
	secret, err := s.ids.SecretAccessKey()
	if err != nil {
		return fail(err)
	}
	token, err := s.ids.SessionToken()
	if err != nil {
		return fail(err)
	}
	sealed, err := s.sealer.SealSecret(id, secret)
	if err != nil {
		return fail(err)
	}
	sess.AccessKeyID, sess.SealedSecret, sess.SessionTokenSHA256 = id, sealed, identity.HashSessionToken(token)
	sess.Expiration = fromMicros(micros(sess.Expiration))
	sess.CreatedAt, sess.Revoked = now, false
	sess.SessionTags = cloneTags(sess.SessionTags)
	if sess.TransitiveTagKeys == nil {
		sess.TransitiveTagKeys = []string{}
	}
	if sess.PolicyARNs == nil {
		sess.PolicyARNs = []string{}
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		kind, pid := identity.KindRole, sess.RoleID
		if sess.UserID != "" {
			kind, pid = identity.KindUser, sess.UserID
		}
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM `+table(kind)+` WHERE id = $1 AND account_id = $2`,
			pid, sess.AccountID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%s %s in account %s: %w", kind, pid, sess.AccountID, identity.ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sessions (access_key_id, account_id, sealed_secret, token_sha256, expiration,
			role_id, role_arn, user_id, session_name, source_identity, session_tags, transitive_tag_keys, session_policy,
			policy_arns, parent_access_key_id, federated_provider, federated_subject, revoked, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)`,
			sess.AccessKeyID, sess.AccountID, sess.SealedSecret, sess.SessionTokenSHA256, micros(sess.Expiration),
			sess.RoleID, sess.RoleARN, sess.UserID, sess.SessionName, sess.SourceIdentity, encodeJSON(sess.SessionTags),
			encodeJSON(sess.TransitiveTagKeys), sess.SessionPolicy, encodeJSON(sess.PolicyARNs), sess.ParentAccessKeyID,
			sess.FederatedProvider, sess.FederatedSubject, false, micros(now))
		return err
	})
	if err != nil {
		return fail(err)
	}
	return sess, identity.Credentials{AccessKeyID: id, SecretAccessKey: secret, SessionToken: token, Expiration: sess.Expiration}, nil
}

// GetSession returns a session, expired or revoked ones included: the
// caller decides with Session.Valid and Session.TokenMatches.
func (s *Store) GetSession(ctx context.Context, accessKeyID string) (identity.Session, error) {
	var (
		sess                      identity.Session
		exp, created              int64
		tags, transitive, polARNs string
	)
	err := s.db.QueryRowContext(ctx, `SELECT access_key_id, account_id, sealed_secret, token_sha256, expiration, role_id,
		role_arn, user_id, session_name, source_identity, session_tags, transitive_tag_keys, session_policy, policy_arns,
		parent_access_key_id, federated_provider, federated_subject, revoked, created_at
		FROM sessions WHERE access_key_id = $1`, accessKeyID).Scan(
		&sess.AccessKeyID, &sess.AccountID, &sess.SealedSecret, &sess.SessionTokenSHA256, &exp, &sess.RoleID,
		&sess.RoleARN, &sess.UserID, &sess.SessionName, &sess.SourceIdentity, &tags, &transitive, &sess.SessionPolicy,
		&polARNs, &sess.ParentAccessKeyID, &sess.FederatedProvider, &sess.FederatedSubject, &sess.Revoked, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return identity.Session{}, fmt.Errorf("session %s: %w", accessKeyID, identity.ErrNotFound)
	}
	if err == nil {
		sess.SessionTags, err = decodeTags(tags)
	}
	if err == nil {
		sess.TransitiveTagKeys, err = decodeList(transitive)
	}
	if err == nil {
		sess.PolicyARNs, err = decodeList(polARNs)
	}
	if err != nil {
		return identity.Session{}, fmt.Errorf("get session %s: %w", accessKeyID, err)
	}
	sess.Expiration, sess.CreatedAt = fromMicros(exp), fromMicros(created)
	return sess, nil
}

// ListSessions returns the account's live sessions, oldest first.
func (s *Store) ListSessions(ctx context.Context, account string, now time.Time) ([]identity.Session, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT access_key_id FROM sessions
		WHERE account_id = $1 AND revoked = FALSE AND expiration > $2 ORDER BY created_at, access_key_id`,
		account, micros(now))
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list sessions: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	out := make([]identity.Session, 0, len(ids))
	for _, id := range ids {
		sess, err := s.GetSession(ctx, id)
		if errors.Is(err, identity.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sess)
	}
	return out, nil
}

// RevokeSession marks one session revoked.
func (s *Store) RevokeSession(ctx context.Context, accessKeyID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sessions SET revoked = TRUE WHERE access_key_id = $1`, accessKeyID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return identity.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke session %s: %w", accessKeyID, err)
	}
	return nil
}

func (s *Store) revokeWhere(ctx context.Context, column, value string) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sessions SET revoked = TRUE
			WHERE `+column+` = $1 AND revoked = FALSE AND expiration > $2`, value, micros(s.stamp()))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// RevokeSessionsByRole revokes the live sessions of a role (by role id)
// and returns how many it revoked.
func (s *Store) RevokeSessionsByRole(ctx context.Context, roleID string) (int64, error) {
	n, err := s.revokeWhere(ctx, "role_id", roleID)
	if err != nil {
		return 0, fmt.Errorf("revoke sessions of role %s: %w", roleID, err)
	}
	return n, nil
}

// RevokeSessionsByParentKey revokes the live sessions obtained with an
// access key (long-term or temporary).
func (s *Store) RevokeSessionsByParentKey(ctx context.Context, accessKeyID string) (int64, error) {
	n, err := s.revokeWhere(ctx, "parent_access_key_id", accessKeyID)
	if err != nil {
		return 0, fmt.Errorf("revoke sessions obtained with %s: %w", accessKeyID, err)
	}
	return n, nil
}

// DeleteExpiredSessions removes sessions whose expiration is before before.
func (s *Store) DeleteExpiredSessions(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expiration < $1`, micros(before))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return n, nil
}
