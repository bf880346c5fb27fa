package dbauth

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Setup prepares the upstream for IAM logins ('iamdb db setup'): it creates
// role rds_iam NOLOGIN when it is missing. Running it again changes nothing.
func (p *Postgres) Setup(ctx context.Context) error {
	_, err := p.EnsureIAMRole(ctx)
	return err
}

// EnsureIAMRole creates role rds_iam NOLOGIN unless it exists and reports
// whether it created it.
func (p *Postgres) EnsureIAMRole(ctx context.Context) (created bool, err error) {
	pool, st, err := p.adminPool()
	if err != nil {
		return false, err
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, IAMRole).Scan(&exists); err != nil {
		return false, fmt.Errorf("looking for role %s: %w", IAMRole, p.adminError(st, err))
	}
	if exists {
		return false, nil
	}
	if _, err := pool.Exec(ctx, "CREATE ROLE "+IAMRole+" NOLOGIN"); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			switch pgErr.Code {
			case "42710": // duplicate_object: created concurrently, which is fine
				return false, nil
			case "42501":
				return false, fmt.Errorf("instance %s: admin user %s may not create role %s: %w (give it CREATEROLE, or run CREATE ROLE %s NOLOGIN as a superuser)",
					st.in.Name, st.in.BackendAuth.AdminUser, IAMRole, err, IAMRole)
			}
		}
		return false, fmt.Errorf("creating role %s: %w", IAMRole, p.adminError(st, err))
	}
	p.forgetMemberships()
	p.log.Info("created role " + IAMRole)
	return true, nil
}
