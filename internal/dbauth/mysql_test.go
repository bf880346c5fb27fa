package dbauth_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/identity/identitytest"
	"github.com/iamdb/iamdb/internal/testdb"
)

const mariaAdminEnv = "IAMDB_TEST_MARIADB_ADMIN_PASSWORD"

// maria returns the shared test MariaDB, skipping with -short.
func maria(t *testing.T) *testdb.MariaDBServer {
	t.Helper()
	if testing.Short() {
		t.Skip("needs MariaDB; skipped with -short")
	}
	return testdb.MariaDB(t)
}

// mysqlInstance is a configured mysql instance pointing at m over verified
// TLS with root as the admin user.
func mysqlInstance(m *testdb.MariaDBServer, mode string, iamUsers ...string) config.Instance {
	return config.Instance{
		Name:       "shop",
		Engine:     "mysql",
		ResourceID: "db-SHOP0000000000000000000000",
		IAMUsers:   iamUsers,
		Upstream: config.Upstream{
			Address:     m.Addr(),
			TLS:         "verify-full",
			CA:          m.CAFile,
			DialTimeout: config.Duration(5 * time.Second),
		},
		BackendAuth: config.BackendAuth{
			Mode:             mode,
			AdminUser:        m.RootUser,
			AdminPasswordEnv: mariaAdminEnv,
			RotateEvery:      config.Duration(24 * time.Hour),
		},
	}
}

func mariaEnv(m *testdb.MariaDBServer) func(string) (string, bool) {
	return func(k string) (string, bool) {
		if k == mariaAdminEnv {
			return m.RootPassword, true
		}
		return "", false
	}
}

func newMySQL(t *testing.T, opt dbauth.MySQLOptions) *dbauth.MySQL {
	t.Helper()
	b, err := dbauth.NewMySQL(t.Context(), opt)
	if err != nil {
		t.Fatalf("NewMySQL: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

func mariaExec(t *testing.T, m *testdb.MariaDBServer, stmt string, args ...any) {
	t.Helper()
	db, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), stmt, args...); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}

// newMariaUser creates user name (unique per test) at each host, without a
// password, and drops every account of it when t ends.
func newMariaUser(t *testing.T, m *testdb.MariaDBServer, prefix string, hosts ...string) string {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"%"}
	}
	name := fmt.Sprintf("%s_%d_%d", prefix, os.Getpid()%100000, roleSeq.Add(1))
	for _, h := range hosts {
		mariaExec(t, m, fmt.Sprintf("CREATE USER '%s'@'%s'", name, h))
	}
	t.Cleanup(func() {
		db, err := sql.Open("mysql", m.RootDSN())
		if err != nil {
			return
		}
		defer db.Close()
		for _, h := range hosts {
			db.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%s'", name, h))
		}
	})
	return name
}

// mariaLogin logs in as user over verified TLS with go-sql-driver/mysql, as
// iamdb's upstream leg would, and checks who it is and that TLS is on.
func mariaLogin(t *testing.T, m *testdb.MariaDBServer, user, password string) error {
	t.Helper()
	tlsCfg, err := m.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd = user, password
	cfg.Net, cfg.Addr = "tcp", m.Addr()
	cfg.TLS = tlsCfg
	cfg.Timeout = 10 * time.Second
	cfg.Logger = &mysql.NopLogger{}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var who, cipherName, cipher string
	if err := db.QueryRowContext(ctx, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").Scan(&who); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&cipherName, &cipher); err != nil {
		return err
	}
	if who != user || cipher == "" {
		t.Fatalf("logged in as %q with cipher %q, want %q over TLS", who, cipher, user)
	}
	return nil
}

type mysqlEnv struct {
	m     *testdb.MariaDBServer
	store *failingStore
	clock *clock
	logs  *logBuffer
	b     *dbauth.MySQL
}

