package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
)

const roleColumns = `r.id, r.account_id, r.name, r.path, r.description, r.trust_policy, r.max_session_seconds,
	r.tags, r.created_at, COALESCE(bp.account_id, ''), COALESCE(bp.path, ''), COALESCE(bp.name, '')
	FROM roles r LEFT JOIN policies bp ON bp.id = r.boundary_policy_id`

func (s *Store) scanRole(sc interface{ Scan(...any) error }) (identity.Role, error) {
	var (
		r                      identity.Role
		tags                   string
		maxSeconds, created    int64
		bpAcct, bpPath, bpName string
	)
	if err := sc.Scan(&r.ID, &r.AccountID, &r.Name, &r.Path, &r.Description, &r.TrustPolicy, &maxSeconds,
		&tags, &created, &bpAcct, &bpPath, &bpName); err != nil {
		return identity.Role{}, err
	}
	var err error
	if r.Tags, err = decodeTags(tags); err != nil {
		return identity.Role{}, err
	}
	r.MaxSessionDuration = time.Duration(maxSeconds) * time.Second
	r.CreatedAt, r.Partition = fromMicros(created), s.partition
	if bpName != "" {
		r.PermissionsBoundary = identity.PrincipalARN(s.partition, bpAcct, "policy", bpPath, bpName)
	}
	return r, nil
}

func validateRole(r identity.Role) error {
	if err := identity.ValidateName(identity.KindRole, r.Name); err != nil {
		return err
	}
	if err := identity.ValidatePath(r.Path); err != nil {
		return err
	}
	if err := identity.ValidateDocument("trust policy of role "+r.Name, r.TrustPolicy); err != nil {
		return err
	}
	if err := identity.ValidateMaxSessionDuration(r.MaxSessionDuration); err != nil {
		return err
	}
	if len(r.Description) > 1000 {
		return fmt.Errorf("%w: role description: at most 1000 characters", identity.ErrInvalidInput)
	}
	return identity.ValidateTags(r.Tags)
}

// CreateRole creates a role with a fresh AROA id.
func (s *Store) CreateRole(ctx context.Context, r identity.Role) (identity.Role, error) {
	r.Path = normPath(r.Path)
	if r.MaxSessionDuration == 0 {
		r.MaxSessionDuration = identity.DefaultMaxSessionDuration
	}
	if err := validateRole(r); err != nil {
		return identity.Role{}, fmt.Errorf("create role: %w", err)
	}
	id, err := s.ids.UniqueID(identity.PrefixRole)
	if err != nil {
		return identity.Role{}, fmt.Errorf("create role %q: %w", r.Name, err)
	}
	r.ID, r.CreatedAt, r.Partition, r.Tags = id, s.stamp(), s.partition, cloneTags(r.Tags)
	err = s.write(ctx, func(tx *sql.Tx) error {
		if err := requireAccount(ctx, tx, r.AccountID); err != nil {
			return err
		}
		boundary, err := s.boundaryID(ctx, tx, r.AccountID, r.PermissionsBoundary)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO roles (id, account_id, name, name_key, path, description, trust_policy,
			max_session_seconds, tags, boundary_policy_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			r.ID, r.AccountID, r.Name, nameKey(r.Name), r.Path, r.Description, r.TrustPolicy,
			int64(r.MaxSessionDuration/time.Second), encodeJSON(r.Tags), boundary, micros(r.CreatedAt))
		if isUniqueViolation(err) {
			return fmt.Errorf("role %q in account %s: %w", r.Name, r.AccountID, identity.ErrAlreadyExists)
		}
		return err
	})
	if err != nil {
		return identity.Role{}, fmt.Errorf("create role %q: %w", r.Name, err)
	}
	return r, nil
}

