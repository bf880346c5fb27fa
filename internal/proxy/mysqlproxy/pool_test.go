package mysqlproxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/audit"
)

func withPool(p Pool) harnessOption {
	return func(c *Config) { c.Pool = p }
}

// waitIdle waits until the pool holds n sessions: a client's session goes
// back after the client has gone.
func (h *harness) waitIdle(t *testing.T, n int) {
	t.Helper()
	for range 1000 {
		if h.srv.IdleUpstreamSessions() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d idle upstream sessions, want %d\nlog:\n%s", h.srv.IdleUpstreamSessions(), n, h.logs)
}

// quit ends a raw session as clients do: COM_QUIT, then close.
func (rc *rawClient) quit() {
	rc.pc.seq = 0
	rc.pc.write([]byte{comQuit})
	rc.conn.Close()
}

func (rc *rawClient) connectionID(t *testing.T) string {
	t.Helper()
	id, err := rc.query("SELECT CONNECTION_ID()")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// mustQuery runs q and returns its one value.
func (rc *rawClient) mustQuery(t *testing.T, q string) string {
	t.Helper()
	v, err := rc.query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return v
}

// TestPoolReuse: an IAM client that quits leaves its upstream session to
// the next login of the same principal, user and settings, reset: the
// same upstream connection (CONNECTION_ID()), without the user variables,
// temporary tables, prepared statements and database of the previous
// client. KILL QUERY by CONNECTION_ID() still reaches it.
func TestPoolReuse(t *testing.T) {
	sink, path := openSink(t)
	h := newHarness(t, withPool(Pool{Enabled: true}), withAudit(sink, audit.StatementPolicy{}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := sqlRoot(t, h).ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS pool_other"); err != nil {
		t.Fatal(err)
	}
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")

	rc, err := h.rawLogin("app", tok)
	if err != nil {
		t.Fatalf("login: %v\n%s", err, h.logs)
	}
	first := rc.connectionID(t)
	for _, q := range []string{"SET @marker = 'first client'", "CREATE TEMPORARY TABLE scratch(x INT)",
		"PREPARE by_name FROM 'SELECT 1'", "SET SESSION sql_mode = ''", "USE pool_other"} {
		rc.mustQuery(t, q)
	}
	p, err := rc.command(append([]byte{comStmtPrepare}, "SELECT 2"...))
	if err != nil || p[0] != pktOK {
		t.Fatalf("COM_STMT_PREPARE: %x %v", p, err)
	}
	stmtID := binary.LittleEndian.Uint32(p[1:])
	if _, err := rc.pc.read(1 << 20); err != nil { // the column definition
		t.Fatal(err)
	}
	if _, err := rc.pc.read(1 << 20); err != nil { // EOF
		t.Fatal(err)
	}
	rc.quit()
	h.waitIdle(t, 1)

	rc, err = h.rawLogin("app", tok)
	if err != nil {
		t.Fatalf("second login: %v\n%s", err, h.logs)
	}
	if got := rc.connectionID(t); got != first {
		t.Fatalf("second login on upstream connection %s, want %s (reused)", got, first)
	}
	h.waitIdle(t, 0)
	if got := rc.mustQuery(t, "SELECT CONCAT_WS(',', @marker IS NULL, DATABASE(), @@sql_mode = @@GLOBAL.sql_mode, CURRENT_USER())"); got != "1,"+h.database+",1,app@%" {
		t.Fatalf("session state after reuse: %q", got)
	}
	if _, err := rc.query("SELECT * FROM scratch"); mysqlCode(err) != 1146 {
		t.Fatalf("the temporary table survived: %v", err)
	}
	if _, err := rc.query("EXECUTE by_name"); mysqlCode(err) != 1243 {
		t.Fatalf("the SQL prepared statement survived: %v", err)
	}
	exec := binary.LittleEndian.AppendUint32([]byte{comStmtExecute}, stmtID)
	p, err = rc.command(append(exec, 0, 1, 0, 0, 0))
	if err != nil || p[0] != pktERR || parseError(p).code != 1243 {
		t.Fatalf("the prepared statement survived: %x %v", p, err)
	}

	// KILL QUERY with the id CONNECTION_ID() gives, from another session.
	done := make(chan string, 1)
	go func() {
		v, err := rc.query("SELECT SLEEP(30)")
		if err != nil {
			v = err.Error()
		}
		done <- v
	}()
	root := sqlRoot(t, h)
	for {
		var n int
		if err := root.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ? AND INFO = 'SELECT SLEEP(30)'", first).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	other, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ExecContext(ctx, "KILL QUERY "+first); err != nil {
		t.Fatal(err)
	}
	other.Close()
	if v := <-done; v != "1" && !strings.Contains(v, "1317") {
		t.Fatalf("the killed query returned %q", v)
	}
	rc.quit()
	h.waitIdle(t, 2) // this session, and the one KILL QUERY ran in

	h.obs.mu.Lock()
	reused := h.obs.reused
	h.obs.mu.Unlock()
	if reused != 1 {
		t.Fatalf("%d reuses reported, want 1", reused)
	}
	// The audit trail names the upstream connection of both sessions.
	evs := events(t, path, 6)
	var pids []string
	for _, e := range evs {
		if e.EventName == audit.NameConnect {
			pids = append(pids, fmt.Sprint(e.ResponseElements["backendPid"]))
		}
	}
	if len(pids) != 3 || pids[0] != first || pids[1] != first || pids[2] == first {
		t.Fatalf("backendPid of the connect events %v, want %s twice, then another", pids, first)
	}
}

// TestPoolNotReused: what must never be reused is closed instead.
func TestPoolNotReused(t *testing.T) {
	h := newHarness(t, withPool(Pool{Enabled: true}))
	ctx := context.Background()
	root := sqlRoot(t, h)
	for _, stmt := range []string{"CREATE ROLE IF NOT EXISTS pool_role", "GRANT pool_role TO 'app'@'%'"} {
		if _, err := root.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	aliceID, aliceSecret := h.user("alice", connectPolicy("app"))
	bobID, bobSecret := h.user("bob", connectPolicy("app"))
	alice := h.sdkToken(h.endpoint, testRegion, "app", aliceID, aliceSecret, "")
	bob := h.sdkToken(h.endpoint, testRegion, "app", bobID, bobSecret, "")

	alive := func(id string) bool {
		var n int
		if err := root.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	// gone waits for the upstream to see its connection closed.
	gone := func(id string) {
		t.Helper()
		for range 1000 {
			if !alive(id) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("upstream connection %s still open", id)
	}

	for _, tc := range []struct {
		name string
		end  func(rc *rawClient)
	}{
		{"inside a transaction", func(rc *rawClient) { rc.mustQuery(t, "BEGIN"); rc.quit() }},
		{"without COM_QUIT", func(rc *rawClient) { rc.conn.Close() }},
		{"after SET ROLE", func(rc *rawClient) { rc.mustQuery(t, "SET ROLE pool_role"); rc.quit() }},
		{"with COM_CHANGE_USER", func(rc *rawClient) {
			change := append([]byte{comChangeUser}, "app\x00\x00"...)
			if p, err := rc.command(change); err != nil || p[0] != pktERR {
				t.Fatalf("COM_CHANGE_USER answered %x %v", p, err)
			}
		}},
		{"after COM_SET_OPTION", func(rc *rawClient) {
			// MYSQL_OPTION_MULTI_STATEMENTS_ON: connection state that
			// COM_RESET_CONNECTION does not restore.
			if p, err := rc.command([]byte{comSetOption, 0, 0}); err != nil || (p[0] != pktOK && p[0] != pktEOF) {
				t.Fatalf("COM_SET_OPTION answered %x %v", p, err)
			}
			rc.quit()
		}},
		{"with COM_QUIT while a query runs", func(rc *rawClient) {
			rc.pc.seq = 0
			rc.pc.write(append([]byte{comQuery}, "SELECT SLEEP(0.2)"...))
			rc.quit()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := h.rawLogin("app", alice)
			if err != nil {
				t.Fatal(err)
			}
			id := rc.connectionID(t)
			tc.end(rc)
			gone(id)
			if n := h.srv.IdleUpstreamSessions(); n != 0 {
				t.Fatalf("%d idle sessions", n)
			}
		})
	}

	t.Run("no database, then USE", func(t *testing.T) {
		rc, err := h.rawLoginTo("", "app", alice)
		if err != nil {
			t.Fatal(err)
		}
		id := rc.connectionID(t)
		rc.quit()
		h.waitIdle(t, 1) // without a database: kept
		rc, err = h.rawLoginTo("", "app", alice)
		if err != nil {
			t.Fatal(err)
		}
		if got := rc.connectionID(t); got != id {
			t.Fatalf("not reused: %s, then %s", id, got)
		}
		// No command unselects a database: a session that chose one is
		// not what a login without one gets.
		rc.mustQuery(t, "USE "+h.database)
		rc.quit()
		gone(id)
	})

	t.Run("another principal", func(t *testing.T) {
		rc, err := h.rawLogin("app", alice)
		if err != nil {
			t.Fatal(err)
		}
		id := rc.connectionID(t)
		rc.quit()
		h.waitIdle(t, 1)
		rc, err = h.rawLogin("app", bob)
		if err != nil {
			t.Fatal(err)
		}
		if got := rc.connectionID(t); got == id {
			t.Fatal("bob got alice's upstream session")
		}
		rc.quit()
		h.waitIdle(t, 2)
	})

	t.Run("another character set", func(t *testing.T) {
		cfg := h.driverConfig("app", alice)
		cfg.Collation = "latin1_swedish_ci"
		conn, err := h.open(cfg).Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var id, charset string
		if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID(), @@character_set_client").Scan(&id, &charset); err != nil {
			t.Fatal(err)
		}
		if charset != "latin1" || h.srv.IdleUpstreamSessions() != 2 {
			t.Fatalf("character set %q, %d idle sessions (none taken)", charset, h.srv.IdleUpstreamSessions())
		}
	})

	t.Run("password relayed", func(t *testing.T) {
		relay := h.driverConfig(relayUser, relayPassword)
		relay.AllowCleartextPasswords = false
		db := h.open(relay)
		var id string
		if err := db.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
			t.Fatal(err)
		}
		db.Close()
		gone(id)
		if n := h.srv.IdleUpstreamSessions(); n != 2 {
			t.Fatalf("%d idle sessions, want the 2 of before", n)
		}
	})

	t.Run("killed while idle", func(t *testing.T) {
		h.srv.FlushPool()
		h.waitIdle(t, 0)
		rc, err := h.rawLogin("app", alice)
		if err != nil {
			t.Fatal(err)
		}
		id := rc.connectionID(t)
		rc.quit()
		h.waitIdle(t, 1)
		if _, err := root.ExecContext(ctx, "KILL CONNECTION "+id); err != nil {
			t.Fatal(err)
		}
		// Whether the pool noticed yet or not, the login succeeds.
		rc, err = h.rawLogin("app", alice)
		if err != nil {
			t.Fatalf("login after the pooled session was killed: %v", err)
		}
		if got := rc.connectionID(t); got == id {
			t.Fatal("the killed session was reused")
		}
		rc.quit()
	})
}

// TestPoolLifetime: idle timeout, max lifetime, flush on Update with a new
// upstream, and Close empty the pool and close its sessions.
func TestPoolLifetime(t *testing.T) {
	h := newHarness(t, withPool(Pool{Enabled: true, IdleTimeout: 300 * time.Millisecond}))
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	session := func() string {
		t.Helper()
		rc, err := h.rawLogin("app", tok)
		if err != nil {
			t.Fatal(err)
		}
		id := rc.connectionID(t)
		rc.quit()
		return id
	}
	session()
	h.waitIdle(t, 1)
	h.waitIdle(t, 0) // the idle timeout expires it

	cfg := h.cfg
	cfg.Pool = Pool{Enabled: true, MaxLifetime: time.Nanosecond}
	h.srv.Update(cfg)
	session()
	h.logs.find(t, "upstream session closed, not pooled: the pool is off or the session reached its max lifetime")
	if n := h.srv.IdleUpstreamSessions(); n != 0 {
		t.Fatalf("a session past its max lifetime was kept")
	}

	cfg.Pool = Pool{Enabled: true}
	h.srv.Update(cfg)
	session()
	h.waitIdle(t, 1)
	moved := cfg
	moved.Upstream.Address = strings.Replace(cfg.Upstream.Address, "127.0.0.1", "localhost", 1)
	h.srv.Update(moved)
	h.waitIdle(t, 0)

	first := session()
	h.waitIdle(t, 1)
	if second := session(); second != first {
		t.Fatalf("not reused after Update: %s, then %s", first, second)
	}
	h.waitIdle(t, 1)
	h.srv.Close()
	h.waitIdle(t, 0)
	root := sqlRoot(t, h)
	for range 1000 {
		var n int
		root.QueryRow("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = " + first).Scan(&n)
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the pooled session survived Close")
}

// TestReadRow: the check after a reset reads values and NULLs in both
// framings.
func TestReadRow(t *testing.T) {
	for _, caps := range []uint64{capProtocol41, capProtocol41 | capDeprecateEOF} {
		c := &conversation{caps: caps}
		var b []byte
		for i, p := range c.resultSet(false, 2, []string{"db", "role"}, append(lenencString("orders"), 0xfb)) {
			b = append(b, packet(byte(i+1), p)...)
		}
		row, err := readRow(&packetConn{rw: &rwBuf{r: strings.NewReader(string(b))}, seq: 1}, caps, 2)
		if err != nil || len(row) != 2 || row[0] == nil || *row[0] != "orders" || row[1] != nil {
			t.Fatalf("caps %#x: %v %v", caps, row, err)
		}
	}
	_, err := readRow(&packetConn{rw: &rwBuf{r: strings.NewReader(string(packet(1, []byte("\xff\x28\x05#42000no such function"))))}, seq: 1}, capProtocol41, 1)
	if mysqlCode(err) != 1320 {
		t.Fatalf("ERR: %v", err)
	}
}