func newMySQLManaged(t *testing.T, iamUsers ...string) *mysqlEnv {
	t.Helper()
	m := maria(t)
	e := &mysqlEnv{m: m, store: &failingStore{Store: openStore(t)}, clock: newClock(), logs: &logBuffer{}}
	if len(iamUsers) == 0 {
		iamUsers = []string{"app_*", "burst_*", "hosts_*", "atomic_*"}
	}
	e.b = newMySQL(t, dbauth.MySQLOptions{
		Instance:  mysqlInstance(m, "managed", iamUsers...),
		Store:     e.store,
		Sealer:    identitytest.Sealer(t),
		Now:       e.clock.Now,
		Logger:    e.logs.Logger(),
		LookupEnv: mariaEnv(m),
	})
	return e
}

func (e *mysqlEnv) password(t *testing.T, user string) string {
	t.Helper()
	pw, err := e.b.Password(t.Context(), user)
	if err != nil {
		t.Fatalf("Password(%s): %v", user, err)
	}
	if !passwordRE.MatchString(pw) {
		t.Fatalf("Password(%s) is not 64 letters and digits (len %d)", user, len(pw))
	}
	return pw
}

// accountsOf reads plugin and authentication string of every account of
// user, by host.
func accountsOf(t *testing.T, m *testdb.MariaDBServer, user string) map[string][2]string {
	t.Helper()
	db, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(t.Context(), "SELECT Host, plugin, authentication_string FROM mysql.user WHERE User = ?", user)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][2]string{}
	for rows.Next() {
		var h, p, a string
		if err := rows.Scan(&h, &p, &a); err != nil {
			t.Fatal(err)
		}
		out[h] = [2]string{p, a}
	}
	return out
}

