package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/iamdb/iamdb/internal/identity"
)

// policyRef is a managed policy found by ARN.
type policyRef struct {
	id, account, name, path string
}

// policyByARN resolves a customer managed policy ARN of this store.
func (s *Store) policyByARN(ctx context.Context, q querier, policyARN string) (policyRef, error) {
	a, err := identity.ParseARN(policyARN)
	if err != nil {
		return policyRef{}, err
	}
	if a.Service != "iam" || a.Type != "policy" {
		return policyRef{}, fmt.Errorf("%w: %q is not a managed policy ARN (arn:%s:iam::ACCOUNT:policy/NAME)",
			identity.ErrInvalidInput, policyARN, s.partition)
	}
	notFound := fmt.Errorf("policy %s: %w", policyARN, identity.ErrNotFound)
	if a.Partition != s.partition {
		return policyRef{}, notFound
	}
	p := policyRef{account: a.Account}
	err = q.QueryRowContext(ctx, `SELECT id, name, path FROM policies WHERE account_id = $1 AND name_key = $2`,
		a.Account, nameKey(a.Name)).Scan(&p.id, &p.name, &p.path)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && p.path != a.Path) {
		return policyRef{}, notFound
	}
	if err != nil {
		return policyRef{}, fmt.Errorf("look up policy %s: %w", policyARN, err)
	}
	return p, nil
}

// boundaryID resolves a permissions boundary ARN to the policy id to store
// (nil for no boundary). The policy must be in the principal's account.
func (s *Store) boundaryID(ctx context.Context, q querier, account, boundaryARN string) (any, error) {
	if boundaryARN == "" {
		return nil, nil
	}
	p, err := s.policyByARN(ctx, q, boundaryARN)
	if err != nil {
		return nil, fmt.Errorf("permissions boundary: %w", err)
	}
	if p.account != account {
		return nil, fmt.Errorf("%w: permissions boundary %s belongs to account %s, not %s",
			identity.ErrInvalidInput, boundaryARN, p.account, account)
	}
	return p.id, nil
}

// CreatePolicy creates a managed policy whose version v1 is document.
func (s *Store) CreatePolicy(ctx context.Context, p identity.ManagedPolicy, document string) (identity.ManagedPolicy, error) {
	p.Path = normPath(p.Path)
	if err := identity.ValidatePolicyName(p.Name); err != nil {
		return identity.ManagedPolicy{}, fmt.Errorf("create policy: %w", err)
	}
	if err := identity.ValidatePath(p.Path); err != nil {
		return identity.ManagedPolicy{}, fmt.Errorf("create policy %q: %w", p.Name, err)
	}
	if err := identity.ValidateDocument("policy document", document); err != nil {
		return identity.ManagedPolicy{}, fmt.Errorf("create policy %q: %w", p.Name, err)
	}
	if len(p.Description) > 1000 {
		return identity.ManagedPolicy{}, fmt.Errorf("create policy %q: %w: description: at most 1000 characters", p.Name, identity.ErrInvalidInput)
	}
	id, err := s.ids.UniqueID(identity.PrefixPolicy)
	if err != nil {
		return identity.ManagedPolicy{}, fmt.Errorf("create policy %q: %w", p.Name, err)
	}
	now := s.stamp()
	p.ID, p.CreatedAt, p.UpdatedAt, p.Partition, p.DefaultVersion = id, now, now, s.partition, "v1"
	p.Versions = []identity.PolicyVersion{{VersionID: "v1", Document: document, IsDefault: true, CreatedAt: now}}
	p.AttachmentCount, p.BoundaryCount = 0, 0
	err = s.write(ctx, func(tx *sql.Tx) error {
		if err := requireAccount(ctx, tx, p.AccountID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO policies (id, account_id, name, name_key, path, description,
			default_version, next_version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'v1', 2, $7, $7)`,
			p.ID, p.AccountID, p.Name, nameKey(p.Name), p.Path, p.Description, micros(now))
		if isUniqueViolation(err) {
			return fmt.Errorf("policy %q in account %s: %w", p.Name, p.AccountID, identity.ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO policy_versions (policy_id, version_id, document, created_at)
			VALUES ($1, 'v1', $2, $3)`, p.ID, document, micros(now))
		return err
	})
	if err != nil {
		return identity.ManagedPolicy{}, fmt.Errorf("create policy %q: %w", p.Name, err)
	}
	return p, nil
}

