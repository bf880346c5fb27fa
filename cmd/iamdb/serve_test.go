package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/sigv4"
	"github.com/iamdb/iamdb/internal/testdb"
)

const serveIdentities = `users:
  - name: alice
    policies: [connect-as-app, assume-db-users]
roles:
  - name: db-users
    trust_policy:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Principal: {AWS: "arn:aws:iam::${account}:root"}
          Action: [sts:AssumeRole, sts:TagSession]
    policies: [connect-as-tagged-user]
policies:
  - name: connect-as-app
    document:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Action: rds-db:connect
          Resource: arn:aws:rds-db:us-east-1:${account}:dbuser:db-SERVE000000000000000000000/app
  - name: assume-db-users
    document:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Action: [sts:AssumeRole, sts:TagSession]
          Resource: arn:aws:iam::${account}:role/db-users
  - name: connect-as-tagged-user
    document:
      Version: "2012-10-17"
      Statement:
        - Sid: OwnDatabaseUser
          Effect: Allow
          Action: rds-db:connect
          Resource: arn:aws:rds-db:us-east-1:${account}:dbuser:db-SERVE000000000000000000000/${aws:PrincipalTag/dbuser}
`

// lockedBuffer is the server's stderr, read while the process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPostgres starts a PostgreSQL of this test's own (TLS on) and stops
// it when the test ends.
func startPostgres(t *testing.T) *testdb.PG {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := testdb.StartPostgres(ctx, testdb.PGOptions{TLS: true})
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required (run scripts/deps.sh): %v", err)
		}
		t.Skipf("PostgreSQL not available (run scripts/deps.sh): %v", err)
	}
	t.Cleanup(func() { pg.Stop() })
	return pg
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestServe runs the real binary as an operator does: init, apply, an
// access key, `iamdb serve`; then logins through it with pgx and psql
// (`iamdb connect postgres`), a SIGHUP that adds an endpoint alias while a
// session stays open, and a SIGTERM drain.
func TestServe(t *testing.T) {
	pg := startPostgres(t)
	ctx := context.Background()

	// The upstream: an IAM-enabled user with a password only iamdb knows.
	appPassword := "app-" + fmt.Sprint(time.Now().UnixNano())
	admin, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		"CREATE ROLE rds_iam NOLOGIN",
		"CREATE USER app PASSWORD '" + appPassword + "'",
		"GRANT rds_iam TO app",
		"CREATE DATABASE orders OWNER app",
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	admin.Close(ctx)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	secrets := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(secrets, []byte("app: "+appPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port, metricsPort, apiPort := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	endpoint := fmt.Sprintf("127.0.0.1:%d", port)
	alias := fmt.Sprintf("localhost:%d", port)
	writeConfig := func(endpoints ...string) {
		t.Helper()
		cfg := fmt.Sprintf(`data_dir: ./data
region: us-east-1
metrics: {listen: "127.0.0.1:%d"}
api: {listen: "127.0.0.1:%d"}
drain_timeout: 8s
instances:
  - name: orders
    engine: postgres
    resource_id: db-SERVE000000000000000000000
    listen: %s
    endpoints: ["%s"]
    upstream: {address: "%s", tls: verify-full, ca: "%s"}
    backend_auth: {mode: secrets, secrets_file: secrets.yaml}
    iam_users: [app]
`, metricsPort, apiPort, endpoint, strings.Join(endpoints, `", "`), pg.Addr(), pg.CAFile)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(endpoint)
	env := []string{"IAMDB_CONFIG=" + cfgPath}

	var initOut struct{ AccountId string }
	if err := json.Unmarshal([]byte(must(t, iamdb(t, env, "", "init", "--output", "json"))), &initOut); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "identities.yaml"), []byte(serveIdentities), 0o600)
	must(t, iamdb(t, env, "", "apply", "-f", filepath.Join(dir, "identities.yaml")))
	var key struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	if err := json.Unmarshal([]byte(must(t, iamdb(t, env, "", "access-key", "create", "--user", "alice"))), &key); err != nil {
		t.Fatal(err)
	}
	caBundle := filepath.Join(dir, "data", "ca-bundle.pem")

	// iamdb serve, as a process of its own.
	logs := &lockedBuffer{}
	serve := exec.Command(bin, "serve")
	serve.Env = append(cleanEnv(t), env...)
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
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d", metricsPort)
	readyz := func() int {
		resp, err := http.Get(metricsURL + "/readyz")
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

	token := func(ep string) string {
		tok, err := sigv4.Sign(sigv4.SignInput{Endpoint: ep, Region: "us-east-1", DBUser: "app",
			AccessKeyID: key.AccessKey.AccessKeyId, SecretAccessKey: key.AccessKey.SecretAccessKey, Time: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	connect := func(host, tok string) (*pgx.Conn, error) {
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=app dbname=orders sslmode=verify-full sslrootcert=%s connect_timeout=20", host, port, caBundle))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Password = tok
		return pgx.ConnectConfig(ctx, cfg)
	}
	query := func(c *pgx.Conn) (string, error) {
		var u string
		err := c.QueryRow(ctx, "SELECT current_user").Scan(&u)
		return u, err
	}

	session, err := connect("127.0.0.1", token(endpoint))
	if err != nil {
		t.Fatalf("IAM login through iamdb serve: %v", err)
	}
	defer session.Close(ctx)
	if u, err := query(session); err != nil || u != "app" {
		t.Fatalf("current_user = %q, %v", u, err)
	}

	t.Run("connect postgres with psql", func(t *testing.T) {
		if _, err := exec.LookPath("psql"); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("psql is required in CI (scripts/deps.sh installs it)")
			}
			t.Skip("psql not installed")
		}
		alice := []string{"AWS_ACCESS_KEY_ID=" + key.AccessKey.AccessKeyId, "AWS_SECRET_ACCESS_KEY=" + key.AccessKey.SecretAccessKey}
		r := iamdb(t, append(env, alice...), "", "connect", "postgres", "--instance", "orders", "--user", "app", "--database", "orders",
			"--", "-At", "-c", "select current_user || '@' || current_database()")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "app@orders" {
			t.Fatalf("iamdb connect postgres: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		// psql's failures come back as its own exit status.
		r = iamdb(t, append(env, alice...), "", "connect", "postgres", "--instance", "orders", "--user", "app", "--database", "orders",
			"--", "-v", "ON_ERROR_STOP=1", "-c", "select no_such_column")
		if r.code != 1 || !strings.Contains(r.stderr, "no_such_column") {
			t.Fatalf("failing psql command: exit %d (want psql's 1)\nstderr: %s", r.code, r.stderr)
		}
	})

	t.Run("federated login with the AWS CLI", func(t *testing.T) {
		aws, err := exec.LookPath("aws")
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("the AWS CLI is required in CI (scripts/deps.sh installs it)")
			}
			t.Skip("aws not installed")
		}
		psql, err := exec.LookPath("psql")
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("psql is required in CI (scripts/deps.sh installs it)")
			}
			t.Skip("psql not installed")
		}
		apiURL := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
		awsRun := func(creds []string, args ...string) []byte {
			t.Helper()
			cmd := exec.Command(aws, args...)
			cmd.Env = append(cleanEnv(t), append(creds, "AWS_DEFAULT_REGION=us-east-1")...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("aws %v: %v\n%s", args, err, stderr.String())
			}
			return out
		}
		alice := []string{"AWS_ACCESS_KEY_ID=" + key.AccessKey.AccessKeyId, "AWS_SECRET_ACCESS_KEY=" + key.AccessKey.SecretAccessKey}

		var who struct{ Account, Arn string }
		json.Unmarshal(awsRun(alice, "sts", "get-caller-identity", "--endpoint-url", apiURL), &who)
		if who.Account != initOut.AccountId || who.Arn != "arn:aws:iam::"+initOut.AccountId+":user/alice" {
			t.Fatalf("get-caller-identity = %+v", who)
		}

		// assume-role with a session tag, then a token from those
		// credentials, then psql through the listener.
		login := func(tag string) (string, error) {
			var assumed struct {
				Credentials     struct{ AccessKeyId, SecretAccessKey, SessionToken string }
				AssumedRoleUser struct{ Arn string }
			}
			out := awsRun(alice, "sts", "assume-role", "--endpoint-url", apiURL,
				"--role-arn", "arn:aws:iam::"+initOut.AccountId+":role/db-users", "--role-session-name", "alice-"+tag,
				"--tags", "Key=dbuser,Value="+tag)
			if err := json.Unmarshal(out, &assumed); err != nil {
				t.Fatal(err)
			}
			if assumed.AssumedRoleUser.Arn != "arn:aws:sts::"+initOut.AccountId+":assumed-role/db-users/alice-"+tag {
				t.Fatalf("assumed role ARN %q", assumed.AssumedRoleUser.Arn)
			}
			session := []string{"AWS_ACCESS_KEY_ID=" + assumed.Credentials.AccessKeyId,
				"AWS_SECRET_ACCESS_KEY=" + assumed.Credentials.SecretAccessKey, "AWS_SESSION_TOKEN=" + assumed.Credentials.SessionToken}
			tok := strings.TrimSpace(string(awsRun(session, "rds", "generate-db-auth-token",
				"--hostname", "127.0.0.1", "--port", fmt.Sprint(port), "--username", "app")))
			cmd := exec.Command(psql, fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=orders sslmode=verify-full sslrootcert=%s", port, caBundle),
				"-At", "-c", "select current_user")
			cmd.Env = append(cleanEnv(t), "PGPASSWORD="+tok)
			out, err := cmd.CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		if out, err := login("app"); err != nil || out != "app" {
			t.Fatalf("psql as the tagged database user: %v\n%s", err, out)
		}
		out, err := login("bob")
		if err == nil || !strings.Contains(out, `PAM authentication failed for user "app"`) {
			t.Fatalf("a session tagged for bob logged in as app: %v\n%s", err, out)
		}
		if !strings.Contains(logs.String(), "AccessDenied") {
			t.Fatalf("the refusal's reason is not in the server log:\n%s", logs)
		}
	})

	t.Run("SIGHUP adds an endpoint alias", func(t *testing.T) {
		if c, err := connect("localhost", token(alias)); err == nil {
			c.Close(ctx)
			t.Fatal("a token for an alias not yet configured was accepted")
		}
		writeConfig(endpoint, alias)
		before := strings.Count(logs.String(), "reload done")
		serve.Process.Signal(syscall.SIGHUP)
		waitUntil(t, "the reload", func() bool { return strings.Count(logs.String(), "reload done") > before })
		c, err := connect("localhost", token(alias))
		if err != nil {
			t.Fatalf("token for the new alias after SIGHUP: %v", err)
		}
		c.Close(ctx)
		if u, err := query(session); err != nil || u != "app" {
			t.Fatalf("session opened before SIGHUP: %q, %v", u, err)
		}
	})

	t.Run("SIGTERM drains", func(t *testing.T) {
		serve.Process.Signal(syscall.SIGTERM)
		waitUntil(t, "/readyz to stop answering 200", func() bool { return readyz() != 200 })
		waitUntil(t, "the listener to refuse connections", func() bool {
			c, err := net.DialTimeout("tcp", endpoint, time.Second)
			if err != nil {
				return true
			}
			c.Close()
			return false
		})
		// drain_timeout is 8s: the open session still works meanwhile.
		if u, err := query(session); err != nil || u != "app" {
			t.Fatalf("open session while draining: %q, %v", u, err)
		}
		var err error
		select {
		case err = <-exited:
			exited <- err
		case <-time.After(time.Minute):
			t.Fatal("iamdb serve did not exit after the drain timeout")
		}
		if err != nil {
			t.Fatalf("iamdb serve after SIGTERM: %v (want exit 0)", err)
		}
		out := logs.String()
		if !strings.Contains(out, "msg=drained") || !strings.Contains(out, "sessions_closed=1") {
			t.Fatalf("no drain line counting the closed session:\n%s", out)
		}
		if _, err := query(session); err == nil {
			t.Fatal("the session outlived the drain timeout")
		}
		for _, secret := range []string{appPassword, key.AccessKey.SecretAccessKey} {
			if strings.Contains(out, secret) {
				t.Fatal("iamdb serve logged a secret")
			}
		}
	})
}

// TestServeNeedsConfig: without a configuration file serve says what to do.
func TestServeNeedsConfig(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(bin, "serve")
	cmd.Dir = dir
	cmd.Env = cleanEnv(t)
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "docs/configuration.md") || !strings.Contains(string(out), "iamdb init") {
		t.Fatalf("serve without config: %v\n%s", err, out)
	}
}
