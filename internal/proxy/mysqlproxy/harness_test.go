package mysqlproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/pki"
	"github.com/iamdb/iamdb/internal/testdb"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testdb.StopAll()
	os.Exit(code)
}

const (
	testAccount  = "123456789012"
	testResource = "db-ORDERS00000000000000000000"
	testRegion   = "us-east-1"
	// relayUser is not IAM-enabled: its password login is relayed.
	relayUser     = "pwuser"
	relayPassword = "correct horse battery staple"
)

// requireTool returns the path of an external program a test needs:
// skipped outside CI when missing, a failure in CI.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required but not installed (run scripts/deps.sh): %v", name, err)
	}
	t.Skipf("%s not installed (run scripts/deps.sh)", name)
	return ""
}

// testBackend is a fake of our own Backend interface: the IAM users are a
// fixed set, their upstream passwords were set with ALTER ROLE.
type testBackend struct {
	iam       map[string]bool
	passwords map[string]string
}

func (b *testBackend) IsIAMUser(_ context.Context, u string) (bool, error) { return b.iam[u], nil }
func (b *testBackend) Password(_ context.Context, u string) (string, error) {
	p, ok := b.passwords[u]
	if !ok {
		return "", fmt.Errorf("no password for %q", u)
	}
	return p, nil
}

// Refused: the fixed passwords never change, so a refusal stands.
func (b *testBackend) Refused(context.Context, string, string) (string, bool, error) {
	return "", false, nil
}

// users are created once per server, with CREATE USER … IDENTIFIED BY:
// the passwords the test Backend returns, the same on every server.
var (
	usersMu   sync.Mutex
	usersDone = map[*testdb.MariaDBServer]bool{}
	userPass  = map[string]string{
		"app":     rand.Text(),
		"report":  rand.Text(),
		relayUser: relayPassword,
	}
)

