package dbauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/identity"
)

// IAMRole is the PostgreSQL role whose members log in with IAM tokens, as on
// Amazon RDS: CREATE USER app; GRANT rds_iam TO app;
const IAMRole = "rds_iam"

// DefaultMembershipTTL is how long a user's rds_iam membership is cached
// when PostgresOptions.MembershipTTL is zero.
const DefaultMembershipTTL = 5 * time.Second

// adminPoolSize bounds the admin connections per instance: they set
// passwords and check memberships, a few statements per new login at most.
const adminPoolSize = 4

// adminDatabase is where the admin connection logs in. Roles, passwords and
// memberships are cluster-wide, and every PostgreSQL cluster has it.
const adminDatabase = "postgres"

// maxCachedMemberships bounds the membership cache: user names come from
// unauthenticated clients, who must not be able to grow it without end.
const maxCachedMemberships = 4096

// ErrNoIAMRole means role rds_iam does not exist on the upstream, so no
// user can be IAM-enabled by membership. 'iamdb db setup' creates it.
var ErrNoIAMRole = errors.New("role " + IAMRole + " does not exist")

// ErrNotIAMUser means a managed password was asked for a user that is not
// IAM-enabled; iamdb never takes over such a user's password.
var ErrNotIAMUser = errors.New("not an IAM user")

// PasswordStore keeps the sealed passwords iamdb gives database users in
// backend_auth mode managed. *sqlstore.Store implements it.
type PasswordStore interface {
	// GetBackendPassword returns identity.ErrNotFound when there is none.
	GetBackendPassword(ctx context.Context, instance, dbUser string) (sealed []byte, rotatedAt time.Time, err error)
	PutBackendPassword(ctx context.Context, instance, dbUser string, sealed []byte, rotatedAt time.Time) error
}

// PasswordLister is implemented by stores that can list the users with a
// stored password; Rotate("") needs it. *sqlstore.Store implements it.
type PasswordLister interface {
	ListBackendPasswordUsers(ctx context.Context, instance string) ([]string, error)
}

// PostgresOptions configure NewPostgres.
type PostgresOptions struct {
	// Instance is the configured instance: name, upstream, backend_auth,
	// iam_users.
	Instance config.Instance
	// Store and Sealer keep managed passwords; required in mode managed.
	Store  PasswordStore
	Sealer *identity.Sealer
	// Now is the clock for rotation and the membership cache (default
	// time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// MembershipTTL is how long a user's rds_iam membership (or its
	// absence) is cached; default DefaultMembershipTTL.
	MembershipTTL time.Duration
	// LookupEnv reads backend_auth.admin_password_env (default
	// os.LookupEnv).
	LookupEnv func(string) (string, bool)
}

// Postgres logs iamdb in to a PostgreSQL upstream as the database user named
// in an IAM token, and says which users are IAM-enabled. It is safe for
// concurrent use.
type Postgres struct {
	store     PasswordStore
	sealer    *identity.Sealer
	now       func() time.Time
	log       *slog.Logger
	ttl       time.Duration
	lookupEnv func(string) (string, bool)

	mu      sync.RWMutex
	st      *state
	pool    *pgxpool.Pool // admin connections; nil until needed
	poolKey string        // the settings pool was built with

	cacheMu sync.Mutex
	cache   map[string]membership

	locks userLocks // serializes password changes per user

	pwCache passwordCache // managed passwords, for storedPasswordTTL
}

// state is what Reload replaces as a whole.
type state struct {
	in      config.Instance
	secrets map[string]string // mode secrets
	// adminPassword, or adminErr when it could not be read; an error only
	// matters once the admin connection is needed.
	adminPassword string
	adminErr      error
}

type membership struct {
	iam bool
	at  time.Time
}

