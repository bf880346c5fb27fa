package pgproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/iamdb/iamdb/internal/audit"
)

// withPool turns upstream session reuse on with p's bounds.
func withPool(p Pool) harnessOption {
	return func(c *Config) {
		p.Enabled = true
		c.Pool = p
	}
}

// backendPID is the upstream backend serving conn.
func backendPID(t *testing.T, ctx context.Context, conn *pgx.Conn) uint32 {
	t.Helper()
	var pid uint32
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitIdle waits until the listener holds n idle upstream sessions.
func waitIdle(t *testing.T, h *harness, n int) {
	t.Helper()
	for range 1000 {
		if h.srv.IdleUpstreamSessions() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d idle upstream sessions, want %d; log:\n%s", h.srv.IdleUpstreamSessions(), n, h.logs)
}

// waitGone waits until backend pid has left pg_stat_activity: its upstream
// session was closed rather than kept.
func waitGone(t *testing.T, h *harness, pid uint32) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, h.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for range 1000 {
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("upstream backend %d is still connected; log:\n%s", pid, h.logs)
}

// TestPoolReuse: a second login of the same principal, user and database
// gets the first one's upstream backend, with everything the first
// session left behind reset, its own cancel key, and its own audit events.
func TestPoolReuse(t *testing.T) {
	sink, path := openSink(t)
	h := newHarness(t, withPool(Pool{}), withAudit(sink, audit.StatementPolicy{}))
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	first, err := pgx.ConnectConfig(ctx, h.pgxConfig("app", tok, "application_name=pool-test"))
	if err != nil {
		t.Fatalf("connect: %v\nlog:\n%s", err, h.logs)
	}
	pid := backendPID(t, ctx, first)
	oldPID, oldSecret := first.PgConn().PID(), first.PgConn().SecretKey()
	for _, sql := range []string{
		"CREATE TEMP TABLE pool_tmp(x int)",
		"SET work_mem = '7MB'",
		"SET application_name = 'changed'",
		"PREPARE pool_stmt AS SELECT 1",
		"LISTEN pool_channel",
		"SELECT pg_advisory_lock(4242)",
	} {
		if _, err := first.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if got := first.PgConn().ParameterStatus("application_name"); got != "changed" {
		t.Fatalf("application_name reported as %q after SET", got)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, h, 1)

	second, err := pgx.ConnectConfig(ctx, h.pgxConfig("app", tok, "application_name=pool-test"))
	if err != nil {
		t.Fatalf("second connect: %v\nlog:\n%s", err, h.logs)
	}
	if got := backendPID(t, ctx, second); got != pid {
		t.Fatalf("second login got backend %d, want the pooled %d", got, pid)
	}
	if n := h.srv.IdleUpstreamSessions(); n != 0 {
		t.Fatalf("%d idle sessions while the pooled one is in use", n)
	}
	// What the client is told comes from the reset session.
	if got := second.PgConn().ParameterStatus("application_name"); got != "pool-test" {
		t.Errorf("second client sees application_name %q, want pool-test", got)
	}
	var (
		tmp                           *string
		workMem, app, user            string
		prepared, listening, advisory int
	)
	if err := second.QueryRow(ctx, `SELECT to_regclass('pg_temp.pool_tmp')::text, current_setting('work_mem'),
		current_setting('application_name'), current_user,
		(SELECT count(*) FROM pg_prepared_statements WHERE name = 'pool_stmt'),
		(SELECT count(*) FROM pg_listening_channels()),
		(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())`).
		Scan(&tmp, &workMem, &app, &user, &prepared, &listening, &advisory); err != nil {
		t.Fatal(err)
	}
	if tmp != nil || workMem == "7MB" || app != "pool-test" || user != "app" || prepared != 0 || listening != 0 || advisory != 0 {
		t.Errorf("state of the first session survived: temp table %v, work_mem %s, application_name %s, user %s, prepared %d, listening %d, advisory locks %d",
			tmp, workMem, app, user, prepared, listening, advisory)
	}

	// The first client's cancel key died with its session; the second
	// one's reaches the pooled backend.
	if _, ok := h.srv.keys.lookup(oldPID, oldSecret); ok {
		t.Error("the first client's cancel key still matches")
	}
	if target, ok := h.srv.keys.lookup(second.PgConn().PID(), second.PgConn().SecretKey()); !ok || target.pid != pid {
		t.Errorf("second client's cancel key: %+v %v, want backend %d", target, ok, pid)
	}
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, h, 1)

	// Each client session has its own connect and disconnect events.
	evs := events(t, path, 4)
	var connects, disconnects int
	for _, e := range evs {
		switch e.EventName {
		case audit.NameConnect:
			connects++
			if e.ErrorCode != "" {
				t.Errorf("connect event with error %s", e.ErrorCode)
			}
		case audit.NameDisconnect:
			disconnects++
			if n := fmt.Sprint(e.ResponseElements["bytesFromClient"]); n == "0" || n == "<nil>" {
				t.Errorf("disconnect event without client bytes: %v", e.ResponseElements)
			}
			if e.ResponseElements["closedBy"] != audit.ClosedByClient {
				t.Errorf("disconnect closed by %v", e.ResponseElements["closedBy"])
			}
		}
	}
	if connects != 2 || disconnects != 2 {
		t.Errorf("audit: %d connects, %d disconnects, want 2 each: %v", connects, disconnects, names(evs))
	}
	h.obs.wait(t, ResultOK, 2)
	h.obs.mu.Lock()
	defer h.obs.mu.Unlock()
	if h.obs.started != 2 || h.obs.ended != 2 || h.obs.reused != 1 || h.obs.poolIdle != 1 {
		t.Errorf("observer: %d started, %d ended, %d reused, %d idle; want 2, 2, 1, 1", h.obs.started, h.obs.ended, h.obs.reused, h.obs.poolIdle)
	}
}

// TestPoolNotReused: sessions a client did not leave idle and ready are
// closed, never pooled.
func TestPoolNotReused(t *testing.T) {
	h := newHarness(t, withPool(Pool{}))
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	setup, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Exec(ctx, "CREATE TABLE pool_copy(x int)"); err != nil {
		t.Fatal(err)
	}
	setupPID := backendPID(t, ctx, setup)
	// The session that created the table is idle and pooled: take it out
	// of the way so that each case below starts on a fresh backend.
	setup.Close(ctx)
	waitIdle(t, h, 1)
	h.srv.FlushPool()
	waitGone(t, h, setupPID)

	for _, tc := range []struct {
		name string
		end  func(t *testing.T, conn *pgx.Conn)
	}{
		{"transaction open", func(t *testing.T, conn *pgx.Conn) {
			if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)
		}},
		{"failed transaction", func(t *testing.T, conn *pgx.Conn) {
			conn.Exec(ctx, "BEGIN")
			if _, err := conn.Exec(ctx, "SELECT 1/0"); err == nil {
				t.Fatal("1/0 succeeded")
			}
			conn.Close(ctx)
		}},
		{"mid-COPY", func(t *testing.T, conn *pgx.Conn) {
			pc := conn.PgConn()
			pc.Frontend().Send(&pgproto3.Query{String: "COPY pool_copy FROM STDIN"})
			if err := pc.Frontend().Flush(); err != nil {
				t.Fatal(err)
			}
			for {
				msg, err := pc.ReceiveMessage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := msg.(*pgproto3.CopyInResponse); ok {
					break
				}
			}
			pc.Frontend().Send(&pgproto3.CopyData{Data: []byte("1\n")})
			pc.Frontend().Flush()
			conn.Close(ctx)
		}},
		{"extended protocol without Sync", func(t *testing.T, conn *pgx.Conn) {
			pc := conn.PgConn()
			pc.Frontend().Send(&pgproto3.Parse{Name: "half", Query: "SELECT 1"})
			if err := pc.Frontend().Flush(); err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)
		}},
		{"query unanswered", func(t *testing.T, conn *pgx.Conn) {
			pc := conn.PgConn()
			pc.Frontend().Send(&pgproto3.Query{String: "SELECT pg_sleep(0.5)"})
			if err := pc.Frontend().Flush(); err != nil {
				t.Fatal(err)
			}
			conn.Close(ctx)
		}},
		{"no Terminate", func(t *testing.T, conn *pgx.Conn) {
			conn.PgConn().Conn().Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := h.connect(ctx, "app", tok)
			if err != nil {
				t.Fatal(err)
			}
			pid := backendPID(t, ctx, conn)
			tc.end(t, conn)
			waitGone(t, h, pid)
			if n := h.srv.IdleUpstreamSessions(); n != 0 {
				t.Fatalf("%d idle upstream sessions", n)
			}
		})
	}
}

