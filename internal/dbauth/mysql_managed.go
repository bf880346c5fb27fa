package dbauth

import (
	"context"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // mysql_native_password is SHA1(SHA1(password)) by definition
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/identity"
)

// defaultRotationLockWait bounds GET_LOCK when the caller's context has no
// deadline (iamdb db rotate): another replica's password change takes
// milliseconds.
const defaultRotationLockWait = 30 * time.Second

// nativePasswordHash is the mysql_native_password hash of password as the
// server stores it: "*" and the upper-case hex of SHA1(SHA1(password)).
// MariaDB accepts it in ALTER USER … IDENTIFIED BY PASSWORD '<hash>', so the
// password itself never reaches the server's logs or processlist.
func nativePasswordHash(password string) string {
	first := sha1.Sum([]byte(password)) //nolint:gosec // the protocol's hash
	second := sha1.Sum(first[:])        //nolint:gosec
	return "*" + strings.ToUpper(hex.EncodeToString(second[:]))
}

// mysqlRotationLockName names the GET_LOCK lock that serializes password
// changes of one user across every iamdb replica sharing the upstream.
// Lock names are limited to 64 characters, so the user is hashed.
func mysqlRotationLockName(dbUser string) string {
	sum := sha256.Sum256([]byte("iamdb/backend-password/" + dbUser))
	return "iamdb-backend-password-" + hex.EncodeToString(sum[:16])
}

