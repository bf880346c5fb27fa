package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/datadir"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/pki"
	"github.com/iamdb/iamdb/internal/sigv4"
	"github.com/iamdb/iamdb/internal/testdb"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testdb.StopAll()
	os.Exit(code)
}

const (
	testAccount  = "123456789012"
	testResource = "db-SERVERTEST0000000000000000"
	adminEnv     = "IAMDB_TEST_SERVER_PG_ADMIN"
)

// freePort returns a loopback port nobody listens on right now. Endpoints
// name the port tokens are signed for, so the test picks it up front
// rather than listening on :0.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one iamdb server in front of a database of the shared PostgreSQL.
type env struct {
	t           *testing.T
	dir         *datadir.Dir
	cfgPath     string
	cfgText     string
	port        int
	metricsURL  string
	apiPort     int
	database    string
	dbUser      string
	keyID       string
	secret      string
	logs        *syncBuffer
	cancel      context.CancelFunc
	done        chan error
	reload      chan struct{}
	reloadCount int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	pg := testdb.Postgres(t)
	dsn := pg.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, database: strings.TrimPrefix(u.Path, "/"), logs: &syncBuffer{}, reload: make(chan struct{})}

	// An IAM-enabled database user, as on RDS: a member of rds_iam.
	e.dbUser = "srv_" + strings.ToLower(strings.ReplaceAll(e.database, "-", "_"))
	if len(e.dbUser) > 40 {
		e.dbUser = e.dbUser[:40]
	}
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, stmt := range []string{
		`DO $$ BEGIN CREATE ROLE rds_iam NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
		fmt.Sprintf(`CREATE USER %s`, pgx.Identifier{e.dbUser}.Sanitize()),
		fmt.Sprintf(`GRANT rds_iam TO %s`, pgx.Identifier{e.dbUser}.Sanitize()),
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pg.AdminDSN())
		if err == nil {
			c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{e.database}.Sanitize()+" WITH (FORCE)")
			c.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{e.dbUser}.Sanitize())
			c.Close(context.Background())
		}
	})
	t.Setenv(adminEnv, pg.Password)

	// A data dir with an IAM user allowed to connect as that database user.
	root := t.TempDir()
	if _, err := datadir.Init(ctx, filepath.Join(root, "data"), datadir.InitOptions{AccountID: testAccount}); err != nil {
		t.Fatal(err)
	}
	if e.dir, err = datadir.Open(ctx, filepath.Join(root, "data"), "", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.dir.Close() })
	if _, err := e.dir.Store.CreateUser(ctx, identity.User{AccountID: testAccount, Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect",
		"Resource":"arn:aws:rds-db:us-east-1:%s:dbuser:%s/%s"}]}`, testAccount, testResource, e.dbUser)
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
	e.cfgPath = filepath.Join(root, "iamdb.yaml")
	e.writeConfig(fmt.Sprintf("127.0.0.1:%d", e.port))
	return e
}