// TestPoolKeys: sessions are shared only by logins of the same principal,
// database user, database and startup parameters.
func TestPoolKeys(t *testing.T) {
	h := newHarness(t, withPool(Pool{}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	aliceID, aliceSecret := h.user("alice", connectPolicy("app", "report"))
	bobID, bobSecret := h.user("bob", connectPolicy("app"))
	otherURL, err := url.Parse(h.pg.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	otherDB := strings.TrimPrefix(otherURL.Path, "/")

	login := func(who, user, database, app string) *pgx.Conn {
		t.Helper()
		keyID, secret := aliceID, aliceSecret
		if who == "bob" {
			keyID, secret = bobID, bobSecret
		}
		cfg := h.pgxConfig(user, h.sdkToken(h.endpoint, testRegion, user, keyID, secret, ""), "application_name="+app)
		cfg.Database = database
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("%s as %s on %s: %v\nlog:\n%s", who, user, database, err, h.logs)
		}
		return conn
	}
	first := login("alice", "app", h.database, "a")
	pid := backendPID(t, ctx, first)
	first.Close(ctx)
	waitIdle(t, h, 1)

	idle := 1
	for _, tc := range []struct{ name, who, user, database, app string }{
		{"another database user", "alice", "report", h.database, "a"},
		{"another database", "alice", "app", otherDB, "a"},
		{"another application_name", "alice", "app", h.database, "b"},
		{"another principal", "bob", "app", h.database, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := login(tc.who, tc.user, tc.database, tc.app)
			if got := backendPID(t, ctx, conn); got == pid {
				t.Fatalf("got the pooled backend %d of another key", pid)
			}
			conn.Close(ctx)
			idle++
			waitIdle(t, h, idle)
		})
	}
	again := login("alice", "app", h.database, "a")
	defer again.Close(ctx)
	if got := backendPID(t, ctx, again); got != pid {
		t.Fatalf("same key got backend %d, want the pooled %d", got, pid)
	}
}

// TestPoolIdleTimeout: an idle session is closed after the idle timeout.
func TestPoolIdleTimeout(t *testing.T) {
	h := newHarness(t, withPool(Pool{IdleTimeout: 300 * time.Millisecond}))
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	conn, err := h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	pid := backendPID(t, ctx, conn)
	conn.Close(ctx)
	h.logs.find(t, "upstream session pooled", "backend_pid", strconv.Itoa(int(pid)))
	waitGone(t, h, pid)
	waitIdle(t, h, 0)
}

// TestPoolUpstreamKilled: a pooled session whose backend was terminated
// is never handed out; the next login gets a fresh one.
func TestPoolUpstreamKilled(t *testing.T) {
	h := newHarness(t, withPool(Pool{}))
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	ctx := context.Background()
	conn, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	pid := backendPID(t, ctx, conn)
	conn.Close(ctx)
	waitIdle(t, h, 1)

	admin, err := pgx.Connect(ctx, h.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var killed bool
	if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("pg_terminate_backend: %v %v", killed, err)
	}
	next, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatalf("login after the pooled backend died: %v\nlog:\n%s", err, h.logs)
	}
	defer next.Close(ctx)
	if got := backendPID(t, ctx, next); got == pid {
		t.Fatalf("got the terminated backend %d", pid)
	}
}

