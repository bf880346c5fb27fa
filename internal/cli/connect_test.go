package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestPsqlArgs(t *testing.T) {
	got := psqlArgs("db.example.com", 6432, "o'brien", "my db", `/srv/ca\bundle.pem`, []string{"-c", "select 1"})
	want := []string{"--dbname",
		`host=db.example.com port=6432 user='o\'brien' dbname='my db' sslmode=verify-full sslrootcert='/srv/ca\\bundle.pem'`,
		"-c", "select 1"}
	if !slices.Equal(got, want) {
		t.Fatalf("psqlArgs:\n got %q\nwant %q", got, want)
	}
	// Without --database psql's own default (the user name) applies.
	if got := psqlArgs("h", 1, "u", "", "/ca.pem", nil); strings.Contains(got[1], "dbname") {
		t.Fatalf("dbname given without --database: %q", got)
	}
}

// connectSetup writes a configuration with one postgres instance and
// creates its data dir.
func connectSetup(t *testing.T) {
	t.Helper()
	isolateAWSEnv(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "iamdb.yaml")
	if err := os.WriteFile(cfg, []byte(`data_dir: ./data
instances:
  - name: orders
    engine: postgres
    resource_id: db-ORDERS00000000000000000000
    listen: 127.0.0.1:6432
    upstream: {address: 127.0.0.1:5432}
    backend_auth: {mode: trust}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IAMDB_CONFIG", cfg)
	t.Setenv("IAMDB_DATA_DIR", "")
	os.Unsetenv("IAMDB_DATA_DIR")
	if code, out, errOut := run(t, "init"); code != 0 {
		t.Fatalf("init: %d\n%s%s", code, out, errOut)
	}
}

func TestConnectRefusals(t *testing.T) {
	connectSetup(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"mysql on a postgres instance", []string{"connect", "mysql", "--instance", "orders", "--user", "app"}, 2, "instance orders is a postgres instance, not mysql"},
		{"mysql without a mysql instance", []string{"connect", "mysql", "--user", "app"}, 2, "the configuration has 0 mysql instances"},
		{"mysql no user", []string{"connect", "mysql"}, 2, "--user"},
		{"mysql stray arg", []string{"connect", "mysql", "--user", "app", "extra"}, 2, "put the mariadb client's arguments after --"},
		{"unknown client", []string{"connect", "oracle"}, 2, `unknown database client "oracle"`},
		{"no user", []string{"connect", "postgres", "--instance", "orders"}, 2, "--user"},
		{"unknown instance", []string{"connect", "postgres", "--instance", "billing", "--user", "app"}, 2, `no instance "billing" in the configuration; instances: orders`},
		{"args before --", []string{"connect", "postgres", "--user", "app", "-c"}, 2, "unknown shorthand flag"},
		{"stray arg", []string{"connect", "postgres", "--user", "app", "extra"}, 2, "put psql's arguments after --"},
		{"no credentials", []string{"connect", "postgres", "--user", "app"}, 1, "no usable AWS credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "no credentials" {
				requireTool(t, "psql")
			}
			code, _, errOut := run(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tc.code, errOut, tc.want)
			}
		})
	}
}

func TestConnectWithoutPsql(t *testing.T) {
	connectSetup(t)
	t.Setenv("PATH", t.TempDir())
	code, _, errOut := run(t, "connect", "postgres", "--user", "app")
	if code != 1 || !strings.Contains(errOut, "psql was not found on PATH") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestServeWithoutConfig(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("IAMDB_CONFIG", "")
	os.Unsetenv("IAMDB_CONFIG")
	code, _, errOut := run(t, "serve")
	if code != 1 || !strings.Contains(errOut, "iamdb init") || !strings.Contains(errOut, "docs/configuration.md") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = run(t, "serve", "--log-format", "xml")
	if code != 2 || !strings.Contains(errOut, "--log-format") {
		t.Fatalf("bad --log-format: exit %d, stderr %q", code, errOut)
	}
}
