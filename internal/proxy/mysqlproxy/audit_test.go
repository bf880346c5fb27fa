package mysqlproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/testdb"
)

// withAudit gives the listener an audit log.
func withAudit(sink audit.Emitter, statements audit.StatementPolicy) harnessOption {
	return func(c *Config) {
		c.Audit = sink
		c.Statements = statements
	}
}

// openSink opens an audit log in a temp dir, closed after the test.
func openSink(t *testing.T) (*audit.FileSink, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	sink, err := audit.OpenFile(path, audit.FileOptions{FailClosed: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	return sink, path
}

// events reads the log, waiting until it holds at least n events: the
// disconnect of a session is written after the client has gone.
func events(t *testing.T, path string, n int) []*audit.Event {
	t.Helper()
	var out []*audit.Event
	for range 500 {
		out = out[:0]
		if err := audit.Read(path, func(r audit.Record) error { out = append(out, r.Event); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(out) >= n {
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("audit log holds %d events, want %d: %v", len(out), n, names(out))
	return nil
}

func names(evs []*audit.Event) []string {
	var out []string
	for _, e := range evs {
		n := e.EventName
		if e.ErrorCode != "" {
			n += "(" + e.ErrorCode + ")"
		}
		out = append(out, n)
	}
	return out
}

// A MariaDB server of this package's own, for what the shared one does
// not have: performance_schema (which shows connection attributes) and
// room for statements of more than 16 MiB.
var (
	ownMariaDBOnce sync.Once
	ownMariaDB     *testdb.MariaDBServer
	ownMariaDBErr  error
)

func mariaDBWithPerformanceSchema(t *testing.T) *testdb.MariaDBServer {
	t.Helper()
	ownMariaDBOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		ownMariaDB, ownMariaDBErr = testdb.StartMariaDB(ctx, testdb.MariaDBOptions{TLS: true,
			Args: []string{"--performance-schema=ON", "--max-allowed-packet=64M"}})
	})
	if ownMariaDBErr != nil {
		if errors.Is(ownMariaDBErr, testdb.ErrNotInstalled) && os.Getenv("CI") != "true" {
			t.Skipf("MariaDB not available (run scripts/deps.sh): %v", ownMariaDBErr)
		}
		t.Fatalf("MariaDB is required (run scripts/deps.sh): %v", ownMariaDBErr)
	}
	return ownMariaDB
}

// TestAuditTrail runs scripted logins — an IAM user's with go-sql-driver
// and with the mariadb client, a refused one, one without TLS, a relayed
// password login and a wrong password — and checks the log holds exactly
// the expected events in order, attributed, with no credential; and that
// the upstream sees the principal in the session's connection attributes.
func TestAuditTrail(t *testing.T) {
	sink, path := openSink(t)
	h := newHarnessOn(t, mariaDBWithPerformanceSchema(t), withAudit(sink, audit.StatementPolicy{}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	aliceID, aliceSecret := h.user("alice", connectPolicy("app"))
	bobID, bobSecret := h.user("bob", connectPolicy("report"))
	secrets := []string{aliceSecret, bobSecret, relayPassword, userPass["app"]}

	// 1. alice logs in as app with go-sql-driver.
	tok := h.sdkToken(h.endpoint, testRegion, "app", aliceID, aliceSecret, "")
	secrets = append(secrets, tok)
	conn, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatalf("login: %v\n%s", err, h.logs)
	}
	var connID int64
	var principal string
	if err := conn.QueryRowContext(ctx, `SELECT CONNECTION_ID(), ATTR_VALUE FROM performance_schema.session_connect_attrs
		WHERE PROCESSLIST_ID = CONNECTION_ID() AND ATTR_NAME = 'iamdb_principal'`).Scan(&connID, &principal); err != nil {
		t.Fatalf("the principal's connection attribute: %v", err)
	}
	if principal != "arn:aws:iam::123456789012:user/alice" {
		t.Fatalf("iamdb_principal = %q", principal)
	}
	var client string
	if err := conn.QueryRowContext(ctx, `SELECT ATTR_VALUE FROM performance_schema.session_connect_attrs
		WHERE PROCESSLIST_ID = CONNECTION_ID() AND ATTR_NAME = '_client_name'`).Scan(&client); err != nil || client != "Go-MySQL-Driver" {
		t.Fatalf("the client's own connection attributes on the upstream: %q %v", client, err)
	}
	conn.Close()
	events(t, path, 2)

	// 2. bob may not log in as app.
	badTok := h.sdkToken(h.endpoint, testRegion, "app", bobID, bobSecret, "")
	secrets = append(secrets, badTok)
	if _, err := h.connect(ctx, "app", badTok); err == nil {
		t.Fatal("bob logged in as app")
	}
	events(t, path, 3)

	// 3. Without TLS the token is never asked for: no connect event.
	cfg := h.driverConfig("app", tok)
	cfg.TLSConfig = "false"
	if _, err := h.open(cfg).ExecContext(ctx, "DO 1"); err == nil {
		t.Fatal("login without TLS accepted")
	}
	h.obs.wait(t, ResultTLSRequired, 1)

	// 4. The mariadb client, with the token of alice.
	if out, err := h.mariadbCLI(t, "app", tok, h.database, "-e", "SELECT 1"); err != nil {
		t.Fatalf("mariadb: %v\n%s", err, out)
	}
	events(t, path, 5)

	// 5. A relayed password login, and a wrong password.
	relay := h.driverConfig(relayUser, relayPassword)
	relay.AllowCleartextPasswords = false
	db := h.open(relay)
	if _, err := db.ExecContext(ctx, "DO 1"); err != nil {
		t.Fatalf("relayed login: %v", err)
	}
	db.Close()
	events(t, path, 7)
	relay.Passwd = "not-" + relayPassword
	if _, err := h.open(relay).ExecContext(ctx, "DO 1"); err == nil {
		t.Fatal("wrong password accepted")
	}

	evs := events(t, path, 8)
	want := []string{"connect", "disconnect", "connect(AccessDenied)", "connect", "disconnect", "connect", "disconnect", "connect(UpstreamRejected)"}
	if got := names(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	ok, end, refused, cli, cliEnd, pw, pwEnd, wrong := evs[0], evs[1], evs[2], evs[3], evs[4], evs[5], evs[6], evs[7]
	u := ok.UserIdentity
	if ok.EventSource != audit.SourceDB || u.Type != "IAMUser" || u.ARN != "arn:aws:iam::123456789012:user/alice" || u.AccessKeyID != aliceID {
		t.Errorf("connect userIdentity %+v", u)
	}
	rp := ok.RequestParameters
	if rp["instance"] != "orders" || rp["dbUser"] != "app" || rp["database"] != h.database ||
		rp["resource"] != "arn:aws:rds-db:us-east-1:123456789012:dbuser:"+testResource+"/app" || rp["tokenId"] == "" {
		t.Errorf("connect requestParameters %v", rp)
	}
	if !strings.HasPrefix(ok.UserAgent, "Go-MySQL-Driver") || ok.SourceIPAddress != "127.0.0.1" || ok.TLSDetails == nil ||
		ok.TLSDetails.TLSVersion != "TLSv1.3" || ok.TLSDetails.ClientProvidedHostHeader != "localhost" {
		t.Errorf("connect userAgent %q source %q tls %+v", ok.UserAgent, ok.SourceIPAddress, ok.TLSDetails)
	}
	if ok.Decision == nil || ok.Decision.Effect != "Allow" || ok.Decision.Statement != "user/alice/inline/connect/Connect" {
		t.Errorf("connect decision %+v", ok.Decision)
	}
	// backendPid is the upstream's connection id: CONNECTION_ID(), the
	// id KILL and the processlist use.
	if pid, _ := ok.ResponseElements["backendPid"].(float64); int64(pid) != connID || ok.ResponseElements["sessionId"] == "" {
		t.Errorf("connect responseElements %v, want backendPid %d", ok.ResponseElements, connID)
	}
	if end.ResponseElements["sessionId"] != ok.ResponseElements["sessionId"] || end.ResponseElements["closedBy"] != "client" ||
		end.ResponseElements["bytesFromClient"].(float64) <= 0 || end.ResponseElements["bytesToClient"].(float64) <= 0 ||
		end.UserIdentity.ARN != u.ARN {
		t.Errorf("disconnect %+v %v", end.UserIdentity, end.ResponseElements)
	}
	if refused.UserIdentity.ARN != "arn:aws:iam::123456789012:user/bob" || refused.ErrorMessage == "" ||
		refused.Decision == nil || refused.Decision.Effect != "Deny" || refused.RequestParameters["tokenId"] == "" {
		t.Errorf("refused connect %+v %q %+v", refused.UserIdentity, refused.ErrorMessage, refused.Decision)
	}
	if cli.UserIdentity.ARN != u.ARN || cli.UserAgent == "" || strings.HasPrefix(cli.UserAgent, "Go-MySQL-Driver") || cliEnd.ResponseElements["closedBy"] != "client" {
		t.Errorf("mariadb client's events: userAgent %q, %v", cli.UserAgent, cliEnd.ResponseElements)
	}
	if pw.UserIdentity.Type != audit.TypeUnknown || pw.UserIdentity.UserName != relayUser || pw.RequestParameters["tokenId"] != nil ||
		pwEnd.ResponseElements["closedBy"] != "client" {
		t.Errorf("relayed password login %+v %v", pw.UserIdentity, pwEnd.ResponseElements)
	}
	if wrong.UserIdentity.UserName != relayUser || !strings.Contains(wrong.ErrorMessage, "1045") {
		t.Errorf("wrong password: %+v %q", wrong.UserIdentity, wrong.ErrorMessage)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(secrets, "X-Amz-Signature", "X-Amz-Credential") {
		if strings.Contains(string(raw), s) {
			t.Fatalf("the audit log holds a credential (%.12s…)", s)
		}
	}
	if res, err := audit.Verify(path); err != nil || res.Events != 8 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}

// TestAuditClosedByUpstream: a session the upstream ends (KILL from
// another connection) is recorded as closed by the upstream; one that the
// listener's Close ends, as closed by shutdown.
func TestAuditClosedByUpstream(t *testing.T) {
	sink, path := openSink(t)
	h := newHarness(t, withAudit(sink, audit.StatementPolicy{}))
	ctx := context.Background()
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	conn, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var connID int64
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&connID); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlRoot(t, h).ExecContext(ctx, "KILL CONNECTION "+strconv.FormatInt(connID, 10)); err != nil {
		t.Fatal(err)
	}
	evs := events(t, path, 2)
	if evs[1].EventName != "disconnect" || evs[1].ResponseElements["closedBy"] != "upstream" {
		t.Fatalf("after KILL: %v %v", names(evs), evs[1].ResponseElements)
	}

	conn2, err := h.connect(ctx, "app", tok)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	events(t, path, 3)
	h.srv.Close()
	evs = events(t, path, 4)
	if evs[3].EventName != "disconnect" || evs[3].ResponseElements["closedBy"] != "shutdown" {
		t.Fatalf("after Close: %v %v", names(evs), evs[3].ResponseElements)
	}
}

// failingEmitter is an audit log that cannot write.
type failingEmitter struct{}

func (failingEmitter) Emit(context.Context, *audit.Event) error { return errors.New("disk full") }

// TestAuditFailClosed: when the audit log refuses the connect event, the
// login is refused with the generic error and the reason is logged.
func TestAuditFailClosed(t *testing.T) {
	h := newHarness(t, withAudit(failingEmitter{}, audit.StatementPolicy{}))
	id, secret := h.user("alice", connectPolicy("app"))
	ctx := context.Background()
	_, err := h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if code, msg := driverErr(err); code != erAccessDenied || msg != "Access denied for user 'app'@'127.0.0.1' (using password: YES)" {
		t.Fatalf("a login the audit log could not record: %v", err)
	}
	// A relayed password login is refused the same way.
	relay := h.driverConfig(relayUser, relayPassword)
	relay.AllowCleartextPasswords = false
	_, err = h.open(relay).ExecContext(ctx, "DO 1")
	if code, _ := driverErr(err); code != erAccessDenied {
		t.Fatalf("a relayed login the audit log could not record: %v", err)
	}
	h.logs.find(t, "login refused: the audit log cannot record it", "reason", ResultAuditUnavailable)
	h.obs.wait(t, ResultAuditUnavailable, 2)
	if n := h.srv.ActiveSessions(); n != 0 {
		t.Fatalf("%d sessions active", n)
	}
}

// TestUserAgent: the connect event names the client program.
func TestUserAgent(t *testing.T) {
	attrs := withAttr(withAttr(nil, "_client_name", "libmariadb"), "_client_version", "3.3.8")
	if got := userAgent(attrs); got != "libmariadb/3.3.8" {
		t.Errorf("userAgent = %q", got)
	}
	if got := userAgent(withAttr(attrs, "program_name", "mysqldump")); got != "mysqldump" {
		t.Errorf("userAgent with program_name = %q", got)
	}
	if got := userAgent([]byte{0xfc, 0xff}); got != "" {
		t.Errorf("userAgent of malformed attributes = %q", got)
	}
}

// statementEvents returns the statement events of evs.
func statementEvents(evs []*audit.Event) []*audit.Event {
	var out []*audit.Event
	for _, e := range evs {
		if e.EventName == audit.NameStatement {
			out = append(out, e)
		}
	}
	return out
}

// TestStatementAudit: statements sent through go-sql-driver (prepared on
// the server, and interpolated by the client) and the mariadb client are
// recorded one by one, attributed to the principal and session, with
// bound values; framing holds through a statement of more than 16 MiB
// and a LOAD DATA LOCAL file whose packets look like commands; another
// database user's statements are not recorded.
func TestStatementAudit(t *testing.T) {
	sink, path := openSink(t)
	h := newHarnessOn(t, mariaDBWithPerformanceSchema(t), withAudit(sink, audit.StatementPolicy{Users: []string{"app"}, Parameters: true}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, secret := h.user("alice", connectPolicy("app", "report"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")

	cfg := h.driverConfig("app", tok)
	cfg.AllowAllFiles = true
	db := h.open(cfg)
	db.SetMaxOpenConns(1)
	var sum int
	var s string
	if err := db.QueryRowContext(ctx, "SELECT ? + 1, ?", 41, "bound text").Scan(&sum, &s); err != nil || sum != 42 || s != "bound text" {
		t.Fatalf("prepared query: %d %q %v\n%s", sum, s, err, h.logs)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE audited(id INT, name TEXT, price DOUBLE, at DATETIME(6))"); err != nil {
		t.Fatal(err)
	}
	stmt, err := db.PrepareContext(ctx, "INSERT INTO audited VALUES (?, ?, ?, ?)")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 22, 1, 2, 3, 456000, time.UTC)
	for i := range 2 {
		if _, err := stmt.ExecContext(ctx, i, nil, 1.5, at); err != nil {
			t.Fatal(err)
		}
	}
	stmt.Close()
	// More than 16 MiB: the client sends it in two packets.
	big := "SELECT LENGTH('" + strings.Repeat("x", 17<<20) + "')"
	var n int
	if err := db.QueryRowContext(ctx, big).Scan(&n); err != nil || n != 17<<20 {
		t.Fatalf("big statement: %d %v", n, err)
	}
	// A file whose packets start with COM_QUERY's code, some numbered 0.
	var file strings.Builder
	for i := range 40000 {
		fmt.Fprintf(&file, "\x03SELECT 'from the file %05d'\n", i)
	}
	mysql.RegisterReaderHandler("audited", func() io.Reader { return strings.NewReader(file.String()) })
	defer mysql.DeregisterReaderHandler("audited")
	if _, err := db.ExecContext(ctx, "CREATE TABLE file_lines(line TEXT)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "LOAD DATA LOCAL INFILE 'Reader::audited' INTO TABLE file_lines"); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM file_lines").Scan(&n); err != nil || n != 40000 {
		t.Fatalf("loaded %d lines: %v", n, err)
	}
	if err := db.QueryRowContext(ctx, "SELECT PASSWORD('hunter2-literal')").Scan(&s); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// The client interpolates the values: plain COM_QUERY.
	icfg := h.driverConfig("app", tok)
	icfg.InterpolateParams = true
	idb := h.open(icfg)
	if err := idb.QueryRowContext(ctx, "SELECT ?, ?", 7, "it's").Scan(&n, &s); err != nil {
		t.Fatal(err)
	}
	idb.Close()

	if out, err := h.mariadbCLI(t, "app", tok, h.database, "-e", "SELECT 'from the cli'; SELECT 2"); err != nil {
		t.Fatalf("mariadb: %v\n%s", err, out)
	}

	// report is not under statement audit.
	rdb := h.open(h.driverConfig("report", h.sdkToken(h.endpoint, testRegion, "report", id, secret, "")))
	if _, err := rdb.ExecContext(ctx, "SELECT 'not audited'"); err != nil {
		t.Fatal(err)
	}
	rdb.Close()

	var evs []*audit.Event
	for range 300 {
		evs = events(t, path, 1)
		if strings.Count(fmt.Sprint(names(evs)), "disconnect") >= 4 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	type rec struct {
		text, protocol, name, params string
		truncated                    bool
	}
	var got []rec
	for _, e := range statementEvents(evs) {
		rp := e.RequestParameters
		if e.UserIdentity.ARN != "arn:aws:iam::123456789012:user/alice" || rp["dbUser"] != "app" || e.ResponseElements["sessionId"] == "" {
			t.Errorf("statement not attributed: %+v %v", e.UserIdentity, rp)
		}
		r := rec{text: rp["statement"].(string), protocol: fmt.Sprint(rp["protocol"]), name: fmt.Sprint(rp["preparedStatement"])}
		if ps, ok := rp["parameters"]; ok {
			r.params = fmt.Sprint(ps)
		}
		r.truncated = rp["statementTruncated"] == true
		got = append(got, r)
	}
	find := func(text string) []rec {
		var out []rec
		for _, r := range got {
			if r.text == text {
				out = append(out, r)
			}
		}
		return out
	}
	if rs := find("SELECT ? + 1, ?"); len(rs) != 1 || rs[0].protocol != "execute" || rs[0].params != "[41 bound text]" || rs[0].name == "<nil>" {
		t.Errorf("prepared query: %+v", rs)
	}
	inserts := find("INSERT INTO audited VALUES (?, ?, ?, ?)")
	if len(inserts) != 2 || inserts[0].params != "[0 <nil> 1.5 2026-11-22 01:02:03.000456]" || inserts[1].params != "[1 <nil> 1.5 2026-11-22 01:02:03.000456]" ||
		inserts[0].name != inserts[1].name {
		t.Errorf("two executions of one prepared INSERT: %+v", inserts)
	}
	var bigSeen bool
	for _, r := range got {
		if strings.HasPrefix(r.text, "SELECT LENGTH('xxx") {
			bigSeen = r.truncated && len(r.text) == audit.MaxStatementText && r.protocol == "query"
		}
		if strings.Contains(r.text, "from the file") {
			t.Errorf("file contents recorded as a statement: %.60q", r.text)
		}
		if strings.Contains(r.text, "not audited") {
			t.Error("a statement of a user without statement audit was recorded")
		}
		if strings.Contains(r.text, "hunter2") {
			t.Errorf("a password literal was recorded: %q", r.text)
		}
	}
	if !bigSeen {
		t.Error("no truncated event for the statement of more than 16 MiB")
	}
	for _, want := range []string{"LOAD DATA LOCAL INFILE 'Reader::audited' INTO TABLE file_lines", "SELECT COUNT(*) FROM file_lines",
		"SELECT PASSWORD('***')", "SELECT 7, 'it\\'s'", "SELECT 'from the cli'", "SELECT 2"} {
		if rs := find(want); len(rs) != 1 || rs[0].protocol != "query" {
			t.Errorf("statement %q recorded as %+v", want, rs)
		}
	}
	// A session's statements sit between its connect and disconnect.
	if evs[0].EventName != "connect" || evs[1].EventName != "statement" {
		t.Errorf("events begin %v", names(evs[:2]))
	}
	if strings.Contains(h.logs.String(), "statement audit no longer follows") {
		t.Errorf("the response tracker lost track:\n%s", h.logs)
	}
	if _, err := audit.Verify(path); err != nil {
		t.Fatal(err)
	}
}