// quoteMySQLString quotes s as a string literal for account names, where
// placeholders are not allowed. Doubling the quote works whatever the
// session's sql_mode; a backslash would not (its meaning depends on
// NO_BACKSLASH_ESCAPES), so names holding one are refused.
func quoteMySQLString(s string) (string, error) {
	if strings.ContainsAny(s, "\\\x00") {
		return "", fmt.Errorf("%q contains a backslash or NUL, which iamdb does not put into account names", s)
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}

func accountName(user, host string) (string, error) {
	u, err := quoteMySQLString(user)
	if err != nil {
		return "", err
	}
	h, err := quoteMySQLString(host)
	if err != nil {
		return "", err
	}
	return u + "@" + h, nil
}

func (m *MySQL) managedPassword(ctx context.Context, st *state, dbUser string) (string, error) {
	if err := m.checkManagedUser(st, dbUser); err != nil {
		return "", err
	}
	// Fastest path: the password read from the store or set here within
	// storedPasswordTTL.
	if pw, ok := m.pwCache.get(dbUser, m.now(), st.in.BackendAuth.RotateEvery.D()); ok {
		return pw, nil
	}
	if pw, ok, err := m.storedPassword(ctx, st, dbUser); err != nil || ok {
		return pw, err
	}
	unlock, err := m.locks.lock(ctx, dbUser)
	if err != nil {
		return "", fmt.Errorf("instance %s: %w", st.in.Name, err)
	}
	defer unlock()
	// Another login of the same user may have set it while we waited.
	if pw, ok, err := m.storedPassword(ctx, st, dbUser); err != nil || ok {
		return pw, err
	}
	return m.setPassword(ctx, dbUser, false)
}

// checkManagedUser refuses users whose password iamdb must not take over:
// those outside iam_users (whoever logs in with it today would be locked
// out) and the admin user (iamdb would lock itself out).
func (m *MySQL) checkManagedUser(st *state, dbUser string) error {
	if dbUser == "" {
		return fmt.Errorf("instance %s: empty database user name", st.in.Name)
	}
	if dbUser == st.in.BackendAuth.AdminUser {
		return fmt.Errorf("instance %s: database user %q is iamdb's admin user (backend_auth.admin_user), whose password iamdb does not manage: remove it from iam_users, or use another admin user",
			st.in.Name, dbUser)
	}
	if !st.in.IsIAMUser(dbUser) {
		return fmt.Errorf("instance %s: %w: database user %q is not IAM-enabled (not in iam_users), so iamdb leaves its password alone",
			st.in.Name, ErrNotIAMUser, dbUser)
	}
	return nil
}

// storedPassword returns the stored password of dbUser when there is one
// that opens and is younger than rotate_every, and puts it in the password
// cache.
func (m *MySQL) storedPassword(ctx context.Context, st *state, dbUser string) (string, bool, error) {
	gen, readAt := m.pwCache.generation(), m.now()
	sealed, rotatedAt, err := m.store.GetBackendPassword(ctx, st.in.Name, dbUser)
	if errors.Is(err, identity.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("instance %s: %w", st.in.Name, err)
	}
	if every := st.in.BackendAuth.RotateEvery.D(); every > 0 && !m.now().Before(rotatedAt.Add(every)) {
		return "", false, nil
	}
	pt, err := m.sealer.Open(sealed, sealAAD(st.in.Name, dbUser))
	if err != nil {
		// iamdb owns this password, so a new one heals it (e.g. after the
		// master key was replaced).
		m.log.Warn("stored backend password does not open; setting a new one", "db_user", dbUser, "err", err)
		return "", false, nil
	}
	pw := string(pt)
	m.pwCache.fill(gen, dbUser, pw, rotatedAt, readAt)
	return pw, true, nil
}

// mysqlAccount is one row of mysql.user for a user name: MySQL accounts
// are user@host, and the same name may have several.
type mysqlAccount struct {
	host, plugin, auth string
}

// setPassword gives every account of dbUser (every host row) a new random
// password and stores it sealed. A GET_LOCK on a connection of its own
// serializes replicas; unless force, a password another replica stored
// meanwhile is used instead. ALTER USER is not transactional, so when
// storing the password fails, the accounts get their previous
// authentication string back. The password cache holds the new password
// once it is stored; until then it holds only what a store read that began
// after this started saw.
func (m *MySQL) setPassword(ctx context.Context, dbUser string, force bool) (string, error) {
	m.pwCache.forget(dbUser)
	db, st, err := m.adminDB()
	if err != nil {
		return "", err
	}
	name := st.in.Name
	conn, err := db.Conn(ctx)
	if err != nil {
		return "", fmt.Errorf("setting the password of database user %q: %w", dbUser, mysqlAdminError(st, err))
	}
	// Closing the connection also releases the lock should RELEASE_LOCK not
	// get through.
	defer conn.Close()
	release, err := getLock(ctx, conn, mysqlRotationLockName(dbUser))
	if err != nil {
		return "", fmt.Errorf("instance %s: lock database user %q for a password change: %w", name, dbUser, err)
	}
	defer release()
	if !force {
		if pw, ok, err := m.storedPassword(ctx, st, dbUser); err != nil || ok {
			return pw, err
		}
	}
	flavor, err := m.serverFlavor(ctx, conn)
	if err != nil {
		return "", fmt.Errorf("instance %s: %w", name, mysqlAdminError(st, err))
	}
	accounts, err := m.accounts(ctx, conn, st, dbUser)
	if err != nil {
		return "", err
	}

	pw, err := newPassword(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("instance %s: %w", name, err)
	}
	hash := nativePasswordHash(pw)
	secrets := []string{pw, hash}
	var changed []mysqlAccount
	for _, a := range accounts {
		acct, err := accountName(dbUser, a.host)
		if err != nil {
			return "", fmt.Errorf("instance %s: database user %w", name, err)
		}
		var stmt string
		if flavor == "mariadb" {
			// Sets plugin mysql_native_password with this hash, which every
			// MariaDB client and iamdb's upstream login speak.
			stmt = "ALTER USER " + acct + " IDENTIFIED BY PASSWORD '" + hash + "'"
		} else {
			// MySQL 8 rewrites the password out of its logs; the plugin is
			// its default, which the upstream login speaks over TLS (and
			// with an RSA key exchange without it).
			stmt = "ALTER USER " + acct + " IDENTIFIED WITH caching_sha2_password BY '" + pw + "'"
		}
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			err = m.alterError(st, dbUser, a.host, scrubMySQL(err, secrets...))
			if rerr := m.restore(context.WithoutCancel(ctx), conn, dbUser, changed); rerr != nil {
				return "", fmt.Errorf("%w; restoring the accounts changed before also failed: %w", err, rerr)
			}
			return "", err
		}
		changed = append(changed, a)
	}
	at := m.now()
	sealed, err := m.sealer.Seal([]byte(pw), sealAAD(name, dbUser))
	if err == nil {
		err = m.store.PutBackendPassword(ctx, name, dbUser, sealed, at)
	}
	if err != nil {
		err = scrubMySQL(err, secrets...)
		if rerr := m.restore(context.WithoutCancel(ctx), conn, dbUser, changed); rerr != nil {
			return "", fmt.Errorf("instance %s: storing the new password of database user %q failed: %w, and the previous password could not be put back: %w",
				name, dbUser, err, rerr)
		}
		return "", fmt.Errorf("instance %s: storing the new password of database user %q failed: %w (the database password was left unchanged)", name, dbUser, err)
	}
	m.pwCache.set(dbUser, pw, at, at)
	reason := "no password yet or rotate_every elapsed"
	if force {
		reason = "rotation requested"
	}
	m.log.Info("set a new backend password", "db_user", dbUser, "accounts", len(accounts), "reason", reason)
	return pw, nil
}