// TestPoolCancel: a cancel request on a reused session cancels its
// backend's query.
func TestPoolCancel(t *testing.T) {
	h := newHarness(t, withPool(Pool{}))
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	pid := backendPID(t, ctx, first)
	first.Close(ctx)
	waitIdle(t, h, 1)
	second, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(ctx)
	if got := backendPID(t, ctx, second); got != pid {
		t.Fatalf("not reused: backend %d, pooled %d", got, pid)
	}
	testCancel(t, ctx, h, second, func() error { return second.PgConn().CancelRequest(ctx) })
}

// TestPoolDisabled: with the pool off every session is closed.
func TestPoolDisabled(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Pool = Pool{Enabled: false, MaxIdle: 5} })
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	conn, err := h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	pid := backendPID(t, ctx, conn)
	conn.Close(ctx)
	waitGone(t, h, pid)
	if n := h.srv.IdleUpstreamSessions(); n != 0 {
		t.Fatalf("%d idle upstream sessions with the pool off", n)
	}
}

// TestPoolPasswordRelayed: sessions of users that are not IAM-enabled are
// never pooled.
func TestPoolPasswordRelayed(t *testing.T) {
	h := newHarness(t, withPool(Pool{}))
	ctx := context.Background()
	conn, err := h.connect(ctx, relayUser, relayPassword)
	if err != nil {
		t.Fatal(err)
	}
	pid := backendPID(t, ctx, conn)
	conn.Close(ctx)
	waitGone(t, h, pid)
	if n := h.srv.IdleUpstreamSessions(); n != 0 {
		t.Fatalf("%d idle upstream sessions after a password-relayed session", n)
	}
}

