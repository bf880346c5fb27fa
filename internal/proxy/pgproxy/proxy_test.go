package pgproxy

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/sigv4"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func pgMessage(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	return ""
}

// TestPsql drives the real psql with tokens from the real AWS CLI and from
// aws-sdk-go-v2.
func TestPsql(t *testing.T) {
	psql := requireTool(t, "psql")
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))

	awsTok := func() string {
		aws := requireTool(t, "aws")
		empty := filepath.Join(t.TempDir(), "empty")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(aws, "rds", "generate-db-auth-token", "--hostname", "localhost",
			"--port", strconv.Itoa(h.port), "--username", "app", "--region", testRegion)
		cmd.Env = append(cleanEnv(), "AWS_ACCESS_KEY_ID="+id, "AWS_SECRET_ACCESS_KEY="+secret,
			"AWS_DEFAULT_REGION="+testRegion, "AWS_CONFIG_FILE="+empty, "AWS_SHARED_CREDENTIALS_FILE="+empty,
			"AWS_EC2_METADATA_DISABLED=true")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("aws rds generate-db-auth-token: %v", err)
		}
		return strings.TrimSpace(string(out))
	}

	for _, tc := range []struct {
		name  string
		token func() string
	}{
		{"aws-cli", awsTok},
		{"aws-sdk-go-v2", func() string { return h.sdkToken(h.endpoint, testRegion, "app", id, secret, "") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(psql, "-X", "-At", "-v", "ON_ERROR_STOP=1", h.connString("app", h.database),
				"-c", "SELECT current_user, current_setting('application_name')")
			cmd.Env = append(cleanEnv(), "PGPASSWORD="+tc.token(), "PGAPPNAME=psql-test")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("psql: %v\n%s\nlog:\n%s", err, out, h.logs)
			}
			if got := strings.TrimSpace(string(out)); got != "app|psql-test" {
				t.Fatalf("psql printed %q, want app|psql-test", got)
			}
		})
	}
	h.logs.find(t, "IAM login accepted", "principal", "arn:aws:iam::123456789012:user/alice", "user", "app")
	h.obs.wait(t, ResultOK, 2)
}

// TestPsqlWithoutTLSNeverSendsPassword: psql with sslmode=disable is
// refused with a TLS message, and the token stays on the client.
func TestPsqlWithoutTLS(t *testing.T) {
	psql := requireTool(t, "psql")
	h := newHarness(t)
	cmd := exec.Command(psql, "-X", "-At", fmt.Sprintf("host=127.0.0.1 port=%d user=app dbname=%s sslmode=disable", h.port, h.database),
		"-c", "SELECT 1")
	cmd.Env = append(cleanEnv(), "PGPASSWORD=not-a-token")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "connection requires TLS") {
		t.Fatalf("psql without TLS: err %v, output %s", err, out)
	}
}

