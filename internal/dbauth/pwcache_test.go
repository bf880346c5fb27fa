package dbauth_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/identity/identitytest"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/testdb"
)

// countingStore counts the reads of stored passwords.
type countingStore struct {
	*sqlstore.Store
	reads atomic.Int64
}

func (c *countingStore) GetBackendPassword(ctx context.Context, instance, dbUser string) ([]byte, time.Time, error) {
	c.reads.Add(1)
	return c.Store.GetBackendPassword(ctx, instance, dbUser)
}

// managedBackend is what the password cache tests use of Postgres and
// MySQL.
type managedBackend interface {
	Password(context.Context, string) (string, error)
	Refused(context.Context, string, string) (string, bool, error)
	Rotate(context.Context, string) error
	RotateAll(context.Context) ([]string, error)
	Reload(context.Context, config.Instance) error
	Close()
}

// cacheEnv is one instance in mode managed served by two values, a and b,
// that share the store and the clock as two replicas would, and one
// IAM-enabled user.
type cacheEnv struct {
	store *countingStore
	clock *clock
	in    config.Instance
	a, b  managedBackend
	user  string
	login func(t *testing.T, password string) error
}

func newPostgresCacheEnv(t *testing.T) *cacheEnv {
	pg := upstream(t)
	e := &cacheEnv{store: &countingStore{Store: openStore(t)}, clock: newClock(), in: instance(pg, "managed")}
	opt := dbauth.PostgresOptions{Instance: e.in, Store: e.store, Sealer: identitytest.Sealer(t), Now: e.clock.Now, LookupEnv: env(pg)}
	a := newPostgres(t, opt)
	if err := a.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.a, e.b = a, newPostgres(t, opt)
	e.user = newRole(t, pg, "cache")
	adminExec(t, pg, "GRANT rds_iam TO "+e.user)
	e.login = func(t *testing.T, pw string) error { t.Helper(); return login(t, pg, e.user, pw) }
	return e
}

func newMariaDBCacheEnv(t *testing.T) *cacheEnv {
	m := maria(t)
	e := &cacheEnv{store: &countingStore{Store: openStore(t)}, clock: newClock(), in: mysqlInstance(m, "managed", "cache_*")}
	opt := dbauth.MySQLOptions{Instance: e.in, Store: e.store, Sealer: identitytest.Sealer(t), Now: e.clock.Now, LookupEnv: mariaEnv(m)}
	e.a, e.b = newMySQL(t, opt), newMySQL(t, opt)
	e.user = newMariaUser(t, m, "cache")
	e.login = func(t *testing.T, pw string) error { t.Helper(); return mariaLogin(t, m, e.user, pw) }
	return e
}

// forEachEngine runs f against PostgreSQL and MariaDB.
func forEachEngine(t *testing.T, f func(t *testing.T, e *cacheEnv)) {
	for _, eng := range []struct {
		name string
		env  func(*testing.T) *cacheEnv
	}{{"postgres", newPostgresCacheEnv}, {"mariadb", newMariaDBCacheEnv}} {
		t.Run(eng.name, func(t *testing.T) { f(t, eng.env(t)) })
	}
}

func (e *cacheEnv) password(t *testing.T, v managedBackend) string {
	t.Helper()
	pw, err := v.Password(t.Context(), e.user)
	if err != nil {
		t.Fatalf("Password(%s): %v", e.user, err)
	}
	if !passwordRE.MatchString(pw) {
		t.Fatalf("Password(%s) is not 64 letters and digits (len %d)", e.user, len(pw))
	}
	return pw
}

// wantReads fails t unless the store was read want times since the counter
// was last reset.
func (e *cacheEnv) wantReads(t *testing.T, want int64, what string) {
	t.Helper()
	if n := e.store.reads.Load(); n != want {
		t.Fatalf("%s: %d store reads, want %d", what, n, want)
	}
}

// mustLogIn checks that pw logs in to the upstream and, when old is set,
// that old no longer does.
func (e *cacheEnv) mustLogIn(t *testing.T, pw, old string) {
	t.Helper()
	if err := e.login(t, pw); err != nil {
		t.Fatalf("login with the password Password returned: %v", err)
	}
	if old != "" {
		if err := e.login(t, old); err == nil {
			t.Fatal("the replaced password still logs in")
		}
	}
}