// NewPostgres prepares backend logins for one PostgreSQL instance. It reads
// the secrets file and the admin password, and opens the admin connection
// when the mode (managed) or the rds_iam membership check (no iam_users)
// needs it. A wrong admin password or upstream certificate is an error
// here; an upstream that is merely not reachable yet is logged and retried
// at the first login.
func NewPostgres(ctx context.Context, opt PostgresOptions) (*Postgres, error) {
	in := opt.Instance
	if in.Engine != "" && in.Engine != "postgres" {
		return nil, fmt.Errorf("instance %s: engine is %s, not postgres", in.Name, in.Engine)
	}
	if in.BackendAuth.Mode == "managed" && (opt.Store == nil || opt.Sealer == nil) {
		return nil, fmt.Errorf("instance %s: backend_auth mode managed needs the data dir's store and master key", in.Name)
	}
	p := &Postgres{
		store:     opt.Store,
		sealer:    opt.Sealer,
		now:       opt.Now,
		log:       opt.Logger,
		ttl:       opt.MembershipTTL,
		lookupEnv: opt.LookupEnv,
		cache:     map[string]membership{},
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("instance", in.Name)
	if p.ttl <= 0 {
		p.ttl = DefaultMembershipTTL
	}
	if p.lookupEnv == nil {
		p.lookupEnv = os.LookupEnv
	}
	st, err := p.loadState(in)
	if err != nil {
		return nil, err
	}
	p.st = st
	if needsAdmin(in) {
		pool, _, err := p.adminPool()
		if err != nil {
			return nil, err
		}
		if err := pool.Ping(ctx); err != nil {
			if isConfigError(err) {
				p.Close()
				return nil, p.adminError(st, err)
			}
			p.log.Warn("upstream not reachable yet; will retry at the first login",
				"upstream", in.Upstream.Address, "err", err)
		}
	}
	return p, nil
}

// needsAdmin reports whether in cannot work without the admin connection.
func needsAdmin(in config.Instance) bool {
	return in.BackendAuth.Mode == "managed" || len(in.IAMUsers) == 0
}

// loadState reads the secrets that in names.
func (p *Postgres) loadState(in config.Instance) (*state, error) {
	st := &state{in: in}
	switch in.BackendAuth.Mode {
	case "managed", "trust":
	case "secrets":
		m, err := loadSecretsFile(in.BackendAuth.SecretsFile)
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", in.Name, err)
		}
		st.secrets = m
	default:
		return nil, fmt.Errorf("instance %s: backend_auth.mode %q: use managed, secrets or trust", in.Name, in.BackendAuth.Mode)
	}
	switch {
	case in.BackendAuth.AdminUser == "":
		st.adminErr = fmt.Errorf("instance %s: backend_auth.admin_user is not set: iamdb needs an admin user to manage passwords and check %s membership (or list the IAM users in iam_users)", in.Name, IAMRole)
	default:
		st.adminPassword, st.adminErr = adminPassword(in.BackendAuth, p.lookupEnv)
		if st.adminErr != nil {
			st.adminErr = fmt.Errorf("instance %s: %w", in.Name, st.adminErr)
		}
	}
	if st.adminErr != nil && needsAdmin(in) {
		return nil, st.adminErr
	}
	return st, nil
}

func (p *Postgres) state() *state {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.st
}

// adminPool returns the admin connection pool, creating it on first use.
func (p *Postgres) adminPool() (*pgxpool.Pool, *state, error) {
	p.mu.RLock()
	pool, st := p.pool, p.st
	p.mu.RUnlock()
	if pool != nil {
		return pool, st, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st = p.st
	if p.pool != nil {
		return p.pool, st, nil
	}
	if st.adminErr != nil {
		return nil, st, st.adminErr
	}
	cfg, err := p.poolConfig(st.in)
	if err != nil {
		return nil, st, err
	}
	pool, err = pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, st, fmt.Errorf("instance %s: admin connection: %w", st.in.Name, err)
	}
	p.pool, p.poolKey = pool, poolKey(st.in)
	return pool, st, nil
}

// poolKey is what, when it changes on reload, needs new admin connections.
// The admin password is not part of it: new connections read the current
// one, existing ones stay logged in.
func poolKey(in config.Instance) string {
	u := in.Upstream
	return fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%d", u.Address, u.TLS, u.CA, in.BackendAuth.AdminUser, u.DialTimeout)
}

