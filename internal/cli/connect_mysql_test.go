package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/datadir"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/testdb"
)

func TestMySQLArgs(t *testing.T) {
	got := mysqlArgs(true, "db.example.com", 3307, "app", "shop", "/ca.pem", []string{"-e", "select 1"})
	want := []string{"--host=db.example.com", "--port=3307", "--protocol=TCP", "--user=app",
		"--ssl", "--ssl-ca=/ca.pem", "--ssl-verify-server-cert", "--database=shop", "-e", "select 1"}
	if !slices.Equal(got, want) {
		t.Fatalf("mysqlArgs (MariaDB):\n got %q\nwant %q", got, want)
	}
	got = mysqlArgs(false, "h", 1, "u", "", "/ca.pem", nil)
	if !slices.Contains(got, "--ssl-mode=VERIFY_IDENTITY") || !slices.Contains(got, "--enable-cleartext-plugin") || slices.Contains(got, "--ssl") || slices.ContainsFunc(got, func(a string) bool { return strings.HasPrefix(a, "--database") }) {
		t.Fatalf("mysqlArgs (MySQL) = %q", got)
	}
}

// TestConnectMySQLHandsTokenByEnvironment runs connect mysql with a stand-in
// client that records what it got: the TLS flags, the token in MYSQL_PWD
// and never on the command line, and its exit status passed on.
func TestConnectMySQLHandsTokenByEnvironment(t *testing.T) {
	isolateAWSEnv(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "iamdb.yaml")
	if err := os.WriteFile(cfg, []byte(`data_dir: ./data
instances:
  - name: shop
    engine: mysql
    resource_id: db-SHOP0000000000000000000000
    listen: 127.0.0.1:13306
    endpoints: [localhost:13306]
    iam_users: [app]
    upstream: {address: 127.0.0.1:3306}
    backend_auth: {mode: trust}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IAMDB_CONFIG", cfg)
	os.Unsetenv("IAMDB_DATA_DIR")
	if code, out, errOut := run(t, "init"); code != 0 {
		t.Fatalf("init: %d\n%s%s", code, out, errOut)
	}
	bin := t.TempDir()
	rec := t.TempDir()
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + rec + "/args\nprintf '%s' \"$MYSQL_PWD\" > " + rec + "/pwd\nexit 3\n"
	if err := os.WriteFile(filepath.Join(bin, "mariadb"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	var exited int
	exitProcess = func(code int) { exited = code }
	t.Cleanup(func() { exitProcess = os.Exit })

	code, _, errOut := run(t, "connect", "mysql", "--user", "app", "--", "-e", "select current_user()")
	if exited != 3 || code != 1 || !strings.Contains(errOut, "mariadb exited with status 3") {
		t.Fatalf("exit status %d passed on (want 3), code %d, stderr %q", exited, code, errOut)
	}
	argsB, _ := os.ReadFile(filepath.Join(rec, "args"))
	pwd, _ := os.ReadFile(filepath.Join(rec, "pwd"))
	args := strings.Split(strings.TrimSpace(string(argsB)), "\n")
	ca := filepath.Join(dir, "data", "ca-bundle.pem")
	want := []string{"--host=localhost", "--port=13306", "--protocol=TCP", "--user=app", "--ssl", "--ssl-ca=" + ca,
		"--ssl-verify-server-cert", "-e", "select current_user()"}
	if !slices.Equal(args, want) {
		t.Fatalf("client arguments:\n got %q\nwant %q", args, want)
	}
	if !strings.HasPrefix(string(pwd), "localhost:13306/?Action=connect&DBUser=app&") || !strings.Contains(string(pwd), "X-Amz-Signature=") {
		t.Fatalf("MYSQL_PWD is not a token for localhost:13306 and app: %.60q", pwd)
	}
	if strings.Contains(string(argsB), "X-Amz") {
		t.Fatal("the token is on the client's command line")
	}

	t.Setenv("PATH", t.TempDir())
	code, _, errOut = run(t, "connect", "mysql", "--user", "app")
	if code != 1 || !strings.Contains(errOut, "neither mariadb nor mysql was found on PATH") {
		t.Fatalf("without a client: code %d, stderr %q", code, errOut)
	}
}

const dbTestMariaAdminEnv = "IAMDB_TEST_DB_MARIADB_ADMIN_PASSWORD"

// startTestMariaDB starts a private MariaDB with TLS for this test.
func startTestMariaDB(t *testing.T) *testdb.MariaDBServer {
	t.Helper()
	if testing.Short() {
		t.Skip("needs MariaDB; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := testdb.StartMariaDB(ctx, testdb.MariaDBOptions{TLS: true})
	if errors.Is(err, testdb.ErrNotInstalled) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MariaDB is required but not installed (run scripts/deps.sh): %v", err)
		}
		t.Skipf("MariaDB not installed (run scripts/deps.sh): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop() })
	return m
}

// mariaLoginWorks reports whether user logs in with password over verified
// TLS.
func mariaLoginWorks(t *testing.T, m *testdb.MariaDBServer, user, password string) bool {
	t.Helper()
	tlsCfg, err := m.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.TLS = user, password, "tcp", m.Addr(), tlsCfg
	cfg.Logger = &mysql.NopLogger{}
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	return db.PingContext(t.Context()) == nil
}

func TestDBRotateMySQL(t *testing.T) {
	m := startTestMariaDB(t)
	t.Setenv(dbTestMariaAdminEnv, m.RootPassword)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	if code, _, errOut := run(t, "init", "--data-dir", dataDir); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`data_dir: %s
instances:
  - name: shop
    engine: mysql
    resource_id: db-SHOP0000000000000000000000
    listen: 127.0.0.1:16435
    iam_users: [app]
    upstream: {address: "%s", tls: verify-full, ca: %s}
    backend_auth: {mode: managed, admin_user: root, admin_password_env: %s}
`, dataDir, m.Addr(), m.CAFile, dbTestMariaAdminEnv)), 0o600); err != nil {
		t.Fatal(err)
	}
	root, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.Exec("CREATE USER 'app'@'%'"); err != nil {
		t.Fatal(err)
	}

	// The first IAM login sets app's password, as iamdb serve would.
	password := func() string {
		t.Helper()
		d, err := datadir.Open(t.Context(), dataDir, "", "")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		c, _ := dbTestFlags(cfgPath).loadConfig(true)
		in, _ := c.Instance("shop")
		b, err := dbauth.NewMySQL(t.Context(), dbauth.MySQLOptions{Instance: *in, Store: d.Store, Sealer: d.Sealer})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		pw, err := b.Password(t.Context(), "app")
		if err != nil {
			t.Fatal(err)
		}
		return pw
	}
	db := func(args ...string) (int, string, string) {
		return run(t, append([]string{"--config", cfgPath, "db"}, args...)...)
	}
	code, out, errOut := db("rotate")
	if code != 0 || !strings.Contains(out, "nothing to rotate") {
		t.Fatalf("rotate before any login: code %d\n%s%s", code, out, errOut)
	}
	pw1 := password()
	if !mariaLoginWorks(t, m, "app", pw1) {
		t.Fatal("the managed password does not log in")
	}
	code, out, errOut = db("rotate", "--instance", "shop", "--user", "app")
	if code != 0 || !strings.Contains(out, "Rotated the password of database user app on instance shop") {
		t.Fatalf("rotate --user: code %d\n%s%s", code, out, errOut)
	}
	if mariaLoginWorks(t, m, "app", pw1) {
		t.Fatal("the password from before the rotation still logs in")
	}
	pw2 := password()
	if pw2 == pw1 || !mariaLoginWorks(t, m, "app", pw2) {
		t.Fatal("the rotated password is not stored or does not log in")
	}
	// Without --instance: the only instance; without --user: every user.
	code, out, errOut = db("rotate")
	if code != 0 || !strings.Contains(out, "Rotated the password of database user app on instance shop") {
		t.Fatalf("rotate (all): code %d\n%s%s", code, out, errOut)
	}
	if mariaLoginWorks(t, m, "app", pw2) {
		t.Fatal("rotate of every user left app's password unchanged")
	}
	for _, s := range []string{out, errOut} {
		if strings.Contains(s, pw1) || strings.Contains(s, pw2) {
			t.Fatal("rotate printed a password")
		}
	}
	code, _, errOut = db("rotate", "--user", "root")
	if code != 1 || !strings.Contains(errOut, "admin user") {
		t.Fatalf("rotate of the admin user: code %d, %q", code, errOut)
	}
}