// TestPasswordCacheReadsStoreOnce: logins within storedPasswordTTL,
// sequential or concurrent, read the store once between them.
func TestPasswordCacheReadsStoreOnce(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *cacheEnv) {
		pw := e.password(t, e.a)
		// The entry the new password left is no longer fresh.
		e.clock.Advance(dbauth.StoredPasswordTTL)
		e.store.reads.Store(0)
		for range 50 {
			if got := e.password(t, e.a); got != pw {
				t.Fatal("Password returned another password within the TTL")
			}
		}
		e.wantReads(t, 1, "50 calls within the TTL")

		var wg sync.WaitGroup
		errs := make(chan error, 8*25)
		for range 8 {
			wg.Go(func() {
				for range 25 {
					got, err := e.a.Password(context.Background(), e.user)
					if err == nil && got != pw {
						err = errors.New("another password within the TTL")
					}
					if err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent Password: %v", err)
		}
		e.wantReads(t, 1, "200 more concurrent calls within the TTL")

		e.clock.Advance(dbauth.StoredPasswordTTL - time.Millisecond)
		e.password(t, e.a)
		e.wantReads(t, 1, "a call just before the TTL ends")
		e.clock.Advance(time.Millisecond)
		if got := e.password(t, e.a); got != pw {
			t.Fatal("the password changed on its own")
		}
		e.wantReads(t, 2, "a call once the TTL has passed")
		e.mustLogIn(t, pw, "")
	})
}

// TestPasswordCacheOtherReplicaAfterTTL: a password another value sharing
// the store sets is used once the cached one is storedPasswordTTL old, and
// not before: that is the staleness the cache allows.
func TestPasswordCacheOtherReplicaAfterTTL(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *cacheEnv) {
		old := e.password(t, e.a)
		if err := e.b.Rotate(t.Context(), e.user); err != nil {
			t.Fatalf("Rotate on the other replica: %v", err)
		}
		e.store.reads.Store(0)
		e.clock.Advance(dbauth.StoredPasswordTTL - time.Millisecond)
		if got := e.password(t, e.a); got != old {
			t.Fatal("within the TTL the other replica's password was read: nothing was cached")
		}
		e.wantReads(t, 0, "a call within the TTL")

		e.clock.Advance(time.Millisecond)
		pw := e.password(t, e.a)
		if pw == old {
			t.Fatal("the other replica's password is still unseen after the TTL")
		}
		e.wantReads(t, 1, "the first call after the TTL")
		if other := e.password(t, e.b); other != pw {
			t.Fatal("the replicas disagree after the TTL")
		}
		e.mustLogIn(t, pw, old)
	})
}

// TestPasswordCacheRefused: after the upstream refused the cached
// password, Refused drops it and returns the one another value sharing the
// store set, within the TTL; for the password the store holds it says
// there is nothing newer.
func TestPasswordCacheRefused(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *cacheEnv) {
		ctx := t.Context()
		old := e.password(t, e.a)
		if err := e.b.Rotate(ctx, e.user); err != nil {
			t.Fatalf("Rotate on the other replica: %v", err)
		}
		if got := e.password(t, e.a); got != old {
			t.Fatal("within the TTL the other replica's password was read: nothing was cached")
		}
		if err := e.login(t, old); err == nil {
			t.Fatal("the replaced password still logs in")
		}

		e.store.reads.Store(0)
		pw, changed, err := e.a.Refused(ctx, e.user, old)
		if err != nil || !changed {
			t.Fatalf("Refused(old) = changed %v, %v; want the other replica's password", changed, err)
		}
		if pw == old || !passwordRE.MatchString(pw) {
			t.Fatalf("Refused(old) returned the refused password or a malformed one (len %d)", len(pw))
		}
		e.wantReads(t, 1, "Refused")
		if other := e.password(t, e.b); other != pw {
			t.Fatal("Refused returned another password than the other replica set")
		}
		e.mustLogIn(t, pw, old)
		// The new password is cached: no TTL to wait for, no more reads.
		e.store.reads.Store(0)
		if got := e.password(t, e.a); got != pw {
			t.Fatal("Password after Refused returned the refused password")
		}
		e.wantReads(t, 0, "the call after Refused")

		// Refused for the password the store holds: nothing newer.
		again, changed, err := e.a.Refused(ctx, e.user, pw)
		if err != nil || changed || again != pw {
			t.Fatalf("Refused(current) = changed %v, same password %v, %v; want false", changed, again == pw, err)
		}
		e.wantReads(t, 1, "the second Refused")
	})
}

// TestRefusedOutsideManaged: in modes secrets and trust a refusal stands.
func TestRefusedOutsideManaged(t *testing.T) {
	ctx := t.Context()
	secrets := filepath.Join(t.TempDir(), "secrets.yaml")
	writeSecrets(t, secrets, "app: s3cret-App\n", 0o600)
	noEnv := func(string) (string, bool) { return "", false }
	for _, mode := range []string{"secrets", "trust"} {
		pgIn := instance(upstreamNoServer(), mode)
		pgIn.IAMUsers = []string{"app"}
		pgIn.Upstream.TLS, pgIn.Upstream.CA = "disable", ""
		pgIn.BackendAuth.SecretsFile = secrets
		myIn := mysqlInstance(&testdb.MariaDBServer{Host: "127.0.0.1", Port: 1}, mode, "app")
		myIn.Upstream.TLS, myIn.Upstream.CA = "disable", ""
		myIn.BackendAuth.SecretsFile = secrets
		// Nothing listens on port 1: no admin connection is needed.
		for name, b := range map[string]managedBackend{
			"postgres": newPostgres(t, dbauth.PostgresOptions{Instance: pgIn, LookupEnv: noEnv}),
			"mysql":    newMySQL(t, dbauth.MySQLOptions{Instance: myIn, LookupEnv: noEnv}),
		} {
			pw, err := b.Password(ctx, "app")
			if err != nil {
				t.Fatalf("%s, mode %s: Password: %v", name, mode, err)
			}
			if _, changed, err := b.Refused(ctx, "app", pw); err != nil || changed {
				t.Errorf("%s, mode %s: Refused = changed %v, %v; want false", name, mode, changed, err)
			}
			if _, changed, err := b.Refused(ctx, "app", "another password"); err != nil || changed {
				t.Errorf("%s, mode %s: Refused of another password = changed %v, %v; want false", name, mode, changed, err)
			}
		}
	}
}

