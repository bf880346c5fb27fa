package sts

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/sigv4"
)

const (
	testAccount  = "123456789012"
	testRegion   = "us-east-1"
	testResource = "db-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	testEndpoint = "localhost:5432"
	audience     = "iamdb"
)

// clock is the adjustable clock shared by the service, the store and the
// authorizer: real time plus an offset, so real clients (which sign with
// the real time) work and tests can still move time forward.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// fixture is a Service over a SQLite identity store, served on loopback,
// with users, roles and an OIDC provider.
type fixture struct {
	t      *testing.T
	clock  *clock
	store  *sqlstore.Store
	sealer *identity.Sealer
	svc    *Service
	srv    *httptest.Server
	logs   *syncBuffer

	mu      sync.Mutex
	records []CallRecord

	alice, nobody accessKey // long-term keys
	idp           *testIdP
	provider      identity.OIDCProvider
	instance      *authn.Instance
	authn         *authn.Authenticator
}

type accessKey struct{ id, secret string }

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

func (f *fixture) roleARN(name string) string {
	return "arn:aws:iam::" + testAccount + ":role/" + name
}

const dbUserPolicy = `{"Version":"2012-10-17","Statement":[{"Sid":"ConnectAsTaggedUser","Effect":"Allow","Action":"rds-db:connect",
 "Resource":"arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXYZ/${aws:PrincipalTag/dbuser}"}]}`

