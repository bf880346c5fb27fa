package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
)

// GetBackendPassword returns the sealed password iamdb set for dbUser on
// instance and when it was set; identity.ErrNotFound when there is none.
func (s *Store) GetBackendPassword(ctx context.Context, instance, dbUser string) ([]byte, time.Time, error) {
	var (
		sealed  []byte
		rotated int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT sealed_password, rotated_at FROM backend_passwords
		WHERE instance = $1 AND db_user = $2`, instance, dbUser).Scan(&sealed, &rotated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, fmt.Errorf("backend password of database user %q on instance %q: %w", dbUser, instance, identity.ErrNotFound)
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read backend password of database user %q on instance %q: %w", dbUser, instance, err)
	}
	return sealed, fromMicros(rotated), nil
}

// PutBackendPassword stores (or replaces) the sealed password of dbUser on
// instance. It does not bump the store generation: backend passwords are
// not authorization state, and rotating one must not invalidate caches of
// policies and principals.
func (s *Store) PutBackendPassword(ctx context.Context, instance, dbUser string, sealed []byte, rotatedAt time.Time) error {
	if len(sealed) == 0 {
		return fmt.Errorf("store backend password of database user %q on instance %q: %w: empty sealed value", dbUser, instance, identity.ErrInvalidInput)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO backend_passwords (instance, db_user, sealed_password, rotated_at)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (instance, db_user) DO UPDATE
		SET sealed_password = excluded.sealed_password, rotated_at = excluded.rotated_at`,
		instance, dbUser, sealed, micros(rotatedAt))
	if err != nil {
		return fmt.Errorf("store backend password of database user %q on instance %q: %w", dbUser, instance, err)
	}
	return nil
}

// ListBackendPasswordUsers lists, sorted, the database users of instance
// that have a stored backend password.
func (s *Store) ListBackendPasswordUsers(ctx context.Context, instance string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT db_user FROM backend_passwords WHERE instance = $1`, instance)
	if err != nil {
		return nil, fmt.Errorf("list backend passwords of instance %q: %w", instance, err)
	}
	defer rows.Close()
	var users []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("list backend passwords of instance %q: %w", instance, err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list backend passwords of instance %q: %w", instance, err)
	}
	// Sorted here, not in SQL, so SQLite and PostgreSQL (whose collation
	// depends on the database's locale) agree.
	sort.Strings(users)
	return users, nil
}
