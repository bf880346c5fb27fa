package interop_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	gomysql "github.com/go-mysql-org/go-mysql/client"
	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/iamdb/iamdb/internal/testdb"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testdb.StopAll()
	os.Exit(code)
}

const (
	region     = "us-east-1"
	dbUser     = "app"
	identities = `users:
  - name: interop
    policies: [connect-as-app]
policies:
  - name: connect-as-app
    document:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Action: rds-db:connect
          Resource: arn:aws:rds-db:us-east-1:${account}:dbuser:*/app
`
)

func inCI() bool { return os.Getenv("CI") == "true" }

// credentials of the IAM user the tokens are signed with.
type keyPair struct{ id, secret string }

func (k keyPair) env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + k.id, "AWS_SECRET_ACCESS_KEY=" + k.secret, "AWS_REGION=" + region, "AWS_DEFAULT_REGION=" + region}
}

// generator makes a token for host:port and a database user.
type generator struct {
	name, version string
	missing       string // why it cannot run on this machine; "" when it can
	token         func(ctx context.Context, k keyPair, host string, port int, user string) (string, error)
}

// client logs in with a token and returns current_user.
type client struct {
	engine        string // "postgres" or "mysql"
	name, version string
	missing       string
	login         func(ctx context.Context, port int, user, token string) (string, error)
}

// env is the environment of the programs the test runs: the machine's own
// AWS configuration, credentials and connection settings cannot leak in.
type env struct {
	base []string
}

func newEnv(t *testing.T) env {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var e env
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "IAMDB_") || strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "MYSQL_") {
			continue
		}
		e.base = append(e.base, kv)
	}
	e.base = append(e.base, "AWS_CONFIG_FILE="+empty, "AWS_SHARED_CREDENTIALS_FILE="+empty, "AWS_EC2_METADATA_DISABLED=true", "PSQLRC=/dev/null")
	return e
}

func (e env) with(extra ...string) []string {
	return append(append([]string(nil), e.base...), extra...)
}

// run runs a program and returns its trimmed standard output; a failure
// carries standard error.
func run(ctx context.Context, environ []string, dir, name string, args ...string) (string, error) {
	c := exec.CommandContext(ctx, name, args...)
	c.Env, c.Dir = environ, dir
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", filepath.Base(name), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// moduleVersions are the versions of the Go modules in the matrix, as the
// module graph resolves them (test binaries carry no dependency versions
// for runtime/debug to read).
var moduleVersions = struct {
	once sync.Once
	v    map[string]string
}{}

func moduleVersion(path string) string {
	moduleVersions.once.Do(func() {
		moduleVersions.v = map[string]string{}
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}",
			"github.com/aws/aws-sdk-go-v2/feature/rds/auth", "github.com/jackc/pgx/v5",
			"github.com/go-sql-driver/mysql", "github.com/go-mysql-org/go-mysql").Output()
		if err != nil {
			return // the matrix then shows no version; the cells still run
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if p, v, ok := strings.Cut(line, " "); ok {
				moduleVersions.v[p] = v
			}
		}
	})
	return moduleVersions.v[path]
}

var versionRE = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)

// programVersion is the first version number in `name --version`.
func programVersion(ctx context.Context, e env, path string, pick func(string) string) string {
	out, err := run(ctx, e.with(), "", path, "--version")
	if err != nil {
		return ""
	}
	if pick != nil {
		return pick(out)
	}
	return versionRE.FindString(out)
}

