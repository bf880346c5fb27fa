package pgproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssts "github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/sts"
)

// withAudit gives the listener a file audit log.
func withAudit(sink audit.Emitter, statements audit.StatementPolicy) harnessOption {
	return func(c *Config) {
		c.Audit = sink
		c.Statements = statements
	}
}

// openSink opens an audit log in a temp dir, closed after the harness.
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
	t.Fatalf("audit log holds %d events, want %d", len(out), n)
	return nil
}

func names(evs []*audit.Event) []string {
	var out []string
	for _, e := range evs {
		n := e.EventSource + ":" + e.EventName
		if e.ErrorCode != "" {
			n += "(" + e.ErrorCode + ")"
		}
		out = append(out, n)
	}
	return out
}

// TestAuditTrail runs a scripted session — an IAM user's login, a refused
// login, AssumeRole through the STS API with the AWS SDK, a login with the
// role session's token — and checks the log holds exactly the expected
// events in order, with the principal filled in, and no credential.
func TestAuditTrail(t *testing.T) {
	sink, path := openSink(t)
	h := newHarness(t, withAudit(sink, audit.StatementPolicy{}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	aliceID, aliceSecret := h.user("alice", connectPolicy("app"))
	if err := h.store.PutInlinePolicy(ctx, identity.UserRef(testAccount, "alice"), "assume",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"],"Resource":"*"}]}`); err != nil {
		t.Fatal(err)
	}
	bobID, bobSecret := h.user("bob", connectPolicy("report"))
	var secrets []string
	secrets = append(secrets, aliceSecret, bobSecret)
	for _, p := range rolePass {
		secrets = append(secrets, p)
	}

	// 1. alice logs in as app.
	tok := h.sdkToken(h.endpoint, testRegion, "app", aliceID, aliceSecret, "")
	secrets = append(secrets, tok)
	conn, err := pgx.ConnectConfig(ctx, h.pgxConfig("app", tok, "application_name=orders-api"))
	if err != nil {
		t.Fatalf("login: %v\n%s", err, h.logs)
	}
	var arn string
	if err := conn.QueryRow(ctx, "SELECT current_setting('iamdb.principal')").Scan(&arn); err != nil || arn != "arn:aws:iam::123456789012:user/alice" {
		t.Fatalf("iamdb.principal on the upstream = %q, %v", arn, err)
	}
	conn.Close(ctx)
	events(t, path, 2)

	// 2. bob may not log in as app.
	badTok := h.sdkToken(h.endpoint, testRegion, "app", bobID, bobSecret, "")
	secrets = append(secrets, badTok)
	if c, err := h.connect(ctx, "app", badTok); err == nil {
		c.Close(ctx)
		t.Fatal("bob logged in as app")
	}
	events(t, path, 3)

	// 3. alice assumes a role through the STS API with the AWS SDK.
	if _, err := h.store.CreateRole(ctx, identity.Role{AccountID: testAccount, Name: "db-role", TrustPolicy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
		"Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"]}]}`}); err != nil {
		t.Fatal(err)
	}
	if err := h.store.PutInlinePolicy(ctx, identity.RoleRef(testAccount, "db-role"), "connect", connectPolicy("app")); err != nil {
		t.Fatal(err)
	}
	svc, err := sts.New(sts.Config{Store: h.store, Sealer: h.sealer, Region: testRegion, OnCall: func(rec sts.CallRecord) {
		if err := sink.Emit(context.Background(), audit.STSEvent(rec)); err != nil {
			t.Errorf("STS event: %v", err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(svc)
	defer api.Close()
	client := awssts.NewFromConfig(aws.Config{Region: testRegion, RetryMaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider(aliceID, aliceSecret, "")},
		func(o *awssts.Options) { o.BaseEndpoint = aws.String(api.URL) })
	out, err := client.AssumeRole(ctx, &awssts.AssumeRoleInput{
		RoleArn: aws.String("arn:aws:iam::123456789012:role/db-role"), RoleSessionName: aws.String("alice-session"),
		SourceIdentity: aws.String("alice@example.com"), Tags: []ststypes.Tag{{Key: aws.String("team"), Value: aws.String("payments")}},
	})
	if err != nil {
		t.Fatalf("AssumeRole: %v", err)
	}
	c := out.Credentials
	secrets = append(secrets, *c.SecretAccessKey, *c.SessionToken)
	events(t, path, 4)

	// 4. A login with the role session's token.
	roleTok := h.sdkToken(h.endpoint, testRegion, "app", *c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken)
	secrets = append(secrets, roleTok)
	conn, err = h.connect(ctx, "app", roleTok)
	if err != nil {
		t.Fatalf("role session login: %v\n%s", err, h.logs)
	}
	conn.Exec(ctx, "SELECT 1")
	conn.Close(ctx)

	evs := events(t, path, 6)
	want := []string{"rds-db.iamdb:connect", "rds-db.iamdb:disconnect", "rds-db.iamdb:connect(AccessDenied)",
		"sts.iamdb:AssumeRole", "rds-db.iamdb:connect", "rds-db.iamdb:disconnect"}
	if got := names(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}

	ok, end, refused, assume, roleOK, roleEnd := evs[0], evs[1], evs[2], evs[3], evs[4], evs[5]
	u := ok.UserIdentity
	if u.Type != "IAMUser" || u.ARN != "arn:aws:iam::123456789012:user/alice" || u.UserName != "alice" || u.AccessKeyID != aliceID ||
		!strings.HasPrefix(u.PrincipalID, "AIDA") || u.AccountID != testAccount {
		t.Errorf("connect userIdentity %+v", u)
	}
	rp := ok.RequestParameters
	if rp["instance"] != "orders" || rp["dbUser"] != "app" || rp["database"] != h.database ||
		rp["resource"] != "arn:aws:rds-db:us-east-1:123456789012:dbuser:"+testResource+"/app" || rp["tokenId"] == "" {
		t.Errorf("connect requestParameters %v", rp)
	}
	if ok.UserAgent != "orders-api" || ok.SourceIPAddress != "127.0.0.1" || ok.TLSDetails == nil || ok.TLSDetails.TLSVersion != "TLSv1.3" ||
		ok.TLSDetails.CipherSuite == "" || ok.TLSDetails.ClientProvidedHostHeader != "localhost" {
		t.Errorf("connect userAgent %q source %q tls %+v", ok.UserAgent, ok.SourceIPAddress, ok.TLSDetails)
	}
	if ok.Decision == nil || ok.Decision.Effect != "Allow" || ok.Decision.Statement != "user/alice/inline/connect/Connect" {
		t.Errorf("connect decision %+v", ok.Decision)
	}
	if pid, _ := ok.ResponseElements["backendPid"].(float64); pid <= 0 || ok.ResponseElements["sessionId"] == "" {
		t.Errorf("connect responseElements %v", ok.ResponseElements)
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
	if assume.UserIdentity.ARN != u.ARN || assume.RequestParameters["roleArn"] != "arn:aws:iam::123456789012:role/db-role" ||
		assume.ResponseElements["credentials"].(map[string]any)["accessKeyId"] != *c.AccessKeyId {
		t.Errorf("AssumeRole event %+v %v %v", assume.UserIdentity, assume.RequestParameters, assume.ResponseElements)
	}
	ru := roleOK.UserIdentity
	if ru.Type != "AssumedRole" || ru.ARN != "arn:aws:sts::123456789012:assumed-role/db-role/alice-session" || ru.AccessKeyID != *c.AccessKeyId ||
		ru.SessionContext == nil || ru.SessionContext.SessionIssuer.ARN != "arn:aws:iam::123456789012:role/db-role" ||
		ru.SessionContext.SessionIssuer.UserName != "db-role" || ru.SessionContext.SourceIdentity != "alice@example.com" ||
		ru.SessionContext.SessionTags["team"] != "payments" || ru.SessionContext.Attributes.CreationDate == "" {
		t.Errorf("role session userIdentity %+v %+v", ru, ru.SessionContext)
	}
	if roleOK.Decision == nil || roleOK.Decision.Statement != "role/db-role/inline/connect/Connect" || roleEnd.UserIdentity.ARN != ru.ARN {
		t.Errorf("role session decision %+v", roleOK.Decision)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range append(secrets, "X-Amz-Signature", "X-Amz-Security-Token") {
		if strings.Contains(string(raw), s) {
			t.Fatalf("the audit log holds a credential (%.12s…)", s)
		}
	}
	if res, err := audit.Verify(path); err != nil || res.Events != 6 {
		t.Fatalf("Verify = %+v, %v", res, err)
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
	c, err := h.connect(ctx, "app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	if err == nil {
		c.Close(ctx)
		t.Fatal("a login the audit log could not record was accepted")
	}
	if pgCode(err) != "28P01" || !strings.Contains(pgMessage(err), "PAM authentication failed") {
		t.Fatalf("client saw %v", err)
	}
	h.logs.find(t, "login refused: the audit log cannot record it", "reason", ResultAuditUnavailable)
	h.obs.wait(t, ResultAuditUnavailable, 1)
}

// statementLog collects statement events.
func statements(evs []*audit.Event) []*audit.Event {
	var out []*audit.Event
	for _, e := range evs {
		if e.EventName == audit.NameStatement {
			out = append(out, e)
		}
	}
	return out
}

// TestStatementAudit: simple and extended protocol statements through pgx
// and psql's statements are recorded one by one, attributed to the
// principal and session; another database user's are not.
func TestStatementAudit(t *testing.T) {
	sink, path := openSink(t)
	h := newHarness(t, withAudit(sink, audit.StatementPolicy{Users: []string{"app"}, Parameters: true}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, secret := h.user("alice", connectPolicy("app", "report"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")

	conn, err := pgx.ConnectConfig(ctx, h.pgxConfig("app", tok, "application_name=orders-api"))
	if err != nil {
		t.Fatalf("login: %v\n%s", err, h.logs)
	}
	if _, err := conn.PgConn().Exec(ctx, "SELECT 'simple protocol'").ReadAll(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // a cached prepared statement: one Parse, two executions
		var s string
		if err := conn.QueryRow(ctx, "SELECT $1::text || '!'", "param-value").Scan(&s); err != nil || s != "param-value!" {
			t.Fatalf("extended: %q %v", s, err)
		}
	}
	var app, principal string
	if err := conn.QueryRow(ctx, "SELECT current_setting('application_name'), current_setting('iamdb.principal')").Scan(&app, &principal); err != nil {
		t.Fatal(err)
	}
	if app != "orders-api [iamdb:arn:aws:iam::123456789012:user/alice]" || principal != "arn:aws:iam::123456789012:user/alice" {
		t.Fatalf("application_name %q, iamdb.principal %q", app, principal)
	}
	// A large statement arrives in several reads: framing must hold.
	big := "SELECT '" + strings.Repeat("x", 100<<10) + "' AS big"
	if _, err := conn.PgConn().Exec(ctx, big).ReadAll(); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	t.Run("psql", func(t *testing.T) {
		psql := requireTool(t, "psql")
		cmd := exec.Command(psql, "-X", "-At", "-v", "ON_ERROR_STOP=1", h.connString("app", h.database), "-c", "SELECT 'from psql'")
		cmd.Env = append(cleanEnv(), "PGPASSWORD="+tok, "PGAPPNAME=psql")
		if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "from psql" {
			t.Fatalf("psql: %v\n%s", err, out)
		}
	})

	// report is not under statement audit.
	other, err := h.connect(ctx, "report", h.sdkToken(h.endpoint, testRegion, "report", id, secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	other.Exec(ctx, "SELECT 'not audited'")
	other.Close(ctx)

	var evs []*audit.Event
	for range 200 {
		evs = events(t, path, 1)
		if n := len(statements(evs)); n >= 5 && strings.Count(fmt.Sprint(names(evs)), "disconnect") >= 3 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stmts := statements(evs)
	var texts []string
	for _, e := range stmts {
		texts = append(texts, e.RequestParameters["statement"].(string))
		if e.UserIdentity.ARN != "arn:aws:iam::123456789012:user/alice" || e.RequestParameters["dbUser"] != "app" || e.ResponseElements["sessionId"] == "" {
			t.Errorf("statement not attributed: %+v %v", e.UserIdentity, e.RequestParameters)
		}
	}
	joined := strings.Join(texts, "\n")
	for _, want := range []string{"SELECT 'simple protocol'", "SELECT $1::text || '!'", "current_setting('iamdb.principal')", "SELECT 'from psql'"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no statement event for %q in:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "not audited") {
		t.Error("a statement of a user without statement audit was recorded")
	}
	var executions int
	for _, e := range stmts {
		if e.RequestParameters["statement"] == "SELECT $1::text || '!'" {
			executions++
			if e.RequestParameters["protocol"] != "extended" || fmt.Sprint(e.RequestParameters["parameters"]) != "[param-value]" {
				t.Errorf("extended statement event %v", e.RequestParameters)
			}
		}
		if strings.HasPrefix(e.RequestParameters["statement"].(string), "SELECT 'xxx") && e.RequestParameters["statementTruncated"] != true {
			t.Errorf("the 100 KiB statement was not cut short")
		}
	}
	if executions != 2 {
		t.Errorf("%d events for two executions of one prepared statement", executions)
	}
	// The first session's statements sit between its connect and disconnect.
	if evs[0].EventName != "connect" || evs[1].EventName != "statement" {
		t.Errorf("events begin %v", names(evs[:2]))
	}
	if _, err := audit.Verify(path); err != nil {
		t.Fatal(err)
	}
}

// TestStmtTapFraming feeds a message stream to the tap in every chunking
// and checks the statements come out the same.
func TestStmtTapFraming(t *testing.T) {
	var stream []byte
	msg := func(typ byte, body ...[]byte) {
		var b []byte
		for _, p := range body {
			b = append(b, p...)
		}
		stream = append(stream, frame(typ, b)...)
	}
	cs := func(s string) []byte { return append([]byte(s), 0) }
	msg('Q', cs("SELECT 1"))
	msg('P', cs("s1"), cs("SELECT $1"), []byte{0, 0})
	msg('D', []byte{'S'}, cs("s1"))
	msg('S')
	msg('B', cs(""), cs("s1"), []byte{0, 0}, []byte{0, 2}, []byte{0, 0, 0, 2}, []byte("42"), []byte{0xff, 0xff, 0xff, 0xff}, []byte{0, 0})
	msg('E', cs(""), []byte{0, 0, 0, 0})
	msg('d', []byte(strings.Repeat("copy data", 1000)))
	msg('C', []byte{'S'}, cs("s1"))
	msg('B', cs(""), cs("s1"), []byte{0, 0}, []byte{0, 0}, []byte{0, 0})
	msg('E', cs(""), []byte{0, 0, 0, 0})
	want := "[{SELECT 1 simple  [] false} {SELECT $1 extended s1 [{[52 50] false false} {[] true false}] false} { extended s1 [] false}]"
	for _, chunk := range []int{1, 2, 3, 7, 64, len(stream)} {
		var mu sync.Mutex
		var got []audit.Statement
		tap := newStmtTap(true, func(s audit.Statement) { mu.Lock(); got = append(got, s); mu.Unlock() }, func(r string) { t.Errorf("tap stopped: %s", r) })
		for i := 0; i < len(stream); i += chunk {
			tap.feed(stream[i:min(i+chunk, len(stream))])
		}
		if fmt.Sprint(got) != want {
			t.Fatalf("chunk %d: %v\nwant %s", chunk, got, want)
		}
	}
}

func TestTaggedApplicationName(t *testing.T) {
	for _, tc := range []struct {
		app, arn, user, role, session string
		want                          string
	}{
		{"api", "arn:aws:iam::123456789012:user/alice", "alice", "", "", "api [iamdb:arn:aws:iam::123456789012:user/alice]"},
		{"", "arn:aws:iam::123456789012:user/alice", "alice", "", "", "[iamdb:arn:aws:iam::123456789012:user/alice]"},
		{"a-rather-long-application-name", "arn:aws:iam::123456789012:user/alice", "alice", "", "", "a-rather-long-application-name [iamdb:alice]"},
		{"api", "arn:aws:sts::123456789012:assumed-role/db-role/alice-session-with-a-long-name", "", "db-role", "alice-session-with-a-long-name",
			"api [iamdb:db-role/alice-session-with-a-long-name]"},
		{strings.Repeat("é", 40), "arn:aws:iam::123456789012:user/alice", "alice", "", "", strings.Repeat("é", 24) + " [iamdb:alice]"},
	} {
		p := &authn.Principal{ARN: tc.arn, UserName: tc.user, RoleName: tc.role, SessionName: tc.session}
		got := taggedApplicationName(tc.app, p)
		if got != tc.want || len(got) > maxIdentifier {
			t.Errorf("taggedApplicationName(%q) = %q (%d bytes), want %q", tc.app, got, len(got), tc.want)
		}
	}
}

// FuzzStmtTap: any client byte stream, cut anywhere, yields the same
// statements as the whole stream and never panics.
func FuzzStmtTap(f *testing.F) {
	f.Add([]byte("Q\x00\x00\x00\x0dSELECT 1\x00"), uint8(3))
	f.Add(append(frame('P', []byte("s\x00SELECT $1\x00\x00\x00")), frame('B', []byte("\x00s\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x01x\x00\x00"))...), uint8(1))
	f.Add([]byte("E\x00\x00\x00\x09\x00\x00\x00\x00\x00"), uint8(2))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		run := func(step int) string {
			var got []audit.Statement
			tap := newStmtTap(true, func(s audit.Statement) { got = append(got, s) }, nil)
			for i := 0; i < len(stream); i += step {
				tap.feed(stream[i:min(i+step, len(stream))])
			}
			return fmt.Sprint(got)
		}
		if a, b := run(len(stream)+1), run(int(chunk%16)+1); a != b {
			t.Fatalf("whole stream %s, in chunks of %d %s", a, chunk%16+1, b)
		}
	})
}
