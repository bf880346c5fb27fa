package authn

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/sigv4"
)

// signAt signs a token at t, so that one key yields as many distinct
// tokens as the test needs.
func (w *world) signAt(keyID, secret, sessionToken, dbUser string, t time.Time) string {
	w.t.Helper()
	tok, err := sigv4.Sign(sigv4.SignInput{Endpoint: testEndpoint, Region: "us-east-1", DBUser: dbUser,
		AccessKeyID: keyID, SecretAccessKey: secret, SessionToken: sessionToken, Time: t})
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

// TestTokenCacheReuse: the second login with a token comes from the cache
// and says so; another token, or the same token for another user or
// instance, is verified in full.
func TestTokenCacheReuse(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)
	tok := w.signAt(id, secret, "", "alice", w.clock.now())

	d1, err := w.login(tok, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d1.Reused {
		t.Fatal("first login marked as a reuse")
	}
	d2, err := w.login(tok, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !d2.Reused || d2.TokenID != d1.TokenID || !d2.ValidUntil.Equal(d1.ValidUntil) || d2.Principal.ARN != d1.Principal.ARN {
		t.Fatalf("second login %+v, first %+v", d2, d1)
	}
	if s := w.authn.TokenCacheStats(); s.Hits != 1 || s.Misses != 1 || s.Entries != 1 {
		t.Fatalf("stats %+v, want 1 hit, 1 miss, 1 entry", s)
	}

	other := w.signAt(id, secret, "", "alice", w.clock.now().Add(-time.Second))
	if d, err := w.login(other, "alice"); err != nil || d.Reused {
		t.Fatalf("another token: %+v %v", d, err)
	}
	if _, err := w.login(tok, "bob"); code(t, err) != "UserMismatch" {
		t.Fatalf("the cached token presented for another user: %v", err)
	}
	inst2 := *w.inst
	inst2.Name = "billing"
	if d, err := w.authn.Authenticate(context.Background(), Request{Token: tok, Instance: &inst2, DBUser: "alice"}); err == nil && d.Reused {
		t.Fatal("a token verified for one instance was reused for another")
	}
	if s := w.authn.TokenCacheStats(); s.Hits != 1 {
		t.Fatalf("hits %d after lookups that must miss", s.Hits)
	}
}

// TestTokenCacheRevocation: a deactivated key refuses its cached token
// once the store generation poll sees the change, as an uncached one.
func TestTokenCacheRevocation(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)
	tok := w.signAt(id, secret, "", "alice", w.clock.now())
	if _, err := w.login(tok, "alice"); err != nil {
		t.Fatal(err)
	}
	other, err := sqlstore.Open(context.Background(), w.dsn, w.sealer)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.UpdateAccessKeyStatus(context.Background(), id, identity.KeyInactive); err != nil {
		t.Fatal(err)
	}
	if d, err := w.login(tok, "alice"); err != nil || !d.Reused {
		t.Fatalf("within the refresh interval the cached token still serves: %+v %v", d, err)
	}
	w.clock.add(2 * time.Second)
	if _, err := w.login(tok, "alice"); code(t, err) != "InactiveAccessKey" {
		t.Fatalf("after the refresh interval: %v", err)
	}
	if s := w.authn.TokenCacheStats(); s.Entries != 0 {
		t.Fatalf("cache holds %d entries after the store changed", s.Entries)
	}
}

// TestTokenCacheRevokedSession: Invalidate (a write in this process) drops
// cached tokens at once.
func TestTokenCacheRevokedSession(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	role, err := w.store.CreateRole(ctx, identity.Role{AccountID: w.account, Name: "r",
		TrustPolicy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.store.PutInlinePolicy(ctx, identity.RoleRef(w.account, "r"), "any",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"}]}`); err != nil {
		t.Fatal(err)
	}
	sess, creds, err := w.store.CreateSession(ctx, identity.Session{AccountID: w.account, RoleID: role.ID, RoleARN: role.ARN(),
		SessionName: "s", Expiration: w.clock.now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	tok := w.signAt(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken, "app", w.clock.now())
	for range 2 {
		if _, err := w.login(tok, "app"); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.store.RevokeSession(ctx, sess.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	w.authn.Invalidate()
	if _, err := w.login(tok, "app"); code(t, err) != "RevokedCredentials" {
		t.Fatalf("revoked session's cached token: %v", err)
	}
}

// TestTokenCacheExpiry: a cached token expires with the token, and with
// the temporary credentials when they end first.
func TestTokenCacheExpiry(t *testing.T) {
	t.Run("token", func(t *testing.T) {
		w := newWorld(t)
		id, secret := w.user("alice", nil, selfPolicy)
		tok := w.signAt(id, secret, "", "alice", w.clock.now())
		for range 2 {
			if _, err := w.login(tok, "alice"); err != nil {
				t.Fatal(err)
			}
		}
		w.clock.add(15*time.Minute + time.Second)
		if _, err := w.login(tok, "alice"); code(t, err) != "ExpiredToken" {
			t.Fatalf("after 15 minutes: %v", err)
		}
	})
	t.Run("credentials", func(t *testing.T) {
		w := newWorld(t)
		ctx := context.Background()
		role, err := w.store.CreateRole(ctx, identity.Role{AccountID: w.account, Name: "r",
			TrustPolicy: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"123456789012"},"Action":"sts:AssumeRole"}]}`})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.store.PutInlinePolicy(ctx, identity.RoleRef(w.account, "r"), "any",
			`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"}]}`); err != nil {
			t.Fatal(err)
		}
		_, creds, err := w.store.CreateSession(ctx, identity.Session{AccountID: w.account, RoleID: role.ID, RoleARN: role.ARN(),
			SessionName: "s", Expiration: w.clock.now().Add(5 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		tok := w.signAt(creds.AccessKeyID, creds.SecretAccessKey, creds.SessionToken, "app", w.clock.now())
		d, err := w.login(tok, "app")
		if err != nil {
			t.Fatal(err)
		}
		if !d.ValidUntil.Equal(creds.Expiration) {
			t.Fatalf("valid until %v, want the credentials' expiry %v", d.ValidUntil, creds.Expiration)
		}
		if d, err := w.login(tok, "app"); err != nil || !d.Reused {
			t.Fatalf("reuse: %+v %v", d, err)
		}
		w.clock.add(5*time.Minute + time.Second)
		if _, err := w.login(tok, "app"); code(t, err) != "ExpiredCredentials" {
			t.Fatalf("after the credentials expired: %v", err)
		}
	})
}

// TestTokenCachePolicyPerLogin: a cached token's policy is evaluated with
// each login's own context.
func TestTokenCachePolicyPerLogin(t *testing.T) {
	w := newWorld(t)
	pol := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*",
	 "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}`
	id, secret := w.user("alice", nil, pol)
	tok := w.signAt(id, secret, "", "app", w.clock.now())
	req := Request{Token: tok, Instance: w.inst, DBUser: "app", SourceIP: "10.1.2.3", SecureTransport: true}
	if _, err := w.authn.Authenticate(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	req.SourceIP = "192.0.2.1"
	_, err := w.authn.Authenticate(context.Background(), req)
	if code(t, err) != CodeAccessDenied {
		t.Fatalf("the cached token from outside the allowed range: %v", err)
	}
	if s := w.authn.TokenCacheStats(); s.Hits != 1 {
		t.Fatalf("the second login did not use the cache (stats %+v): the policy must be what refused it", s)
	}
	req.SourceIP = "10.9.9.9"
	if d, err := w.authn.Authenticate(context.Background(), req); err != nil || !d.Reused {
		t.Fatalf("back inside the range: %+v %v", d, err)
	}
}

// TestTokenCacheBounded: the cache never holds more than its size, and
// turning it off means every login is verified.
func TestTokenCacheBounded(t *testing.T) {
	w := newWorld(t)
	w.authn = New(w.store, w.sealer, Options{Now: w.clock.now, TokenCacheSize: 8})
	id, secret := w.user("alice", nil, selfPolicy)
	for i := range 50 {
		tok := w.signAt(id, secret, "", "alice", w.clock.now().Add(-time.Duration(i)*time.Second))
		if _, err := w.login(tok, "alice"); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		if n := w.authn.TokenCacheStats().Entries; n > 8 {
			t.Fatalf("%d entries after %d tokens, bound 8", n, i+1)
		}
	}

	off := New(w.store, w.sealer, Options{Now: w.clock.now, TokenCacheSize: -1})
	tok := w.signAt(id, secret, "", "alice", w.clock.now())
	for range 3 {
		d, err := off.Authenticate(context.Background(), Request{Token: tok, Instance: w.inst, DBUser: "alice"})
		if err != nil || d.Reused {
			t.Fatalf("cache off: %+v %v", d, err)
		}
	}
}

func BenchmarkAuthenticateUncached(b *testing.B) {
	w := newWorld(b)
	w.authn = New(w.store, w.sealer, Options{TokenCacheSize: -1})
	id, secret := w.user("alice", map[string]string{"team": "payments"}, selfPolicy)
	req := Request{Token: w.token(id, secret, "", "alice"), Instance: w.inst, DBUser: "alice", Database: "orders", SourceIP: "10.1.2.3", SecureTransport: true}
	ctx := context.Background()
	if _, err := w.authn.Authenticate(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := w.authn.Authenticate(ctx, req); err != nil {
			b.Fatal(fmt.Sprint(err))
		}
	}
}

// slowKeyStore makes the first access key read slow, so that concurrent
// logins pile up behind it, and counts the reads.
type slowKeyStore struct {
	Store
	mu    sync.Mutex
	reads int
}

func (s *slowKeyStore) GetAccessKey(ctx context.Context, id string) (identity.AccessKey, error) {
	s.mu.Lock()
	s.reads++
	first := s.reads == 1
	s.mu.Unlock()
	if first {
		time.Sleep(100 * time.Millisecond)
	}
	return s.Store.GetAccessKey(ctx, id)
}

// TestConcurrentFirstLoginsReadKeyOnce: a burst of logins with a key no
// login used yet reads it from the store once, not once per login.
func TestConcurrentFirstLoginsReadKeyOnce(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)
	store := &slowKeyStore{Store: w.store}
	a := New(store, w.sealer, Options{Now: w.clock.now})
	var wg sync.WaitGroup
	for i := range 32 {
		tok := w.signAt(id, secret, "", "alice", w.clock.now().Add(-time.Duration(i)*time.Second))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.Authenticate(context.Background(), Request{Token: tok, Instance: w.inst, DBUser: "alice"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if store.reads != 1 {
		t.Fatalf("32 concurrent first logins read the key %d times, want once", store.reads)
	}
}

// gatedKeyStore holds the first access key read after it was read from
// the store, until released: a load that began before a change and ends
// after it.
type gatedKeyStore struct {
	Store
	once    sync.Once
	read    chan struct{} // closed when the held read has its result
	release chan struct{}
}

func (s *gatedKeyStore) GetAccessKey(ctx context.Context, id string) (identity.AccessKey, error) {
	k, err := s.Store.GetAccessKey(ctx, id)
	held := false
	s.once.Do(func() { held = true })
	if held {
		close(s.read)
		<-s.release
	}
	return k, err
}

// TestStaleLoadNotCached: a key read before it was deactivated, whose load
// finishes after the caches were dropped, does not go into the new cache:
// the next login with a fresh token for that key is refused.
func TestStaleLoadNotCached(t *testing.T) {
	w := newWorld(t)
	id, secret := w.user("alice", nil, selfPolicy)
	store := &gatedKeyStore{Store: w.store, read: make(chan struct{}), release: make(chan struct{})}
	a := New(store, w.sealer, Options{Now: w.clock.now})
	first := make(chan error, 1)
	go func() {
		tok := w.signAt(id, secret, "", "alice", w.clock.now())
		_, err := a.Authenticate(context.Background(), Request{Token: tok, Instance: w.inst, DBUser: "alice"})
		first <- err
	}()
	<-store.read
	if err := w.store.UpdateAccessKeyStatus(context.Background(), id, identity.KeyInactive); err != nil {
		t.Fatal(err)
	}
	a.Invalidate()
	close(store.release)
	if err := <-first; err != nil {
		t.Fatalf("the login that read the key while it was active: %v", err)
	}
	tok := w.signAt(id, secret, "", "alice", w.clock.now().Add(-time.Second))
	_, err := a.Authenticate(context.Background(), Request{Token: tok, Instance: w.inst, DBUser: "alice"})
	if code(t, err) != "InactiveAccessKey" {
		t.Fatalf("a fresh token for the deactivated key after the reset: %v", err)
	}
}

// TestFlightSurvivesLeaderCancel: the caller whose load the others share
// hanging up does not fail the others, and a panicking load releases its
// waiters.
func TestFlightSurvivesLeaderCancel(t *testing.T) {
	var f flight[int]
	started := make(chan struct{})
	release := make(chan struct{})
	leaderCtx, cancel := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, err := f.do(leaderCtx, "k", func(ctx context.Context) (int, error) {
			close(started)
			<-release
			return 7, ctx.Err()
		})
		leader <- err
	}()
	<-started
	waiter := make(chan int, 1)
	go func() {
		// Whether it joins the running load or runs its own, the result
		// is the same.
		v, err := f.do(context.Background(), "k", func(context.Context) (int, error) { return 7, nil })
		if err != nil {
			t.Error(err)
		}
		waiter <- v
	}()
	cancel()
	close(release)
	if err := <-leader; err != nil {
		t.Fatalf("the load saw the leader's cancellation: %v", err)
	}
	if v := <-waiter; v != 7 {
		t.Fatalf("waiter got %d, want the shared result 7", v)
	}

	func() {
		defer func() { recover() }()
		f.do(context.Background(), "p", func(context.Context) (int, error) { panic("boom") })
	}()
	done := make(chan error, 1)
	go func() {
		_, err := f.do(context.Background(), "p", func(context.Context) (int, error) { return 1, nil })
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a load after a panicked one: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a load after a panicked one hangs")
	}
}