// TestPoolShutdownAndUpdate: Shutdown closes the idle sessions; Update
// keeps them when the upstream is the same and flushes them when it is
// not; FlushPool closes them.
func TestPoolShutdownAndUpdate(t *testing.T) {
	h := newHarness(t, withPool(Pool{}))
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	ctx := context.Background()
	pooled := func() uint32 {
		t.Helper()
		conn, err := h.connect(ctx, "app", tok)
		if err != nil {
			t.Fatal(err)
		}
		pid := backendPID(t, ctx, conn)
		conn.Close(ctx)
		waitIdle(t, h, 1)
		return pid
	}

	// A session in use across the change below is not kept when it ends.
	busy, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	busyPID := backendPID(t, ctx, busy)
	pid := pooled()
	h.srv.Update(h.cfg)
	if n := h.srv.IdleUpstreamSessions(); n != 1 {
		t.Fatalf("an update with the same upstream left %d idle sessions, want 1", n)
	}
	moved := h.cfg
	_, port, _ := net.SplitHostPort(h.cfg.Upstream.Address)
	moved.Upstream.Address = net.JoinHostPort("localhost", port)
	h.srv.Update(moved)
	waitGone(t, h, pid)
	waitIdle(t, h, 0)
	busy.Close(ctx)
	waitGone(t, h, busyPID)
	waitIdle(t, h, 0)

	pid = pooled()
	h.srv.FlushPool()
	waitGone(t, h, pid)

	pid = pooled()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitGone(t, h, pid)
	waitIdle(t, h, 0)
}