// getLock takes the named server lock on conn, waiting at most until ctx's
// deadline.
func getLock(ctx context.Context, conn *sql.Conn, name string) (release func(), err error) {
	wait := defaultRotationLockWait
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	secs := max(int(wait.Seconds()), 1)
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, secs).Scan(&got); err != nil {
		return nil, err
	}
	if !got.Valid || got.Int64 != 1 {
		return nil, fmt.Errorf("another iamdb is changing that password and did not finish within %ds", secs)
	}
	return func() {
		conn.ExecContext(context.Background(), "DO RELEASE_LOCK(?)", name)
	}, nil
}

// serverFlavor tells MariaDB from MySQL, whose ALTER USER differ.
func (m *MySQL) serverFlavor(ctx context.Context, conn *sql.Conn) (string, error) {
	m.mu.RLock()
	f := m.flavor
	m.mu.RUnlock()
	if f != "" {
		return f, nil
	}
	var version string
	if err := conn.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return "", fmt.Errorf("reading the server version: %w", err)
	}
	f = "mysql"
	if strings.Contains(strings.ToLower(version), "mariadb") {
		f = "mariadb"
	}
	m.mu.Lock()
	m.flavor = f
	m.mu.Unlock()
	return f, nil
}

// accounts returns every account (host row) of dbUser.
func (m *MySQL) accounts(ctx context.Context, conn *sql.Conn, st *state, dbUser string) ([]mysqlAccount, error) {
	rows, err := conn.QueryContext(ctx, "SELECT Host, plugin, authentication_string FROM mysql.user WHERE User = ? ORDER BY Host", dbUser)
	if err != nil {
		var myErr *mysql.MySQLError
		if errors.As(err, &myErr) && myErr.Number == erTableAccessDenied {
			return nil, fmt.Errorf("instance %s: admin user %s may not read mysql.user, where iamdb finds the accounts (user@host) of database user %q: %w (GRANT SELECT ON mysql.user TO the admin user)",
				st.in.Name, st.in.BackendAuth.AdminUser, dbUser, err)
		}
		return nil, fmt.Errorf("instance %s: looking up the accounts of database user %q: %w", st.in.Name, dbUser, mysqlAdminError(st, err))
	}
	defer rows.Close()
	var out []mysqlAccount
	for rows.Next() {
		var a mysqlAccount
		var plugin, auth sql.NullString
		if err := rows.Scan(&a.host, &plugin, &auth); err != nil {
			return nil, fmt.Errorf("instance %s: reading the accounts of database user %q: %w", st.in.Name, dbUser, err)
		}
		a.plugin, a.auth = plugin.String, auth.String
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("instance %s: reading the accounts of database user %q: %w", st.in.Name, dbUser, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("instance %s: database user %q does not exist on the upstream: create it there (CREATE USER '%s'@'%%' with the grants it needs); iamdb sets its password",
			st.in.Name, dbUser, dbUser)
	}
	return out, nil
}

var (
	pluginNameRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	// restorableAuthRE is what can go back into a string literal unchanged:
	// native hashes, ed25519's base64, empty. caching_sha2_password's salt
	// holds arbitrary bytes and cannot.
	restorableAuthRE = regexp.MustCompile(`^[A-Za-z0-9*+/=$.:_-]*$`)
)

// restore puts the previous plugin and authentication string back on the
// accounts a failed password change had already altered.
func (m *MySQL) restore(ctx context.Context, conn *sql.Conn, dbUser string, accounts []mysqlAccount) error {
	var errs []error
	for _, a := range accounts {
		acct, err := accountName(dbUser, a.host)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !pluginNameRE.MatchString(a.plugin) || !restorableAuthRE.MatchString(a.auth) {
			errs = append(errs, fmt.Errorf("account %s: its previous %s credential cannot be written back; the next login gives it a new password", acct, a.plugin))
			continue
		}
		stmt := "ALTER USER " + acct + " IDENTIFIED WITH " + a.plugin + " AS '" + a.auth + "'"
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			// The old hash is not the password, but keep it out anyway.
			errs = append(errs, fmt.Errorf("account %s: %w", acct, scrubMySQL(err, a.auth)))
		}
	}
	if len(errs) > 0 {
		m.log.Error("could not restore the previous credentials of database user after a failed password change", "db_user", dbUser, "err", errors.Join(errs...))
	}
	return errors.Join(errs...)
}

