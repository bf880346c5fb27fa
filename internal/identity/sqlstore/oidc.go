package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/iamdb/iamdb/internal/identity"
)

func validateOIDC(p identity.OIDCProvider) error {
	if err := identity.ValidateIssuerURL(p.URL); err != nil {
		return err
	}
	if len(p.Audiences) == 0 {
		return fmt.Errorf("%w: OIDC provider %s needs at least one audience (client id)", identity.ErrInvalidInput, p.URL)
	}
	if (p.JWKSURL == "") == (p.JWKSFile == "") {
		return fmt.Errorf("%w: OIDC provider %s needs exactly one of a JWKS URL or a JWKS file", identity.ErrInvalidInput, p.URL)
	}
	return nil
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return append([]string{}, l...)
}

// CreateOIDCProvider registers an issuer for an account.
func (s *Store) CreateOIDCProvider(ctx context.Context, p identity.OIDCProvider) (identity.OIDCProvider, error) {
	if err := validateOIDC(p); err != nil {
		return identity.OIDCProvider{}, fmt.Errorf("create OIDC provider: %w", err)
	}
	p.CreatedAt, p.Partition = s.stamp(), s.partition
	p.Audiences, p.Thumbprints = nonNil(p.Audiences), nonNil(p.Thumbprints)
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := requireAccount(ctx, tx, p.AccountID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO oidc_providers (account_id, host_path, url, audiences, jwks_url, jwks_file,
			thumbprints, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			p.AccountID, identity.IssuerHostPath(p.URL), p.URL, encodeJSON(p.Audiences), p.JWKSURL, p.JWKSFile,
			encodeJSON(p.Thumbprints), micros(p.CreatedAt))
		if isUniqueViolation(err) {
			return fmt.Errorf("OIDC provider %s in account %s: %w", p.URL, p.AccountID, identity.ErrAlreadyExists)
		}
		return err
	})
	if err != nil {
		return identity.OIDCProvider{}, fmt.Errorf("create OIDC provider %s: %w", p.URL, err)
	}
	return p, nil
}

const oidcColumns = `account_id, url, audiences, jwks_url, jwks_file, thumbprints, created_at FROM oidc_providers`

func (s *Store) scanOIDC(sc interface{ Scan(...any) error }) (identity.OIDCProvider, error) {
	var (
		p           identity.OIDCProvider
		aud, thumbs string
		created     int64
	)
	if err := sc.Scan(&p.AccountID, &p.URL, &aud, &p.JWKSURL, &p.JWKSFile, &thumbs, &created); err != nil {
		return identity.OIDCProvider{}, err
	}
	var err error
	if p.Audiences, err = decodeList(aud); err != nil {
		return identity.OIDCProvider{}, err
	}
	if p.Thumbprints, err = decodeList(thumbs); err != nil {
		return identity.OIDCProvider{}, err
	}
	p.CreatedAt, p.Partition = fromMicros(created), s.partition
	return p, nil
}

// GetOIDCProvider returns the provider for an issuer; the scheme and a
// trailing slash of issuerURL do not matter.
func (s *Store) GetOIDCProvider(ctx context.Context, account, issuerURL string) (identity.OIDCProvider, error) {
	p, err := s.scanOIDC(s.db.QueryRowContext(ctx, `SELECT `+oidcColumns+` WHERE account_id = $1 AND host_path = $2`,
		account, identity.IssuerHostPath(issuerURL)))
	if errors.Is(err, sql.ErrNoRows) {
		return identity.OIDCProvider{}, fmt.Errorf("OIDC provider %s in account %s: %w", issuerURL, account, identity.ErrNotFound)
	}
	if err != nil {
		return identity.OIDCProvider{}, fmt.Errorf("get OIDC provider %s: %w", issuerURL, err)
	}
	return p, nil
}

// ListOIDCProviders lists an account's providers ordered by issuer.
func (s *Store) ListOIDCProviders(ctx context.Context, account string) ([]identity.OIDCProvider, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+oidcColumns+` WHERE account_id = $1 ORDER BY host_path`, account)
	if err != nil {
		return nil, fmt.Errorf("list OIDC providers of account %s: %w", account, err)
	}
	defer rows.Close()
	var out []identity.OIDCProvider
	for rows.Next() {
		p, err := s.scanOIDC(rows)
		if err != nil {
			return nil, fmt.Errorf("list OIDC providers of account %s: %w", account, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list OIDC providers of account %s: %w", account, err)
	}
	return out, nil
}

// UpdateOIDCProvider replaces the audiences, key source and thumbprints of
// an existing provider.
func (s *Store) UpdateOIDCProvider(ctx context.Context, p identity.OIDCProvider) (identity.OIDCProvider, error) {
	if err := validateOIDC(p); err != nil {
		return identity.OIDCProvider{}, fmt.Errorf("update OIDC provider: %w", err)
	}
	p.Audiences, p.Thumbprints = nonNil(p.Audiences), nonNil(p.Thumbprints)
	var out identity.OIDCProvider
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE oidc_providers SET audiences = $1, jwks_url = $2, jwks_file = $3, thumbprints = $4
			WHERE account_id = $5 AND host_path = $6`, encodeJSON(p.Audiences), p.JWKSURL, p.JWKSFile, encodeJSON(p.Thumbprints),
			p.AccountID, identity.IssuerHostPath(p.URL))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return identity.ErrNotFound
		}
		out, err = s.scanOIDC(tx.QueryRowContext(ctx, `SELECT `+oidcColumns+` WHERE account_id = $1 AND host_path = $2`,
			p.AccountID, identity.IssuerHostPath(p.URL)))
		return err
	})
	if err != nil {
		return identity.OIDCProvider{}, fmt.Errorf("update OIDC provider %s in account %s: %w", p.URL, p.AccountID, err)
	}
	return out, nil
}

// DeleteOIDCProvider removes a provider. Trust policies naming it simply
// stop matching.
func (s *Store) DeleteOIDCProvider(ctx context.Context, account, issuerURL string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM oidc_providers WHERE account_id = $1 AND host_path = $2`,
			account, identity.IssuerHostPath(issuerURL))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return identity.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete OIDC provider %s in account %s: %w", issuerURL, account, err)
	}
	return nil
}
