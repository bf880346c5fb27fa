package dbauth_test

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/identity/identitytest"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/testdb"
)

var passwordRE = regexp.MustCompile(`^[A-Za-z0-9]{64}$`)

type managedEnv struct {
	pg    *testdb.PG
	store *sqlstore.Store
	clock *clock
	logs  *logBuffer
	p     *dbauth.Postgres
}

// newManaged sets up mode managed with rds_iam in place; edit, when given,
// changes the instance first.
func newManaged(t *testing.T, edit ...func(*config.Instance)) *managedEnv {
	t.Helper()
	pg := upstream(t)
	e := &managedEnv{pg: pg, store: openStore(t), clock: newClock(), logs: &logBuffer{}}
	in := instance(pg, "managed")
	for _, f := range edit {
		f(&in)
	}
	e.p = newPostgres(t, dbauth.PostgresOptions{
		Instance:  in,
		Store:     e.store,
		Sealer:    identitytest.Sealer(t),
		Now:       e.clock.Now,
		Logger:    e.logs.Logger(),
		LookupEnv: env(pg),
	})
	if err := e.p.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	return e
}

// newIAMRole is newRole plus GRANT rds_iam.
func (e *managedEnv) newIAMRole(t *testing.T, prefix string) string {
	t.Helper()
	u := newRole(t, e.pg, prefix)
	adminExec(t, e.pg, "GRANT rds_iam TO "+u)
	return u
}

func (e *managedEnv) password(t *testing.T, user string) string {
	t.Helper()
	pw, err := e.p.Password(t.Context(), user)
	if err != nil {
		t.Fatalf("Password(%s): %v", user, err)
	}
	if !passwordRE.MatchString(pw) {
		t.Fatalf("Password(%s) is not 64 letters and digits (len %d)", user, len(pw))
	}
	return pw
}

// rawSealed reads the stored column itself, not through the store's API.
func (e *managedEnv) rawSealed(t *testing.T, user string) []byte {
	t.Helper()
	var b []byte
	if err := e.store.DB().QueryRowContext(t.Context(), `SELECT sealed_password FROM backend_passwords WHERE instance = 'orders' AND db_user = $1`, user).Scan(&b); err != nil {
		t.Fatalf("read stored row of %s: %v", user, err)
	}
	return b
}

func TestManagedPasswordLifecycle(t *testing.T) {
	e := newManaged(t)
	ctx := t.Context()
	user := e.newIAMRole(t, "app")
	var seen []string

	pw1 := e.password(t, user)
	seen = append(seen, pw1)
	if err := login(t, e.pg, user, pw1); err != nil {
		t.Fatalf("login with the managed password: %v", err)
	}
	if raw := e.rawSealed(t, user); bytes.Contains(raw, []byte(pw1)) || len(raw) < 64 {
		t.Fatalf("stored row holds the plaintext or too little (%d bytes)", len(raw))
	}
	// The server stores a SCRAM verifier: never MD5, never plaintext.
	conn, err := pgx.Connect(ctx, e.pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var stored string
	if err := conn.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, user).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "SCRAM-SHA-256$4096:") || strings.Contains(stored, pw1) {
		t.Fatalf("pg_authid.rolpassword = %.20q…, want a SCRAM-SHA-256 verifier", stored)
	}

	if again := e.password(t, user); again != pw1 {
		t.Fatal("second Password returned a different password before rotate_every")
	}
	e.clock.Advance(23 * time.Hour)
	if again := e.password(t, user); again != pw1 {
		t.Fatal("password rotated before rotate_every elapsed")
	}

	e.clock.Advance(time.Hour)
	pw2 := e.password(t, user)
	seen = append(seen, pw2)
	if pw2 == pw1 {
		t.Fatal("password not rotated after rotate_every")
	}
	if err := login(t, e.pg, user, pw2); err != nil {
		t.Fatalf("login with the rotated password: %v", err)
	}
	if err := login(t, e.pg, user, pw1); err == nil {
		t.Fatal("the old password still works after rotation")
	}

	if err := e.p.Rotate(ctx, user); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	pw3 := e.password(t, user)
	seen = append(seen, pw3)
	if pw3 == pw2 {
		t.Fatal("Rotate did not change the password")
	}
	if err := login(t, e.pg, user, pw3); err != nil {
		t.Fatalf("login after Rotate: %v", err)
	}
	if err := login(t, e.pg, user, pw2); err == nil {
		t.Fatal("the password before Rotate still works")
	}

	other := e.newIAMRole(t, "other")
	seen = append(seen, e.password(t, other))
	rotated, err := e.p.RotateAll(ctx)
	if err != nil || !slices.Equal(rotated, slices.Sorted(slices.Values([]string{user, other}))) {
		t.Fatalf("RotateAll = %v, %v", rotated, err)
	}
	if err := login(t, e.pg, user, pw3); err == nil {
		t.Fatal("RotateAll left the password unchanged")
	}
	pw4 := e.password(t, user)
	seen = append(seen, pw4)
	if err := login(t, e.pg, user, pw4); err != nil {
		t.Fatalf("login after RotateAll: %v", err)
	}

	// The admin user is never managed.
	if _, err := e.p.Password(ctx, e.pg.Superuser); err == nil || !strings.Contains(err.Error(), "admin user") {
		t.Fatalf("Password(admin) = %v, want a refusal", err)
	}

	logs := e.logs.String()
	if !strings.Contains(logs, "set a new backend password") {
		t.Fatalf("log capture saw nothing; logs:\n%s", logs)
	}
	for _, pw := range seen {
		if strings.Contains(logs, pw) {
			t.Fatal("a managed password appears in the log")
		}
	}
}

