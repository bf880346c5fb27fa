package testdb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/iamdb/iamdb/internal/testdb"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testdb.StopAll()
	os.Exit(code)
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func pgConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctxFor(t), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// standardPorts are those of servers the machine may already run; the
// throwaway servers must never be one of them.
var standardPorts = map[int]bool{5432: true, 3306: true, 6379: true}

func TestPostgresSuperuserOverTCP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := testdb.Postgres(t)
	if standardPorts[pg.Port] || pg.Host != "127.0.0.1" {
		t.Fatalf("server on %s:%d; want 127.0.0.1 and a private port", pg.Host, pg.Port)
	}
	conn := pgConnect(t, pg.AdminDSN())
	var version, user, dataDir string
	if err := conn.QueryRow(ctxFor(t), "SELECT version(), current_user, current_setting('data_directory')").Scan(&version, &user, &dataDir); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(version, "PostgreSQL ") {
		t.Errorf("version() = %q", version)
	}
	if user != "postgres" {
		t.Errorf("current_user = %q, want postgres", user)
	}
	if dataDir != pg.DataDir {
		t.Errorf("connected to data directory %q, want ours %q", dataDir, pg.DataDir)
	}
	t.Logf("%s on port %d", version, pg.Port)
}

func TestPostgresRejectsWrongPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := testdb.Postgres(t)
	var auth string
	conn := pgConnect(t, pg.AdminDSN())
	if err := conn.QueryRow(ctxFor(t), "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1").Scan(&auth); err != nil {
		t.Fatal(err)
	}
	if auth != "scram-sha-256" {
		t.Errorf("TCP auth method = %q, want scram-sha-256", auth)
	}
	_, err := pgx.Connect(ctxFor(t), pg.DSN(pg.Superuser, pg.Password+"x", "postgres"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password: got %v, want SQLSTATE 28P01 (invalid_password)", err)
	}
}

func TestPostgresIsSharedPerBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	a := testdb.Postgres(t)
	var b *testdb.PG
	t.Run("second caller", func(t *testing.T) { b = testdb.Postgres(t) })
	if a != b {
		t.Fatalf("second Postgres call returned a different server (%d vs %d)", a.Port, b.Port)
	}
	// Still alive after the subtest that used it has ended: shared servers
	// are not tied to any test's cleanup.
	pgConnect(t, a.AdminDSN())
}

func TestPostgresNewDatabaseIsolation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := testdb.Postgres(t)
	var nameA string
	var leaked *pgx.Conn
	t.Run("a", func(t *testing.T) {
		dsnA, dsnB := pg.NewDatabase(t), pg.NewDatabase(t)
		if dsnA == dsnB {
			t.Fatalf("two NewDatabase calls returned the same DSN %s", dsnA)
		}
		a, b := pgConnect(t, dsnA), pgConnect(t, dsnB)
		if err := a.QueryRow(ctxFor(t), "SELECT current_database()").Scan(&nameA); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Exec(ctxFor(t), "CREATE TABLE only_in_a (x int)"); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := b.QueryRow(ctxFor(t), "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("table created in one database is visible in the other")
		}
		// A session left open past the subtest's end must not block the
		// drop at cleanup.
		leak, err := pgx.Connect(ctxFor(t), dsnA)
		if err != nil {
			t.Fatal(err)
		}
		leaked = leak
	})
	if leaked != nil {
		defer leaked.Close(context.Background())
	}
	if nameA == "" {
		t.Fatal("subtest did not report its database")
	}
	var exists bool
	conn := pgConnect(t, pg.AdminDSN())
	if err := conn.QueryRow(ctxFor(t), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", nameA).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after its test ended", nameA)
	}
}