func (s *Store) loadPolicy(ctx context.Context, q querier, id string) (identity.ManagedPolicy, error) {
	var (
		p                identity.ManagedPolicy
		created, updated int64
	)
	err := q.QueryRowContext(ctx, `SELECT id, account_id, name, path, description, default_version, created_at, updated_at,
		(SELECT COUNT(*) FROM user_attached_policies WHERE policy_id = $1)
		+ (SELECT COUNT(*) FROM group_attached_policies WHERE policy_id = $1)
		+ (SELECT COUNT(*) FROM role_attached_policies WHERE policy_id = $1),
		(SELECT COUNT(*) FROM users WHERE boundary_policy_id = $1)
		+ (SELECT COUNT(*) FROM roles WHERE boundary_policy_id = $1)
		FROM policies WHERE id = $1`, id).Scan(&p.ID, &p.AccountID, &p.Name, &p.Path, &p.Description,
		&p.DefaultVersion, &created, &updated, &p.AttachmentCount, &p.BoundaryCount)
	if err != nil {
		return identity.ManagedPolicy{}, err
	}
	p.CreatedAt, p.UpdatedAt, p.Partition = fromMicros(created), fromMicros(updated), s.partition
	rows, err := q.QueryContext(ctx, `SELECT version_id, document, created_at FROM policy_versions WHERE policy_id = $1`, id)
	if err != nil {
		return identity.ManagedPolicy{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var v identity.PolicyVersion
		var c int64
		if err := rows.Scan(&v.VersionID, &v.Document, &c); err != nil {
			return identity.ManagedPolicy{}, err
		}
		v.CreatedAt, v.IsDefault = fromMicros(c), v.VersionID == p.DefaultVersion
		p.Versions = append(p.Versions, v)
	}
	if err := rows.Err(); err != nil {
		return identity.ManagedPolicy{}, err
	}
	sortVersions(p.Versions)
	return p, nil
}

// versionNumber turns "v12" into 12.
func versionNumber(v string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(v, "v"))
	return n
}

func sortVersions(vs []identity.PolicyVersion) {
	for i := 1; i < len(vs); i++ {
		for j := i; j > 0 && versionNumber(vs[j].VersionID) < versionNumber(vs[j-1].VersionID); j-- {
			vs[j], vs[j-1] = vs[j-1], vs[j]
		}
	}
}

// GetPolicy returns a managed policy with all its versions.
func (s *Store) GetPolicy(ctx context.Context, policyARN string) (identity.ManagedPolicy, error) {
	ref, err := s.policyByARN(ctx, s.db, policyARN)
	if err != nil {
		return identity.ManagedPolicy{}, fmt.Errorf("get policy: %w", err)
	}
	p, err := s.loadPolicy(ctx, s.db, ref.id)
	if errors.Is(err, sql.ErrNoRows) {
		return identity.ManagedPolicy{}, fmt.Errorf("get policy %s: %w", policyARN, identity.ErrNotFound)
	}
	if err != nil {
		return identity.ManagedPolicy{}, fmt.Errorf("get policy %s: %w", policyARN, err)
	}
	return p, nil
}

