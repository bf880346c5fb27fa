package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/iamdb/iamdb/internal/identity"
)

const groupColumns = `g.id, g.account_id, g.name, g.path, g.created_at FROM iam_groups g`

func (s *Store) scanGroup(sc interface{ Scan(...any) error }) (identity.Group, error) {
	var (
		g       identity.Group
		created int64
	)
	if err := sc.Scan(&g.ID, &g.AccountID, &g.Name, &g.Path, &created); err != nil {
		return identity.Group{}, err
	}
	g.CreatedAt, g.Partition = fromMicros(created), s.partition
	return g, nil
}

func (s *Store) queryGroups(ctx context.Context, query string, args ...any) ([]identity.Group, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []identity.Group
	for rows.Next() {
		g, err := s.scanGroup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

// CreateGroup creates a group with a fresh AGPA id.
func (s *Store) CreateGroup(ctx context.Context, g identity.Group) (identity.Group, error) {
	g.Path = normPath(g.Path)
	if err := identity.ValidateName(identity.KindGroup, g.Name); err != nil {
		return identity.Group{}, fmt.Errorf("create group: %w", err)
	}
	if err := identity.ValidatePath(g.Path); err != nil {
		return identity.Group{}, fmt.Errorf("create group %q: %w", g.Name, err)
	}
	id, err := s.ids.UniqueID(identity.PrefixGroup)
	if err != nil {
		return identity.Group{}, fmt.Errorf("create group %q: %w", g.Name, err)
	}
	g.ID, g.CreatedAt, g.Partition = id, s.stamp(), s.partition
	err = s.write(ctx, func(tx *sql.Tx) error {
		if err := requireAccount(ctx, tx, g.AccountID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO iam_groups (id, account_id, name, name_key, path, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, g.ID, g.AccountID, g.Name, nameKey(g.Name), g.Path, micros(g.CreatedAt))
		if isUniqueViolation(err) {
			return fmt.Errorf("group %q in account %s: %w", g.Name, g.AccountID, identity.ErrAlreadyExists)
		}
		return err
	})
	if err != nil {
		return identity.Group{}, fmt.Errorf("create group %q: %w", g.Name, err)
	}
	return g, nil
}

// GetGroup returns a group by name.
func (s *Store) GetGroup(ctx context.Context, account, name string) (identity.Group, error) {
	g, err := s.scanGroup(s.db.QueryRowContext(ctx, `SELECT `+groupColumns+` WHERE g.account_id = $1 AND g.name_key = $2`,
		account, nameKey(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return identity.Group{}, fmt.Errorf("group %q in account %s: %w", name, account, identity.ErrNotFound)
	}
	if err != nil {
		return identity.Group{}, fmt.Errorf("get group %q: %w", name, err)
	}
	return g, nil
}

// ListGroups lists an account's groups under pathPrefix, sorted by name.
func (s *Store) ListGroups(ctx context.Context, account, pathPrefix string) ([]identity.Group, error) {
	all, err := s.queryGroups(ctx, `SELECT `+groupColumns+` WHERE g.account_id = $1 ORDER BY g.name_key`, account)
	if err != nil {
		return nil, fmt.Errorf("list groups of account %s: %w", account, err)
	}
	out := all[:0]
	for _, g := range all {
		if matchPrefix(g.Path, pathPrefix) {
			out = append(out, g)
		}
	}
	return out, nil
}

// DeleteGroup deletes a group. Without opts.Force it refuses while the
// group has members or policies; with Force it removes them first.
func (s *Store) DeleteGroup(ctx context.Context, account, name string, opts identity.DeleteOptions) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		id, err := lookupID(ctx, tx, identity.KindGroup, account, name)
		if err != nil {
			return err
		}
		var d dependents
		for _, c := range []struct{ label, query string }{
			{"member(s)", `SELECT COUNT(*) FROM group_members WHERE group_id = $1`},
			{"inline policy(ies)", `SELECT COUNT(*) FROM group_inline_policies WHERE owner_id = $1`},
			{"attached managed policy(ies)", `SELECT COUNT(*) FROM group_attached_policies WHERE owner_id = $1`},
		} {
			if err := d.count(ctx, tx, c.label, c.query, id); err != nil {
				return err
			}
		}
		if d.total > 0 && !opts.Force {
			return d.conflict(identity.KindGroup, name)
		}
		for _, q := range []string{
			`DELETE FROM group_members WHERE group_id = $1`,
			`DELETE FROM group_inline_policies WHERE owner_id = $1`,
			`DELETE FROM group_attached_policies WHERE owner_id = $1`,
			`DELETE FROM iam_groups WHERE id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete group %q: %w", name, err)
	}
	return nil
}

// AddUserToGroup adds a membership; adding an existing member is a no-op.
// A user may belong to at most ten groups (ErrLimitExceeded), as AWS.
func (s *Store) AddUserToGroup(ctx context.Context, account, group, user string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		gid, err := lookupID(ctx, tx, identity.KindGroup, account, group)
		if err != nil {
			return err
		}
		uid, err := lookupID(ctx, tx, identity.KindUser, account, user)
		if err != nil {
			return err
		}
		var member, n int
		if err := tx.QueryRowContext(ctx, `SELECT
			(SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND user_id = $2),
			(SELECT COUNT(*) FROM group_members WHERE user_id = $2)`, gid, uid).Scan(&member, &n); err != nil {
			return err
		}
		if member > 0 {
			return nil
		}
		if n >= maxGroupsPerUser {
			return fmt.Errorf("%w: user %q is already in %d groups, the maximum", identity.ErrLimitExceeded, user, n)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)`, gid, uid)
		return err
	})
	if err != nil {
		return fmt.Errorf("add user %q to group %q: %w", user, group, err)
	}
	return nil
}

// RemoveUserFromGroup removes a membership (ErrNotFound when absent).
func (s *Store) RemoveUserFromGroup(ctx context.Context, account, group, user string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		gid, err := lookupID(ctx, tx, identity.KindGroup, account, group)
		if err != nil {
			return err
		}
		uid, err := lookupID(ctx, tx, identity.KindUser, account, user)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM group_members WHERE group_id = $1 AND user_id = $2`, gid, uid)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("user %q is not a member: %w", user, identity.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove user %q from group %q: %w", user, group, err)
	}
	return nil
}

// ListGroupsForUser lists the groups a user belongs to, sorted by name.
func (s *Store) ListGroupsForUser(ctx context.Context, account, user string) ([]identity.Group, error) {
	uid, err := lookupID(ctx, s.db, identity.KindUser, account, user)
	if err != nil {
		return nil, fmt.Errorf("list groups for user: %w", err)
	}
	out, err := s.queryGroups(ctx, `SELECT `+groupColumns+` JOIN group_members m ON m.group_id = g.id
		WHERE m.user_id = $1 ORDER BY g.name_key`, uid)
	if err != nil {
		return nil, fmt.Errorf("list groups for user %q: %w", user, err)
	}
	return out, nil
}

// ListUsersInGroup lists a group's members, sorted by name.
func (s *Store) ListUsersInGroup(ctx context.Context, account, group string) ([]identity.User, error) {
	gid, err := lookupID(ctx, s.db, identity.KindGroup, account, group)
	if err != nil {
		return nil, fmt.Errorf("list users in group: %w", err)
	}
	out, err := s.listUsers(ctx, `u.id IN (SELECT user_id FROM group_members WHERE group_id = $1) ORDER BY u.name_key`, gid)
	if err != nil {
		return nil, fmt.Errorf("list users in group %q: %w", group, err)
	}
	return out, nil
}
