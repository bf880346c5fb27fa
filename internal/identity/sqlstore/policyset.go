package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/iamdb/iamdb/internal/identity"
)

// read runs fn against one snapshot where the database offers it cheaply
// (a read-only repeatable-read transaction on PostgreSQL). On SQLite the
// statements run on the pool: an IMMEDIATE transaction would block writers.
func (s *Store) read(ctx context.Context, fn func(q querier) error) error {
	if s.dialect != dialectPostgres {
		return fn(s.db)
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return fmt.Errorf("begin read transaction: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// PolicySetForUser returns the user's policies in evaluation-report order:
// the user's inline then managed policies, then each group's (by group
// name) inline then managed policies; a managed policy reached twice
// appears once. Boundary is the default version of the user's permissions
// boundary.
func (s *Store) PolicySetForUser(ctx context.Context, account, name string) (identity.PolicySet, error) {
	var set identity.PolicySet
	err := s.read(ctx, func(q querier) error {
		u, err := s.getUser(ctx, q, `u.account_id = $1 AND u.name_key = $2`, account, nameKey(name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %q in account %s: %w", name, account, identity.ErrNotFound)
		}
		if err != nil {
			return err
		}
		set.PrincipalARN = u.ARN()
		seen := map[string]bool{}
		if err := s.appendHolderDocs(ctx, q, &set, identity.KindUser, u.ID, u.Name, seen); err != nil {
			return err
		}
		rows, err := q.QueryContext(ctx, `SELECT g.id, g.name FROM group_members m JOIN iam_groups g ON g.id = m.group_id
			WHERE m.user_id = $1 ORDER BY g.name_key`, u.ID)
		if err != nil {
			return err
		}
		type grp struct{ id, name string }
		var groups []grp
		for rows.Next() {
			var g grp
			if err := rows.Scan(&g.id, &g.name); err != nil {
				rows.Close()
				return err
			}
			groups = append(groups, g)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, g := range groups {
			if err := s.appendHolderDocs(ctx, q, &set, identity.KindGroup, g.id, g.name, seen); err != nil {
				return err
			}
		}
		set.Boundary, err = s.boundaryDoc(ctx, q, "users", u.ID)
		return err
	})
	if err != nil {
		return identity.PolicySet{}, fmt.Errorf("policies of user %q: %w", name, err)
	}
	return set, nil
}

// PolicySetForRole returns the role's inline then managed policies and its
// permissions boundary.
func (s *Store) PolicySetForRole(ctx context.Context, account, name string) (identity.PolicySet, error) {
	var set identity.PolicySet
	err := s.read(ctx, func(q querier) error {
		r, err := s.scanRole(q.QueryRowContext(ctx, `SELECT `+roleColumns+` WHERE r.account_id = $1 AND r.name_key = $2`,
			account, nameKey(name)))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("role %q in account %s: %w", name, account, identity.ErrNotFound)
		}
		if err != nil {
			return err
		}
		set.PrincipalARN = r.ARN()
		if err := s.appendHolderDocs(ctx, q, &set, identity.KindRole, r.ID, r.Name, map[string]bool{}); err != nil {
			return err
		}
		set.Boundary, err = s.boundaryDoc(ctx, q, "roles", r.ID)
		return err
	})
	if err != nil {
		return identity.PolicySet{}, fmt.Errorf("policies of role %q: %w", name, err)
	}
	return set, nil
}

func (s *Store) appendHolderDocs(ctx context.Context, q querier, set *identity.PolicySet, kind identity.PrincipalKind,
	id, name string, seen map[string]bool) error {
	inline, err := inlineDocs(ctx, q, kind, id)
	if err != nil {
		return err
	}
	for _, p := range inline {
		set.Policies = append(set.Policies, identity.PolicyDocument{
			ID: identity.InlinePolicyID(kind, name, p.Name), Document: p.Document})
	}
	managed, err := s.attachedDocs(ctx, q, kind, id)
	if err != nil {
		return err
	}
	for _, d := range managed {
		if !seen[d.ID] {
			seen[d.ID] = true
			set.Policies = append(set.Policies, d.PolicyDocument)
		}
	}
	return nil
}

func (s *Store) boundaryDoc(ctx context.Context, q querier, tbl, id string) (*identity.PolicyDocument, error) {
	var acct, path, name, doc string
	err := q.QueryRowContext(ctx, `SELECT p.account_id, p.path, p.name, v.document FROM `+tbl+` x
		JOIN policies p ON p.id = x.boundary_policy_id
		JOIN policy_versions v ON v.policy_id = p.id AND v.version_id = p.default_version
		WHERE x.id = $1`, id).Scan(&acct, &path, &name, &doc)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &identity.PolicyDocument{ID: identity.PrincipalARN(s.partition, acct, "policy", path, name), Document: doc}, nil
}
