package dbauth

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/identity"
)

// MySQLOptions configure NewMySQL.
type MySQLOptions struct {
	// Instance is the configured instance (engine mysql): name, upstream,
	// backend_auth, iam_users.
	Instance config.Instance
	// Store and Sealer keep managed passwords; required in mode managed.
	Store  PasswordStore
	Sealer *identity.Sealer
	// Now is the clock for rotation (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// LookupEnv reads backend_auth.admin_password_env (default
	// os.LookupEnv).
	LookupEnv func(string) (string, bool)
}

// MySQL logs iamdb in to a MySQL or MariaDB upstream as the database user
// named in an IAM token, and says which users are IAM-enabled (the
// instance's iam_users: MySQL has no rds_iam role to be a member of). It is
// safe for concurrent use.
type MySQL struct {
	store     PasswordStore
	sealer    *identity.Sealer
	now       func() time.Time
	log       *slog.Logger
	lookupEnv func(string) (string, bool)

	mu     sync.RWMutex
	st     *state
	db     *sql.DB // admin connections; nil until needed
	dbKey  string  // the settings db was opened with
	flavor string  // "mariadb" or "mysql" once known for db

	locks userLocks

	pwCache passwordCache // managed passwords, for storedPasswordTTL
}

var _ interface {
	IsIAMUser(context.Context, string) (bool, error)
	Password(context.Context, string) (string, error)
} = (*MySQL)(nil)

// NewMySQL prepares backend logins for one MySQL or MariaDB instance. It
// reads the secrets file and, in mode managed, the admin password and
// opens the admin connection. A wrong admin password or upstream
// certificate is an error here; an upstream that is merely not reachable
// yet is logged and retried at the first login.
func NewMySQL(ctx context.Context, opt MySQLOptions) (*MySQL, error) {
	in := opt.Instance
	if in.Engine != "" && in.Engine != "mysql" {
		return nil, fmt.Errorf("instance %s: engine is %s, not mysql", in.Name, in.Engine)
	}
	if len(in.IAMUsers) == 0 {
		return nil, fmt.Errorf("instance %s: iam_users is empty: for mysql, list the database users (names or patterns like report_*) that log in with IAM tokens", in.Name)
	}
	if in.BackendAuth.Mode == "managed" && (opt.Store == nil || opt.Sealer == nil) {
		return nil, fmt.Errorf("instance %s: backend_auth mode managed needs the data dir's store and master key", in.Name)
	}
	m := &MySQL{
		store:     opt.Store,
		sealer:    opt.Sealer,
		now:       opt.Now,
		log:       opt.Logger,
		lookupEnv: opt.LookupEnv,
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("instance", in.Name)
	if m.lookupEnv == nil {
		m.lookupEnv = os.LookupEnv
	}
	st, err := m.loadState(in)
	if err != nil {
		return nil, err
	}
	m.st = st
	if in.BackendAuth.Mode == "managed" {
		db, _, err := m.adminDB()
		if err != nil {
			return nil, err
		}
		if err := db.PingContext(ctx); err != nil {
			if isMySQLConfigError(err) {
				m.Close()
				return nil, mysqlAdminError(st, err)
			}
			m.log.Warn("upstream not reachable yet; will retry at the first login",
				"upstream", in.Upstream.Address, "err", err)
		}
	}
	return m, nil
}

// loadState reads the secrets and, in mode managed, the admin password.
func (m *MySQL) loadState(in config.Instance) (*state, error) {
	st := &state{in: in}
	switch in.BackendAuth.Mode {
	case "trust":
	case "secrets":
		s, err := loadSecretsFile(in.BackendAuth.SecretsFile)
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", in.Name, err)
		}
		st.secrets = s
	case "managed":
		if in.BackendAuth.AdminUser == "" {
			return nil, fmt.Errorf("instance %s: backend_auth.admin_user is not set: mode managed needs an admin user that may change database users' passwords", in.Name)
		}
		pw, err := adminPassword(in.BackendAuth, m.lookupEnv)
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", in.Name, err)
		}
		st.adminPassword = pw
	default:
		return nil, fmt.Errorf("instance %s: backend_auth.mode %q: use managed, secrets or trust", in.Name, in.BackendAuth.Mode)
	}
	return st, nil
}

func (m *MySQL) state() *state {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.st
}

// adminDB returns the admin connection pool, opening it on first use.
func (m *MySQL) adminDB() (*sql.DB, *state, error) {
	m.mu.RLock()
	db, st := m.db, m.st
	m.mu.RUnlock()
	if db != nil {
		return db, st, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st = m.st
	if m.db != nil {
		return m.db, st, nil
	}
	cfg, err := m.adminConfig(st.in)
	if err != nil {
		return nil, st, err
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, st, fmt.Errorf("instance %s: admin connection settings: %w", st.in.Name, err)
	}
	db = sql.OpenDB(connector)
	db.SetMaxOpenConns(adminPoolSize)
	db.SetMaxIdleConns(adminPoolSize)
	// Idle admin connections are cheap to re-open and would otherwise
	// outlive a server's wait_timeout and fail the next rotation once.
	db.SetConnMaxIdleTime(5 * time.Minute)
	m.db, m.dbKey, m.flavor = db, poolKey(st.in), ""
	return db, st, nil
}

// adminConfig is the driver configuration of the admin connection. It
// holds no password: BeforeConnect sets it per connection from the current
// state, so Reload can change it.
func (m *MySQL) adminConfig(in config.Instance) (*mysql.Config, error) {
	tlsCfg, err := UpstreamTLS(in.Upstream)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", in.Name, err)
	}
	cfg := mysql.NewConfig()
	cfg.User = in.BackendAuth.AdminUser
	cfg.Net, cfg.Addr = "tcp", in.Upstream.Address
	cfg.TLS = tlsCfg
	cfg.Timeout = in.Upstream.DialTimeout.D()
	cfg.Logger = driverLogger{m.log}
	// Over TLS, MySQL 8's caching_sha2_password full authentication sends
	// the password in the clear inside TLS; the driver does that itself.
	if err := cfg.Apply(mysql.BeforeConnect(func(_ context.Context, c *mysql.Config) error {
		c.Passwd = m.state().adminPassword
		return nil
	})); err != nil {
		return nil, fmt.Errorf("instance %s: admin connection settings: %w", in.Name, err)
	}
	return cfg, nil
}