// TestInterop is the matrix: every token generator × every client, through
// iamdb serve's PostgreSQL and MySQL listeners.
func TestInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, MariaDB and iamdb serve")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := newEnv(t)
	pg := testdb.Postgres(t)
	maria := testdb.MariaDB(t)
	s := startIamdb(ctx, t, e, pg, maria)

	gens := generators(ctx, t, e, s)
	clients := clients(ctx, e, s)
	results := map[string]map[string]string{}
	// One token per generator and listener, used by each client in turn, as
	// the connections of a pool share one; the first cell of an engine
	// makes it.
	tokens := map[string]string{}
	for _, g := range gens {
		results[g.name] = map[string]string{}
		for _, c := range clients {
			port := s.pgPort
			want := dbUser
			if c.engine == "mysql" {
				port, want = s.myPort, dbUser+"@%"
			}
			t.Run(g.name+"/"+c.name, func(t *testing.T) {
				results[g.name][c.name] = "FAIL"
				for _, missing := range []string{g.missing, c.missing} {
					if missing == "" {
						continue
					}
					results[g.name][c.name] = "not run: " + missing
					if inCI() {
						t.Fatalf("%s (CI is set: scripts/deps.sh must install it)", missing)
					}
					t.Skip(missing + " (run scripts/deps.sh)")
				}
				tok, ok := tokens[g.name+"/"+c.engine]
				if !ok {
					var err error
					if tok, err = g.token(ctx, s.key, "127.0.0.1", port, dbUser); err != nil {
						t.Fatalf("%s: %v", g.name, err)
					}
					if !strings.Contains(tok, "X-Amz-Signature=") {
						t.Fatalf("%s made no token", g.name)
					}
					tokens[g.name+"/"+c.engine] = tok
				}
				got, err := c.login(ctx, port, dbUser, tok)
				if err != nil {
					t.Fatalf("%s with a token from %s: %v", c.name, g.name, err)
				}
				if got != want {
					t.Fatalf("%s with a token from %s: current user %q, want %q", c.name, g.name, got, want)
				}
				results[g.name][c.name] = "ok"
			})
		}
	}

	table := matrix(gens, clients, results, s)
	t.Log("\n" + table)
	if path := os.Getenv("IAMDB_INTEROP_MATRIX"); path != "" {
		if err := os.WriteFile(path, []byte(table), 0o644); err != nil {
			t.Errorf("write the matrix to %s: %v", path, err)
		}
	}
}

// matrix is the Markdown table of results.
func matrix(gens []generator, clients []client, results map[string]map[string]string, s *served) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Tokens for 127.0.0.1:PORT from each generator, used as the password of a TLS (verify-full) login as %q\n", dbUser)
	fmt.Fprintf(&b, "through iamdb serve in front of PostgreSQL %s and MariaDB %s; ok = logged in, current_user is %q.\n\n", s.pgVersion, s.myVersion, dbUser)
	b.WriteString("| token generator ↓ · client → |")
	for _, c := range clients {
		engine := "PostgreSQL"
		if c.engine == "mysql" {
			engine = "MariaDB"
		}
		fmt.Fprintf(&b, " %s: %s %s |", engine, c.name, c.version)
	}
	b.WriteString("\n|---|")
	for range clients {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, g := range gens {
		fmt.Fprintf(&b, "| %s %s |", g.name, g.version)
		for _, c := range clients {
			fmt.Fprintf(&b, " %s |", results[g.name][c.name])
		}
		b.WriteString("\n")
	}
	return b.String()
}

