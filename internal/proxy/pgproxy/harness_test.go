package pgproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
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
	"github.com/jackc/pgx/v5"

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

// roles are created once per test binary on the shared server.
var (
	rolesOnce sync.Once
	rolesErr  error
	rolePass  = map[string]string{}
)

func ensureRoles(t testing.TB, pg *testdb.PG) map[string]string {
	t.Helper()
	rolesOnce.Do(func() {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, pg.AdminDSN())
		if err != nil {
			rolesErr = err
			return
		}
		defer conn.Close(ctx)
		for _, r := range []string{"app", "report"} {
			rolePass[r] = rand.Text()
		}
		rolePass[relayUser] = relayPassword
		for r, p := range rolePass {
			stmts := []string{
				fmt.Sprintf(`DO $$ BEGIN CREATE ROLE %s LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`, pgx.Identifier{r}.Sanitize()),
				fmt.Sprintf(`ALTER ROLE %s PASSWORD '%s'`, pgx.Identifier{r}.Sanitize(), p),
			}
			for _, s := range stmts {
				if _, err := conn.Exec(ctx, s); err != nil {
					rolesErr = fmt.Errorf("%s: %w", s, err)
					return
				}
			}
		}
	})
	if rolesErr != nil {
		t.Fatalf("creating roles: %v", rolesErr)
	}
	return rolePass
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
	poolIdle int
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
func (o *observer) UpstreamPoolIdle(_ string, n int) {
	o.mu.Lock()
	o.poolIdle = n
	o.mu.Unlock()
}
func (o *observer) UpstreamSessionReused(string) { o.mu.Lock(); o.reused++; o.mu.Unlock() }

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
	pg       *testdb.PG
	store    *sqlstore.Store
	sealer   *identity.Sealer
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
}

type harnessOption func(*Config)

func newHarness(t testing.TB, opts ...harnessOption) *harness {
	t.Helper()
	ctx := context.Background()
	pg := testdb.Postgres(t)
	pass := ensureRoles(t, pg)
	h := &harness{t: t, pg: pg, logs: &logBuffer{}, obs: &observer{}}

	dbURL, err := url.Parse(pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	h.database = strings.TrimPrefix(dbURL.Path, "/")
	admin, err := pgx.Connect(ctx, dbURL.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `GRANT ALL ON SCHEMA public TO app`); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)

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
	h.sealer = sealer
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
	h.inst = &authn.Instance{Name: "orders", Engine: "postgres", Region: testRegion, AccountID: testAccount,
		ResourceID: testResource, Endpoints: []string{h.endpoint, h.addr}}

	upTLS, err := pg.TLSConfig()
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
		Upstream:      Upstream{Address: pg.Addr(), TLS: upTLS, DialTimeout: 5 * time.Second},
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

// connString is a libpq/pgx connection string to the proxy without a
// password, verifying the proxy's certificate.
func (h *harness) connString(user, database string) string {
	return fmt.Sprintf("host=localhost port=%d user=%s dbname=%s sslmode=verify-full sslrootcert=%s connect_timeout=20",
		h.port, user, database, h.caFile)
}

func (h *harness) pgxConfig(user, password, extra string) *pgx.ConnConfig {
	h.t.Helper()
	cfg, err := pgx.ParseConfig(h.connString(user, h.database) + " " + extra)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg.Password = password
	return cfg
}

func (h *harness) connect(ctx context.Context, user, password string) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, h.pgxConfig(user, password, ""))
}

// cleanEnv is the process environment without PG* and AWS* variables, so
// the machine's own settings cannot leak into a client under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
