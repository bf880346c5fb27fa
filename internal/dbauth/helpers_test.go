package dbauth_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/identity/identitytest"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/testdb"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testdb.StopAll()
	os.Exit(code)
}

const adminEnv = "IAMDB_TEST_PG_ADMIN_PASSWORD"

// upstream returns the shared test server, skipping with -short.
func upstream(t *testing.T) *testdb.PG {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL; skipped with -short")
	}
	return testdb.Postgres(t)
}

// instance is a configured instance pointing at pg over verified TLS.
func instance(pg *testdb.PG, mode string) config.Instance {
	return config.Instance{
		Name:       "orders",
		Engine:     "postgres",
		ResourceID: "db-ORDERS00000000000000000000",
		Upstream: config.Upstream{
			Address:     pg.Addr(),
			TLS:         "verify-full",
			CA:          pg.CAFile,
			DialTimeout: config.Duration(5 * time.Second),
		},
		BackendAuth: config.BackendAuth{
			Mode:             mode,
			AdminUser:        pg.Superuser,
			AdminPasswordEnv: adminEnv,
			RotateEvery:      config.Duration(24 * time.Hour),
		},
	}
}

// env serves adminEnv without touching the process environment.
func env(pg *testdb.PG) func(string) (string, bool) {
	return func(k string) (string, bool) {
		if k == adminEnv {
			return pg.Password, true
		}
		return "", false
	}
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuffer captures slog output of every level, safely across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func openStore(t *testing.T) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.Open(t.Context(), "sqlite://"+filepath.Join(t.TempDir(), "iamdb.db"), identitytest.Sealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newPostgres(t *testing.T, opt dbauth.PostgresOptions) *dbauth.Postgres {
	t.Helper()
	p, err := dbauth.NewPostgres(t.Context(), opt)
	if err != nil {
		t.Fatalf("NewPostgres: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func adminExec(t *testing.T, pg *testdb.PG, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

var roleSeq atomic.Int64

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// newRole creates a LOGIN role without a password, unique on the shared
// server (roles are cluster-wide), dropped when t ends.
func newRole(t *testing.T, pg *testdb.PG, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), roleSeq.Add(1))
	name = nonIdent.ReplaceAllString(strings.ToLower(name), "_")
	adminExec(t, pg, "CREATE ROLE "+pgx.Identifier{name}.Sanitize()+" LOGIN")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, pg.AdminDSN()); err == nil {
			conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{name}.Sanitize())
			conn.Close(ctx)
		}
	})
	return name
}

// login connects as user over verified TLS, as the proxy's backend leg would.
func login(t *testing.T, pg *testdb.PG, user, password string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.TLSDSN(user, password, "postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var who string
	var ssl bool
	if err := conn.QueryRow(ctx, `SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&who, &ssl); err != nil {
		return err
	}
	if who != user || !ssl {
		t.Fatalf("logged in as %q with ssl=%v, want %q over TLS", who, ssl, user)
	}
	return nil
}

// upstreamNoServer is a PG value for tests that never connect.
func upstreamNoServer() *testdb.PG {
	return &testdb.PG{Host: "127.0.0.1", Port: 1, Superuser: "postgres"}
}
