package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
)

// touchGranularity bounds how often TouchAccessKeyLastUsed writes for one
// key: a busy key is written at most once a minute.
const touchGranularity = time.Minute

const keyColumns = `k.id, u.account_id, k.user_id, u.name, k.status, k.created_at, k.last_used_at, k.sealed_secret
	FROM access_keys k JOIN users u ON u.id = k.user_id`

func scanKey(sc interface{ Scan(...any) error }) (identity.AccessKey, error) {
	var (
		k        identity.AccessKey
		status   string
		created  int64
		lastUsed sql.NullInt64
	)
	if err := sc.Scan(&k.ID, &k.AccountID, &k.UserID, &k.UserName, &status, &created, &lastUsed, &k.SealedSecret); err != nil {
		return identity.AccessKey{}, err
	}
	k.Status, k.CreatedAt = identity.AccessKeyStatus(status), fromMicros(created)
	if lastUsed.Valid {
		k.LastUsedAt = fromMicros(lastUsed.Int64)
	}
	return k, nil
}

// CreateAccessKey creates an active key for a user and returns its secret,
// which is stored only sealed. A user may hold two keys (ErrLimitExceeded).
func (s *Store) CreateAccessKey(ctx context.Context, account, user string) (identity.AccessKey, string, error) {
	id, err := s.ids.UniqueID(identity.PrefixAccessKey)
	if err != nil {
		return identity.AccessKey{}, "", fmt.Errorf("create access key for user %q: %w", user, err)
	}
	secret, err := s.ids.SecretAccessKey()
	if err != nil {
		return identity.AccessKey{}, "", fmt.Errorf("create access key for user %q: %w", user, err)
	}
	sealed, err := s.sealer.SealSecret(id, secret)
	if err != nil {
		return identity.AccessKey{}, "", fmt.Errorf("create access key for user %q: %w", user, err)
	}
	k := identity.AccessKey{ID: id, AccountID: account, Status: identity.KeyActive, CreatedAt: s.stamp(), SealedSecret: sealed}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if k.UserID, err = lookupID(ctx, tx, identity.KindUser, account, user); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT name FROM users WHERE id = $1`, k.UserID).Scan(&k.UserName); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM access_keys WHERE user_id = $1`, k.UserID).Scan(&n); err != nil {
			return err
		}
		if n >= identity.MaxAccessKeysPerUser {
			return fmt.Errorf("%w: the user already has %d access keys, the maximum; delete one first",
				identity.ErrLimitExceeded, n)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO access_keys (id, user_id, status, sealed_secret, created_at)
			VALUES ($1, $2, $3, $4, $5)`, k.ID, k.UserID, string(k.Status), k.SealedSecret, micros(k.CreatedAt))
		return err
	})
	if err != nil {
		return identity.AccessKey{}, "", fmt.Errorf("create access key for user %q: %w", user, err)
	}
	return k, secret, nil
}

// ListAccessKeys lists a user's keys by creation time, without their
// sealed secrets.
func (s *Store) ListAccessKeys(ctx context.Context, account, user string) ([]identity.AccessKey, error) {
	uid, err := lookupID(ctx, s.db, identity.KindUser, account, user)
	if err != nil {
		return nil, fmt.Errorf("list access keys: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+keyColumns+` WHERE k.user_id = $1 ORDER BY k.created_at, k.id`, uid)
	if err != nil {
		return nil, fmt.Errorf("list access keys of user %q: %w", user, err)
	}
	defer rows.Close()
	out := []identity.AccessKey{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list access keys of user %q: %w", user, err)
		}
		k.SealedSecret = nil
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list access keys of user %q: %w", user, err)
	}
	return out, nil
}

// GetAccessKey returns a key with its sealed secret.
func (s *Store) GetAccessKey(ctx context.Context, id string) (identity.AccessKey, error) {
	k, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` WHERE k.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return identity.AccessKey{}, fmt.Errorf("access key %s: %w", id, identity.ErrNotFound)
	}
	if err != nil {
		return identity.AccessKey{}, fmt.Errorf("get access key %s: %w", id, err)
	}
	return k, nil
}

// UpdateAccessKeyStatus activates or deactivates a key. Sessions the key
// already obtained are not revoked here; use RevokeSessionsByParentKey.
func (s *Store) UpdateAccessKeyStatus(ctx context.Context, id string, status identity.AccessKeyStatus) error {
	if status != identity.KeyActive && status != identity.KeyInactive {
		return fmt.Errorf("update access key %s: %w: status %q: use Active or Inactive", id, identity.ErrInvalidInput, status)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE access_keys SET status = $1 WHERE id = $2`, string(status), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return identity.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("update access key %s: %w", id, err)
	}
	return nil
}

// DeleteAccessKey deletes a key and revokes the sessions it obtained.
func (s *Store) DeleteAccessKey(ctx context.Context, id string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM access_keys WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return identity.ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `UPDATE sessions SET revoked = TRUE WHERE parent_access_key_id = $1 AND expiration > $2`,
			id, micros(s.stamp()))
		return err
	})
	if err != nil {
		return fmt.Errorf("delete access key %s: %w", id, err)
	}
	return nil
}

// TouchAccessKeyLastUsed records a use of the key. It is a single
// statement outside the generation counter, and writes nothing when the
// recorded use is less than a minute older than at.
func (s *Store) TouchAccessKeyLastUsed(ctx context.Context, id string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE access_keys SET last_used_at = $1
		WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)`,
		micros(at), id, micros(at.Add(-touchGranularity)))
	if err != nil {
		return fmt.Errorf("record use of access key %s: %w", id, err)
	}
	return nil
}
