package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/iamdb/iamdb/internal/identity"
)

// CreateAccount creates an account, with a random 12-digit id when a.ID is
// empty.
func (s *Store) CreateAccount(ctx context.Context, a identity.Account) (identity.Account, error) {
	if a.ID == "" {
		id, err := s.ids.AccountID()
		if err != nil {
			return identity.Account{}, fmt.Errorf("create account: %w", err)
		}
		a.ID = id
	}
	if err := identity.ValidateAccountID(a.ID); err != nil {
		return identity.Account{}, fmt.Errorf("create account: %w", err)
	}
	a.CreatedAt = s.stamp()
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO accounts (id, alias, created_at) VALUES ($1, $2, $3)`,
			a.ID, a.Alias, micros(a.CreatedAt))
		return err
	})
	if isUniqueViolation(err) {
		return identity.Account{}, fmt.Errorf("create account %s: %w", a.ID, identity.ErrAlreadyExists)
	}
	if err != nil {
		return identity.Account{}, fmt.Errorf("create account %s: %w", a.ID, err)
	}
	return a, nil
}

// GetAccount returns one account.
func (s *Store) GetAccount(ctx context.Context, id string) (identity.Account, error) {
	var (
		a       identity.Account
		created int64
	)
	err := s.db.QueryRowContext(ctx, `SELECT id, alias, created_at FROM accounts WHERE id = $1`, id).
		Scan(&a.ID, &a.Alias, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return identity.Account{}, fmt.Errorf("account %s: %w", id, identity.ErrNotFound)
	}
	if err != nil {
		return identity.Account{}, fmt.Errorf("get account %s: %w", id, err)
	}
	a.CreatedAt = fromMicros(created)
	return a, nil
}

// ListAccounts returns all accounts ordered by id.
func (s *Store) ListAccounts(ctx context.Context) ([]identity.Account, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, alias, created_at FROM accounts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	defer rows.Close()
	var out []identity.Account
	for rows.Next() {
		var (
			a       identity.Account
			created int64
		)
		if err := rows.Scan(&a.ID, &a.Alias, &created); err != nil {
			return nil, fmt.Errorf("list accounts: %w", err)
		}
		a.CreatedAt = fromMicros(created)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	return out, nil
}

func requireAccount(ctx context.Context, q querier, id string) error {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM accounts WHERE id = $1`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("account %s: %w", id, identity.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("look up account %s: %w", id, err)
	}
	return nil
}