func generators(ctx context.Context, t *testing.T, e env, s *served) []generator {
	gens := []generator{
		{
			name: "aws-sdk-go-v2 feature/rds/auth", version: moduleVersion("github.com/aws/aws-sdk-go-v2/feature/rds/auth"),
			token: func(ctx context.Context, k keyPair, host string, port int, user string) (string, error) {
				creds := credentials.NewStaticCredentialsProvider(k.id, k.secret, "")
				return auth.BuildAuthToken(ctx, net.JoinHostPort(host, strconv.Itoa(port)), region, user, creds)
			},
		},
	}

	awsCLI := generator{name: "aws rds generate-db-auth-token"}
	if p, ok := findAWS(); ok {
		awsCLI.version = programVersion(ctx, e, p, func(out string) string { f := strings.Fields(out); return f[0] })
		awsCLI.token = func(ctx context.Context, k keyPair, host string, port int, user string) (string, error) {
			return run(ctx, e.with(k.env()...), "", p, "rds", "generate-db-auth-token",
				"--hostname", host, "--port", strconv.Itoa(port), "--username", user, "--region", region)
		}
	} else {
		awsCLI.missing = "the AWS CLI is not installed"
	}
	gens = append(gens, awsCLI)

	gens = append(gens, generator{
		name: "iamdb token", version: "(this tree)",
		token: func(ctx context.Context, k keyPair, host string, port int, user string) (string, error) {
			return run(ctx, e.with(k.env()...), "", s.bin, "token",
				"--hostname", host, "--port", strconv.Itoa(port), "--username", user, "--region", region)
		},
	})

	js := generator{name: "@aws-sdk/rds-signer"}
	nodeDir, err := filepath.Abs(filepath.Join("testdata", "node"))
	if err != nil {
		t.Fatal(err)
	}
	node, nodeErr := exec.LookPath("node")
	pkg, pkgErr := os.ReadFile(filepath.Join(nodeDir, "node_modules", "@aws-sdk", "rds-signer", "package.json"))
	switch {
	case nodeErr != nil:
		js.missing = "node is not installed"
	case pkgErr != nil:
		js.missing = "@aws-sdk/rds-signer is not installed in internal/interop/testdata/node (npm ci)"
	default:
		var meta struct{ Version string }
		json.Unmarshal(pkg, &meta)
		js.version = meta.Version + " (Node.js " + programVersion(ctx, e, node, nil) + ")"
		js.token = func(ctx context.Context, k keyPair, host string, port int, user string) (string, error) {
			return run(ctx, e.with(k.env()...), nodeDir, node, "sign.mjs", host, strconv.Itoa(port), user, region)
		}
	}
	return append(gens, js)
}