// driverLogger sends the MySQL driver's own complaints (broken packets,
// unexpected EOF) to iamdb's log instead of stderr. The driver never logs
// statements, so no password can pass through here.
type driverLogger struct{ log *slog.Logger }

func (l driverLogger) Print(v ...any) {
	l.log.Warn("mysql driver: "+strings.TrimSpace(fmt.Sprint(v...)), "component", "admin connection")
}

// isMySQLConfigError reports whether err means the settings are wrong (the
// server refused the admin login, or its certificate did not verify)
// rather than that the upstream is not reachable right now.
func isMySQLConfigError(err error) bool {
	var myErr *mysql.MySQLError
	var certErr *tls.CertificateVerificationError
	return errors.As(err, &myErr) || errors.As(err, &certErr)
}

// MySQL server error numbers iamdb explains.
const (
	erDBAccessDenied     = 1044
	erAccessDenied       = 1045
	erTableAccessDenied  = 1142
	erSpecificAccessDeny = 1227
	erCannotUser         = 1396
	erAccessDeniedNoPass = 1698
)

// mysqlAdminError explains a failure of the admin connection with what to
// fix.
func mysqlAdminError(st *state, err error) error {
	in := st.in
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		switch myErr.Number {
		case erAccessDenied, erAccessDeniedNoPass, erDBAccessDenied:
			return fmt.Errorf("instance %s: admin login as %s to %s failed: %w (%s)",
				in.Name, in.BackendAuth.AdminUser, in.Upstream.Address, err, credentialHint(in.BackendAuth))
		}
	}
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return fmt.Errorf("instance %s: the certificate of upstream %s did not verify: %w (check upstream.ca, or the host name in upstream.address)",
			in.Name, in.Upstream.Address, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, mysql.ErrNoTLS) {
		return fmt.Errorf("instance %s: admin login as %s to %s failed: %w (check upstream.address and upstream.tls)",
			in.Name, in.BackendAuth.AdminUser, in.Upstream.Address, err)
	}
	return fmt.Errorf("instance %s: admin connection to %s: %w", in.Name, in.Upstream.Address, err)
}

// IsIAMUser reports whether dbUser must log in with an IAM token: whether
// it matches the instance's iam_users (names or patterns). MySQL has no
// rds_iam role; RDS's AWSAuthenticationPlugin cannot exist on a
// self-hosted server, so the configuration decides.
func (m *MySQL) IsIAMUser(_ context.Context, dbUser string) (bool, error) {
	st := m.state()
	return st.in.IsIAMUser(dbUser), nil
}

// Password is the password iamdb logs in to the upstream with as dbUser:
// "" in mode trust, the operator's in mode secrets, and in mode managed the
// one iamdb set itself, set or rotated first when there is none yet or it
// is older than backend_auth.rotate_every.
//
// Mode trust only works with an upstream that lets iamdb's address log in
// as those users without a password (for example accounts created
// with an empty password for iamdb's host only); it is only safe on a private
// network path.
func (m *MySQL) Password(ctx context.Context, dbUser string) (string, error) {
	return backendPassword(ctx, m.state(), dbUser, m.managedPassword)
}

// Refused is called when the upstream refused password, which Password
// gave for dbUser: see refusedPassword.
func (m *MySQL) Refused(ctx context.Context, dbUser, password string) (string, bool, error) {
	return refusedPassword(ctx, m.state(), &m.pwCache, dbUser, password, m.managedPassword)
}

// Reload applies a changed configuration of the same instance: secrets
// file, admin password, iam_users, upstream. When anything cannot be read
// the previous state stays in force and the error says why.
func (m *MySQL) Reload(_ context.Context, in config.Instance) error {
	cur := m.state()
	if in.Name != cur.in.Name {
		return fmt.Errorf("instance %s: cannot reload as instance %s", cur.in.Name, in.Name)
	}
	if len(in.IAMUsers) == 0 {
		return fmt.Errorf("instance %s: iam_users is empty: for mysql, list the database users that log in with IAM tokens", in.Name)
	}
	if in.BackendAuth.Mode == "managed" && (m.store == nil || m.sealer == nil) {
		return fmt.Errorf("instance %s: backend_auth mode managed needs the data dir's store and master key", in.Name)
	}
	st, err := m.loadState(in)
	if err != nil {
		return err
	}
	if _, err := UpstreamTLS(in.Upstream); err != nil {
		return fmt.Errorf("instance %s: %w", in.Name, err)
	}
	m.mu.Lock()
	m.st = st
	var old *sql.DB
	if m.db != nil && m.dbKey != poolKey(in) {
		old, m.db = m.db, nil
	}
	m.mu.Unlock()
	if old != nil {
		old.Close()
	}
	m.pwCache.clear()
	m.log.Info("backend authentication reloaded", "mode", in.BackendAuth.Mode, "iam_users", len(in.IAMUsers))
	return nil
}

// Close closes the admin connections and drops the cached passwords.
func (m *MySQL) Close() {
	m.pwCache.clear()
	m.mu.Lock()
	db := m.db
	m.db = nil
	m.mu.Unlock()
	if db != nil {
		db.Close()
	}
}
