package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/iamdb/iamdb/internal/identity"
)

// maxGroupsPerUser is the AWS quota of group memberships per user.
const maxGroupsPerUser = 10

func table(kind identity.PrincipalKind) string {
	switch kind {
	case identity.KindUser:
		return "users"
	case identity.KindGroup:
		return "iam_groups"
	case identity.KindRole:
		return "roles"
	}
	panic("sqlstore: unknown principal kind " + string(kind))
}

func validKind(kind identity.PrincipalKind) error {
	switch kind {
	case identity.KindUser, identity.KindGroup, identity.KindRole:
		return nil
	}
	return fmt.Errorf("%w: principal kind %q: use user, group or role", identity.ErrInvalidInput, kind)
}

// lookupID returns the unique id of a user, group or role by name.
func lookupID(ctx context.Context, q querier, kind identity.PrincipalKind, account, name string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM `+table(kind)+` WHERE account_id = $1 AND name_key = $2`,
		account, nameKey(name)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%s %q in account %s: %w", kind, name, account, identity.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("look up %s %q: %w", kind, name, err)
	}
	return id, nil
}

const userColumns = `u.id, u.account_id, u.name, u.path, u.tags, u.created_at,
	COALESCE(bp.account_id, ''), COALESCE(bp.path, ''), COALESCE(bp.name, '')
	FROM users u LEFT JOIN policies bp ON bp.id = u.boundary_policy_id`

func (s *Store) scanUser(sc interface{ Scan(...any) error }) (identity.User, error) {
	var (
		u                      identity.User
		tags                   string
		created                int64
		bpAcct, bpPath, bpName string
	)
	if err := sc.Scan(&u.ID, &u.AccountID, &u.Name, &u.Path, &tags, &created, &bpAcct, &bpPath, &bpName); err != nil {
		return identity.User{}, err
	}
	var err error
	if u.Tags, err = decodeTags(tags); err != nil {
		return identity.User{}, err
	}
	u.CreatedAt = fromMicros(created)
	u.Partition = s.partition
	if bpName != "" {
		u.PermissionsBoundary = identity.PrincipalARN(s.partition, bpAcct, "policy", bpPath, bpName)
	}
	return u, nil
}

func (s *Store) getUser(ctx context.Context, q querier, where string, args ...any) (identity.User, error) {
	u, err := s.scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` WHERE `+where, args...))
	if err != nil {
		return identity.User{}, err
	}
	rows, err := q.QueryContext(ctx, `SELECT g.name FROM group_members m JOIN iam_groups g ON g.id = m.group_id
		WHERE m.user_id = $1 ORDER BY g.name_key`, u.ID)
	if err != nil {
		return identity.User{}, err
	}
	defer rows.Close()
	u.Groups = []string{}
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return identity.User{}, err
		}
		u.Groups = append(u.Groups, g)
	}
	return u, rows.Err()
}

func (s *Store) validateUser(u identity.User) error {
	if err := identity.ValidateName(identity.KindUser, u.Name); err != nil {
		return err
	}
	if err := identity.ValidatePath(u.Path); err != nil {
		return err
	}
	return identity.ValidateTags(u.Tags)
}

// CreateUser creates a user with a fresh AIDA id.
func (s *Store) CreateUser(ctx context.Context, u identity.User) (identity.User, error) {
	u.Path = normPath(u.Path)
	if err := s.validateUser(u); err != nil {
		return identity.User{}, fmt.Errorf("create user: %w", err)
	}
	if len(u.Groups) > 0 {
		return identity.User{}, fmt.Errorf("create user %q: %w: add group memberships with AddUserToGroup", u.Name, identity.ErrInvalidInput)
	}
	id, err := s.ids.UniqueID(identity.PrefixUser)
	if err != nil {
		return identity.User{}, fmt.Errorf("create user %q: %w", u.Name, err)
	}
	u.ID, u.CreatedAt, u.Partition, u.Groups = id, s.stamp(), s.partition, []string{}
	u.Tags = cloneTags(u.Tags)
	err = s.write(ctx, func(tx *sql.Tx) error {
		if err := requireAccount(ctx, tx, u.AccountID); err != nil {
			return err
		}
		boundary, err := s.boundaryID(ctx, tx, u.AccountID, u.PermissionsBoundary)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO users (id, account_id, name, name_key, path, tags, boundary_policy_id, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			u.ID, u.AccountID, u.Name, nameKey(u.Name), u.Path, encodeJSON(u.Tags), boundary, micros(u.CreatedAt))
		if isUniqueViolation(err) {
			return fmt.Errorf("user %q in account %s: %w", u.Name, u.AccountID, identity.ErrAlreadyExists)
		}
		return err
	})
	if err != nil {
		return identity.User{}, fmt.Errorf("create user %q: %w", u.Name, err)
	}
	return u, nil
}

// GetUser returns a user by name (case-insensitive) with its groups.
func (s *Store) GetUser(ctx context.Context, account, name string) (identity.User, error) {
	u, err := s.getUser(ctx, s.db, `u.account_id = $1 AND u.name_key = $2`, account, nameKey(name))
	if errors.Is(err, sql.ErrNoRows) {
		return identity.User{}, fmt.Errorf("user %q in account %s: %w", name, account, identity.ErrNotFound)
	}
	if err != nil {
		return identity.User{}, fmt.Errorf("get user %q: %w", name, err)
	}
	return u, nil
}

// GetUserByID returns a user by its AIDA id.
func (s *Store) GetUserByID(ctx context.Context, id string) (identity.User, error) {
	u, err := s.getUser(ctx, s.db, `u.id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return identity.User{}, fmt.Errorf("user with id %s: %w", id, identity.ErrNotFound)
	}
	if err != nil {
		return identity.User{}, fmt.Errorf("get user %s: %w", id, err)
	}
	return u, nil
}