// nativeHash asks the server for the mysql_native_password hash of pw.
func nativeHash(t *testing.T, m *testdb.MariaDBServer, pw string) string {
	t.Helper()
	db, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var h string
	if err := db.QueryRowContext(t.Context(), "SELECT PASSWORD(?)", pw).Scan(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestMySQLManagedLifecycle(t *testing.T) {
	e := newMySQLManaged(t)
	ctx := t.Context()
	user := newMariaUser(t, e.m, "app")
	var seen []string

	pw1 := e.password(t, user)
	seen = append(seen, pw1)
	if err := mariaLogin(t, e.m, user, pw1); err != nil {
		t.Fatalf("login with the managed password: %v", err)
	}
	var raw []byte
	if err := e.store.DB().QueryRowContext(ctx, `SELECT sealed_password FROM backend_passwords WHERE instance = 'shop' AND db_user = $1`, user).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(pw1)) || len(raw) < 64 {
		t.Fatalf("stored row holds the plaintext or too little (%d bytes)", len(raw))
	}
	acct := accountsOf(t, e.m, user)["%"]
	if acct[0] != "mysql_native_password" || acct[1] != nativeHash(t, e.m, pw1) {
		t.Fatalf("account after Password: plugin %q, hash matches=%v; want mysql_native_password with the password's hash", acct[0], acct[1] == nativeHash(t, e.m, pw1))
	}

	if again := e.password(t, user); again != pw1 {
		t.Fatal("second Password returned a different password before rotate_every")
	}
	e.clock.Advance(23 * time.Hour)
	if again := e.password(t, user); again != pw1 {
		t.Fatal("password rotated before rotate_every elapsed")
	}
	e.clock.Advance(time.Hour)
	pw2 := e.password(t, user)
	seen = append(seen, pw2)
	if pw2 == pw1 {
		t.Fatal("password not rotated after rotate_every")
	}
	if err := mariaLogin(t, e.m, user, pw2); err != nil {
		t.Fatalf("login with the rotated password: %v", err)
	}
	if err := mariaLogin(t, e.m, user, pw1); err == nil {
		t.Fatal("the old password still works after rotation")
	}

	if err := e.b.Rotate(ctx, user); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	pw3 := e.password(t, user)
	seen = append(seen, pw3)
	if pw3 == pw2 {
		t.Fatal("Rotate did not change the password")
	}
	if err := mariaLogin(t, e.m, user, pw3); err != nil {
		t.Fatalf("login after Rotate: %v", err)
	}
	if err := mariaLogin(t, e.m, user, pw2); err == nil {
		t.Fatal("the password before Rotate still works")
	}

	other := newMariaUser(t, e.m, "app")
	seen = append(seen, e.password(t, other))
	rotated, err := e.b.RotateAll(ctx)
	if err != nil || !slices.Equal(rotated, slices.Sorted(slices.Values([]string{user, other}))) {
		t.Fatalf("RotateAll = %v, %v", rotated, err)
	}
	if err := mariaLogin(t, e.m, user, pw3); err == nil {
		t.Fatal("RotateAll left the password unchanged")
	}
	pw4 := e.password(t, user)
	seen = append(seen, pw4)
	if err := mariaLogin(t, e.m, user, pw4); err != nil {
		t.Fatalf("login after RotateAll: %v", err)
	}

	// Users outside iam_users and the admin user are never managed.
	human := newMariaUser(t, e.m, "human")
	mariaExec(t, e.m, fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY 'human-Chosen-Pw1'", human))
	if _, err := e.b.Password(ctx, human); !errors.Is(err, dbauth.ErrNotIAMUser) {
		t.Fatalf("Password(non-IAM user) = %v, want ErrNotIAMUser", err)
	}
	if err := e.b.Rotate(ctx, human); !errors.Is(err, dbauth.ErrNotIAMUser) {
		t.Fatalf("Rotate(non-IAM user) = %v, want ErrNotIAMUser", err)
	}
	if err := mariaLogin(t, e.m, human, "human-Chosen-Pw1"); err != nil {
		t.Fatalf("the non-IAM user's own password stopped working: %v", err)
	}

	logs := e.logs.String()
	if !strings.Contains(logs, "set a new backend password") {
		t.Fatalf("log capture saw nothing; logs:\n%s", logs)
	}
	for _, pw := range seen {
		if strings.Contains(logs, pw) || strings.Contains(logs, nativeHash(t, e.m, pw)) {
			t.Fatal("a managed password or its hash appears in the log")
		}
	}
}

func TestMySQLManagedAdminUserRefused(t *testing.T) {
	m := maria(t)
	b := newMySQL(t, dbauth.MySQLOptions{
		Instance: mysqlInstance(m, "managed", "*"), Store: openStore(t), Sealer: identitytest.Sealer(t), LookupEnv: mariaEnv(m),
	})
	if _, err := b.Password(t.Context(), m.RootUser); err == nil || !strings.Contains(err.Error(), "admin user") {
		t.Fatalf("Password(admin) = %v, want a refusal", err)
	}
}

func TestMySQLManagedConcurrentFirstLogins(t *testing.T) {
	e := newMySQLManaged(t)
	user := newMariaUser(t, e.m, "burst")
	const n = 20
	pws := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			pws[i], errs[i] = e.b.Password(context.Background(), user)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if pws[i] != pws[0] {
			t.Fatalf("call %d got a different password than call 0", i)
		}
	}
	if err := mariaLogin(t, e.m, user, pws[0]); err != nil {
		t.Fatalf("login with the shared password: %v", err)
	}
	if n := strings.Count(e.logs.String(), "set a new backend password"); n != 1 {
		t.Fatalf("password set %d times, want once", n)
	}
}

// TestMySQLManagedReplicasAgree: two MySQL values with separate in-process
// locks but one store stand for two replicas; GET_LOCK on the upstream must
// make them agree on one password.
func TestMySQLManagedReplicasAgree(t *testing.T) {
	e := newMySQLManaged(t)
	second := newMySQL(t, dbauth.MySQLOptions{
		Instance: mysqlInstance(e.m, "managed", "burst_*"), Store: e.store, Sealer: identitytest.Sealer(t),
		Now: e.clock.Now, LookupEnv: mariaEnv(e.m),
	})
	user := newMariaUser(t, e.m, "burst")
	var wg sync.WaitGroup
	var a, b string
	var errA, errB error
	wg.Go(func() { a, errA = e.b.Password(context.Background(), user) })
	wg.Go(func() { b, errB = second.Password(context.Background(), user) })
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("Password: %v / %v", errA, errB)
	}
	if a != b {
		t.Fatal("two replicas ended up with different passwords")
	}
	if err := mariaLogin(t, e.m, user, a); err != nil {
		t.Fatalf("login: %v", err)
	}
}