// ListPolicies lists an account's managed policies under pathPrefix,
// sorted by name.
func (s *Store) ListPolicies(ctx context.Context, account, pathPrefix string) ([]identity.ManagedPolicy, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, path FROM policies WHERE account_id = $1 ORDER BY name_key`, account)
	if err != nil {
		return nil, fmt.Errorf("list policies of account %s: %w", account, err)
	}
	var ids []string
	for rows.Next() {
		var id, path string
		if err := rows.Scan(&id, &path); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list policies of account %s: %w", account, err)
		}
		if matchPrefix(path, pathPrefix) {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list policies of account %s: %w", account, err)
	}
	out := make([]identity.ManagedPolicy, 0, len(ids))
	for _, id := range ids {
		p, err := s.loadPolicy(ctx, s.db, id)
		if errors.Is(err, sql.ErrNoRows) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list policies of account %s: %w", account, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// CreatePolicyVersion adds a version, refusing a sixth (ErrLimitExceeded).
func (s *Store) CreatePolicyVersion(ctx context.Context, policyARN, document string, setDefault bool) (identity.PolicyVersion, error) {
	if err := identity.ValidateDocument("policy document", document); err != nil {
		return identity.PolicyVersion{}, fmt.Errorf("create version of policy %s: %w", policyARN, err)
	}
	v := identity.PolicyVersion{Document: document, IsDefault: setDefault, CreatedAt: s.stamp()}
	err := s.write(ctx, func(tx *sql.Tx) error {
		ref, err := s.policyByARN(ctx, tx, policyARN)
		if err != nil {
			return err
		}
		var count, next int64
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM policy_versions WHERE policy_id = $1), next_version
			FROM policies WHERE id = $1`, ref.id).Scan(&count, &next); err != nil {
			return err
		}
		if count >= identity.MaxPolicyVersions {
			return fmt.Errorf("%w: the policy already has %d versions, the maximum; delete a non-default version first",
				identity.ErrLimitExceeded, count)
		}
		v.VersionID = "v" + strconv.FormatInt(next, 10)
		if _, err := tx.ExecContext(ctx, `INSERT INTO policy_versions (policy_id, version_id, document, created_at)
			VALUES ($1, $2, $3, $4)`, ref.id, v.VersionID, document, micros(v.CreatedAt)); err != nil {
			return err
		}
		q := `UPDATE policies SET next_version = next_version + 1, updated_at = $2 WHERE id = $1`
		args := []any{ref.id, micros(v.CreatedAt)}
		if setDefault {
			q = `UPDATE policies SET next_version = next_version + 1, updated_at = $2, default_version = $3 WHERE id = $1`
			args = append(args, v.VersionID)
		}
		_, err = tx.ExecContext(ctx, q, args...)
		return err
	})
	if err != nil {
		return identity.PolicyVersion{}, fmt.Errorf("create version of policy %s: %w", policyARN, err)
	}
	return v, nil
}

// SetDefaultPolicyVersion makes an existing version the default.
func (s *Store) SetDefaultPolicyVersion(ctx context.Context, policyARN, versionID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ref, err := s.policyByARN(ctx, tx, policyARN)
		if err != nil {
			return err
		}
		if err := requireVersion(ctx, tx, ref.id, versionID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE policies SET default_version = $1, updated_at = $2 WHERE id = $3`,
			versionID, micros(s.stamp()), ref.id)
		return err
	})
	if err != nil {
		return fmt.Errorf("set default version of policy %s to %s: %w", policyARN, versionID, err)
	}
	return nil
}

func requireVersion(ctx context.Context, q querier, policyID, versionID string) error {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM policy_versions WHERE policy_id = $1 AND version_id = $2`,
		policyID, versionID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("version %s: %w", versionID, identity.ErrNotFound)
	}
	return err
}