func clients(ctx context.Context, e env, s *served) []client {
	pgConnString := func(port int, user string) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=verify-full sslrootcert=%s connect_timeout=20", port, user, s.caBundle)
	}
	psql := client{engine: "postgres", name: "psql"}
	if p, err := exec.LookPath("psql"); err == nil {
		psql.version = programVersion(ctx, e, p, nil)
		psql.login = func(ctx context.Context, port int, user, token string) (string, error) {
			return run(ctx, e.with("PGPASSWORD="+token), "", p, pgConnString(port, user), "-At", "-c", "select current_user")
		}
	} else {
		psql.missing = "psql is not installed"
	}

	pgxVersion := moduleVersion("github.com/jackc/pgx/v5")
	pgxClient := client{engine: "postgres", name: "pgx", version: pgxVersion,
		login: func(ctx context.Context, port int, user, token string) (string, error) {
			cfg, err := pgx.ParseConfig(pgConnString(port, user))
			if err != nil {
				return "", err
			}
			cfg.Password = token
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return "", err
			}
			defer conn.Close(context.Background())
			var u string
			err = conn.QueryRow(ctx, "select current_user").Scan(&u)
			return u, err
		}}

	stdlibClient := client{engine: "postgres", name: "database/sql + pgx stdlib", version: pgxVersion,
		login: func(ctx context.Context, port int, user, token string) (string, error) {
			// The token in the DSN, as an application configured with a
			// connection string has it.
			db, err := sql.Open("pgx", pgConnString(port, user)+" password='"+token+"'")
			if err != nil {
				return "", err
			}
			defer db.Close()
			var u string
			err = db.QueryRowContext(ctx, "select current_user").Scan(&u)
			return u, err
		}}

	mariadb := client{engine: "mysql", name: "mariadb"}
	if p, err := exec.LookPath("mariadb"); err == nil {
		mariadb.version = programVersion(ctx, e, p, func(out string) string {
			if m := regexp.MustCompile(`Distrib ([0-9.]+)`).FindStringSubmatch(out); m != nil {
				return m[1]
			}
			return versionRE.FindString(out)
		})
		mariadb.login = func(ctx context.Context, port int, user, token string) (string, error) {
			return run(ctx, e.with("MYSQL_PWD="+token), "", p, "--host=127.0.0.1", fmt.Sprintf("--port=%d", port), "--user="+user,
				"--ssl", "--ssl-ca="+s.caBundle, "--ssl-verify-server-cert", "-N", "-B", "-e", "select current_user()")
		}
	} else {
		mariadb.missing = "the mariadb client is not installed"
	}

	goSQLDriver := client{engine: "mysql", name: "go-sql-driver/mysql", version: moduleVersion("github.com/go-sql-driver/mysql"),
		login: func(ctx context.Context, port int, user, token string) (string, error) {
			cfg := mysql.NewConfig()
			cfg.User, cfg.Passwd = user, token
			cfg.Net, cfg.Addr = "tcp", fmt.Sprintf("127.0.0.1:%d", port)
			cfg.AllowCleartextPasswords = true // the token goes as mysql_clear_password, inside TLS
			cfg.TLS = s.tlsConfig()
			connector, err := mysql.NewConnector(cfg)
			if err != nil {
				return "", err
			}
			db := sql.OpenDB(connector)
			defer db.Close()
			var u string
			err = db.QueryRowContext(ctx, "select current_user()").Scan(&u)
			return u, err
		}}

	goMySQL := client{engine: "mysql", name: "go-mysql client", version: moduleVersion("github.com/go-mysql-org/go-mysql"),
		login: func(ctx context.Context, port int, user, token string) (string, error) {
			conn, err := gomysql.ConnectWithContext(ctx, fmt.Sprintf("127.0.0.1:%d", port), user, token, "", 20*time.Second,
				func(c *gomysql.Conn) error { c.SetTLSConfig(s.tlsConfig()); return nil })
			if err != nil {
				return "", err
			}
			defer conn.Close()
			r, err := conn.Execute("select current_user()")
			if err != nil {
				return "", err
			}
			defer r.Close()
			return r.GetString(0, 0)
		}}

	return []client{psql, pgxClient, stdlibClient, mariadb, goSQLDriver, goMySQL}
}