// ListUsers lists an account's users under pathPrefix, sorted by name.
func (s *Store) ListUsers(ctx context.Context, account, pathPrefix string) ([]identity.User, error) {
	out, err := s.listUsers(ctx, `u.account_id = $1 ORDER BY u.name_key`, account)
	if err != nil {
		return nil, fmt.Errorf("list users of account %s: %w", account, err)
	}
	kept := out[:0]
	for _, u := range out {
		if matchPrefix(u.Path, pathPrefix) {
			kept = append(kept, u)
		}
	}
	return kept, nil
}

func (s *Store) listUsers(ctx context.Context, where string, args ...any) ([]identity.User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userColumns+` WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	var out []identity.User
	byID := map[string]int{}
	for rows.Next() {
		u, err := s.scanUser(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		u.Groups = []string{}
		byID[u.ID] = len(out)
		out = append(out, u)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	rows, err = s.db.QueryContext(ctx, `SELECT m.user_id, g.name FROM group_members m JOIN iam_groups g ON g.id = m.group_id
		WHERE g.account_id = $1`, out[0].AccountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var uid, g string
		if err := rows.Scan(&uid, &g); err != nil {
			return nil, err
		}
		if i, ok := byID[uid]; ok {
			out[i].Groups = append(out[i].Groups, g)
		}
	}
	for i := range out {
		sort.Slice(out[i].Groups, func(a, b int) bool {
			return nameKey(out[i].Groups[a]) < nameKey(out[i].Groups[b])
		})
	}
	return out, rows.Err()
}

// UpdateUser renames a user, moves it to another path, replaces its tags or
// sets/removes its permissions boundary.
func (s *Store) UpdateUser(ctx context.Context, account, name string, upd identity.UserUpdate) (identity.User, error) {
	var out identity.User
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := s.getUser(ctx, tx, `u.account_id = $1 AND u.name_key = $2`, account, nameKey(name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %q in account %s: %w", name, account, identity.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if upd.NewName != nil {
			cur.Name = *upd.NewName
		}
		if upd.Path != nil {
			cur.Path = normPath(*upd.Path)
		}
		if upd.Tags != nil {
			cur.Tags = cloneTags(*upd.Tags)
		}
		if upd.PermissionsBoundary != nil {
			cur.PermissionsBoundary = *upd.PermissionsBoundary
		}
		if err := s.validateUser(cur); err != nil {
			return err
		}
		boundary, err := s.boundaryID(ctx, tx, account, cur.PermissionsBoundary)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE users SET name = $1, name_key = $2, path = $3, tags = $4, boundary_policy_id = $5
			WHERE id = $6`, cur.Name, nameKey(cur.Name), cur.Path, encodeJSON(cur.Tags), boundary, cur.ID)
		if isUniqueViolation(err) {
			return fmt.Errorf("user %q in account %s: %w", cur.Name, account, identity.ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		out, err = s.getUser(ctx, tx, `u.id = $1`, cur.ID)
		return err
	})
	if err != nil {
		return identity.User{}, fmt.Errorf("update user %q: %w", name, err)
	}
	return out, nil
}

// dependents counts what keeps a principal from being deleted.
type dependents struct {
	what  []string
	total int
}

func (d *dependents) count(ctx context.Context, q querier, label, query string, args ...any) error {
	var n int
	if err := q.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		d.what = append(d.what, fmt.Sprintf("%d %s", n, label))
		d.total += n
	}
	return nil
}

func (d *dependents) conflict(kind identity.PrincipalKind, name string) error {
	return fmt.Errorf("%w: %s %q still has %s; remove them first or delete with force",
		identity.ErrConflict, kind, name, strings.Join(d.what, ", "))
}

// DeleteUser deletes a user. Without opts.Force it refuses while the user
// has access keys, inline or attached policies or group memberships. With
// Force it removes them and revokes sessions derived from the user's keys,
// all in one transaction.
func (s *Store) DeleteUser(ctx context.Context, account, name string, opts identity.DeleteOptions) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		id, err := lookupID(ctx, tx, identity.KindUser, account, name)
		if err != nil {
			return err
		}
		var d dependents
		for _, c := range []struct{ label, query string }{
			{"access key(s)", `SELECT COUNT(*) FROM access_keys WHERE user_id = $1`},
			{"inline policy(ies)", `SELECT COUNT(*) FROM user_inline_policies WHERE owner_id = $1`},
			{"attached managed policy(ies)", `SELECT COUNT(*) FROM user_attached_policies WHERE owner_id = $1`},
			{"group membership(s)", `SELECT COUNT(*) FROM group_members WHERE user_id = $1`},
		} {
			if err := d.count(ctx, tx, c.label, c.query, id); err != nil {
				return err
			}
		}
		if d.total > 0 && !opts.Force {
			return d.conflict(identity.KindUser, name)
		}
		now := micros(s.stamp())
		for _, q := range []string{
			`UPDATE sessions SET revoked = TRUE WHERE expiration > $2 AND parent_access_key_id IN (SELECT id FROM access_keys WHERE user_id = $1)`,
			`UPDATE sessions SET revoked = TRUE WHERE expiration > $2 AND user_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, id, now); err != nil {
				return err
			}
		}
		for _, q := range []string{
			`DELETE FROM access_keys WHERE user_id = $1`,
			`DELETE FROM user_inline_policies WHERE owner_id = $1`,
			`DELETE FROM user_attached_policies WHERE owner_id = $1`,
			`DELETE FROM group_members WHERE user_id = $1`,
			`DELETE FROM users WHERE id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}
