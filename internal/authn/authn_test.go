package authn

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/policy"
)

const (
	testEndpoint = "db.example.com:5432"
	testResource = "db-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

// world is a real SQLite identity store with an account, a clock and an
// authenticator over it.
type world struct {
	t       testing.TB
	dsn     string
	sealer  *identity.Sealer
	store   *sqlstore.Store
	account string
	clock   *clock
	authn   *Authenticator
	inst    *Instance
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newWorld(t testing.TB) *world {
	t.Helper()
	ctx := context.Background()
	key := make([]byte, identity.MasterKeySize)
	rand.Read(key)
	sealer, err := identity.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	dsn := filepath.Join(t.TempDir(), "iamdb.db")
	store, err := sqlstore.Open(ctx, dsn, sealer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	acct, err := store.CreateAccount(ctx, identity.Account{ID: "123456789012"})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	w := &world{t: t, dsn: dsn, sealer: sealer, store: store, account: acct.ID, clock: clk}
	w.authn = New(store, sealer, Options{Now: clk.now})
	w.inst = &Instance{Name: "orders", Engine: "postgres", Region: "us-east-1", AccountID: acct.ID,
		ResourceID: testResource, Endpoints: []string{testEndpoint}}
	return w
}

// user creates an IAM user with tags, an inline policy and an access key.
func (w *world) user(name string, tags map[string]string, policyJSON string) (keyID, secret string) {
	w.t.Helper()
	ctx := context.Background()
	if _, err := w.store.CreateUser(ctx, identity.User{AccountID: w.account, Name: name, Tags: tags}); err != nil {
		w.t.Fatal(err)
	}
	if policyJSON != "" {
		if err := w.store.PutInlinePolicy(ctx, identity.UserRef(w.account, name), "connect", policyJSON); err != nil {
			w.t.Fatal(err)
		}
	}
	k, secret, err := w.store.CreateAccessKey(ctx, w.account, name)
	if err != nil {
		w.t.Fatal(err)
	}
	return k.ID, secret
}

// token signs a token at the world's clock with the real AWS SDK.
func (w *world) token(keyID, secret, sessionToken, dbUser string) string {
	w.t.Helper()
	// BuildAuthToken signs at time.Now; the clock starts at the current
	// second, so tokens are valid at the world's time.
	tok, err := auth.BuildAuthToken(context.Background(), testEndpoint, "us-east-1", dbUser,
		credentials.NewStaticCredentialsProvider(keyID, secret, sessionToken))
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

func (w *world) login(tok, dbUser string) (*Decision, error) {
	return w.authn.Authenticate(context.Background(), Request{Token: tok, Instance: w.inst, DBUser: dbUser,
		Database: "orders", SourceIP: "10.1.2.3", SecureTransport: true})
}

func code(t *testing.T, err error) string {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("want *authn.Error, got %T %v", err, err)
	}
	return ae.Code
}

const selfPolicy = `{"Version":"2012-10-17","Statement":[{"Sid":"Self","Effect":"Allow","Action":"rds-db:connect",
 "Resource":"arn:aws:rds-db:us-east-1:123456789012:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXYZ/${aws:username}"}]}`

func TestUserConnectsAsSelfOnly(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)

	d, err := w.login(w.token(id, secret, "", "alice"), "alice")
	if err != nil {
		t.Fatal(err)
	}
	p := d.Principal
	if p.Type != TypeIAMUser || p.UserName != "alice" || p.ARN != "arn:aws:iam::123456789012:user/alice" || p.AccessKeyID != id {
		t.Fatalf("principal %+v", p)
	}
	if d.Resource != "arn:aws:rds-db:us-east-1:123456789012:dbuser:"+testResource+"/alice" {
		t.Fatalf("resource %s", d.Resource)
	}
	if d.Policy.Decision != policy.Allowed || len(d.Policy.Matched) != 1 || d.Policy.Matched[0].Sid != "Self" {
		t.Fatalf("policy %+v", d.Policy)
	}
	if d.Policy.ResolvedVariables["aws:username"] != "alice" {
		t.Fatalf("resolved variables %v", d.Policy.ResolvedVariables)
	}
	if len(d.TokenID) != 12 || d.ValidUntil.IsZero() {
		t.Fatalf("token id %q valid until %v", d.TokenID, d.ValidUntil)
	}

	_, err = w.login(w.token(id, secret, "", "bob"), "bob")
	if code(t, err) != CodeAccessDenied {
		t.Fatalf("alice as bob: %v", err)
	}
	var ae *Error
	errors.As(err, &ae)
	if ae.Principal == nil || ae.Principal.UserName != "alice" || ae.Policy == nil || ae.Policy.Decision != policy.ImplicitDeny {
		t.Fatalf("denial lacks principal or policy: %+v", ae)
	}
	if !strings.Contains(ae.Detail, "no statement allowed") {
		t.Fatalf("detail %q", ae.Detail)
	}
}

func TestTokenRefusalsCarryCodes(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)
	good := w.token(id, secret, "", "alice")

	if _, err := w.login(good, "bob"); code(t, err) != "UserMismatch" {
		t.Fatalf("user mismatch: %v", err)
	}
	if _, err := w.login(w.token("AKIAAAAAAAAAAAAAAAAA", secret, "", "alice"), "alice"); code(t, err) != "InvalidAccessKeyId" {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := w.login(w.token(id, string(secret[0]^1)+secret[1:], "", "alice") /* always another secret */, "alice"); code(t, err) != "InvalidSignature" {
		t.Fatalf("bad signature: %v", err)
	}
	w.clock.add(16 * time.Minute)
	if _, err := w.login(good, "alice"); code(t, err) != "ExpiredToken" {
		t.Fatalf("expired: %v", err)
	}
}

func TestDeactivatedKeyTakesEffect(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)
	if _, err := w.login(w.token(id, secret, "", "alice"), "alice"); err != nil {
		t.Fatal(err)
	}
	// Written through another handle, as another process would: visible
	// after the next generation poll.
	other, err := sqlstore.Open(context.Background(), w.dsn, w.sealer)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.UpdateAccessKeyStatus(context.Background(), id, identity.KeyInactive); err != nil {
		t.Fatal(err)
	}
	if _, err := w.login(w.token(id, secret, "", "alice"), "alice"); err != nil {
		t.Fatalf("within the refresh interval the cached key still serves: %v", err)
	}
	w.clock.add(2 * time.Second)
	if _, err := w.login(w.token(id, secret, "", "alice"), "alice"); code(t, err) != "InactiveAccessKey" {
		t.Fatalf("after the refresh interval: %v", err)
	}
}

func TestPolicyChangeAndInvalidate(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)
	if _, err := w.login(w.token(id, secret, "", "alice"), "alice"); err != nil {
		t.Fatal(err)
	}
	deny := `{"Version":"2012-10-17","Statement":[{"Sid":"NoOrders","Effect":"Deny","Action":"rds-db:*","Resource":"*",
	 "Condition":{"StringEquals":{"iamdb:Database":"orders"}}}]}`
	if err := w.store.PutInlinePolicy(context.Background(), identity.UserRef(w.account, "alice"), "deny", deny); err != nil {
		t.Fatal(err)
	}
	w.authn.Invalidate()
	_, err := w.login(w.token(id, secret, "", "alice"), "alice")
	var ae *Error
	if !errors.As(err, &ae) || ae.Code != CodeAccessDenied || ae.Policy.Decision != policy.ExplicitDeny || ae.Policy.Matched[0].Sid != "NoOrders" {
		t.Fatalf("explicit deny not applied: %v", err)
	}
}