func (p *Postgres) poolConfig(in config.Instance) (*pgxpool.Config, error) {
	tlsCfg, err := UpstreamTLS(in.Upstream)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", in.Name, err)
	}
	// The URL carries no password: it is set per connection from the
	// current state, so Reload can change it and it never sits in a string
	// that might be logged.
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(in.BackendAuth.AdminUser),
		Host:     in.Upstream.Address,
		Path:     "/" + adminDatabase,
		RawQuery: url.Values{"sslmode": {"disable"}, "application_name": {"iamdb"}}.Encode(),
	}
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, fmt.Errorf("instance %s: admin connection settings: %w", in.Name, err)
	}
	cfg.MaxConns = adminPoolSize
	cfg.ConnConfig.TLSConfig = tlsCfg
	cfg.ConnConfig.Fallbacks = nil
	if d := in.Upstream.DialTimeout.D(); d > 0 {
		cfg.ConnConfig.ConnectTimeout = d
	}
	cfg.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		if st := p.state(); st.in.BackendAuth.AdminPasswordEnv != "" || st.in.BackendAuth.AdminPasswordFile != "" {
			cc.Password = st.adminPassword
		}
		return nil
	}
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		// Managed passwords are sent as SCRAM verifiers already; this makes
		// sure nothing weaker is ever stored should a plain one slip by.
		_, err := c.Exec(ctx, "SET password_encryption = 'scram-sha-256'")
		return err
	}
	return cfg, nil
}

// isConfigError reports whether err means the settings are wrong (the
// server refused us, or its certificate did not verify) rather than that
// the upstream is not reachable right now.
func isConfigError(err error) bool {
	var pgErr *pgconn.PgError
	var certErr *tls.CertificateVerificationError
	return errors.As(err, &pgErr) || errors.As(err, &certErr)
}

// adminError explains a failure of the admin connection with what to fix.
func (p *Postgres) adminError(st *state, err error) error {
	in := st.in
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000":
			return fmt.Errorf("instance %s: admin login as %s to %s failed: %w (%s)",
				in.Name, in.BackendAuth.AdminUser, in.Upstream.Address, err, credentialHint(in.BackendAuth))
		case "3D000":
			return fmt.Errorf("instance %s: admin login as %s to %s failed: %w (iamdb's admin connection uses database %s)",
				in.Name, in.BackendAuth.AdminUser, in.Upstream.Address, err, adminDatabase)
		}
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return fmt.Errorf("instance %s: the certificate of upstream %s did not verify: %w (check upstream.ca, or the host name in upstream.address)",
			in.Name, in.Upstream.Address, err)
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return fmt.Errorf("instance %s: admin login as %s to %s failed: %w (check upstream.address and upstream.tls)",
			in.Name, in.BackendAuth.AdminUser, in.Upstream.Address, err)
	}
	return fmt.Errorf("instance %s: admin connection to %s: %w", in.Name, in.Upstream.Address, err)
}

// membershipQuery reports whether rds_iam exists and whether $1 is a member,
// directly or through other roles. It reads pg_auth_members instead of
// calling pg_has_role, which fails for unknown users and counts superusers
// as members of every role: the admin user must never become IAM-only.
const membershipQuery = `
WITH RECURSIVE target AS (
    SELECT oid FROM pg_roles WHERE rolname = '` + IAMRole + `'
), member_of (roleid) AS (
    SELECT am.roleid FROM pg_auth_members am JOIN pg_roles u ON u.oid = am.member WHERE u.rolname = $1
  UNION
    SELECT am.roleid FROM pg_auth_members am JOIN member_of m ON am.member = m.roleid
)
SELECT EXISTS (SELECT 1 FROM target),
       EXISTS (SELECT 1 FROM member_of WHERE roleid = (SELECT oid FROM target))`