func TestManagedConcurrentFirstLogins(t *testing.T) {
	e := newManaged(t)
	user := e.newIAMRole(t, "burst")
	const n = 20
	pws := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			pws[i], errs[i] = e.p.Password(context.Background(), user)
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if pws[i] != pws[0] {
			t.Fatalf("call %d got a different password than call 0", i)
		}
	}
	if err := login(t, e.pg, user, pws[0]); err != nil {
		t.Fatalf("login with the shared password: %v", err)
	}
	if n := strings.Count(e.logs.String(), "set a new backend password"); n != 1 {
		t.Fatalf("password set %d times, want once", n)
	}
}

// TestManagedReplicasAgree: two Postgres values with separate in-process
// locks but one store stand for two replicas; the advisory lock on the
// upstream must make them agree on one password.
func TestManagedReplicasAgree(t *testing.T) {
	e := newManaged(t)
	second := newPostgres(t, dbauth.PostgresOptions{
		Instance: instance(e.pg, "managed"), Store: e.store, Sealer: identitytest.Sealer(t),
		Now: e.clock.Now, LookupEnv: env(e.pg),
	})
	user := e.newIAMRole(t, "replica")
	var wg sync.WaitGroup
	var a, b string
	var errA, errB error
	wg.Add(2)
	go func() { defer wg.Done(); a, errA = e.p.Password(context.Background(), user) }()
	go func() { defer wg.Done(); b, errB = second.Password(context.Background(), user) }()
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("Password: %v / %v", errA, errB)
	}
	if a != b {
		t.Fatal("two replicas ended up with different passwords")
	}
	if err := login(t, e.pg, user, a); err != nil {
		t.Fatalf("login: %v", err)
	}
}

// failingStore refuses writes, to prove the database password is rolled
// back when it cannot be stored.
type failingStore struct {
	*sqlstore.Store
	fail bool
}

func (f *failingStore) PutBackendPassword(ctx context.Context, instance, dbUser string, sealed []byte, at time.Time) error {
	if f.fail {
		return errors.New("disk full")
	}
	return f.Store.PutBackendPassword(ctx, instance, dbUser, sealed, at)
}

func TestManagedStoreFailureKeepsOldPassword(t *testing.T) {
	pg := upstream(t)
	fs := &failingStore{Store: openStore(t)}
	clk := newClock()
	p := newPostgres(t, dbauth.PostgresOptions{Instance: instance(pg, "managed"), Store: fs, Sealer: identitytest.Sealer(t), Now: clk.Now, LookupEnv: env(pg)})
	if err := p.Setup(t.Context()); err != nil {
		t.Fatal(err)
	}
	user := newRole(t, pg, "atomic")
	adminExec(t, pg, "GRANT rds_iam TO "+user)
	pw, err := p.Password(t.Context(), user)
	if err != nil {
		t.Fatal(err)
	}
	fs.fail = true
	if err := p.Rotate(t.Context(), user); err == nil || !strings.Contains(err.Error(), "left unchanged") {
		t.Fatalf("Rotate with a failing store: %v", err)
	}
	if err := login(t, pg, user, pw); err != nil {
		t.Fatalf("the stored password stopped working after a failed rotation: %v", err)
	}
}