// TestMySQLManagedEveryHostRow: MySQL accounts are user@host; a user name
// with several host rows must get the password on all of them, or a login
// matching another row would still need the old one.
func TestMySQLManagedEveryHostRow(t *testing.T) {
	e := newMySQLManaged(t)
	hosts := []string{"%", "127.0.0.1", "localhost", "10.0.0.%"}
	user := newMariaUser(t, e.m, "hosts", hosts...)
	pw := e.password(t, user)
	want := nativeHash(t, e.m, pw)
	got := accountsOf(t, e.m, user)
	if len(got) != len(hosts) {
		t.Fatalf("accounts: %v", got)
	}
	for h, a := range got {
		if a[0] != "mysql_native_password" || a[1] != want {
			t.Errorf("account %s@%s: plugin %q, hash set=%v", user, h, a[0], a[1] == want)
		}
	}
	// From 127.0.0.1 the 127.0.0.1 row is the one that matches.
	if err := mariaLogin(t, e.m, user, pw); err != nil {
		t.Fatalf("login: %v", err)
	}
	if !strings.Contains(e.logs.String(), "accounts=4") {
		t.Errorf("log does not count the accounts changed:\n%s", e.logs)
	}
}

// TestMySQLManagedStoreFailureRestores: ALTER USER is not transactional, so
// when the new password cannot be stored the previous one is put back.
func TestMySQLManagedStoreFailureRestores(t *testing.T) {
	e := newMySQLManaged(t)
	user := newMariaUser(t, e.m, "atomic", "%", "127.0.0.1")
	pw := e.password(t, user)
	e.store.fail = true
	err := e.b.Rotate(t.Context(), user)
	if err == nil || !strings.Contains(err.Error(), "left unchanged") {
		t.Fatalf("Rotate with a failing store: %v", err)
	}
	if err := mariaLogin(t, e.m, user, pw); err != nil {
		t.Fatalf("the stored password stopped working after a failed rotation: %v", err)
	}
	for h, a := range accountsOf(t, e.m, user) {
		if a[1] != nativeHash(t, e.m, pw) {
			t.Errorf("account %s@%s was not restored", user, h)
		}
	}
}

func TestMySQLManagedErrorsHideSecrets(t *testing.T) {
	e := newMySQLManaged(t, "*")
	_, err := e.b.Password(t.Context(), "no_such_user_here")
	if err == nil || !strings.Contains(err.Error(), `database user "no_such_user_here" does not exist`) {
		t.Fatalf("Password for a user that does not exist: %v", err)
	}
	if _, _, err := e.store.GetBackendPassword(t.Context(), "shop", "no_such_user_here"); err == nil {
		t.Error("a password was stored for a user that does not exist")
	}
	for _, leak := range []string{"ALTER USER", "IDENTIFIED", "PASSWORD '"} {
		if strings.Contains(err.Error(), leak) || strings.Contains(e.logs.String(), leak) {
			t.Errorf("error or log contains %q: %q", leak, err)
		}
	}

	// A wrong admin password: said so, without the password.
	m := e.m
	_, err = dbauth.NewMySQL(t.Context(), dbauth.MySQLOptions{
		Instance: mysqlInstance(m, "managed", "*"), Store: openStore(t), Sealer: identitytest.Sealer(t),
		LookupEnv: func(string) (string, bool) { return "wrong-Admin-pw", true },
	})
	if err == nil || !strings.Contains(err.Error(), "admin login as root") || !strings.Contains(err.Error(), mariaAdminEnv) ||
		strings.Contains(err.Error(), "wrong-Admin-pw") {
		t.Fatalf("NewMySQL with a wrong admin password: %v", err)
	}
}