// alterError explains why ALTER USER failed. err has already been scrubbed.
func (m *MySQL) alterError(st *state, dbUser, host string, err error) error {
	in := st.in
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		switch myErr.Number {
		case erSpecificAccessDeny, erTableAccessDenied, erDBAccessDenied:
			return fmt.Errorf("instance %s: admin user %s may not set the password of database user %q: %w (GRANT CREATE USER ON *.* TO the admin user, or use an admin with it)",
				in.Name, in.BackendAuth.AdminUser, dbUser, err)
		case erCannotUser:
			return fmt.Errorf("instance %s: database user %q (host %q) does not exist on the upstream any more: %w", in.Name, dbUser, host, err)
		}
	}
	return fmt.Errorf("instance %s: setting the password of database user %q (host %q) failed: %w", in.Name, dbUser, host, err)
}

// scrubMySQL makes sure no secret survives in an error's text: MySQL and
// MariaDB quote the statement in syntax errors ("… near '…' at line 1").
// Errors that do not mention a secret are returned as they are, so
// errors.Is/As keep working.
func scrubMySQL(err error, secrets ...string) error {
	if err == nil || !containsAny(err.Error(), secrets) {
		return err
	}
	var cause error
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		c := *myErr
		c.Message = redact(c.Message, secrets)
		if err == error(myErr) {
			return &c
		}
		cause = &c
	}
	return &scrubbedError{msg: redact(err.Error(), secrets), cause: cause}
}

// scrubbedError is an error whose text had secrets taken out; it unwraps
// to the scrubbed server error, if any, so errors.As still finds it.
type scrubbedError struct {
	msg   string
	cause error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.cause }

// Rotate gives dbUser a new password now (mode managed only). With dbUser
// "" it rotates every user that has a stored password on this instance.
func (m *MySQL) Rotate(ctx context.Context, dbUser string) error {
	if dbUser == "" {
		_, err := m.RotateAll(ctx)
		return err
	}
	st := m.state()
	if err := checkRotateMode(st); err != nil {
		return err
	}
	if err := m.checkManagedUser(st, dbUser); err != nil {
		return err
	}
	unlock, err := m.locks.lock(ctx, dbUser)
	if err != nil {
		return fmt.Errorf("instance %s: %w", st.in.Name, err)
	}
	defer unlock()
	_, err = m.setPassword(ctx, dbUser, true)
	return err
}

// RotateAll rotates the password of every user with a stored password on
// this instance and returns those it rotated. Users no longer in iam_users
// are skipped. It carries on past a user that fails (say, one dropped from
// the database) and reports all failures.
func (m *MySQL) RotateAll(ctx context.Context) ([]string, error) {
	st := m.state()
	if err := checkRotateMode(st); err != nil {
		return nil, err
	}
	lister, ok := m.store.(PasswordLister)
	if !ok {
		return nil, fmt.Errorf("instance %s: the password store cannot list users: name the user to rotate", st.in.Name)
	}
	users, err := lister.ListBackendPasswordUsers(ctx, st.in.Name)
	if err != nil {
		return nil, fmt.Errorf("instance %s: %w", st.in.Name, err)
	}
	var (
		done []string
		errs []error
	)
	for _, u := range users {
		if err := m.Rotate(ctx, u); err != nil {
			if errors.Is(err, ErrNotIAMUser) {
				m.log.Info("not rotating: no longer IAM-enabled", "db_user", u)
				continue
			}
			errs = append(errs, err)
			continue
		}
		done = append(done, u)
	}
	return done, errors.Join(errs...)
}

func checkRotateMode(st *state) error {
	if mode := st.in.BackendAuth.Mode; mode != "managed" {
		return fmt.Errorf("instance %s: backend_auth.mode is %s: only mode managed has passwords that iamdb sets and can rotate", st.in.Name, mode)
	}
	return nil
}
