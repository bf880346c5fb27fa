package mysqlproxy

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/identity/identitytest"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/testdb"
)

const managedAdminEnv = "IAMDB_TEST_MARIADB_ADMIN_PASSWORD"

var managedUserSeq atomic.Int64

// managedReplicas is one instance in backend_auth mode managed served by
// two dbauth values sharing the store, as two replicas sharing a data dir
// would: proxy is the listener's backend, other changes passwords behind
// its back. Their clock stands still, so a password proxy cached never
// grows old enough to be read again from the store.
type managedReplicas struct {
	user         string
	proxy, other *dbauth.MySQL
}

func newManagedReplicas(t *testing.T, my *testdb.MariaDBServer) *managedReplicas {
	t.Helper()
	ctx := context.Background()
	user := fmt.Sprintf("managed_%d_%d", os.Getpid(), managedUserSeq.Add(1))
	root, err := sql.Open("mysql", my.RootDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, stmt := range []string{
		fmt.Sprintf("CREATE USER '%s'@'%%'", user),
		fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'%%'", user),
	} {
		if _, err := root.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		if db, err := sql.Open("mysql", my.RootDSN()); err == nil {
			db.Exec(fmt.Sprintf("DROP USER IF EXISTS '%s'@'%%'", user))
			db.Close()
		}
	})

	store, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "iamdb.db"), identitytest.Sealer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	now := time.Now()
	opt := dbauth.MySQLOptions{
		Instance: config.Instance{
			Name:       "orders",
			Engine:     "mysql",
			ResourceID: testResource,
			IAMUsers:   []string{user},
			Upstream: config.Upstream{
				Address:     my.Addr(),
				TLS:         "verify-full",
				CA:          my.CAFile,
				DialTimeout: config.Duration(5 * time.Second),
			},
			BackendAuth: config.BackendAuth{
				Mode:             "managed",
				AdminUser:        my.RootUser,
				AdminPasswordEnv: managedAdminEnv,
				RotateEvery:      config.Duration(24 * time.Hour),
			},
		},
		Store:  store,
		Sealer: identitytest.Sealer(t),
		Now:    func() time.Time { return now },
		LookupEnv: func(k string) (string, bool) {
			if k == managedAdminEnv {
				return my.RootPassword, true
			}
			return "", false
		},
	}
	r := &managedReplicas{user: user}
	for _, v := range []**dbauth.MySQL{&r.proxy, &r.other} {
		if *v, err = dbauth.NewMySQL(ctx, opt); err != nil {
			t.Fatal(err)
		}
		t.Cleanup((*v).Close)
	}
	return r
}

// managedLogin logs in through the proxy as the managed user, checks who
// the session runs as and quits; it returns the upstream connection id.
func managedLogin(t *testing.T, h *harness, user, token string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := h.connect(ctx, user, token)
	if err != nil {
		t.Fatalf("login through the proxy: %v\nlog:\n%s", err, h.logs)
	}
	defer conn.Close()
	var id, who string
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID(), CURRENT_USER()").Scan(&id, &who); err != nil {
		t.Fatal(err)
	}
	if who != user+"@%" {
		t.Fatalf("session runs as %q, want %s@%%", who, user)
	}
	return id
}

// TestManagedPasswordChangedElsewhere: when another replica (or 'iamdb db
// rotate') gives the user a new password while the listener's backend
// still has the old one cached, a login that opens a new upstream session
// is refused by the upstream once, then logged in with the new password
// without the client noticing.
func TestManagedPasswordChangedElsewhere(t *testing.T) {
	my := testdb.MariaDB(t)

	t.Run("pool off", func(t *testing.T) {
		r := newManagedReplicas(t, my)
		h := newHarnessOn(t, my, func(c *Config) { c.Backend = r.proxy })
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
		r := newManagedReplicas(t, my)
		h := newHarnessOn(t, my, withPool(Pool{Enabled: true}), func(c *Config) { c.Backend = r.proxy })
		aliceID, aliceSecret := h.user("alice", connectPolicy(r.user))
		bobID, bobSecret := h.user("bob", connectPolicy(r.user))
		alice := h.sdkToken(h.endpoint, testRegion, r.user, aliceID, aliceSecret, "")
		bob := h.sdkToken(h.endpoint, testRegion, r.user, bobID, bobSecret, "")

		managedLogin(t, h, r.user, alice)
		h.waitIdle(t, 1)
		if err := r.other.Rotate(context.Background(), r.user); err != nil {
			t.Fatalf("Rotate on the other replica: %v", err)
		}
		// Sessions are never shared between principals: bob's login must
		// open a new one.
		id := managedLogin(t, h, r.user, bob)
		h.logs.find(t, "upstream refused the backend password; logging in again with the one set since", "user", r.user)
		h.waitIdle(t, 2)
		// bob's session is pooled under the password it logged in with.
		if got := managedLogin(t, h, r.user, bob); got != id {
			t.Fatalf("bob's next login got upstream connection %s, not his pooled session %s", got, id)
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