// clientStream is a client's side of a session: extended and simple
// queries, a COPY, then Terminate.
func clientStream(t testing.TB) []byte {
	var b []byte
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "SELECT $1::int"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}},
		&pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "COPY t FROM STDIN"},
		&pgproto3.CopyData{Data: []byte("X\x00\x00\x00\x04")}, // looks like Terminate, is not
		&pgproto3.CopyDone{},
		&pgproto3.Terminate{},
	} {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// upstreamStream answers clientStream: the extended query inside a
// transaction, then the COPY after it.
func upstreamStream(t testing.TB) []byte {
	return append(upstreamInTransaction(t), encodeBackend(t,
		&pgproto3.CopyInResponse{},
		&pgproto3.CommandComplete{CommandTag: []byte("COPY 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'I'})...)
}

func upstreamInTransaction(t testing.TB) []byte {
	return encodeBackend(t,
		&pgproto3.ParseComplete{}, &pgproto3.BindComplete{},
		&pgproto3.DataRow{Values: [][]byte{[]byte("1")}},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")},
		&pgproto3.ReadyForQuery{TxStatus: 'T'})
}

func encodeBackend(t testing.TB, msgs ...pgproto3.BackendMessage) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// TestFrames: message boundaries, requests, ReadyForQuery and Terminate
// are found whatever the read sizes.
func TestFrames(t *testing.T) {
	cs, us := clientStream(t), upstreamStream(t)
	for step := 1; step <= len(cs)+1; step++ {
		var c clientFrames
		var upTo, at int
		terminated, whole := false, false
		for i := 0; i < len(cs) && !terminated; i += step {
			chunk := cs[i:min(i+step, len(cs))]
			upTo, terminated, whole = c.feed(chunk)
			at = i + upTo
		}
		wantWhole := step >= 5 && (len(cs)-5)/step == (len(cs)-1)/step
		if !terminated || at != len(cs) || whole != wantWhole || c.requests != 2 || c.unsynced || !c.atBoundary() {
			t.Fatalf("step %d: terminated %v at %d (len %d), whole %v (want %v), requests %d, unsynced %v",
				step, terminated, at, len(cs), whole, wantWhole, c.requests, c.unsynced)
		}
		var u upstreamFrames
		for i := 0; i < len(us); i += step {
			u.feed(us[i:min(i+step, len(us))])
		}
		if u.ready != 2 || u.status != 'I' || !u.atBoundary() || !u.idleAfter(&c) {
			t.Fatalf("step %d: ready %d status %q boundary %v", step, u.ready, u.status, u.atBoundary())
		}
	}

	// Cut short: mid-message upstream, unsynced extended protocol, a
	// transaction open, a length that cannot be.
	var u upstreamFrames
	u.feed(us[:len(us)-3])
	if u.atBoundary() {
		t.Error("boundary reported inside a message")
	}
	var c clientFrames
	c.feed(frame('P', []byte("\x00SELECT 1\x00\x00\x00")))
	if !c.unsynced {
		t.Error("Parse without Sync not noticed")
	}
	var tx upstreamFrames
	tx.feed(upstreamInTransaction(t))
	if !tx.atBoundary() || tx.status != 'T' || tx.idleAfter(&clientFrames{requests: 1}) {
		t.Errorf("transaction status %q not followed", tx.status)
	}
	var bad clientFrames
	if _, term, _ := bad.feed([]byte{'Q', 0, 0, 0, 2, 'X', 0, 0, 0, 4}); term || !bad.lost {
		t.Error("an impossible length did not lose the framing")
	}
}

// FuzzFrames: any stream, cut anywhere, leaves the framers in the same
// state as the whole stream, and never panics.
func FuzzFrames(f *testing.F) {
	f.Add(clientStream(f), uint8(3))
	f.Add(upstreamStream(f), uint8(7))
	f.Add([]byte("Z\x00\x00\x00\x05I"), uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		run := func(step int) string {
			var c clientFrames
			var u upstreamFrames
			var term []int
			for i := 0; i < len(stream); i += step {
				part := stream[i:min(i+step, len(stream))]
				u.feed(part)
				if c.terminated {
					continue
				}
				if upTo, ok, _ := c.feed(part); ok {
					term = append(term, i+upTo)
				}
			}
			return fmt.Sprint(c.requests, c.unsynced, c.lost, c.atBoundary(), term, u.ready, u.status, u.lost, u.atBoundary())
		}
		if a, b := run(len(stream)+1), run(int(chunk%16)+1); a != b {
			t.Fatalf("whole stream %s, in chunks of %d %s", a, chunk%16+1, b)
		}
	})
}

// TestUpstreamKeyExchange: the upstream leg offers post-quantum key
// exchange until a handshake shows the server does not take it, then only
// X25519 and the NIST curves; an operator's own choice is kept.
func TestUpstreamKeyExchange(t *testing.T) {
	st := &settings{upstream: Upstream{TLS: upstreamClientTLS(&tls.Config{MinVersion: tls.VersionTLS10})}}
	st.upstreamNoPQ = withoutPQKeyShare(st.upstream.TLS)
	if st.upstream.TLS.MinVersion != tls.VersionTLS12 {
		t.Errorf("upstream TLS floor %x, want TLS 1.2", st.upstream.TLS.MinVersion)
	}
	if st.upstreamTLSConfig() != st.upstream.TLS {
		t.Fatal("the first login does not offer post-quantum key exchange")
	}
	st.notePQ(st.upstream.TLS, tls.X25519MLKEM768)
	if st.upstreamTLSConfig() != st.upstream.TLS {
		t.Fatal("stopped offering post-quantum key exchange to a server that took it")
	}
	st.notePQ(st.upstream.TLS, tls.X25519)
	got := st.upstreamTLSConfig()
	if got == st.upstream.TLS || slices.Contains(got.CurvePreferences, tls.X25519MLKEM768) || !slices.Contains(got.CurvePreferences, tls.X25519) {
		t.Fatalf("after a server settled on X25519: curves %v", got.CurvePreferences)
	}

	own := &settings{upstream: Upstream{TLS: upstreamClientTLS(&tls.Config{CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}})}}
	own.upstreamNoPQ = withoutPQKeyShare(own.upstream.TLS)
	own.notePQ(own.upstream.TLS, tls.X25519)
	if own.upstreamTLSConfig() != own.upstream.TLS {
		t.Fatal("the operator's curve preferences were overridden")
	}

	// Against the real server: whatever it takes, the listener follows.
	h := newHarness(t)
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	ctx := context.Background()
	for range 2 {
		conn, err := h.connect(ctx, "app", tok)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
	}
	cur := h.srv.cur.Load()
	raw, err := net.Dial("tcp", h.pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc, err := upstreamTLS(ctx, raw, cur.upstream.TLS)
	if err != nil {
		t.Fatal(err)
	}
	takesPQ := tc.(*tls.Conn).ConnectionState().CurveID == tls.X25519MLKEM768
	if cur.pqDeclined.Load() == takesPQ {
		t.Fatalf("server takes post-quantum key exchange: %v; listener stopped offering it: %v", takesPQ, cur.pqDeclined.Load())
	}
}