func TestConditionsSeeConnectionContext(t *testing.T) {
	w := newWorld(t)
	pol := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*",
	 "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"},"Bool":{"aws:SecureTransport":"true"},
	 "StringEquals":{"aws:PrincipalTag/team":"payments","iamdb:Engine":"postgres","iamdb:Instance":"orders"}}}]}`
	id, secret := w.user("alice", map[string]string{"team": "payments"}, pol)
	if _, err := w.login(w.token(id, secret, "", "app"), "app"); err != nil {
		t.Fatalf("all conditions hold: %v", err)
	}
	_, err := w.authn.Authenticate(context.Background(), Request{Token: w.token(id, secret, "", "app"), Instance: w.inst,
		DBUser: "app", SourceIP: "192.0.2.1", SecureTransport: true})
	if code(t, err) != CodeAccessDenied {
		t.Fatalf("source ip outside the range: %v", err)
	}
}

func TestRoleSessionWithTags(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	role, err := w.store.CreateRole(ctx, identity.Role{AccountID: w.account, Name: "db-users",
		TrustPolicy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}`,
		Tags:        map[string]string{"dbuser": "nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	tagPolicy := `{"Version":"2012-10-17","Statement":[{"Sid":"Tagged","Effect":"Allow","Action":"rds-db:connect",
	 "Resource":"arn:aws:rds-db:us-east-1:123456789012:dbuser:*/${aws:PrincipalTag/dbuser}"}]}`
	if err := w.store.PutInlinePolicy(ctx, identity.RoleRef(w.account, "db-users"), "tagged", tagPolicy); err != nil {
		t.Fatal(err)
	}
	sess, creds, err := w.store.CreateSession(ctx, identity.Session{AccountID: w.account, RoleID: role.ID, RoleARN: role.ARN(),
		SessionName: "alice-laptop", SourceIdentity: "alice@example.com", SessionTags: map[string]string{"dbuser": "alice"},
		Expiration: w.clock.now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	d, err := w.login(w.token(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken, "alice"), "alice")
	if err != nil {
		t.Fatal(err)
	}
	p := d.Principal
	if p.Type != TypeAssumedRole || p.ARN != "arn:aws:sts::123456789012:assumed-role/db-users/alice-laptop" ||
		p.PrincipalID != role.ID+":alice-laptop" || p.SourceIdentity != "alice@example.com" || p.RoleARN != role.ARN() {
		t.Fatalf("principal %+v", p)
	}
	if _, err := w.login(w.token(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken, "nobody"), "nobody"); code(t, err) != CodeAccessDenied {
		t.Fatalf("session tag must override the role tag: %v", err)
	}
	if _, err := w.login(w.token(creds.AccessKeyID, creds.SecretAccessKey, "wrong-token", "alice"), "alice"); code(t, err) != "InvalidSessionToken" {
		t.Fatalf("wrong session token: %v", err)
	}
	if _, err := w.login(w.token(creds.AccessKeyID, creds.SecretAccessKey, "", "alice"), "alice"); code(t, err) != "InvalidSessionToken" {
		t.Fatalf("missing session token: %v", err)
	}
	if err := w.store.RevokeSession(ctx, sess.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	w.authn.Invalidate()
	if _, err := w.login(w.token(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken, "alice"), "alice"); code(t, err) != "RevokedCredentials" {
		t.Fatalf("revoked session: %v", err)
	}
}

func TestExpiredSessionRefused(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	role, err := w.store.CreateRole(ctx, identity.Role{AccountID: w.account, Name: "r",
		TrustPolicy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	_, creds, err := w.store.CreateSession(ctx, identity.Session{AccountID: w.account, RoleID: role.ID, RoleARN: role.ARN(),
		SessionName: "s", Expiration: w.clock.now().Add(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	tok := w.token(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken, "app")
	w.clock.add(11 * time.Minute)
	if _, err := w.login(tok, "app"); code(t, err) != "ExpiredCredentials" {
		t.Fatalf("expired credentials: %v", err)
	}
}

func TestBoundaryLimitsUser(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	id, secret := w.user("alice", nil, `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"}]}`)
	b, err := w.store.CreatePolicy(ctx, identity.ManagedPolicy{AccountID: w.account, Name: "only-app"},
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"arn:aws:rds-db:*:*:dbuser:*/app"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	arn := b.ARN()
	if _, err := w.store.UpdateUser(ctx, w.account, "alice", identity.UserUpdate{PermissionsBoundary: &arn}); err != nil {
		t.Fatal(err)
	}
	w.authn.Invalidate()
	if _, err := w.login(w.token(id, secret, "", "app"), "app"); err != nil {
		t.Fatalf("inside the boundary: %v", err)
	}
	if _, err := w.login(w.token(id, secret, "", "admin"), "admin"); code(t, err) != CodeAccessDenied {
		t.Fatalf("outside the boundary: %v", err)
	}
}

func TestConcurrentLogins(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)
	tok := w.token(id, secret, "", "alice")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%8 == 0 {
				w.authn.Invalidate()
			}
			if _, err := w.login(tok, "alice"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	w := newWorld(b)
	id, secret := w.user("alice", map[string]string{"team": "payments"}, selfPolicy)
	tok := w.token(id, secret, "", "alice")
	req := Request{Token: tok, Instance: w.inst, DBUser: "alice", Database: "orders", SourceIP: "10.1.2.3", SecureTransport: true}
	ctx := context.Background()
	if _, err := w.authn.Authenticate(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := w.authn.Authenticate(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