// writeConfig writes the configuration with the given endpoints.
func (e *env) writeConfig(endpoints ...string) {
	e.t.Helper()
	pg := testdb.Postgres(e.t)
	e.cfgText = fmt.Sprintf(`data_dir: ./data
region: us-east-1
account_id: "%s"
metrics: {listen: "%s"}
api: {listen: "127.0.0.1:%d"}
drain_timeout: 1m
instances:
  - name: orders
    engine: postgres
    resource_id: %s
    listen: 127.0.0.1:%d
    endpoints: ["%s"]
    upstream: {address: "%s", tls: verify-full, ca: "%s"}
    backend_auth: {mode: managed, admin_user: %s, admin_password_env: %s}
`, testAccount, strings.TrimPrefix(e.metricsURL, "http://"), e.apiPort, testResource, e.port,
		strings.Join(endpoints, `", "`), pg.Addr(), pg.CAFile, pg.Superuser, adminEnv)
	if err := os.WriteFile(e.cfgPath, []byte(e.cfgText), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// start runs the server and waits until it says it is ready.
func (e *env) start() {
	e.t.Helper()
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	ready := make(chan struct{})
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() {
		e.done <- Run(ctx, Options{Config: cfg, ConfigPath: e.cfgPath, DataDir: e.dir, Logger: logger,
			Reload: e.reload, Ready: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-e.done:
		e.t.Fatalf("Run returned before it was ready: %v\nlogs:\n%s", err, e.logs)
	}
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-e.done:
		case <-time.After(time.Minute):
			e.t.Error("Run did not return after its context was cancelled")
		}
		if e.t.Failed() || testing.Verbose() {
			e.t.Logf("server logs:\n%s", e.logs)
		}
	})
}

// stop cancels Run's context (what SIGTERM does) and returns Run's result.
func (e *env) stopped() error {
	e.t.Helper()
	select {
	case err := <-e.done:
		e.done <- err // the cleanup waits on it too
		return err
	case <-time.After(time.Minute):
		e.t.Fatal("Run did not return")
		return nil
	}
}

// doReload does what SIGHUP does and waits until the reload is logged.
func (e *env) doReload() {
	e.t.Helper()
	before := strings.Count(e.logs.String(), "reload done") + strings.Count(e.logs.String(), "configuration not reloaded")
	e.reload <- struct{}{}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if strings.Count(e.logs.String(), "reload done")+strings.Count(e.logs.String(), "configuration not reloaded") > before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("reload did not finish; logs:\n%s", e.logs)
}

func (e *env) token(endpoint, dbUser string) string {
	e.t.Helper()
	tok, err := sigv4.Sign(sigv4.SignInput{Endpoint: endpoint, Region: "us-east-1", DBUser: dbUser,
		AccessKeyID: e.keyID, SecretAccessKey: e.secret, Time: time.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// connect logs in through the listener the way an application does:
// verify-full against the data dir's CA bundle, the token as password.
func (e *env) connect(host, token string) (*pgx.Conn, error) {
	return e.connectAs(host, "", token)
}

// connectAs dials host but verifies the certificate for serverName, as a
// client resolving serverName to host would.
func (e *env) connectAs(host, serverName, token string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=verify-full sslrootcert=%s connect_timeout=20",
		host, e.port, e.dbUser, e.database, filepath.Join(e.dir.Path, pki.BundleFile)))
	if err != nil {
		e.t.Fatal(err)
	}
	if serverName != "" {
		cfg.TLSConfig.ServerName = serverName
	}
	cfg.Password = token
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

func currentUser(t *testing.T, c *pgx.Conn) string {
	t.Helper()
	var u string
	if err := c.QueryRow(context.Background(), "SELECT current_user").Scan(&u); err != nil {
		t.Fatalf("query through iamdb: %v", err)
	}
	return u
}

func (e *env) get(path string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(e.metricsURL + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestServeLoginMetricsAndDrain is the life of a server: ready, an IAM
// login through the listener, the metrics of it, and a drain that lets an
// open session finish while new connections are refused.
func TestServeLoginMetricsAndDrain(t *testing.T) {
	e := newEnv(t)
	e.start()
	endpoint := fmt.Sprintf("127.0.0.1:%d", e.port)

	if code, body := e.get("/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := e.get("/readyz"); code != 200 {
		t.Fatalf("/readyz after Ready: %d %q", code, body)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "msg=listening instance=orders") || !strings.Contains(logs, "listen="+endpoint) {
		t.Errorf("no start line for the listener:\n%s", logs)
	}

	conn, err := e.connect("127.0.0.1", e.token(endpoint, e.dbUser))
	if err != nil {
		t.Fatalf("IAM login through iamdb: %v", err)
	}
	defer conn.Close(context.Background())
	if got := currentUser(t, conn); got != e.dbUser {
		t.Fatalf("current_user = %q, want %q", got, e.dbUser)
	}
	// A token for a user the policy does not allow is refused.
	if c, err := e.connect("127.0.0.1", e.token(endpoint, "postgres")); err == nil {
		c.Close(context.Background())
		t.Fatal("a token for a user outside the policy logged in")
	}

	_, metrics := e.get("/metrics")
	for _, want := range []string{
		`iamdb_login_attempts_total{instance="orders",result="ok"} 1`,
		`iamdb_active_sessions{instance="orders"} 1`,
		`iamdb_handshake_seconds_count{instance="orders"} `,
		"go_goroutines",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(metrics, `iamdb_login_attempts_total{instance="orders",result="`) ||
		strings.Count(metrics, `iamdb_login_attempts_total{instance="orders"`) < 2 {
		t.Errorf("/metrics does not count the refused login:\n%s", grep(metrics, "iamdb_login"))
	}

	// SIGTERM: readiness goes first, the listener stops accepting, the open
	// session keeps working until the client ends it.
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
	if got := currentUser(t, conn); got != e.dbUser {
		t.Fatalf("open session during drain: current_user = %q", got)
	}
	select {
	case err := <-e.done:
		t.Fatalf("Run returned (%v) while a session was still open and drain_timeout not reached", err)
	default:
	}
	conn.Close(context.Background())
	if err := e.stopped(); err != nil {
		t.Fatalf("Run after drain: %v", err)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "msg=drained sessions_finished=1 sessions_closed=0") {
		t.Errorf("no drain summary in the logs:\n%s", logs)
	}
}

// TestReload: a broken file changes nothing; a new endpoint alias takes
// effect for new logins while an open session stays usable.
func TestReload(t *testing.T) {
	e := newEnv(t)
	e.start()
	endpoint := fmt.Sprintf("127.0.0.1:%d", e.port)
	alias := fmt.Sprintf("localhost:%d", e.port)

	conn, err := e.connect("127.0.0.1", e.token(endpoint, e.dbUser))
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer conn.Close(context.Background())
	if c, err := e.connect("localhost", e.token(alias, e.dbUser)); err == nil {
		c.Close(context.Background())
		t.Fatal("a token signed for an endpoint not configured was accepted")
	}

	// A broken file: logged with its line, nothing changes.
	good := e.cfgText
	if err := os.WriteFile(e.cfgPath, []byte(good+"    bogus_key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.doReload()
	badLine := fmt.Sprintf("line %d", strings.Count(good, "\n")+1)
	if logs := e.logs.String(); !strings.Contains(logs, "configuration not reloaded") || !strings.Contains(logs, badLine) {
		t.Fatalf("broken configuration not reported with its line:\n%s", logs)
	}
	if code, _ := e.get("/readyz"); code != 200 {
		t.Fatalf("/readyz after a failed reload: %d", code)
	}

	// Two aliases: one the certificate already names, and one it does not,
	// for which the reload must re-issue the certificate and swap it in.
	const dnsName = "db.orders.test"
	named := fmt.Sprintf("%s:%d", dnsName, e.port)
	if c, err := e.connectAs("127.0.0.1", dnsName, e.token(named, e.dbUser)); err == nil {
		c.Close(context.Background())
		t.Fatal("the certificate named a host before it was configured")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("before reload, want a certificate error for %s, got %v", dnsName, err)
	}
	e.writeConfig(endpoint, alias, named)
	e.doReload()
	c, err := e.connect("localhost", e.token(alias, e.dbUser))
	if err != nil {
		t.Fatalf("token for the alias after reload: %v\nlogs:\n%s", err, e.logs)
	}
	c.Close(context.Background())
	c, err = e.connectAs("127.0.0.1", dnsName, e.token(named, e.dbUser))
	if err != nil {
		t.Fatalf("verify-full for %s after reload: %v", dnsName, err)
	}
	c.Close(context.Background())
	if got := currentUser(t, conn); got != e.dbUser {
		t.Fatalf("session opened before the reload: current_user = %q", got)
	}

	moved := strings.Replace(e.cfgText, fmt.Sprintf("listen: 127.0.0.1:%d", e.port), "listen: 127.0.0.1:1", 1)
	if err := os.WriteFile(e.cfgPath, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	e.doReload()
	if logs := e.logs.String(); !strings.Contains(logs, "needs a restart") || !strings.Contains(logs, "instances.orders.listen") {
		t.Fatalf("a changed listen address is not reported as needing a restart:\n%s", logs)
	}
	if c, err := e.connect("127.0.0.1", e.token(endpoint, e.dbUser)); err != nil {
		t.Fatalf("login on the listen address in force after reload: %v", err)
	} else {
		c.Close(context.Background())
	}
}

func TestStartFailsOnBusyListenAddress(t *testing.T) {
	e := newEnv(t)
	busy, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e.port))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg, err := config.Load(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), Options{Config: cfg, DataDir: e.dir})
	if err == nil || !strings.Contains(err.Error(), "instance orders") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run on a busy port: %v", err)
	}
	// Nothing is left bound: the metrics port is free again.
	ln, err := net.Listen("tcp", strings.TrimPrefix(e.metricsURL, "http://"))
	if err != nil {
		t.Fatalf("metrics port still bound after a failed start: %v", err)
	}
	ln.Close()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func grep(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
