package pgproxy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/identity/identitytest"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/testdb"
)

const managedAdminEnv = "IAMDB_TEST_PG_ADMIN_PASSWORD"

var managedRoleSeq atomic.Int64

// managedReplicas is one instance in backend_auth mode managed served by
// two dbauth values sharing the store, as two replicas sharing a data dir
// would: proxy is the listener's backend, other changes passwords behind
// its back. Their clock stands still, so a password proxy cached never
// grows old enough to be read again from the store.
type managedReplicas struct {
	user         string
	proxy, other *dbauth.Postgres
}

func newManagedReplicas(t *testing.T, pg *testdb.PG) *managedReplicas {
	t.Helper()
	ctx := context.Background()
	user := fmt.Sprintf("managed_%d_%d", os.Getpid(), managedRoleSeq.Add(1))
	admin, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE ROLE "+pgx.Identifier{user}.Sanitize()+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, pg.AdminDSN()); err == nil {
			conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{user}.Sanitize())
			conn.Close(ctx)
		}
	})

	store, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "iamdb.db"), identitytest.Sealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	now := time.Now()
	opt := dbauth.PostgresOptions{
		Instance: config.Instance{
			Name:       "orders",
			Engine:     "postgres",
			ResourceID: testResource,
			IAMUsers:   []string{user},
			Upstream: config.Upstream{
				Address:     pg.Addr(),
				TLS:         "verify-full",
				CA:          pg.CAFile,
				DialTimeout: config.Duration(5 * time.Second),
			},
			BackendAuth: config.BackendAuth{
				Mode:             "managed",
				AdminUser:        pg.Superuser,
				AdminPasswordEnv: managedAdminEnv,
				RotateEvery:      config.Duration(24 * time.Hour),
			},
		},
		Store:  store,
		Sealer: identitytest.Sealer(t),
		Now:    func() time.Time { return now },
		LookupEnv: func(k string) (string, bool) {
			if k == managedAdminEnv {
				return pg.Password, true
			}
			return "", false
		},
	}
	r := &managedReplicas{user: user}
	for _, v := range []**dbauth.Postgres{&r.proxy, &r.other} {
		if *v, err = dbauth.NewPostgres(ctx, opt); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*v).Close)
	}
	return r
}

// managedLogin logs in through the proxy as the managed user and checks
// who the session runs as; it returns the upstream backend's pid.
func managedLogin(t *testing.T, h *harness, user, token string) uint32 {
	t.Helper()
	ctx := context.Background()
	conn, err := h.connect(ctx, user, token)
	if err != nil {
		t.Fatalf("login through the proxy: %v\nlog:\n%s", err, h.logs)
	}
	defer conn.Close(ctx)
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
		t.Fatal(err)
	}
	if who != user {
		t.Fatalf("session runs as %q, want %q", who, user)
	}
	return backendPID(t, ctx, conn)
}

// TestManagedPasswordChangedElsewhere: when another replica (or 'iamdb db
// rotate') gives the user a new password while the listener's backend
// still has the old one cached, a login that opens a new upstream session
// is refused by the upstream once, then logged in with the new password
// without the client noticing.
func TestManagedPasswordChangedElsewhere(t *testing.T) {
	pg := testdb.Postgres(t)

	t.Run("pool off", func(t *testing.T) {
		r := newManagedReplicas(t, pg)
		h := newHarness(t, func(c *Config) { c.Backend = r.proxy })
		id, secret := h.user("alice", connectPolicy(r.user))
		tok := h.sdkToken(h.endpoint, testRegion, r.user, id, secret, "")

		managedLogin(t, h, r.user, tok) // sets the password, which stays cached
		if err := r.other.Rotate(context.Background(), r.user); err != nil {
			t.Fatalf("Rotate on the other replica: %v", err)
		}
		managedLogin(t, h, r.user, tok)
		h.logs.find(t, "upstream refused the backend password; logging in again with the one set since", "user", r.user)
		h.obs.wait(t, ResultOK, 2)
		if n := h.obs.count(ResultUpstreamRejected); n != 0 {
			t.Fatalf("%d logins reported as refused by the upstream", n)
		}

		// The new password is what the backend holds now: no more retries.
		managedLogin(t, h, r.user, tok)
		h.obs.wait(t, ResultOK, 3)
		if n := countRecords(h, "upstream refused the backend password; logging in again with the one set since"); n != 1 {
			t.Fatalf("%d retries, want 1; log:\n%s", n, h.logs)
		}
	})

	t.Run("pool on", func(t *testing.T) {
		r := newManagedReplicas(t, pg)
		h := newHarness(t, withPool(Pool{}), func(c *Config) { c.Backend = r.proxy })
		aliceID, aliceSecret := h.user("alice", connectPolicy(r.user))
		bobID, bobSecret := h.user("bob", connectPolicy(r.user))
		alice := h.sdkToken(h.endpoint, testRegion, r.user, aliceID, aliceSecret, "")
		bob := h.sdkToken(h.endpoint, testRegion, r.user, bobID, bobSecret, "")

		managedLogin(t, h, r.user, alice)
		waitIdle(t, h, 1)
		if err := r.other.Rotate(context.Background(), r.user); err != nil {
			t.Fatalf("Rotate on the other replica: %v", err)
		}
		// Sessions are never shared between principals: bob's login must
		// open a new one.
		pid := managedLogin(t, h, r.user, bob)
		h.logs.find(t, "upstream refused the backend password; logging in again with the one set since", "user", r.user)
		waitIdle(t, h, 2)
		// bob's session is pooled under the password it logged in with.
		if got := managedLogin(t, h, r.user, bob); got != pid {
			t.Fatalf("bob's next login got backend %d, not his pooled session %d", got, pid)
		}
		h.obs.wait(t, ResultOK, 3)
	})
}

// countRecords counts the log records with message msg.
func countRecords(h *harness, msg string) int {
	n := 0
	for _, r := range h.logs.records() {
		if r["msg"] == msg {
			n++
		}
	}
	return n
}