// IsIAMUser reports whether dbUser must log in with an IAM token: by the
// instance's iam_users when set, else by membership in role rds_iam,
// cached for MembershipTTL. Unknown users are not IAM users.
func (p *Postgres) IsIAMUser(ctx context.Context, dbUser string) (bool, error) {
	st := p.state()
	if len(st.in.IAMUsers) > 0 {
		return st.in.IsIAMUser(dbUser), nil
	}
	now := p.now()
	p.cacheMu.Lock()
	m, ok := p.cache[dbUser]
	p.cacheMu.Unlock()
	if ok && now.Sub(m.at) < p.ttl && !now.Before(m.at) {
		return m.iam, nil
	}
	pool, st, err := p.adminPool()
	if err != nil {
		return false, err
	}
	var hasRole, member bool
	if err := pool.QueryRow(ctx, membershipQuery, dbUser).Scan(&hasRole, &member); err != nil {
		return false, fmt.Errorf("checking %s membership of database user %q: %w", IAMRole, dbUser, p.adminError(st, err))
	}
	if !hasRole {
		return false, fmt.Errorf("%w on instance %s: run 'iamdb db setup --instance %s'", ErrNoIAMRole, st.in.Name, st.in.Name)
	}
	p.remember(dbUser, member, now)
	return member, nil
}

func (p *Postgres) remember(dbUser string, iam bool, now time.Time) {
	p.cacheMu.Lock()
	defer p.cacheMu.Unlock()
	if len(p.cache) >= maxCachedMemberships {
		for u, m := range p.cache {
			if now.Sub(m.at) >= p.ttl {
				delete(p.cache, u)
			}
		}
		if len(p.cache) >= maxCachedMemberships {
			clear(p.cache)
		}
	}
	p.cache[dbUser] = membership{iam: iam, at: now}
}

func (p *Postgres) forgetMemberships() {
	p.cacheMu.Lock()
	clear(p.cache)
	p.cacheMu.Unlock()
}

// Password is the password iamdb logs in to the upstream with as dbUser:
// "" in mode trust, the operator's in mode secrets, and in mode managed the
// one iamdb set itself, set or rotated first when there is none yet or it
// is older than backend_auth.rotate_every.
func (p *Postgres) Password(ctx context.Context, dbUser string) (string, error) {
	return backendPassword(ctx, p.state(), dbUser, p.managedPassword)
}

// Refused is called when the upstream refused password, which Password
// gave for dbUser: see refusedPassword.
func (p *Postgres) Refused(ctx context.Context, dbUser, password string) (string, bool, error) {
	return refusedPassword(ctx, p.state(), &p.pwCache, dbUser, password, p.managedPassword)
}

// Reload applies a changed configuration of the same instance: secrets
// file, admin password, iam_users, upstream. When anything cannot be read
// the previous state stays in force and the error says why.
func (p *Postgres) Reload(ctx context.Context, in config.Instance) error {
	cur := p.state()
	if in.Name != cur.in.Name {
		return fmt.Errorf("instance %s: cannot reload as instance %s", cur.in.Name, in.Name)
	}
	if in.BackendAuth.Mode == "managed" && (p.store == nil || p.sealer == nil) {
		return fmt.Errorf("instance %s: backend_auth mode managed needs the data dir's store and master key", in.Name)
	}
	st, err := p.loadState(in)
	if err != nil {
		return err
	}
	if _, err := UpstreamTLS(in.Upstream); err != nil {
		return fmt.Errorf("instance %s: %w", in.Name, err)
	}
	p.mu.Lock()
	p.st = st
	var old *pgxpool.Pool
	if p.pool != nil && p.poolKey != poolKey(in) {
		old, p.pool = p.pool, nil
	}
	p.mu.Unlock()
	if old != nil {
		// Close waits for statements in flight; nothing else holds p.mu.
		old.Close()
	}
	p.forgetMemberships()
	p.pwCache.clear()
	p.log.Info("backend authentication reloaded", "mode", in.BackendAuth.Mode, "iam_users", len(in.IAMUsers))
	return nil
}

// Close closes the admin connections and drops the cached passwords.
func (p *Postgres) Close() {
	p.pwCache.clear()
	p.mu.Lock()
	pool := p.pool
	p.pool = nil
	p.mu.Unlock()
	if pool != nil {
		pool.Close()
	}
}