// DeletePolicyVersion deletes a non-default version.
func (s *Store) DeletePolicyVersion(ctx context.Context, policyARN, versionID string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ref, err := s.policyByARN(ctx, tx, policyARN)
		if err != nil {
			return err
		}
		if err := requireVersion(ctx, tx, ref.id, versionID); err != nil {
			return err
		}
		var def string
		if err := tx.QueryRowContext(ctx, `SELECT default_version FROM policies WHERE id = $1`, ref.id).Scan(&def); err != nil {
			return err
		}
		if def == versionID {
			return fmt.Errorf("%w: %s is the default version; make another version the default first", identity.ErrConflict, versionID)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM policy_versions WHERE policy_id = $1 AND version_id = $2`, ref.id, versionID)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete version %s of policy %s: %w", versionID, policyARN, err)
	}
	return nil
}

// DeletePolicy deletes a managed policy and its versions. It refuses while
// the policy is attached or used as a permissions boundary.
func (s *Store) DeletePolicy(ctx context.Context, policyARN string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		ref, err := s.policyByARN(ctx, tx, policyARN)
		if err != nil {
			return err
		}
		p, err := s.loadPolicy(ctx, tx, ref.id)
		if err != nil {
			return err
		}
		if p.AttachmentCount > 0 || p.BoundaryCount > 0 {
			return fmt.Errorf("%w: the policy is attached to %d user(s)/group(s)/role(s) and is the permissions boundary of %d; detach it first",
				identity.ErrConflict, p.AttachmentCount, p.BoundaryCount)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM policy_versions WHERE policy_id = $1`, ref.id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM policies WHERE id = $1`, ref.id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete policy %s: %w", policyARN, err)
	}
	return nil
}

// AttachPolicy attaches a managed policy of the holder's account; attaching
// twice is a no-op.
func (s *Store) AttachPolicy(ctx context.Context, h identity.PolicyHolder, policyARN string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := validKind(h.Kind); err != nil {
			return err
		}
		owner, err := lookupID(ctx, tx, h.Kind, h.AccountID, h.Name)
		if err != nil {
			return err
		}
		ref, err := s.policyByARN(ctx, tx, policyARN)
		if err != nil {
			return err
		}
		if ref.account != h.AccountID {
			return fmt.Errorf("%w: the policy belongs to account %s, the %s to %s", identity.ErrInvalidInput, ref.account, h.Kind, h.AccountID)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO `+string(h.Kind)+`_attached_policies (owner_id, policy_id) VALUES ($1, $2)
			ON CONFLICT (owner_id, policy_id) DO NOTHING`, owner, ref.id)
		return err
	})
	if err != nil {
		return fmt.Errorf("attach policy %s to %s: %w", policyARN, h, err)
	}
	return nil
}

// DetachPolicy detaches a managed policy (ErrNotFound when not attached).
func (s *Store) DetachPolicy(ctx context.Context, h identity.PolicyHolder, policyARN string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := validKind(h.Kind); err != nil {
			return err
		}
		owner, err := lookupID(ctx, tx, h.Kind, h.AccountID, h.Name)
		if err != nil {
			return err
		}
		ref, err := s.policyByARN(ctx, tx, policyARN)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM `+string(h.Kind)+`_attached_policies WHERE owner_id = $1 AND policy_id = $2`,
			owner, ref.id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("the policy is not attached: %w", identity.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("detach policy %s from %s: %w", policyARN, h, err)
	}
	return nil
}

// ListAttachedPolicies lists a holder's managed policies, sorted by name.
func (s *Store) ListAttachedPolicies(ctx context.Context, h identity.PolicyHolder) ([]identity.AttachedPolicy, error) {
	if err := validKind(h.Kind); err != nil {
		return nil, err
	}
	owner, err := lookupID(ctx, s.db, h.Kind, h.AccountID, h.Name)
	if err != nil {
		return nil, fmt.Errorf("list attached policies: %w", err)
	}
	docs, err := s.attachedDocs(ctx, s.db, h.Kind, owner)
	if err != nil {
		return nil, fmt.Errorf("list attached policies of %s: %w", h, err)
	}
	out := make([]identity.AttachedPolicy, 0, len(docs))
	for _, d := range docs {
		out = append(out, identity.AttachedPolicy{Name: d.name, ARN: d.ID})
	}
	return out, nil
}

type namedDoc struct {
	identity.PolicyDocument
	name string
}

// attachedDocs returns the default documents of a holder's managed
// policies, with their ARNs as ids.
func (s *Store) attachedDocs(ctx context.Context, q querier, kind identity.PrincipalKind, owner string) ([]namedDoc, error) {
	rows, err := q.QueryContext(ctx, `SELECT p.account_id, p.path, p.name, v.document
		FROM `+string(kind)+`_attached_policies a
		JOIN policies p ON p.id = a.policy_id
		JOIN policy_versions v ON v.policy_id = p.id AND v.version_id = p.default_version
		WHERE a.owner_id = $1 ORDER BY p.name_key`, owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []namedDoc
	for rows.Next() {
		var acct, path, name, doc string
		if err := rows.Scan(&acct, &path, &name, &doc); err != nil {
			return nil, err
		}
		out = append(out, namedDoc{identity.PolicyDocument{
			ID: identity.PrincipalARN(s.partition, acct, "policy", path, name), Document: doc}, name})
	}
	return out, rows.Err()
}

// PutInlinePolicy creates or replaces an inline policy.
func (s *Store) PutInlinePolicy(ctx context.Context, h identity.PolicyHolder, name, document string) error {
	if err := identity.ValidatePolicyName(name); err != nil {
		return fmt.Errorf("put inline policy on %s: %w", h, err)
	}
	if err := identity.ValidateDocument("inline policy "+name, document); err != nil {
		return fmt.Errorf("put inline policy on %s: %w", h, err)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := validKind(h.Kind); err != nil {
			return err
		}
		owner, err := lookupID(ctx, tx, h.Kind, h.AccountID, h.Name)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO `+string(h.Kind)+`_inline_policies (owner_id, name, document) VALUES ($1, $2, $3)
			ON CONFLICT (owner_id, name) DO UPDATE SET document = excluded.document`, owner, name, document)
		return err
	})
	if err != nil {
		return fmt.Errorf("put inline policy %q on %s: %w", name, h, err)
	}
	return nil
}