// GetRole returns a role by name.
func (s *Store) GetRole(ctx context.Context, account, name string) (identity.Role, error) {
	r, err := s.scanRole(s.db.QueryRowContext(ctx, `SELECT `+roleColumns+` WHERE r.account_id = $1 AND r.name_key = $2`,
		account, nameKey(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return identity.Role{}, fmt.Errorf("role %q in account %s: %w", name, account, identity.ErrNotFound)
	}
	if err != nil {
		return identity.Role{}, fmt.Errorf("get role %q: %w", name, err)
	}
	return r, nil
}

// GetRoleByID returns a role by its AROA id.
func (s *Store) GetRoleByID(ctx context.Context, id string) (identity.Role, error) {
	r, err := s.scanRole(s.db.QueryRowContext(ctx, `SELECT `+roleColumns+` WHERE r.id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return identity.Role{}, fmt.Errorf("role with id %s: %w", id, identity.ErrNotFound)
	}
	if err != nil {
		return identity.Role{}, fmt.Errorf("get role %s: %w", id, err)
	}
	return r, nil
}

// ListRoles lists an account's roles under pathPrefix, sorted by name.
func (s *Store) ListRoles(ctx context.Context, account, pathPrefix string) ([]identity.Role, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+roleColumns+` WHERE r.account_id = $1 ORDER BY r.name_key`, account)
	if err != nil {
		return nil, fmt.Errorf("list roles of account %s: %w", account, err)
	}
	defer rows.Close()
	var out []identity.Role
	for rows.Next() {
		r, err := s.scanRole(rows)
		if err != nil {
			return nil, fmt.Errorf("list roles of account %s: %w", account, err)
		}
		if matchPrefix(r.Path, pathPrefix) {
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list roles of account %s: %w", account, err)
	}
	return out, nil
}

// UpdateRole changes a role's description, trust policy, maximum session
// duration, tags or permissions boundary.
func (s *Store) UpdateRole(ctx context.Context, account, name string, upd identity.RoleUpdate) (identity.Role, error) {
	var out identity.Role
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := s.scanRole(tx.QueryRowContext(ctx, `SELECT `+roleColumns+` WHERE r.account_id = $1 AND r.name_key = $2`,
			account, nameKey(name)))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("role %q in account %s: %w", name, account, identity.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if upd.Description != nil {
			cur.Description = *upd.Description
		}
		if upd.TrustPolicy != nil {
			cur.TrustPolicy = *upd.TrustPolicy
		}
		if upd.MaxSessionDuration != nil {
			cur.MaxSessionDuration = *upd.MaxSessionDuration
		}
		if upd.Tags != nil {
			cur.Tags = cloneTags(*upd.Tags)
		}
		if upd.PermissionsBoundary != nil {
			cur.PermissionsBoundary = *upd.PermissionsBoundary
		}
		if err := validateRole(cur); err != nil {
			return err
		}
		boundary, err := s.boundaryID(ctx, tx, account, cur.PermissionsBoundary)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE roles SET description = $1, trust_policy = $2, max_session_seconds = $3,
			tags = $4, boundary_policy_id = $5 WHERE id = $6`, cur.Description, cur.TrustPolicy,
			int64(cur.MaxSessionDuration/time.Second), encodeJSON(cur.Tags), boundary, cur.ID); err != nil {
			return err
		}
		out = cur
		return nil
	})
	if err != nil {
		return identity.Role{}, fmt.Errorf("update role %q: %w", name, err)
	}
	return out, nil
}

// DeleteRole deletes a role and revokes its live sessions. Without
// opts.Force it refuses while the role has inline or attached policies.
func (s *Store) DeleteRole(ctx context.Context, account, name string, opts identity.DeleteOptions) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		id, err := lookupID(ctx, tx, identity.KindRole, account, name)
		if err != nil {
			return err
		}
		var d dependents
		for _, c := range []struct{ label, query string }{
			{"inline policy(ies)", `SELECT COUNT(*) FROM role_inline_policies WHERE owner_id = $1`},
			{"attached managed policy(ies)", `SELECT COUNT(*) FROM role_attached_policies WHERE owner_id = $1`},
		} {
			if err := d.count(ctx, tx, c.label, c.query, id); err != nil {
				return err
			}
		}
		if d.total > 0 && !opts.Force {
			return d.conflict(identity.KindRole, name)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sessions SET revoked = TRUE WHERE role_id = $1 AND expiration > $2`,
			id, micros(s.stamp())); err != nil {
			return err
		}
		for _, q := range []string{
			`DELETE FROM role_inline_policies WHERE owner_id = $1`,
			`DELETE FROM role_attached_policies WHERE owner_id = $1`,
			`DELETE FROM roles WHERE id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete role %q: %w", name, err)
	}
	return nil
}