func TestManagedErrorsHideSecrets(t *testing.T) {
	// iam_users lets a role that does not exist pass as IAM-enabled, so
	// ALTER ROLE itself fails.
	e := newManaged(t, func(in *config.Instance) { in.IAMUsers = []string{"*"} })
	_, err := e.p.Password(t.Context(), "no_such_role_here")
	if err == nil {
		t.Fatal("Password for a role that does not exist succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, `database user "no_such_role_here" does not exist`) {
		t.Errorf("error does not say what is wrong: %q", msg)
	}
	for _, leak := range []string{"ALTER ROLE", "SCRAM-SHA-256$", "PASSWORD '"} {
		if strings.Contains(msg, leak) || strings.Contains(e.logs.String(), leak) {
			t.Errorf("error or log contains %q: %q", leak, msg)
		}
	}
	if _, _, err := e.store.GetBackendPassword(t.Context(), "orders", "no_such_role_here"); err == nil {
		t.Error("a password was stored for a role whose ALTER failed")
	}
}

func TestManagedUnsealableIsReplaced(t *testing.T) {
	e := newManaged(t, func(in *config.Instance) { in.IAMUsers = []string{"*"} })
	user := newRole(t, e.pg, "reseal")
	pw := e.password(t, user)
	// A value sealed for another user does not open for this one (aad).
	other := e.rawSealed(t, user)
	if err := e.store.PutBackendPassword(t.Context(), "orders", user+"x", other, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.Password(t.Context(), user+"x"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("copied row: %v, want a new password attempt (role does not exist)", err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "stored backend password does not open") {
		t.Errorf("the unsealable row was not reported; logs:\n%s", logs)
	}
	if strings.Contains(logs, pw) {
		t.Fatal("password in logs")
	}
}

// TestManagedLeavesNonIAMUsersAlone: a user outside rds_iam keeps the
// password it has; iamdb neither sets nor rotates it.
func TestManagedLeavesNonIAMUsersAlone(t *testing.T) {
	e := newManaged(t)
	user := newRole(t, e.pg, "human")
	adminExec(t, e.pg, "ALTER ROLE "+user+" PASSWORD 'human-Chosen-Pw1'")
	if _, err := e.p.Password(t.Context(), user); !errors.Is(err, dbauth.ErrNotIAMUser) || !strings.Contains(err.Error(), "not a member of rds_iam") {
		t.Fatalf("Password for a non-IAM user: %v, want ErrNotIAMUser", err)
	}
	if err := e.p.Rotate(t.Context(), user); !errors.Is(err, dbauth.ErrNotIAMUser) {
		t.Fatalf("Rotate of a non-IAM user: %v, want ErrNotIAMUser", err)
	}
	if err := login(t, e.pg, user, "human-Chosen-Pw1"); err != nil {
		t.Fatalf("the non-IAM user's own password stopped working: %v", err)
	}

	// A user revoked from rds_iam after iamdb set its password is skipped
	// by RotateAll, not reported as a failure.
	gone := e.newIAMRole(t, "revoked")
	e.password(t, gone)
	adminExec(t, e.pg, "REVOKE rds_iam FROM "+gone)
	e.clock.Advance(dbauth.DefaultMembershipTTL)
	if rotated, err := e.p.RotateAll(t.Context()); err != nil || len(rotated) != 0 {
		t.Fatalf("RotateAll = %v, %v; want nothing rotated and no error", rotated, err)
	}
}

// BenchmarkManagedPasswordStored is the per-login cost in mode managed once
// a password exists. "cached": the password was read within
// storedPasswordTTL and comes from memory. "store-read": the clock passes
// storedPasswordTTL before every call, so each one reads the store and
// unseals, as every login would without the cache.
func BenchmarkManagedPasswordStored(b *testing.B) {
	if testing.Short() {
		b.Skip("needs PostgreSQL")
	}
	pg := testdb.Postgres(b)
	st, err := sqlstore.Open(b.Context(), "sqlite://"+b.TempDir()+"/iamdb.db", identitytest.Sealer(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	store := &countingStore{Store: st}
	clk := newClock()
	in := instance(pg, "managed")
	in.IAMUsers = []string{"*"}
	// "store-read" moves the clock a second per call; no rotation midway.
	in.BackendAuth.RotateEvery = 0
	p, err := dbauth.NewPostgres(b.Context(), dbauth.PostgresOptions{Instance: in, Store: store, Sealer: identitytest.Sealer(b), Now: clk.Now, LookupEnv: env(pg)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := b.Context()
	conn, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	user := "bench_" + strings.ReplaceAll(b.Name(), "/", "_")
	user = strings.ToLower(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, user))
	conn.Exec(ctx, "DROP ROLE IF EXISTS "+user)
	if _, err := conn.Exec(ctx, "CREATE ROLE "+user+" LOGIN"); err != nil {
		b.Fatal(err)
	}
	defer conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+user)
	if _, err := p.Password(ctx, user); err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		store.reads.Store(0)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Password(ctx, user); err != nil {
				b.Fatal(err)
			}
		}
		if n := store.reads.Load(); n != 0 {
			b.Fatalf("%d store reads, want none", n)
		}
	})
	b.Run("store-read", func(b *testing.B) {
		store.reads.Store(0)
		var calls int64
		b.ReportAllocs()
		for b.Loop() {
			clk.Advance(dbauth.StoredPasswordTTL)
			if _, err := p.Password(ctx, user); err != nil {
				b.Fatal(err)
			}
			calls++
		}
		if n := store.reads.Load(); n != calls {
			b.Fatalf("%d store reads in %d calls, want one each", n, calls)
		}
	})
}