// GetInlinePolicy returns one inline policy.
func (s *Store) GetInlinePolicy(ctx context.Context, h identity.PolicyHolder, name string) (identity.InlinePolicy, error) {
	if err := validKind(h.Kind); err != nil {
		return identity.InlinePolicy{}, err
	}
	owner, err := lookupID(ctx, s.db, h.Kind, h.AccountID, h.Name)
	if err != nil {
		return identity.InlinePolicy{}, fmt.Errorf("get inline policy %q: %w", name, err)
	}
	p := identity.InlinePolicy{Name: name}
	err = s.db.QueryRowContext(ctx, `SELECT document FROM `+string(h.Kind)+`_inline_policies WHERE owner_id = $1 AND name = $2`,
		owner, name).Scan(&p.Document)
	if errors.Is(err, sql.ErrNoRows) {
		return identity.InlinePolicy{}, fmt.Errorf("inline policy %q of %s: %w", name, h, identity.ErrNotFound)
	}
	if err != nil {
		return identity.InlinePolicy{}, fmt.Errorf("get inline policy %q of %s: %w", name, h, err)
	}
	return p, nil
}

// DeleteInlinePolicy deletes one inline policy.
func (s *Store) DeleteInlinePolicy(ctx context.Context, h identity.PolicyHolder, name string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := validKind(h.Kind); err != nil {
			return err
		}
		owner, err := lookupID(ctx, tx, h.Kind, h.AccountID, h.Name)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM `+string(h.Kind)+`_inline_policies WHERE owner_id = $1 AND name = $2`, owner, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return identity.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete inline policy %q of %s: %w", name, h, err)
	}
	return nil
}

// ListInlinePolicies lists a holder's inline policies, sorted by name.
func (s *Store) ListInlinePolicies(ctx context.Context, h identity.PolicyHolder) ([]identity.InlinePolicy, error) {
	if err := validKind(h.Kind); err != nil {
		return nil, err
	}
	owner, err := lookupID(ctx, s.db, h.Kind, h.AccountID, h.Name)
	if err != nil {
		return nil, fmt.Errorf("list inline policies: %w", err)
	}
	out, err := inlineDocs(ctx, s.db, h.Kind, owner)
	if err != nil {
		return nil, fmt.Errorf("list inline policies of %s: %w", h, err)
	}
	return out, nil
}

func inlineDocs(ctx context.Context, q querier, kind identity.PrincipalKind, owner string) ([]identity.InlinePolicy, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, document FROM `+string(kind)+`_inline_policies WHERE owner_id = $1 ORDER BY name`, owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []identity.InlinePolicy{}
	for rows.Next() {
		var p identity.InlinePolicy
		if err := rows.Scan(&p.Name, &p.Document); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