// findAWS finds the AWS CLI on PATH or where pip and pyenv put it.
func findAWS() (string, bool) {
	if p, err := exec.LookPath("aws"); err == nil {
		return p, true
	}
	home, _ := os.UserHomeDir()
	for _, p := range []string{filepath.Join(home, ".local", "bin", "aws"), filepath.Join(home, ".pyenv", "shims", "aws")} {
		if fi, err := os.Stat(p); home != "" && err == nil && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// served is iamdb serve in front of the throwaway databases.
type served struct {
	bin                  string
	pgPort, myPort       int
	caBundle             string
	key                  keyPair
	pgVersion, myVersion string
}

func (s *served) tlsConfig() *tls.Config {
	pem, err := os.ReadFile(s.caBundle)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

var buildOnce struct {
	sync.Once
	bin string
	err error
}

// buildIamdb builds the iamdb binary once per test binary.
func buildIamdb(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "iamdb-interop-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.bin = filepath.Join(dir, "iamdb")
		out, err := exec.Command("go", "build", "-o", buildOnce.bin, "github.com/iamdb/iamdb/cmd/iamdb").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(buildOnce.bin)) })
	return buildOnce.bin
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startIamdb prepares the databases and runs iamdb serve in front of them,
// as an operator would: init, apply, an access key, db setup, CREATE USER.
func startIamdb(ctx context.Context, t *testing.T, e env, pg *testdb.PG, maria *testdb.MariaDBServer) *served {
	t.Helper()
	s := &served{bin: buildIamdb(t), pgPort: freePort(t), myPort: freePort(t)}
	dir := t.TempDir()
	s.caBundle = filepath.Join(dir, "data", "ca-bundle.pem")
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	metricsPort := freePort(t)
	cfg := fmt.Sprintf(`data_dir: ./data
region: %s
api: {listen: "127.0.0.1:%d"}
metrics: {listen: "127.0.0.1:%d"}
drain_timeout: 2s
instances:
  - name: pg
    engine: postgres
    resource_id: db-INTEROPPG0000000000000000000
    listen: "127.0.0.1:%d"
    upstream: {address: "%s", tls: verify-full, ca: "%s"}
    backend_auth: {mode: managed, admin_user: postgres, admin_password_env: IAMDB_PG_ADMIN_PASSWORD}
  - name: maria
    engine: mysql
    resource_id: db-INTEROPMARIA00000000000000000
    listen: "127.0.0.1:%d"
    upstream: {address: "%s", tls: verify-full, ca: "%s"}
    backend_auth: {mode: managed, admin_user: root, admin_password_env: IAMDB_MARIADB_ADMIN_PASSWORD}
    iam_users: [%s]
`, region, freePort(t), metricsPort, s.pgPort, pg.Addr(), pg.CAFile, s.myPort, maria.Addr(), maria.CAFile, dbUser)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "identities.yaml"), []byte(identities), 0o600); err != nil {
		t.Fatal(err)
	}
	iamdbEnv := e.with("IAMDB_CONFIG="+cfgPath, "IAMDB_PG_ADMIN_PASSWORD="+pg.Password, "IAMDB_MARIADB_ADMIN_PASSWORD="+maria.RootPassword)
	iamdb := func(args ...string) string {
		t.Helper()
		out, err := run(ctx, iamdbEnv, dir, s.bin, args...)
		if err != nil {
			t.Fatalf("iamdb %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	iamdb("init", "--output", "json")
	iamdb("apply", "-f", "identities.yaml")
	var key struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	if err := json.Unmarshal([]byte(iamdb("access-key", "create", "--user", "interop")), &key); err != nil {
		t.Fatal(err)
	}
	s.key = keyPair{key.AccessKey.AccessKeyId, key.AccessKey.SecretAccessKey}
	iamdb("db", "setup", "--instance", "pg")

	admin, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, stmt := range []string{"CREATE USER " + dbUser, "GRANT rds_iam TO " + dbUser} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := admin.QueryRow(ctx, "SHOW server_version").Scan(&s.pgVersion); err != nil {
		t.Fatal(err)
	}
	s.pgVersion, _, _ = strings.Cut(s.pgVersion, " ")
	root, err := sql.Open("mysql", maria.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.ExecContext(ctx, "CREATE USER '"+dbUser+"'@'%'"); err != nil {
		t.Fatal(err)
	}
	if err := root.QueryRowContext(ctx, "SELECT VERSION()").Scan(&s.myVersion); err != nil {
		t.Fatal(err)
	}
	s.myVersion, _, _ = strings.Cut(s.myVersion, "-")

	var logs bytes.Buffer
	var logsMu sync.Mutex
	serve := exec.Command(s.bin, "serve")
	serve.Env, serve.Dir = iamdbEnv, dir
	serve.Stdout = lockedWriter{&logsMu, &logs}
	serve.Stderr = serve.Stdout
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() {
		serve.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			serve.Process.Kill()
			<-exited
		}
		if t.Failed() {
			logsMu.Lock()
			t.Logf("iamdb serve output:\n%s", logs.String())
			logsMu.Unlock()
		}
	})
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort)
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case err := <-exited:
			exited <- err
			logsMu.Lock()
			defer logsMu.Unlock()
			t.Fatalf("iamdb serve exited at start: %v\n%s", err, logs.String())
		default:
		}
		if resp, err := http.Get(readyz); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("iamdb serve not ready within a minute")
		}
		time.Sleep(25 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