func TestPgxSession(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")

	conn, err := pgx.ConnectConfig(ctx, h.pgxConfig("app", tok, "application_name=orders-api"))
	if err != nil {
		t.Fatalf("connect: %v\nlog:\n%s", err, h.logs)
	}
	defer conn.Close(ctx)

	var user, app, version string
	if err := conn.QueryRow(ctx, "SELECT current_user, current_setting('application_name'), current_setting('server_version')").Scan(&user, &app, &version); err != nil {
		t.Fatal(err)
	}
	if user != "app" || app != "orders-api" {
		t.Fatalf("current_user %q application_name %q", user, app)
	}
	if got := conn.PgConn().ParameterStatus("server_version"); got != version {
		t.Fatalf("client saw server_version %q, server says %q", got, version)
	}

	t.Run("extended protocol", func(t *testing.T) {
		var sum int
		var s string
		if err := conn.QueryRow(ctx, "SELECT $1::int + $2::int, $3::text", 40, 2, "x'y").Scan(&sum, &s); err != nil {
			t.Fatal(err)
		}
		if sum != 42 || s != "x'y" {
			t.Fatalf("got %d %q", sum, s)
		}
		batch := &pgx.Batch{}
		for i := range 20 {
			batch.Queue("SELECT $1::int * 2", i)
		}
		br := conn.SendBatch(ctx, batch)
		for i := range 20 {
			var v int
			if err := br.QueryRow().Scan(&v); err != nil || v != 2*i {
				t.Fatalf("batch row %d: %d %v", i, v, err)
			}
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("copy", func(t *testing.T) {
		pc := conn.PgConn()
		if _, err := pc.Exec(ctx, "CREATE TABLE items(id int, name text)").ReadAll(); err != nil {
			t.Fatal(err)
		}
		var in bytes.Buffer
		for i := range 5000 {
			fmt.Fprintf(&in, "%d\titem %d\n", i, i)
		}
		want := in.String()
		tag, err := pc.CopyFrom(ctx, strings.NewReader(want), "COPY items FROM STDIN")
		if err != nil || tag.RowsAffected() != 5000 {
			t.Fatalf("copy from: %v %v", tag, err)
		}
		var out bytes.Buffer
		tag, err = pc.CopyTo(ctx, &out, "COPY (SELECT * FROM items ORDER BY id) TO STDOUT")
		if err != nil || tag.RowsAffected() != 5000 {
			t.Fatalf("copy to: %v %v", tag, err)
		}
		if out.String() != want {
			t.Fatalf("copied out %d bytes, in %d; differ", out.Len(), len(want))
		}
	})

	t.Run("listen notify", func(t *testing.T) {
		other, err := pgx.ConnectConfig(ctx, h.pgxConfig("app", tok, ""))
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close(ctx)
		if _, err := conn.Exec(ctx, "LISTEN orders_changed"); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Exec(ctx, "SELECT pg_notify('orders_changed', 'order 7')"); err != nil {
			t.Fatal(err)
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Channel != "orders_changed" || n.Payload != "order 7" {
			t.Fatalf("notification %+v", n)
		}
	})

	t.Run("cancel over TLS", func(t *testing.T) {
		testCancel(t, ctx, h, conn, func() error { return conn.PgConn().CancelRequest(ctx) })
	})

	t.Run("cancel in plaintext", func(t *testing.T) {
		// libpq before 17 sends cancel requests unencrypted.
		pc := conn.PgConn()
		testCancel(t, ctx, h, conn, func() error {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			msg, _ := (&pgproto3.CancelRequest{ProcessID: pc.PID(), SecretKey: pc.SecretKey()}).Encode(nil)
			if _, err := c.Write(msg); err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, c)
			return err
		})
	})

	h.obs.wait(t, ResultCancel, 2)
	conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for h.srv.ActiveSessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.srv.ActiveSessions(); n != 0 {
		t.Fatalf("%d sessions still active after the clients closed", n)
	}
	h.obs.mu.Lock()
	defer h.obs.mu.Unlock()
	if h.obs.started != 2 || h.obs.ended != 2 || h.obs.bytesIn < 60_000 || h.obs.bytesOut < 60_000 {
		t.Fatalf("observer: %d started, %d ended, %d bytes in, %d out", h.obs.started, h.obs.ended, h.obs.bytesIn, h.obs.bytesOut)
	}
}

// testCancel runs pg_sleep(30) on conn and cancels it with cancel.
func testCancel(t *testing.T, ctx context.Context, h *harness, conn *pgx.Conn, cancel func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)")
		done <- err
	}()
	// Wait until the upstream is really running the query: a cancel that
	// arrives before it would be a no-op.
	admin, err := pgx.Connect(ctx, h.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'active' AND query = 'SELECT pg_sleep(30)'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cancel(); err != nil {
		t.Fatalf("cancel request: %v", err)
	}
	// pg_sleep(30) finishing without error would mean the cancel was lost.
	if err := <-done; pgCode(err) != "57014" {
		t.Fatalf("cancelled query: %v (log:\n%s)", err, h.logs)
	}
	h.logs.find(t, "cancel request forwarded")
}

func TestDatabaseSQL(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	cfg := h.pgxConfig("app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""), "")
	db := stdlib.OpenDB(*cfg)
	defer db.Close()
	db.SetMaxOpenConns(3)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var user string
			var n int
			if err := db.QueryRowContext(ctx, "SELECT current_user, $1::int", i).Scan(&user, &n); err != nil {
				errs <- err
				return
			}
			if user != "app" || n != i {
				errs <- fmt.Errorf("got %q %d", user, n)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tx, err := db.BeginTx(ctx, &sql.TxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "CREATE TEMP TABLE t(x int)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
}

// TestNoTLSRefusedBeforePassword speaks the protocol by hand to prove the
// client is never asked for a password over plaintext.
func TestNoTLSRefusedBeforePassword(t *testing.T) {
	h := newHarness(t)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": "app", "database": h.database}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	e, ok := msg.(*pgproto3.ErrorResponse)
	if !ok {
		t.Fatalf("first answer is %T, want ErrorResponse (never a password request)", msg)
	}
	if e.Code != "28000" || e.Severity != "FATAL" || !strings.Contains(e.Message, "requires TLS") || !strings.Contains(e.Message, `"app"`) {
		t.Fatalf("error %+v", e)
	}
	if _, err := fe.Receive(); err == nil {
		t.Fatal("connection still open after the FATAL error")
	}
	h.logs.find(t, "login refused", "reason", ResultTLSRequired, "user", "app")
	h.obs.wait(t, ResultTLSRequired, 1)
}

func TestRefusals(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	id, secret := h.user("alice", connectPolicy("app"))
	inactiveID, inactiveSecret := h.user("bob", connectPolicy("app"))
	if err := h.store.UpdateAccessKeyStatus(ctx, inactiveID, identity.KeyInactive); err != nil {
		t.Fatal(err)
	}
	denyID, denySecret := h.user("mallory", `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"},
		{"Sid":"NoApp","Effect":"Deny","Action":"rds-db:connect","Resource":"arn:aws:rds-db:*:*:dbuser:*/app"}]}`)

	// Temporary credentials that expired an hour ago: created with the
	// store's clock two hours back.
	role, err := h.store.CreateRole(ctx, identity.Role{AccountID: testAccount, Name: "db-users",
		TrustPolicy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.PutInlinePolicy(ctx, identity.RoleRef(testAccount, "db-users"), "connect", connectPolicy("app")); err != nil {
		t.Fatal(err)
	}
	h.storeAge.Store(int64(2 * time.Hour))
	_, creds, err := h.store.CreateSession(ctx, identity.Session{AccountID: testAccount, RoleID: role.ID, RoleARN: role.ARN(),
		SessionName: "laptop", Expiration: time.Now().Add(-time.Hour)})
	h.storeAge.Store(0)
	if err != nil {
		t.Fatal(err)
	}

	sign := func(at time.Time, endpoint, region, user, key, sec, session string) string {
		tok, err := sigv4.Sign(sigv4.SignInput{Endpoint: endpoint, Region: region, DBUser: user,
			AccessKeyID: key, SecretAccessKey: sec, SessionToken: session, Time: at})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	pam := func(u string) string { return fmt.Sprintf("PAM authentication failed for user %q", u) }

	for _, tc := range []struct {
		name, user, password string
		code, message        string // what the client gets
		reason               string // what the log says
	}{
		{"expired token", "app", sign(now.Add(-20*time.Minute), h.endpoint, testRegion, "app", id, secret, ""), "28P01", pam("app"), "ExpiredToken"},
		{"token for another user", "app", sign(now, h.endpoint, testRegion, "report", id, secret, ""), "28P01", pam("app"), "UserMismatch"},
		{"token for another endpoint", "app", sign(now, "db.example.com:5432", testRegion, "app", id, secret, ""), "28P01", pam("app"), "EndpointMismatch"},
		{"wrong region", "app", h.sdkToken(h.endpoint, "eu-west-1", "app", id, secret, ""), "28P01", pam("app"), "WrongRegion"},
		{"inactive key", "app", sign(now, h.endpoint, testRegion, "app", inactiveID, inactiveSecret, ""), "28P01", pam("app"), "InactiveAccessKey"},
		{"expired temporary credentials", "app", sign(now, h.endpoint, testRegion, "app", creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken), "28P01", pam("app"), "ExpiredCredentials"},
		{"implicit deny", "report", sign(now, h.endpoint, testRegion, "report", id, secret, ""), "28P01", pam("report"), "AccessDenied"},
		{"explicit deny", "app", sign(now, h.endpoint, testRegion, "app", denyID, denySecret, ""), "28P01", pam("app"), "AccessDenied"},
		{"IAM user with a plain password", "app", rolePass["app"], "28P01", pam("app"), "MalformedToken"},
		{"bad signature", "app", sign(now, h.endpoint, testRegion, "app", id, string(secret[0]^1)+secret[1:], "") /* always another secret */, "28P01", pam("app"), "InvalidSignature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.logs.records())
			_, err := h.connect(ctx, tc.user, tc.password)
			if pgCode(err) != tc.code || pgMessage(err) != tc.message {
				t.Fatalf("got %v (code %q), want %s %q", err, pgCode(err), tc.code, tc.message)
			}
			var rec map[string]any
			for _, r := range h.logs.records()[before:] {
				if r["msg"] == "login refused" {
					rec = r
				}
			}
			if rec == nil || rec["reason"] != tc.reason || rec["level"] != "WARN" {
				t.Fatalf("log record %v, want reason %s; log:\n%s", rec, tc.reason, h.logs)
			}
			if strings.Contains(fmt.Sprint(rec), tc.password) {
				t.Fatal("the password reached the log")
			}
			if tc.name == "explicit deny" && (rec["principal"] != "arn:aws:iam::123456789012:user/mallory" || !strings.Contains(fmt.Sprint(rec["detail"]), "NoApp")) {
				t.Fatalf("explicit deny log lacks principal or statement: %v", rec)
			}
		})
	}
	h.obs.wait(t, "AccessDenied", 2)
}

// TestPasswordRelay: users that are not IAM-enabled keep their ordinary
// password login, relayed message by message when one leg is plaintext and
// taken over by iamdb when both legs are TLS (see loginPasswordCaptured).
func TestPasswordRelay(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		upstreamTLS bool
		clientTLS   bool
		refusal     string // log message of the upstream's refusal
	}{
		{"tls to both", true, true, "upstream refused the login"},
		{"plaintext client", true, false, "upstream refused the relayed password login"},
		{"plaintext upstream", false, true, "upstream refused the relayed password login"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) {
				if !tc.upstreamTLS {
					c.Upstream.TLS = nil
				}
			})
			config := func(password string) *pgx.ConnConfig {
				if tc.clientTLS {
					return h.pgxConfig(relayUser, password, "")
				}
				cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=%s sslmode=disable", h.port, relayUser, h.database))
				if err != nil {
					t.Fatal(err)
				}
				cfg.Password = password
				return cfg
			}
			_, err := pgx.ConnectConfig(ctx, config("wrong"))
			if pgCode(err) != "28P01" || !strings.Contains(pgMessage(err), "password authentication failed") {
				t.Fatalf("wrong password: %v", err)
			}
			h.logs.find(t, tc.refusal, "code", "28P01")

			conn, err := pgx.ConnectConfig(ctx, config(relayPassword))
			if err != nil {
				t.Fatalf("connect: %v\nlog:\n%s", err, h.logs)
			}
			defer conn.Close(ctx)
			var user string
			var ssl bool
			if err := conn.QueryRow(ctx, "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &ssl); err != nil || user != relayUser {
				t.Fatalf("current_user %q %v", user, err)
			}
			if ssl != tc.upstreamTLS {
				t.Fatalf("upstream leg TLS %v, want %v", ssl, tc.upstreamTLS)
			}
			// The key the client got is iamdb's, and cancelling with it works.
			testCancelAny(t, ctx, conn)
			h.obs.wait(t, ResultPasswordRelayed, 1)
			h.obs.wait(t, ResultUpstreamRejected, 1)
		})
	}
}

// testCancelAny cancels a pg_sleep on conn, polling rather than watching
// pg_stat_activity (which the relayed user may not see).
func testCancelAny(t *testing.T, ctx context.Context, conn *pgx.Conn) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)")
		done <- err
	}()
	for {
		time.Sleep(100 * time.Millisecond)
		if err := conn.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if pgCode(err) != "57014" {
				t.Fatalf("cancelled query: %v", err)
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	h := newHarness(t, func(c *Config) { c.Upstream = Upstream{Address: dead, DialTimeout: 5 * time.Second} })
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	want := fmt.Sprintf("iamdb: instance orders: upstream %s is unavailable", dead)

	_, err = h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if pgCode(err) != "08006" || pgMessage(err) != want {
		t.Fatalf("IAM login with the upstream down: %v", err)
	}
	_, err = h.connect(ctx, relayUser, relayPassword)
	if pgCode(err) != "08006" || pgMessage(err) != want {
		t.Fatalf("password login with the upstream down: %v", err)
	}
	h.obs.wait(t, ResultUpstreamUnavailable, 2)
	if n := h.obs.dialFailures(); n != 2 {
		t.Fatalf("%d dial failures reported, want 2", n)
	}
}

func TestUnknownDatabase(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	cfg := h.pgxConfig("app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""), "")
	cfg.Database = "no_such_db"
	_, err := pgx.ConnectConfig(ctx, cfg)
	if pgCode(err) != "3D000" || !strings.Contains(pgMessage(err), `database "no_such_db" does not exist`) {
		t.Fatalf("got %v", err)
	}
	h.logs.find(t, "upstream refused the login", "code", "3D000")
	h.obs.wait(t, ResultUpstreamRejected, 1)
}

// TestDirectTLS: PostgreSQL 17's sslnegotiation=direct, TLS with ALPN
// instead of an SSLRequest.
func TestDirectTLS(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, h.pgxConfig("app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""), "sslnegotiation=direct"))
	if err != nil {
		t.Fatalf("direct TLS: %v\nlog:\n%s", err, h.logs)
	}
	defer conn.Close(ctx)
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "app" {
		t.Fatalf("%q %v", user, err)
	}
}

// TestProtocol32Client: a client asking for protocol 3.2 is negotiated
// down on the IAM path and works on both paths.
func TestProtocol32Client(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	for _, tc := range []struct{ user, password string }{
		{"app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")},
		{relayUser, relayPassword},
	} {
		conn, err := pgx.ConnectConfig(ctx, h.pgxConfig(tc.user, tc.password, "max_protocol_version=3.2"))
		if err != nil {
			t.Fatalf("%s: %v", tc.user, err)
		}
		var user string
		if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != tc.user {
			t.Fatalf("%q %v", user, err)
		}
		conn.Close(ctx)
	}
}

func TestConcurrentLogins(t *testing.T) {
	// 200 upstream forks and TLS handshakes at once can take a loaded
	// machine longer than the default timeouts; this test is about
	// correctness under concurrency, not speed.
	h := newHarness(t, func(c *Config) {
		c.HandshakeTimeout = time.Minute
		c.Upstream.DialTimeout = time.Minute
	})
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	conns := make(chan *pgx.Conn, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := h.connect(ctx, "app", tok)
			if err != nil {
				errs <- err
				return
			}
			conns <- conn
			var user string
			if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "app" {
				errs <- fmt.Errorf("query: %q %v", user, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(conns)
	if got := h.srv.ActiveSessions(); got != n-len(errs) {
		t.Errorf("ActiveSessions %d with %d connections open", got, n-len(errs))
	}
	for c := range conns {
		c.Close(ctx)
	}
	for err := range errs {
		t.Error(err)
	}
	h.obs.wait(t, ResultOK, n)
}

func TestShutdownDrains(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	conn, err := h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	sctx, cancel := context.WithCancel(ctx)
	go func() { shut <- h.srv.Shutdown(sctx) }()

	// New connections are refused once Shutdown runs…
	for {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	// …while the live session keeps working.
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("live session during shutdown: %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a session open", err)
	default:
	}
	// The drain deadline passes: the session is closed.
	cancel()
	if err := <-shut; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("session still alive after the drain deadline")
	}
}

func TestShutdownReturnsWhenSessionsEnd(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	conn, err := h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(ctx) }()
	conn.Close(ctx)
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestUpdate: a new upstream applies to new sessions only.
func TestUpdate(t *testing.T) {
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	conn, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	cfg := h.cfg
	cfg.Upstream = Upstream{Address: "127.0.0.1:1", DialTimeout: time.Second}
	h.srv.Update(cfg)
	if _, err := h.connect(ctx, "app", tok); pgCode(err) != "08006" || !strings.Contains(pgMessage(err), "127.0.0.1:1") {
		t.Fatalf("new session after Update: %v", err)
	}
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("live session after Update: %v", err)
	}
	h.srv.Update(Config{}) // invalid: ignored
	h.logs.find(t, "configuration update ignored")
	h.srv.Update(h.cfg)
	c2, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close(ctx)
}

// TestHandshakeTimeout: a client that connects and says nothing is cut off.
func TestHandshakeTimeout(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.HandshakeTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the server should close the connection: %v", err)
	}
	h.logs.find(t, "login timed out")
	h.obs.wait(t, ResultHandshakeTimeout, 1)
}

func TestNewValidates(t *testing.T) {
	h := newHarness(t)
	good := h.cfg
	for name, mutate := range map[string]func(*Config){
		"no instance":      func(c *Config) { c.Instance = nil },
		"no TLS":           func(c *Config) { c.TLS = nil },
		"no authenticator": func(c *Config) { c.Authenticator = nil },
		"no backend":       func(c *Config) { c.Backend = nil },
		"bad upstream":     func(c *Config) { c.Upstream.Address = "nowhere" },
	} {
		c := good
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestCancelKeys(t *testing.T) {
	r := newKeyRegistry()
	target := cancelTarget{pid: 7, secret: []byte{1, 2, 3, 4}, session: "s1"}
	pid, secret, release, err := r.register(4, target)
	if err != nil {
		t.Fatal(err)
	}
	if pid == 0 || pid > 1<<31-1 || len(secret) != 4 {
		t.Fatalf("pid %d secret %x", pid, secret)
	}
	if got, ok := r.lookup(pid, secret); !ok || got.session != "s1" || got.pid != 7 {
		t.Fatalf("lookup: %+v %v", got, ok)
	}
	bad := append([]byte{}, secret...)
	bad[0] ^= 1
	for _, s := range [][]byte{bad, secret[:3], append(append([]byte{}, secret...), 0), nil} {
		if _, ok := r.lookup(pid, s); ok {
			t.Fatalf("secret %x matched", s)
		}
	}
	_, long, release2, err := r.register(32, target)
	if err != nil || len(long) != 32 {
		t.Fatalf("protocol 3.2 key: %x %v", long, err)
	}
	release2()
	release()
	if _, ok := r.lookup(pid, secret); ok {
		t.Fatal("released key still matches")
	}
}