func ensureUsers(t testing.TB, my *testdb.MariaDBServer) map[string]string {
	t.Helper()
	usersMu.Lock()
	defer usersMu.Unlock()
	if usersDone[my] {
		return userPass
	}
	db, err := sql.Open("mysql", my.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for u, p := range userPass {
		for _, stmt := range []string{
			fmt.Sprintf("CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s'", u, p),
			fmt.Sprintf("ALTER USER '%s'@'%%' IDENTIFIED BY '%s'", u, p),
			fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'%%'", u),
		} {
			if _, err := db.Exec(stmt); err != nil {
				t.Fatalf("creating user %s: %v", u, err)
			}
		}
	}
	usersDone[my] = true
	return userPass
}

// logBuffer collects the JSON log lines of a server.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) records() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// find returns the first record with message msg whose attributes include
// all of kv (key, value pairs), waiting briefly because the server logs
// after it has answered the client.
func (b *logBuffer) find(t testing.TB, msg string, kv ...string) map[string]any {
	t.Helper()
	for range 200 {
	next:
		for _, r := range b.records() {
			if r["msg"] != msg {
				continue
			}
			for i := 0; i+1 < len(kv); i += 2 {
				if fmt.Sprint(r[kv[i]]) != kv[i+1] {
					continue next
				}
			}
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log record %q with %v; log:\n%s", msg, kv, b.String())
	return nil
}

// observer records Observer events.
type observer struct {
	mu       sync.Mutex
	results  map[string]int
	started  int
	ended    int
	bytesIn  int64
	bytesOut int64
	dials    int
	idle     int // upstream sessions in the pool, as last reported
	reused   int
}

func (o *observer) LoginFinished(_, result string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.results == nil {
		o.results = map[string]int{}
	}
	o.results[result]++
}
func (o *observer) SessionStarted(string) { o.mu.Lock(); o.started++; o.mu.Unlock() }
func (o *observer) SessionEnded(_ string, in, out int64, _ time.Duration) {
	o.mu.Lock()
	o.ended++
	o.bytesIn += in
	o.bytesOut += out
	o.mu.Unlock()
}
func (o *observer) UpstreamDialFailed(string) { o.mu.Lock(); o.dials++; o.mu.Unlock() }

func (o *observer) UpstreamPoolIdle(_ string, idle int) { o.mu.Lock(); o.idle = idle; o.mu.Unlock() }
func (o *observer) UpstreamSessionReused(string)        { o.mu.Lock(); o.reused++; o.mu.Unlock() }

func (o *observer) count(result string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.results[result]
}

func (o *observer) dialFailures() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dials
}

// wait waits until result was reported n times: the server reports a
// successful login after the client already has its session.
func (o *observer) wait(t testing.TB, result string, n int) {
	t.Helper()
	for range 500 {
		if o.count(result) >= n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := o.count(result); got != n {
		o.mu.Lock()
		defer o.mu.Unlock()
		t.Fatalf("observer saw %d × %s, want %d (all: %v)", got, result, n, o.results)
	}
}

// harness is a proxy in front of the shared PostgreSQL, with a real
// authenticator over a fresh SQLite identity store.
type harness struct {
	t        testing.TB
	my       *testdb.MariaDBServer
	store    *sqlstore.Store
	authn    *authn.Authenticator
	backend  *testBackend
	inst     *authn.Instance
	srv      *Server
	cfg      Config
	addr     string // 127.0.0.1:port
	port     int
	endpoint string // localhost:port, what tokens are signed for
	caFile   string
	logs     *logBuffer
	obs      *observer
	database string
	storeAge atomic.Int64 // the store's clock runs this many ns behind
	tlsKey   string       // go-sql-driver TLS configuration name
	tlsOnce  sync.Once
	tlsErr   error
}

type harnessOption func(*Config)

func newHarness(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	return newHarnessOn(t, testdb.MariaDB(t), opts...)
}

// newHarnessOn is newHarness in front of the given server.
func newHarnessOn(t testing.TB, my *testdb.MariaDBServer, opts ...harnessOption) *harness {
	t.Helper()
	ctx := context.Background()
	pass := ensureUsers(t, my)
	h := &harness{t: t, my: my, logs: &logBuffer{}, obs: &observer{}}

	dsn, err := mysql.ParseDSN(my.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	h.database = dsn.DBName

	key := make([]byte, identity.MasterKeySize)
	rand.Read(key)
	sealer, err := identity.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	storeNow := func() time.Time { return time.Now().Add(-time.Duration(h.storeAge.Load())) }
	h.store, err = sqlstore.Open(ctx, filepath.Join(t.TempDir(), "iamdb.db"), sealer, sqlstore.WithClock(storeNow))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.store.Close() })
	if _, err := h.store.CreateAccount(ctx, identity.Account{ID: testAccount}); err != nil {
		t.Fatal(err)
	}
	h.authn = authn.New(h.store, sealer, authn.Options{})

	dir := t.TempDir()
	ca, err := pki.CreateCA(dir, "iamdb test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	h.caFile = filepath.Join(dir, pki.CAFile)
	certPEM, keyPEM, err := ca.Issue([]string{"localhost", "127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	h.port = ln.Addr().(*net.TCPAddr).Port
	h.endpoint = "localhost:" + strconv.Itoa(h.port)
	h.inst = &authn.Instance{Name: "orders", Engine: "mysql", Region: testRegion, AccountID: testAccount,
		ResourceID: testResource, Endpoints: []string{h.endpoint, h.addr}}

	upTLS, err := my.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	h.backend = &testBackend{iam: map[string]bool{"app": true, "report": true},
		passwords: map[string]string{"app": pass["app"], "report": pass["report"]}}
	h.cfg = Config{
		Instance:      h.inst,
		TLS:           &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }},
		Authenticator: h.authn,
		Backend:       h.backend,
		Upstream:      Upstream{Address: my.Addr(), TLS: upTLS, DialTimeout: 5 * time.Second},
		Logger:        slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Observer:      h.obs,
	}
	for _, o := range opts {
		o(&h.cfg)
	}
	h.srv, err = New(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(ln) }()
	t.Cleanup(func() {
		h.srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Close", err)
		}
		if strings.Contains(h.logs.String(), "X-Amz-Signature") {
			t.Errorf("a token reached the log:\n%s", h.logs.String())
		}
	})
	return h
}

// user creates an IAM user with an inline policy and an access key.
func (h *harness) user(name, policyJSON string) (keyID, secret string) {
	h.t.Helper()
	ctx := context.Background()
	if _, err := h.store.CreateUser(ctx, identity.User{AccountID: testAccount, Name: name}); err != nil {
		h.t.Fatal(err)
	}
	if policyJSON != "" {
		if err := h.store.PutInlinePolicy(ctx, identity.UserRef(testAccount, name), "connect", policyJSON); err != nil {
			h.t.Fatal(err)
		}
	}
	k, secret, err := h.store.CreateAccessKey(ctx, testAccount, name)
	if err != nil {
		h.t.Fatal(err)
	}
	return k.ID, secret
}

// connectPolicy allows rds-db:connect as the given database users.
func connectPolicy(dbUsers ...string) string {
	var res []string
	for _, u := range dbUsers {
		res = append(res, fmt.Sprintf(`"arn:aws:rds-db:%s:%s:dbuser:%s/%s"`, testRegion, testAccount, testResource, u))
	}
	return `{"Version":"2012-10-17","Statement":[{"Sid":"Connect","Effect":"Allow","Action":"rds-db:connect","Resource":[` +
		strings.Join(res, ",") + `]}]}`
}

// sdkToken signs a token with aws-sdk-go-v2's auth.BuildAuthToken.
func (h *harness) sdkToken(endpoint, region, dbUser, keyID, secret, sessionToken string) string {
	h.t.Helper()
	tok, err := auth.BuildAuthToken(context.Background(), endpoint, region, dbUser,
		credentials.NewStaticCredentialsProvider(keyID, secret, sessionToken))
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// tlsName registers (once) the driver TLS configuration that trusts the
// harness's CA and verifies the proxy as localhost.
// tlsName registers the driver's TLS configuration once; tests call it
// from many goroutines at a time.
func (h *harness) tlsName() string {
	h.t.Helper()
	h.tlsOnce.Do(func() {
		name := "iamdb-" + strconv.Itoa(h.port)
		pem, err := os.ReadFile(h.caFile)
		if err != nil {
			h.tlsErr = err
			return
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		if err := mysql.RegisterTLSConfig(name, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}); err != nil {
			h.tlsErr = err
			return
		}
		h.tlsKey = name
	})
	if h.tlsErr != nil {
		h.t.Fatal(h.tlsErr)
	}
	return h.tlsKey
}

// driverConfig is a go-sql-driver/mysql configuration for the proxy, over
// TLS verifying the proxy's certificate, with clear-text passwords allowed
// as RDS IAM authentication needs.
func (h *harness) driverConfig(user, password string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName = user, password, h.database
	cfg.Net, cfg.Addr = "tcp", h.addr
	cfg.TLSConfig = h.tlsName()
	cfg.AllowCleartextPasswords = true
	cfg.Timeout = 20 * time.Second
	cfg.Logger = &mysql.NopLogger{}
	return cfg
}

// open opens a database/sql handle through the proxy.
func (h *harness) open(cfg *mysql.Config) *sql.DB {
	h.t.Helper()
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	db := sql.OpenDB(c)
	h.t.Cleanup(func() { db.Close() })
	return db
}

// connect opens one connection through the proxy and pings it.
func (h *harness) connect(ctx context.Context, user, password string) (*sql.Conn, error) {
	db := h.open(h.driverConfig(user, password))
	db.SetMaxIdleConns(0)
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	if err := conn.PingContext(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// cleanEnv is the process environment without PG* and AWS* variables, so
// the machine's own settings cannot leak into a client under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MYSQL") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