// TestPasswordCacheOwnChangesAtOnce: a password this value sets (Rotate,
// RotateAll, a stored one that does not open) is what the next call
// returns, from the cache, without waiting for the TTL.
func TestPasswordCacheOwnChangesAtOnce(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *cacheEnv) {
		ctx := t.Context()
		pw1 := e.password(t, e.a)
		// Let the entry come from a store read rather than from setting it.
		e.clock.Advance(dbauth.StoredPasswordTTL)
		if got := e.password(t, e.a); got != pw1 {
			t.Fatal("the password changed on its own")
		}

		if err := e.a.Rotate(ctx, e.user); err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		e.store.reads.Store(0)
		pw2 := e.password(t, e.a)
		if pw2 == pw1 {
			t.Fatal("Password returned the password Rotate replaced")
		}
		e.wantReads(t, 0, "the call after Rotate")
		e.mustLogIn(t, pw2, pw1)

		rotated, err := e.a.RotateAll(ctx)
		if err != nil || !slices.Equal(rotated, []string{e.user}) {
			t.Fatalf("RotateAll = %v, %v", rotated, err)
		}
		e.store.reads.Store(0)
		pw3 := e.password(t, e.a)
		if pw3 == pw2 {
			t.Fatal("Password returned the password RotateAll replaced")
		}
		e.wantReads(t, 0, "the call after RotateAll")
		e.mustLogIn(t, pw3, pw2)

		// A stored password that does not open is replaced by a new one,
		// which is cached as well.
		if err := e.store.PutBackendPassword(ctx, e.in.Name, e.user, []byte("not a sealed value"), e.clock.Now()); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(dbauth.StoredPasswordTTL)
		pw4 := e.password(t, e.a)
		if pw4 == pw3 {
			t.Fatal("Password returned a password the store no longer holds")
		}
		e.store.reads.Store(0)
		if got := e.password(t, e.a); got != pw4 {
			t.Fatal("Password changed again")
		}
		e.wantReads(t, 0, "the call after replacing an unsealable password")
		e.mustLogIn(t, pw4, pw3)
	})
}

// TestPasswordCacheRotateEvery: an entry within its TTL is not used once
// its password is older than rotate_every; a new password is set.
func TestPasswordCacheRotateEvery(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *cacheEnv) {
		every := e.in.BackendAuth.RotateEvery.D()
		old := e.password(t, e.a)
		e.clock.Advance(every - dbauth.StoredPasswordTTL/2)
		if got := e.password(t, e.a); got != old {
			t.Fatal("rotated before rotate_every")
		}
		e.store.reads.Store(0)
		if got := e.password(t, e.a); got != old {
			t.Fatal("rotated before rotate_every")
		}
		e.wantReads(t, 0, "a call within the TTL")

		// The entry is half a TTL old; its password exactly rotate_every.
		e.clock.Advance(dbauth.StoredPasswordTTL / 2)
		pw := e.password(t, e.a)
		if pw == old {
			t.Fatal("the cached password outlived rotate_every")
		}
		e.mustLogIn(t, pw, old)
	})
}

// TestPasswordCacheReloadAndClose: Reload and Close drop every cached
// password.
func TestPasswordCacheReloadAndClose(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *cacheEnv) {
		ctx := t.Context()
		old := e.password(t, e.a)
		e.store.reads.Store(0)
		e.password(t, e.a)
		e.wantReads(t, 0, "a call within the TTL")
		if err := e.a.Reload(ctx, e.in); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		if got := e.password(t, e.a); got != old {
			t.Fatal("the password changed on its own")
		}
		e.wantReads(t, 1, "the call after Reload")

		// So a password another replica set is used right after Reload.
		if err := e.b.Rotate(ctx, e.user); err != nil {
			t.Fatalf("Rotate on the other replica: %v", err)
		}
		if got := e.password(t, e.a); got != old {
			t.Fatal("within the TTL the other replica's password was read: nothing was cached")
		}
		if err := e.a.Reload(ctx, e.in); err != nil {
			t.Fatalf("Reload: %v", err)
		}
		pw := e.password(t, e.a)
		if pw == old {
			t.Fatal("Reload left the cached password in place")
		}
		e.mustLogIn(t, pw, old)

		e.store.reads.Store(0)
		e.a.Close()
		if got := e.password(t, e.a); got != pw {
			t.Fatal("the password changed on its own")
		}
		e.wantReads(t, 1, "the call after Close")
	})
}
