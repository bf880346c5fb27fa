package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/datadir"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/pki"
	"github.com/iamdb/iamdb/internal/testdb"
)

const (
	mysqlResource = "db-SERVERSHOP0000000000000000"
	mysqlAdminEnv = "IAMDB_TEST_SERVER_MARIADB_ADMIN"
)

// newMySQLEnv is newEnv for an engine: mysql instance in front of the
// shared MariaDB, with backend_auth managed (root as the admin user).
func newMySQLEnv(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs MariaDB; skipped with -short")
	}
	ctx := context.Background()
	m := testdb.MariaDB(t)
	e := &env{t: t, logs: &syncBuffer{}, reload: make(chan struct{})}
	e.dbUser = fmt.Sprintf("shop_%d", time.Now().UnixNano()%1_000_000_000)
	dsn, err := mysql.ParseDSN(m.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	e.database = dsn.DBName
	root, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, stmt := range []string{
		fmt.Sprintf("CREATE USER '%s'@'%%'", e.dbUser),
		fmt.Sprintf("GRANT SELECT ON `%s`.* TO '%s'@'%%'", e.database, e.dbUser),
	} {
		if _, err := root.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		if db, err := sql.Open("mysql", m.RootDSN()); err == nil {
			db.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", e.dbUser))
			db.Close()
		}
	})
	t.Setenv(mysqlAdminEnv, m.RootPassword)

	dataPath := filepath.Join(t.TempDir(), "data")
	if _, err := datadir.Init(ctx, dataPath, datadir.InitOptions{AccountID: testAccount}); err != nil {
		t.Fatal(err)
	}
	if e.dir, err = datadir.Open(ctx, dataPath, "", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.dir.Close() })
	if _, err := e.dir.Store.CreateUser(ctx, identity.User{AccountID: testAccount, Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect",
		"Resource":"arn:aws:rds-db:us-east-1:%s:dbuser:%s/%s"}]}`, testAccount, mysqlResource, e.dbUser)
	if err := e.dir.Store.PutInlinePolicy(ctx, identity.UserRef(testAccount, "alice"), "connect", policy); err != nil {
		t.Fatal(err)
	}
	k, secret, err := e.dir.Store.CreateAccessKey(ctx, testAccount, "alice")
	if err != nil {
		t.Fatal(err)
	}
	e.keyID, e.secret = k.ID, secret

	e.port = freePort(t)
	e.metricsURL = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	e.apiPort = freePort(t)
	e.cfgPath = filepath.Join(filepath.Dir(dataPath), "iamdb.yaml")
	e.writeMySQLConfig(m, e.dbUser)
	return e
}

func (e *env) writeMySQLConfig(m *testdb.MariaDBServer, iamUsers ...string) {
	e.t.Helper()
	e.cfgText = fmt.Sprintf(`data_dir: ./data
region: us-east-1
account_id: "%s"
metrics: {listen: "%s"}
api: {listen: "127.0.0.1:%d"}
drain_timeout: 1m
instances:
  - name: shop
    engine: mysql
    resource_id: %s
    listen: 127.0.0.1:%d
    iam_users: ["%s"]
    upstream: {address: "%s", tls: verify-full, ca: "%s"}
    backend_auth: {mode: managed, admin_user: root, admin_password_env: %s}
`, testAccount, strings.TrimPrefix(e.metricsURL, "http://"), e.apiPort, mysqlResource, e.port,
		strings.Join(iamUsers, `", "`), m.Addr(), m.CAFile, mysqlAdminEnv)
	if err := os.WriteFile(e.cfgPath, []byte(e.cfgText), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// mysqlConnect logs in through the listener as an application does with
// go-sql-driver/mysql: TLS verified against the data dir's CA bundle, the
// token as a cleartext password.
func (e *env) mysqlConnect(token string) (*sql.DB, error) {
	pem, err := os.ReadFile(filepath.Join(e.dir.Path, pki.BundleFile))
	if err != nil {
		e.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName = e.dbUser, token, e.database
	cfg.Net, cfg.Addr = "tcp", fmt.Sprintf("127.0.0.1:%d", e.port)
	cfg.TLS = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	cfg.AllowCleartextPasswords = true
	cfg.Timeout = 20 * time.Second
	cfg.Logger = &mysql.NopLogger{}
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	db := sql.OpenDB(c)
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func mysqlCurrentUser(db *sql.DB) (string, error) {
	var u string
	err := db.QueryRow("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").Scan(&u)
	return u, err
}

// TestServeMySQLLoginMetricsAndDrain: an engine: mysql instance serves an
// IAM login with a managed backend password, counts it in the metrics,
// follows a reload of iam_users and drains like a postgres one.
func TestServeMySQLLoginMetricsAndDrain(t *testing.T) {
	e := newMySQLEnv(t)
	e.start()
	endpoint := fmt.Sprintf("127.0.0.1:%d", e.port)
	if logs := e.logs.String(); !strings.Contains(logs, "msg=listening instance=shop engine=mysql") {
		t.Errorf("no start line for the mysql listener:\n%s", logs)
	}
	if code, _ := e.get("/readyz"); code != 200 {
		t.Fatalf("/readyz: %d", code)
	}

	session, err := e.mysqlConnect(e.token(endpoint, e.dbUser))
	if err != nil {
		t.Fatalf("IAM login through iamdb: %v", err)
	}
	defer session.Close()
	if u, err := mysqlCurrentUser(session); err != nil || u != e.dbUser {
		t.Fatalf("CURRENT_USER() = %q, %v; want %q", u, err, e.dbUser)
	}
	// A token signed for another database user is refused.
	if db, err := e.mysqlConnect(e.token(endpoint, "root")); err == nil {
		db.Close()
		t.Fatal("a token for another database user logged in")
	}
	_, metrics := e.get("/metrics")
	for _, want := range []string{
		`iamdb_login_attempts_total{instance="shop",result="ok"} 1`,
		`iamdb_active_sessions{instance="shop"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, grep(metrics, `instance="shop"`))
		}
	}

	// Reload: the user leaves iam_users, so a token is no longer its
	// password; the open session is not disturbed.
	e.writeMySQLConfig(testdb.MariaDB(t), "nobody_else")
	e.doReload()
	if db, err := e.mysqlConnect(e.token(endpoint, e.dbUser)); err == nil {
		db.Close()
		t.Fatal("a token logged in for a user removed from iam_users by the reload")
	}
	if u, err := mysqlCurrentUser(session); err != nil || u != e.dbUser {
		t.Fatalf("session opened before the reload: %q, %v", u, err)
	}

	e.cancel()
	waitFor(t, "/readyz to turn 503 while draining", func() bool {
		code, _ := e.get("/readyz")
		return code == http.StatusServiceUnavailable
	})
	waitFor(t, "the listener to stop accepting", func() bool {
		c, err := net.DialTimeout("tcp", endpoint, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	if u, err := mysqlCurrentUser(session); err != nil || u != e.dbUser {
		t.Fatalf("open session during drain: %q, %v", u, err)
	}
	session.Close()
	if err := e.stopped(); err != nil {
		t.Fatalf("Run after drain: %v", err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "msg=drained sessions_finished=1 sessions_closed=0") {
		t.Errorf("no drain summary in the logs:\n%s", logs)
	}
}