func trustAccount(actions ...string) string {
	b, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
		"Effect": "Allow", "Principal": map[string]any{"AWS": "arn:aws:iam::" + testAccount + ":root"}, "Action": actions,
	}}})
	return string(b)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{t: t, clock: &clock{}, logs: &syncBuffer{}}
	key := make([]byte, identity.MasterKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.sealer, err = identity.NewSealer(key); err != nil {
		t.Fatal(err)
	}
	f.store, err = sqlstore.Open(ctx, filepath.Join(t.TempDir(), "iamdb.db"), f.sealer, sqlstore.WithClock(f.clock.now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.store.Close() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = f.store.CreateAccount(ctx, identity.Account{ID: testAccount})
	must(err)

	// alice may assume any role of the account, with tags and a source
	// identity; nobody has no policies at all.
	for _, name := range []string{"alice", "nobody"} {
		_, err = f.store.CreateUser(ctx, identity.User{AccountID: testAccount, Name: name, Tags: map[string]string{"team": "payments"}})
		must(err)
		k, secret, err := f.store.CreateAccessKey(ctx, testAccount, name)
		must(err)
		if name == "alice" {
			f.alice = accessKey{k.ID, secret}
		} else {
			f.nobody = accessKey{k.ID, secret}
		}
	}
	must(f.store.PutInlinePolicy(ctx, identity.UserRef(testAccount, "alice"), "assume",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"],"Resource":"arn:aws:iam::123456789012:role/*"}]}`))

	roles := []struct {
		name  string
		trust string
		max   time.Duration
	}{
		// The ABAC role of the tests: db user from the dbuser session tag.
		{"db-access", trustAccount("sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"), 0},
		// Trust without sts:TagSession: sessions without tags only.
		{"no-tags", trustAccount("sts:AssumeRole"), 0},
		// Two-hour sessions allowed.
		{"long", trustAccount("sts:AssumeRole", "sts:TagSession"), 2 * time.Hour},
		// Only with the right external id.
		{"partner", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole",
		  "Condition":{"StringEquals":{"sts:ExternalId":"ext-4242"}}}]}`, 0},
		// An explicit Deny for alice, whatever else allows.
		{"not-alice", `{"Version":"2012-10-17","Statement":[
		  {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"},
		  {"Sid":"NoAlice","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:user/alice"},"Action":"sts:AssumeRole"}]}`, 0},
	}
	for _, r := range roles {
		_, err = f.store.CreateRole(ctx, identity.Role{AccountID: testAccount, Name: r.name, TrustPolicy: r.trust, MaxSessionDuration: r.max})
		must(err)
		must(f.store.PutInlinePolicy(ctx, identity.RoleRef(testAccount, r.name), "db", dbUserPolicy))
	}
	// Sessions of db-access may chain into other roles.
	must(f.store.PutInlinePolicy(ctx, identity.RoleRef(testAccount, "db-access"), "chain",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["sts:AssumeRole","sts:TagSession"],"Resource":"*"}]}`))

	// The OIDC identity provider and the role people federate into.
	f.idp = newTestIdP(t)
	f.provider, err = f.store.CreateOIDCProvider(ctx, identity.OIDCProvider{
		AccountID: testAccount, URL: f.idp.srv.URL, Audiences: []string{audience}, JWKSURL: f.idp.srv.URL + "/jwks",
	})
	must(err)
	hostPath := identity.IssuerHostPath(f.idp.srv.URL)
	webTrust, _ := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": []any{map[string]any{
		"Effect": "Allow", "Principal": map[string]any{"Federated": f.provider.ARN()},
		"Action":    []string{"sts:AssumeRoleWithWebIdentity", "sts:TagSession"},
		"Condition": map[string]any{"StringEquals": map[string]any{hostPath + ":aud": audience}},
	}}})
	_, err = f.store.CreateRole(ctx, identity.Role{AccountID: testAccount, Name: "web-db", TrustPolicy: string(webTrust)})
	must(err)
	must(f.store.PutInlinePolicy(ctx, identity.RoleRef(testAccount, "web-db"), "db", dbUserPolicy))

	f.svc, err = New(Config{
		Store: f.store, Sealer: f.sealer, Region: testRegion, Now: f.clock.now,
		Logger:     slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		HTTPClient: f.idp.srv.Client(),
		OnCall: func(r CallRecord) {
			f.mu.Lock()
			f.records = append(f.records, r)
			f.mu.Unlock()
		},
	})
	must(err)
	f.srv = httptest.NewServer(f.svc)
	t.Cleanup(f.srv.Close)

	f.instance = &authn.Instance{Name: "orders", Engine: "postgres", Region: testRegion, AccountID: testAccount,
		ResourceID: testResource, Endpoints: []string{testEndpoint}}
	f.authn = authn.New(f.store, f.sealer, authn.Options{Now: f.clock.now, RefreshInterval: time.Nanosecond})
	return f
}

// lastRecord returns the most recent CallRecord.
func (f *fixture) lastRecord() CallRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.records) == 0 {
		f.t.Fatal("no call record")
	}
	return f.records[len(f.records)-1]
}

// creds are credentials as a client holds them.
type creds struct{ id, secret, token string }

func (k accessKey) creds() creds { return creds{id: k.id, secret: k.secret} }

// call sends an AWS Query request signed by aws-sdk-go-v2's SigV4 signer
// at the fixture's clock (unsigned when c is nil) and returns the status
// and body.
func (f *fixture) call(c *creds, params url.Values) (int, []byte) {
	f.t.Helper()
	return f.callAt(c, params, f.clock.now())
}

func (f *fixture) callAt(c *creds, params url.Values, at time.Time) (int, []byte) {
	f.t.Helper()
	if params.Get("Version") == "" {
		params.Set("Version", APIVersion)
	}
	body := params.Encode()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+"/", strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	if c != nil {
		sum := sha256.Sum256([]byte(body))
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: c.id, SecretAccessKey: c.secret, SessionToken: c.token},
			req, hex.EncodeToString(sum[:]), "sts", testRegion, at)
		if err != nil {
			f.t.Fatal(err)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// wantError asserts an STS error response.
func (f *fixture) wantError(status int, body []byte, wantStatus int, wantCode string) {
	f.t.Helper()
	var e errorResponse
	if err := xml.Unmarshal(body, &e); err != nil {
		f.t.Fatalf("status %d, body is not an ErrorResponse: %v\n%s", status, err, body)
	}
	if status != wantStatus || e.Error.Code != wantCode {
		f.t.Fatalf("got %d %s (%s), want %d %s", status, e.Error.Code, e.Error.Message, wantStatus, wantCode)
	}
	if e.RequestID == "" || e.Xmlns != Namespace || (e.Error.Type != "Sender" && status < 500) {
		f.t.Fatalf("error response shape: %s", body)
	}
}

// assumeCreds parses credentials out of an AssumeRole* response.
func assumeCreds(t *testing.T, body []byte) (creds, string) {
	t.Helper()
	var r struct {
		Result struct {
			Credentials credentialsXML
			User        assumedRoleUserXML `xml:"AssumedRoleUser"`
		} `xml:",any"`
		Metadata responseMetadata `xml:"ResponseMetadata"`
	}
	if err := xml.Unmarshal(body, &r); err != nil || r.Result.Credentials.AccessKeyID == "" {
		t.Fatalf("no credentials in response (%v):\n%s", err, body)
	}
	c := r.Result.Credentials
	return creds{c.AccessKeyID, c.SecretAccessKey, c.SessionToken}, r.Result.User.Arn
}

// connect verifies a database token signed with c for dbUser, as the
// proxy does at login.
func (f *fixture) connect(c creds, dbUser string) (*authn.Decision, error) {
	f.t.Helper()
	tok, err := sigv4.Sign(sigv4.SignInput{Endpoint: testEndpoint, Region: testRegion, DBUser: dbUser,
		AccessKeyID: c.id, SecretAccessKey: c.secret, SessionToken: c.token, Time: f.clock.now()})
	if err != nil {
		f.t.Fatal(err)
	}
	return f.authn.Authenticate(context.Background(), authn.Request{Token: tok, Instance: f.instance, DBUser: dbUser, SecureTransport: true})
}

func wantAuthnCode(t *testing.T, err error, code string) {
	t.Helper()
	ae, ok := err.(*authn.Error)
	if !ok || ae.Code != code {
		t.Fatalf("connect: got %v, want %s", err, code)
	}
}

// testIdP is an OIDC issuer: an RSA key made here, its JWKS served over
// HTTP, tokens signed with go-jose.
type testIdP struct {
	srv    *httptest.Server
	key    *rsa.PrivateKey
	signer jose.Signer
}

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	idp := &testIdP{key: key}
	idp.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "key-1"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "key-1", Algorithm: "RS256", Use: "sig"}}}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	})
	idp.srv = httptest.NewServer(mux)
	t.Cleanup(idp.srv.Close)
	return idp
}

// token signs a JWT for sub with the tags claim carrying dbuser, issued at
// iat and valid for ttl.
func (p *testIdP) token(t *testing.T, sub, dbuser string, iat time.Time, ttl time.Duration, mutate ...func(map[string]any)) string {
	t.Helper()
	claims := map[string]any{
		"iss": p.srv.URL, "sub": sub, "aud": audience,
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": iat.Add(ttl).Unix(),
	}
	if dbuser != "" {
		claims[TagsClaim] = map[string]any{
			"principal_tags":      map[string][]string{"dbuser": {dbuser}},
			"transitive_tag_keys": []string{"dbuser"},
		}
	}
	for _, m := range mutate {
		m(claims)
	}
	raw, err := jwt.Signed(p.signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// requireTool returns the path of an external program a test needs; in CI
// a missing program fails the test, elsewhere it skips it.
func requireTool(t *testing.T, name string) string {
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
