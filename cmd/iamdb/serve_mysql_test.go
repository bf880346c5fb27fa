package main_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/testdb"
)

const serveMySQLIdentities = `users:
  - name: alice
    policies: [connect-as-app]
policies:
  - name: connect-as-app
    document:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Action: rds-db:connect
          Resource: arn:aws:rds-db:us-east-1:${account}:dbuser:db-SHOP0000000000000000000000/app
`

// requireProgram returns the path of a client program the test drives; in
// CI a missing one fails the test, elsewhere it skips.
func requireProgram(t *testing.T, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required in CI (%s)", name, hint)
	}
	t.Skipf("%s not installed (%s)", name, hint)
	return ""
}

// startMariaDB starts a MariaDB of this test's own (TLS on) and stops it
// when the test ends.
func startMariaDB(t *testing.T) *testdb.MariaDBServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := testdb.StartMariaDB(ctx, testdb.MariaDBOptions{TLS: true})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MariaDB is required (run scripts/deps.sh): %v", err)
		}
		t.Skipf("MariaDB not available (run scripts/deps.sh): %v", err)
	}
	t.Cleanup(func() { m.Stop() })
	return m
}

// TestServeMySQL runs the real binary in front of MariaDB as an operator
// does: init, apply, an access key, `iamdb serve` with an engine: mysql
// instance whose backend passwords iamdb manages (admin: MariaDB's root,
// password in an environment variable); then the real mariadb client
// through `iamdb connect mysql`, and with a token from the real AWS CLI.
func TestServeMySQL(t *testing.T) {
	mariadb := requireProgram(t, "mariadb", "apt-get install mariadb-client")
	m := startMariaDB(t)
	root, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"CREATE DATABASE shop",
		// No password: only iamdb will ever know one.
		"CREATE USER 'app'@'%'",
		"GRANT ALL ON shop.* TO 'app'@'%'",
	} {
		if _, err := root.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	root.Close()

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	port, metricsPort, apiPort := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	cfg := fmt.Sprintf(`data_dir: ./data
region: us-east-1
metrics: {listen: "127.0.0.1:%d"}
api: {listen: "127.0.0.1:%d"}
drain_timeout: 5s
instances:
  - name: shop
    engine: mysql
    resource_id: db-SHOP0000000000000000000000
    listen: 127.0.0.1:%d
    endpoints: ["localhost:%d", "127.0.0.1:%d"]
    upstream: {address: "%s", tls: verify-full, ca: "%s"}
    backend_auth: {mode: managed, admin_user: root, admin_password_env: IAMDB_MARIADB_ADMIN_PASSWORD}
    iam_users: [app]
    audit_statements: all
`, metricsPort, apiPort, port, port, port, m.Addr(), m.CAFile)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"IAMDB_CONFIG=" + cfgPath}
	must(t, iamdb(t, env, "", "init", "--output", "json"))
	os.WriteFile(filepath.Join(dir, "identities.yaml"), []byte(serveMySQLIdentities), 0o600)
	must(t, iamdb(t, env, "", "apply", "-f", filepath.Join(dir, "identities.yaml")))
	var key struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	if err := json.Unmarshal([]byte(must(t, iamdb(t, env, "", "access-key", "create", "--user", "alice"))), &key); err != nil {
		t.Fatal(err)
	}
	alice := []string{"AWS_ACCESS_KEY_ID=" + key.AccessKey.AccessKeyId, "AWS_SECRET_ACCESS_KEY=" + key.AccessKey.SecretAccessKey}
	caBundle := filepath.Join(dir, "data", "ca-bundle.pem")

	if r := iamdb(t, env, "", "db", "setup", "--instance", "shop"); r.code != 0 || !strings.Contains(r.stdout, "nothing to set up") {
		t.Fatalf("db setup for mysql: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	logs := &lockedBuffer{}
	serve := exec.Command(bin, "serve")
	serve.Env = append(cleanEnv(t), append(env, "IAMDB_MARIADB_ADMIN_PASSWORD="+m.RootPassword)...)
	serve.Stdout, serve.Stderr = logs, logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			serve.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("iamdb serve output:\n%s", logs)
		}
	})
	readyz := func() int {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitUntil(t, "iamdb serve to be ready", func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("iamdb serve exited at start: %v\n%s", err, logs)
		default:
		}
		return readyz() == 200
	})

	t.Run("connect mysql with the mariadb client", func(t *testing.T) {
		r := iamdb(t, append(env, alice...), "", "connect", "mysql", "--instance", "shop", "--user", "app", "--database", "shop",
			"--", "-N", "-B", "-e", "select current_user(), database()")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "app@%\tshop" {
			t.Fatalf("iamdb connect mysql: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		// The client's failures come back as its own exit status.
		r = iamdb(t, append(env, alice...), "", "connect", "mysql", "--user", "app", "--", "-e", "select no_such_column")
		if r.code != 1 || !strings.Contains(r.stderr, "no_such_column") {
			t.Fatalf("failing mariadb command: exit %d (want the client's 1)\nstderr: %s", r.code, r.stderr)
		}
	})

	t.Run("AWS CLI token with the mariadb client", func(t *testing.T) {
		aws := requireProgram(t, "aws", "scripts/deps.sh installs the AWS CLI")
		cmd := exec.Command(aws, "rds", "generate-db-auth-token", "--hostname", "127.0.0.1", "--port", fmt.Sprint(port),
			"--username", "app", "--region", "us-east-1")
		cmd.Env = append(cleanEnv(t), alice...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("aws rds generate-db-auth-token: %v\n%s", err, stderr.String())
		}
		token := strings.TrimSpace(string(out))
		client := func(extra ...string) (string, error) {
			args := append([]string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", port), "--protocol=TCP", "--user=app",
				"--ssl", "--ssl-ca=" + caBundle, "--ssl-verify-server-cert"}, extra...)
			c := exec.Command(mariadb, args...)
			c.Env = append(cleanEnv(t), "MYSQL_PWD="+token)
			out, err := c.CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		if out, err := client("-N", "-B", "-e", "select current_user()"); err != nil || out != "app@%" {
			t.Fatalf("mariadb with the AWS CLI's token: %v\n%s", err, out)
		}
		// Without TLS the token is never asked for.
		c := exec.Command(mariadb, "--host=127.0.0.1", fmt.Sprintf("--port=%d", port), "--protocol=TCP", "--user=app",
			"--skip-ssl", "-e", "select 1")
		c.Env = append(cleanEnv(t), "MYSQL_PWD="+token)
		if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "TLS") {
			t.Fatalf("a login without TLS: %v, want a refusal that says TLS is required:\n%s", err, out)
		}
	})

	t.Run("audit trail", func(t *testing.T) {
		// The sessions above, as the audit log tells them: connect events
		// naming alice and the upstream's connection id, their statements
		// and disconnects. The log is written before each client hears of
		// its login; disconnects follow the client's end.
		var connects, statements, disconnects int
		for range 500 {
			connects, statements, disconnects = 0, 0, 0
			out := must(t, iamdb(t, env, "", "audit", "query", "--instance", "shop", "--output", "json"))
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				var e struct {
					EventName         string
					ErrorCode         string
					UserIdentity      struct{ ARN string }
					RequestParameters map[string]any
					ResponseElements  map[string]any
				}
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("%v: %s", err, line)
				}
				if e.UserIdentity.ARN != "" && !strings.HasSuffix(e.UserIdentity.ARN, ":user/alice") {
					t.Fatalf("event of %s", e.UserIdentity.ARN)
				}
				switch {
				case e.EventName == "connect" && e.ErrorCode == "":
					if pid, _ := e.ResponseElements["backendPid"].(float64); pid <= 0 || e.RequestParameters["dbUser"] != "app" {
						t.Fatalf("connect event %v %v", e.RequestParameters, e.ResponseElements)
					}
					connects++
				case e.EventName == "statement":
					if s, _ := e.RequestParameters["statement"].(string); strings.Contains(s, "current_user()") {
						statements++
					}
				case e.EventName == "disconnect":
					disconnects++
				}
			}
			if connects >= 2 && disconnects >= connects && statements >= 1 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if connects < 2 || disconnects < connects || statements < 1 {
			t.Fatalf("%d connect, %d disconnect events and %d current_user() statements, want at least 2, as many and 1", connects, disconnects, statements)
		}
		if r := iamdb(t, env, "", "audit", "verify"); r.code != 0 {
			t.Fatalf("audit verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("SIGTERM drains", func(t *testing.T) {
		serve.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-exited:
			exited <- err
		case <-time.After(time.Minute):
			t.Fatal("iamdb serve did not exit after SIGTERM")
		}
		if err != nil {
			t.Fatalf("iamdb serve after SIGTERM: %v (want exit 0)", err)
		}
		out := logs.String()
		if !strings.Contains(out, "msg=drained") || !strings.Contains(out, "set a new backend password") {
			t.Fatalf("server log lacks the drain or the managed password line:\n%s", out)
		}
		for _, secret := range []string{m.RootPassword, key.AccessKey.SecretAccessKey, "X-Amz-Signature="} {
			if strings.Contains(out, secret) {
				t.Fatal("iamdb serve logged a secret")
			}
		}
	})
}
