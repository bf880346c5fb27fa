package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/datadir"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/testdb"
)

const dbTestAdminEnv = "IAMDB_TEST_DB_ADMIN_PASSWORD"

// startTestPostgres starts a private PostgreSQL with TLS for this test and
// stops it when the test ends (this package has no TestMain to stop a
// shared one).
func startTestPostgres(t *testing.T) *testdb.PG {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := testdb.StartPostgres(ctx, testdb.PGOptions{TLS: true})
	if errors.Is(err, testdb.ErrNotInstalled) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required but not installed (run scripts/deps.sh): %v", err)
		}
		t.Skipf("PostgreSQL not installed (run scripts/deps.sh): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	return pg
}

func pgExec(t *testing.T, pg *testdb.PG, sql string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// psqlLogin logs in with the real psql client over verified TLS.
func psqlLogin(t *testing.T, psql string, pg *testdb.PG, user, password string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), psql, "-X", "-At", "-c", "SELECT current_user",
		fmt.Sprintf("host=%s port=%d dbname=postgres user=%s sslmode=verify-full sslrootcert=%s", pg.Host, pg.Port, user, pg.CAFile))
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestDBSetupAndRotate(t *testing.T) {
	psql := requireTool(t, "psql")
	pg := startTestPostgres(t)
	t.Setenv(dbTestAdminEnv, pg.Password)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	if code, _, errOut := run(t, "init", "--data-dir", dataDir); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	secrets := filepath.Join(dir, "secrets.yaml")
	os.WriteFile(secrets, []byte("app: x\n"), 0o600)
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
instances:
  - name: orders
    engine: postgres
    resource_id: db-ORDERS00000000000000000000
    listen: 127.0.0.1:16432
    upstream: {address: "%s", tls: verify-full, ca: %s}
    backend_auth: {mode: managed, admin_user: postgres, admin_password_env: %s}
  - name: billing
    engine: postgres
    resource_id: db-BILLING0000000000000000000
    listen: 127.0.0.1:16433
    upstream: {address: "%s"}
    backend_auth: {mode: secrets, secrets_file: %s}
  - name: carts
    engine: mysql
    resource_id: db-CARTS000000000000000000000
    listen: 127.0.0.1:16434
    upstream: {address: "127.0.0.1:1"}
    backend_auth: {mode: trust}
    iam_users: [app]
`, dataDir, pg.Addr(), pg.CAFile, dbTestAdminEnv, pg.Addr(), secrets)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	db := func(args ...string) (int, string, string) {
		return run(t, append([]string{"--config", cfgPath, "db"}, args...)...)
	}

	code, out, errOut := db("setup", "--instance", "orders")
	if code != 0 || !strings.Contains(out, "Created role rds_iam (NOLOGIN) on "+pg.Addr()) || !strings.Contains(out, "CREATE USER app; GRANT rds_iam TO app;") {
		t.Fatalf("first setup: code %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = db("setup", "--instance", "orders")
	if code != 0 || !strings.Contains(out, "already exists") || strings.Contains(out, "Created") {
		t.Fatalf("second setup: code %d\n%s%s", code, out, errOut)
	}

	// A user's first IAM login, as iamdb serve would do it.
	pgExec(t, pg, "CREATE USER app; GRANT rds_iam TO app")
	password := func() string {
		t.Helper()
		d, err := datadir.Open(t.Context(), dataDir, "", "")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		c, _ := dbTestFlags(cfgPath).loadConfig(true)
		in, _ := c.Instance("orders")
		p, err := dbauth.NewPostgres(t.Context(), dbauth.PostgresOptions{Instance: *in, Store: d.Store, Sealer: d.Sealer})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if ok, err := p.IsIAMUser(t.Context(), "app"); !ok || err != nil {
			t.Fatalf("app is not IAM-enabled after GRANT rds_iam: %v", err)
		}
		pw, err := p.Password(t.Context(), "app")
		if err != nil {
			t.Fatal(err)
		}
		return pw
	}
	pw1 := password()
	if who, err := psqlLogin(t, psql, pg, "app", pw1); err != nil || who != "app" {
		t.Fatalf("psql with the managed password: %v: %s", err, who)
	}

	code, out, errOut = db("rotate", "--instance", "orders", "--user", "app")
	if code != 0 || !strings.Contains(out, "Rotated the password of database user app on instance orders") {
		t.Fatalf("rotate --user: code %d\n%s%s", code, out, errOut)
	}
	if _, err := psqlLogin(t, psql, pg, "app", pw1); err == nil {
		t.Fatal("psql still logs in with the password from before the rotation")
	}
	pw2 := password()
	if pw2 == pw1 {
		t.Fatal("rotate left the stored password unchanged")
	}
	if who, err := psqlLogin(t, psql, pg, "app", pw2); err != nil || who != "app" {
		t.Fatalf("psql with the rotated password: %v: %s", err, who)
	}
	for _, s := range []string{out, errOut} {
		if strings.Contains(s, pw1) || strings.Contains(s, pw2) {
			t.Fatal("rotate printed a password")
		}
	}

	code, out, errOut = db("rotate", "--instance", "orders")
	if code != 0 || !strings.Contains(out, "Rotated the password of database user app") {
		t.Fatalf("rotate (all): code %d\n%s%s", code, out, errOut)
	}
	if _, err := psqlLogin(t, psql, pg, "app", pw2); err == nil {
		t.Fatal("rotate of every user left app's password unchanged")
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rotate", "--instance", "billing"}, 1, "only sets and rotates passwords in mode managed"},
		{[]string{"setup"}, 2, "--instance is required"},
		{[]string{"setup", "--instance", "nope"}, 1, `no instance named "nope"`},
		{[]string{"setup", "--instance", "orders", "extra"}, 2, "takes no arguments"},
	} {
		code, _, errOut := db(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("db %v: code %d, stderr %q; want %d and %q", tc.args, code, errOut, tc.code, tc.want)
		}
	}

	// MySQL and MariaDB have nothing to set up: iam_users decides.
	code, out, errOut = db("setup", "--instance", "carts")
	if code != 0 || !strings.Contains(out, "nothing to set up") || !strings.Contains(out, "iam_users (app)") {
		t.Errorf("setup of a mysql instance: code %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = db("rotate", "--instance", "carts")
	if code != 1 || !strings.Contains(errOut, "only sets and rotates passwords in mode managed") {
		t.Errorf("rotate of a mysql instance in mode trust: code %d, %q", code, errOut)
	}

	os.Unsetenv(dbTestAdminEnv)
	code, _, errOut = db("setup", "--instance", "orders")
	if code != 1 || !strings.Contains(errOut, "environment variable "+dbTestAdminEnv+" is not set") {
		t.Errorf("setup without the admin password: code %d, %q", code, errOut)
	}
	t.Setenv(dbTestAdminEnv, "wrong-password")
	code, _, errOut = db("setup", "--instance", "orders")
	if code != 1 || !strings.Contains(errOut, "admin login as postgres") || !strings.Contains(errOut, dbTestAdminEnv) || strings.Contains(errOut, "wrong-password") {
		t.Errorf("setup with a wrong admin password: code %d, %q", code, errOut)
	}
}

func TestDBNeedsConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	code, _, errOut := run(t, "--config", missing, "db", "setup", "--instance", "orders")
	if code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
}

// g returns globalFlags reading cfgPath, to load the configuration the
// way the commands do.
func dbTestFlags(cfgPath string) *globalFlags { return &globalFlags{configPath: cfgPath} }