func TestMySQLSecretsTrustAndIAMUsers(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets.yaml")
	writeSecrets(t, secrets, "app: s3cret-App\nreport_eu: other\n", 0o600)
	in := mysqlInstance(&testdb.MariaDBServer{Host: "127.0.0.1", Port: 1}, "secrets", "app", "report_*")
	in.Upstream.TLS, in.Upstream.CA = "disable", ""
	in.BackendAuth.SecretsFile = secrets
	// No admin connection is needed outside mode managed: nothing listens
	// on port 1.
	b := newMySQL(t, dbauth.MySQLOptions{Instance: in, LookupEnv: func(string) (string, bool) { return "", false }})
	for user, want := range map[string]bool{"app": true, "report_eu": true, "report": false, "apps": false, "root": false} {
		if got, err := b.IsIAMUser(ctx, user); err != nil || got != want {
			t.Errorf("IsIAMUser(%q) = %v, %v; want %v", user, got, err, want)
		}
	}
	if pw, err := b.Password(ctx, "app"); err != nil || pw != "s3cret-App" {
		t.Fatalf("Password(app) in mode secrets = %q, %v", pw, err)
	}
	if _, err := b.Password(ctx, "report_us"); err == nil || !strings.Contains(err.Error(), "no password for database user \"report_us\"") {
		t.Fatalf("Password of a user missing from the file: %v", err)
	}
	if err := b.Rotate(ctx, "app"); err == nil || !strings.Contains(err.Error(), "only mode managed") {
		t.Fatalf("Rotate in mode secrets: %v", err)
	}

	// Reload picks up a changed file; a broken one keeps the old state.
	writeSecrets(t, secrets, "app: changed-App\n", 0o600)
	if err := b.Reload(ctx, in); err != nil {
		t.Fatal(err)
	}
	if pw, _ := b.Password(ctx, "app"); pw != "changed-App" {
		t.Fatal("Reload did not read the new secrets file")
	}
	writeSecrets(t, secrets, "app: [x\n", 0o600)
	if err := b.Reload(ctx, in); err == nil {
		t.Fatal("Reload accepted a broken secrets file")
	}
	if pw, _ := b.Password(ctx, "app"); pw != "changed-App" {
		t.Fatal("a failed Reload changed the secrets in force")
	}

	trust := in
	trust.BackendAuth = config.BackendAuth{Mode: "trust"}
	tb := newMySQL(t, dbauth.MySQLOptions{Instance: trust})
	if pw, err := tb.Password(ctx, "app"); err != nil || pw != "" {
		t.Fatalf("Password in mode trust = %q, %v", pw, err)
	}

	noUsers := trust
	noUsers.IAMUsers = nil
	if _, err := dbauth.NewMySQL(ctx, dbauth.MySQLOptions{Instance: noUsers}); err == nil || !strings.Contains(err.Error(), "iam_users") {
		t.Fatalf("NewMySQL without iam_users: %v", err)
	}
	pgEngine := trust
	pgEngine.Engine = "postgres"
	if _, err := dbauth.NewMySQL(ctx, dbauth.MySQLOptions{Instance: pgEngine}); err == nil {
		t.Fatal("NewMySQL accepted a postgres instance")
	}
}

// TestMySQLTrustLogin: in mode trust the upstream account has no password
// for iamdb's address, and the empty password logs in.
func TestMySQLTrustLogin(t *testing.T) {
	m := maria(t)
	user := newMariaUser(t, m, "trusted", "127.0.0.1")
	b := newMySQL(t, dbauth.MySQLOptions{Instance: mysqlInstance(m, "trust", user)})
	pw, err := b.Password(t.Context(), user)
	if err != nil || pw != "" {
		t.Fatalf("Password = %q, %v", pw, err)
	}
	if err := mariaLogin(t, m, user, pw); err != nil {
		t.Fatalf("login without a password as a trusted account: %v", err)
	}
}