func TestPostgresTLSVerifyFull(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := testdb.Postgres(t)
	if pg.CAFile == "" {
		t.Fatal("shared server has no CAFile")
	}
	dsn := pg.TLSDSN(pg.Superuser, pg.Password, "postgres")
	if !strings.Contains(dsn, "sslmode=verify-full") {
		t.Fatalf("TLSDSN %q does not ask for verify-full", dsn)
	}
	conn := pgConnect(t, dsn)
	var ssl bool
	if err := conn.QueryRow(ctxFor(t), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatal(err)
	}
	if !ssl {
		t.Error("verify-full connection is not encrypted")
	}

	// The same through a tls.Config, as the proxy's upstream dialer will do.
	cfg, err := pgx.ParseConfig(pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLSConfig, err = pg.TLSConfig(); err != nil {
		t.Fatal(err)
	}
	c2, err := pgx.ConnectConfig(ctxFor(t), cfg)
	if err != nil {
		t.Fatalf("connect with TLSConfig: %v", err)
	}
	c2.Close(context.Background())

	// Without our CA the certificate must not verify: proves the check is real.
	noCA := pg.DSN(pg.Superuser, pg.Password, "postgres")
	noCA = strings.Replace(noCA, "sslmode=disable", "sslmode=verify-full", 1)
	if c, err := pgx.Connect(ctxFor(t), noCA); err == nil {
		c.Close(context.Background())
		t.Error("verify-full without the CA succeeded")
	}
}

// TestStartPostgresOptionsAndStop starts a private server: without TLS, with
// an extra setting, then stopped.
func TestStartPostgresOptionsAndStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	if _, err := testdb.FindPostgresBinDir(); errors.Is(err, testdb.ErrNotInstalled) {
		testdb.Postgres(t) // skips or fails (CI) with the install hint
	}
	start := time.Now()
	pg, err := testdb.StartPostgres(ctxFor(t), testdb.PGOptions{Settings: map[string]string{"work_mem": "7MB"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("private PostgreSQL (no TLS) started in %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() { pg.Stop() })
	if pg.CAFile != "" {
		t.Errorf("CAFile = %q without TLS", pg.CAFile)
	}

	conn := pgConnect(t, pg.AdminDSN())
	var workMem string
	if err := conn.QueryRow(ctxFor(t), "SHOW work_mem").Scan(&workMem); err != nil {
		t.Fatal(err)
	}
	if workMem != "7MB" {
		t.Errorf("work_mem = %q, want the 7MB passed in Settings", workMem)
	}
	conn.Close(ctxFor(t))

	requireTLS := strings.Replace(pg.AdminDSN(), "sslmode=disable", "sslmode=require", 1)
	if c, err := pgx.Connect(ctxFor(t), requireTLS); err == nil {
		c.Close(context.Background())
		t.Error("sslmode=require succeeded against a server started without TLS")
	}

	// The Unix socket trusts local connections: no password.
	sock, err := pgx.Connect(ctxFor(t), "host="+pg.SocketDir+" port="+strconv.Itoa(pg.Port)+" user=postgres dbname=postgres")
	if err != nil {
		t.Fatalf("trusted socket connection: %v", err)
	}
	sock.Close(context.Background())

	if err := pg.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(pg.DataDir); !os.IsNotExist(err) {
		t.Errorf("data directory %s survives Stop (stat: %v)", pg.DataDir, err)
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still accepts connections after Stop", pg.Port)
	}
	if err := pg.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func mysqlDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestMariaDBRootOverTCPAndTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	m := testdb.MariaDB(t)
	if standardPorts[m.Port] || m.Host != "127.0.0.1" {
		t.Fatalf("server on %s:%d; want 127.0.0.1 and a private port", m.Host, m.Port)
	}
	db := mysqlDB(t, m.DSN(m.RootUser, m.RootPassword, ""))
	var version, user, socket string
	if err := db.QueryRowContext(ctxFor(t), "SELECT VERSION(), CURRENT_USER(), @@socket").Scan(&version, &user, &socket); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(version, "MariaDB") {
		t.Errorf("VERSION() = %q, want a MariaDB server", version)
	}
	if user != "root@127.0.0.1" {
		t.Errorf("CURRENT_USER() = %q, want root@127.0.0.1", user)
	}
	if socket != m.Socket {
		t.Errorf("connected to the server of socket %q, want ours %q", socket, m.Socket)
	}
	t.Logf("MariaDB %s on port %d", version, m.Port)

	t.Run("wrong password", func(t *testing.T) {
		err := mysqlDB(t, m.DSN(m.RootUser, "", "")).PingContext(ctxFor(t))
		var myErr *mysql.MySQLError
		if !errors.As(err, &myErr) || myErr.Number != 1045 {
			t.Fatalf("root without password: got %v, want error 1045 (access denied)", err)
		}
	})

	t.Run("TLS", func(t *testing.T) {
		tlsCfg, err := m.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		if err := mysql.RegisterTLSConfig("testdb-smoke", tlsCfg); err != nil {
			t.Fatal(err)
		}
		db := mysqlDB(t, m.DSN(m.RootUser, m.RootPassword, "")+"?tls=testdb-smoke")
		var name, cipher string
		if err := db.QueryRowContext(ctxFor(t), "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
			t.Fatal(err)
		}
		if cipher == "" {
			t.Error("tls=testdb-smoke connection is not encrypted")
		}
	})
}

func TestMariaDBNewDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	m := testdb.MariaDB(t)
	var name string
	t.Run("create", func(t *testing.T) {
		db := mysqlDB(t, m.NewDatabase(t))
		if err := db.QueryRowContext(ctxFor(t), "SELECT DATABASE()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctxFor(t), "CREATE TABLE t (x int)"); err != nil {
			t.Fatal(err)
		}
	})
	if name == "" {
		t.Fatal("no database name reported")
	}
	var n int
	if err := mysqlDB(t, m.RootDSN()).QueryRowContext(ctxFor(t),
		"SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestRedisPingSetGet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis")
	}
	r := testdb.Redis(t)
	if _, port, _ := net.SplitHostPort(r.Addr); port == "6379" {
		t.Fatalf("Redis on the standard port %s", r.Addr)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	ctx := ctxFor(t)
	if pong, err := c.Ping(ctx).Result(); err != nil || pong != "PONG" {
		t.Fatalf("PING = %q, %v", pong, err)
	}
	if err := c.Set(ctx, "testdb:key", "value", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "testdb:key").Result(); err != nil || got != "value" {
		t.Fatalf("GET = %q, %v; want value", got, err)
	}
	if testdb.Redis(t) != r {
		t.Error("second Redis call returned a different server")
	}
}

func TestStartRedisStop(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Redis")
	}
	testdb.Redis(t) // skips or fails (CI) with the install hint when missing
	r, err := testdb.StartRedis(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	if r.Addr == testdb.Redis(t).Addr {
		t.Fatalf("private server shares the shared one's address %s", r.Addr)
	}
	c := r.Client()
	defer c.Close()
	if err := c.Ping(ctxFor(t)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", r.Addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Stop", r.Addr)
	}
}

// requireTool finds a client binary; like a missing server, a missing client
// skips outside CI and fails in CI.
func requireTool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("none of %v on PATH; run scripts/deps.sh", names)
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// OpenSSL-based clients are stricter about certificates than Go (key usage,
// CA flags); the proxy's users will connect with them, so check them too.
func TestPostgresTLSWithPsql(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pg := testdb.Postgres(t)
	psql := requireTool(t, "psql")
	cmd := exec.CommandContext(ctxFor(t), psql, "-X", "-At", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
		"host=127.0.0.1 port="+strconv.Itoa(pg.Port)+" user=postgres dbname=postgres sslmode=verify-full sslrootcert="+pg.CAFile)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+pg.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "t" {
		t.Errorf("psql over verify-full: ssl = %q, want t", got)
	}
}

func TestMariaDBTLSWithCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts MariaDB")
	}
	m := testdb.MariaDB(t)
	cli := requireTool(t, "mariadb", "mysql")
	cmd := exec.CommandContext(ctxFor(t), cli, "--no-defaults", "-h", "127.0.0.1", "-P", strconv.Itoa(m.Port),
		"-u", m.RootUser, "--ssl-ca="+m.CAFile, "--ssl-verify-server-cert", "-N", "-B",
		"-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
	cmd.Env = append(os.Environ(), "MYSQL_PWD="+m.RootPassword)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cli, err, out)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || f[0] != "Ssl_cipher" || f[1] == "" {
		t.Errorf("%s over verified TLS: %q, want Ssl_cipher and a cipher", cli, out)
	}
}
