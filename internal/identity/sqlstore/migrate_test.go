package sqlstore_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/identitytest"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
)

func migrationRows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatalf("count schema_migrations: %v", err)
	}
	return n
}

func testReopenIsNoOp(t *testing.T, dsn string) {
	first := openStore(t, dsn)
	if _, err := first.CreateAccount(t.Context(), identity.Account{ID: "111122223333"}); err != nil {
		t.Fatal(err)
	}
	gen, _ := first.Generation(t.Context())
	applied := migrationRows(t, first.DB())
	if applied < 1 {
		t.Fatalf("schema_migrations has %d rows after the first Open", applied)
	}
	second := openStore(t, dsn)
	if n := migrationRows(t, second.DB()); n != applied {
		t.Fatalf("second Open changed schema_migrations: %d → %d rows", applied, n)
	}
	if g, _ := second.Generation(t.Context()); g != gen {
		t.Fatalf("second Open changed the generation %d → %d (data re-seeded?)", gen, g)
	}
	if _, err := second.GetAccount(t.Context(), "111122223333"); err != nil {
		t.Fatalf("data lost on reopen: %v", err)
	}
}

func testRefusesNewerSchema(t *testing.T, dsn string) {
	st := openStore(t, dsn)
	if _, err := st.DB().ExecContext(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	_, err := sqlstore.Open(t.Context(), dsn, identitytest.Sealer(t))
	if err == nil || !strings.Contains(err.Error(), "upgrade iamdb") {
		t.Fatalf("Open on a newer schema: %v, want a refusal that says to upgrade", err)
	}
}

func TestMigrationsSQLite(t *testing.T) {
	t.Run("ReopenIsNoOp", func(t *testing.T) { testReopenIsNoOp(t, sqliteDSN(t)) })
	t.Run("RefusesNewerSchema", func(t *testing.T) { testRefusesNewerSchema(t, sqliteDSN(t)) })
}

func TestMigrationsPostgres(t *testing.T) {
	t.Run("ReopenIsNoOp", func(t *testing.T) { testReopenIsNoOp(t, postgresDSN(t)) })
	t.Run("RefusesNewerSchema", func(t *testing.T) { testRefusesNewerSchema(t, postgresDSN(t)) })
	t.Run("ConcurrentOpens", func(t *testing.T) {
		dsn := postgresDSN(t)
		const n = 4
		var wg sync.WaitGroup
		errs := make([]error, n)
		stores := make([]*sqlstore.Store, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stores[i], errs[i] = sqlstore.Open(context.Background(), dsn, identitytest.Sealer(t))
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("concurrent Open %d: %v", i, err)
			}
			defer stores[i].Close()
		}
		if got, want := migrationRows(t, stores[0].DB()), migrationFiles(t); got != want {
			t.Fatalf("schema_migrations has %d rows after concurrent Opens, want %d (one per migration)", got, want)
		}
		if g, _ := stores[0].Generation(t.Context()); g != 0 {
			t.Fatalf("generation %d after concurrent Opens, want 0 (seeded once)", g)
		}
	})
}

func TestOpenSQLiteSettings(t *testing.T) {
	dir := t.TempDir()
	for _, dsn := range []string{"sqlite://" + filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")} {
		st := openStore(t, dsn)
		var mode string
		var fk int
		db := st.DB()
		if err := db.QueryRowContext(t.Context(), `PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
			t.Fatalf("%s: journal_mode = %q (%v), want wal", dsn, mode, err)
		}
		if err := db.QueryRowContext(t.Context(), `PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
			t.Fatalf("%s: foreign_keys = %d (%v), want 1", dsn, fk, err)
		}
		// Foreign keys are enforced, not just declared.
		_, err := db.ExecContext(t.Context(), `INSERT INTO users (id, account_id, name, name_key, path, created_at)
			VALUES ('AIDAX', '000000000000', 'x', 'x', '/', 0)`)
		if err == nil {
			t.Fatalf("%s: a user row referencing a missing account was accepted", dsn)
		}
	}
	_, err := sqlstore.Open(t.Context(), filepath.Join(dir, "c.db")+"?_pragma=foreign_keys(0)", identitytest.Sealer(t))
	if err == nil {
		t.Fatal("Open accepted caller-supplied SQLite options that could disable foreign keys")
	}
	if _, err := sqlstore.Open(t.Context(), filepath.Join(dir, "d.db"), nil); err == nil {
		t.Fatal("Open without a sealer succeeded")
	}
}

func TestPartitionOption(t *testing.T) {
	st := openStore(t, sqliteDSN(t), sqlstore.WithPartition("aws-cn"))
	c := t.Context()
	if _, err := st.CreateAccount(c, identity.Account{ID: "111122223333"}); err != nil {
		t.Fatal(err)
	}
	u, err := st.CreateUser(c, identity.User{AccountID: "111122223333", Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.GetUser(c, "111122223333", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if u.ARN() != "arn:aws-cn:iam::111122223333:user/alice" || got.ARN() != u.ARN() {
		t.Fatalf("ARNs %s / %s, want the aws-cn partition", u.ARN(), got.ARN())
	}
	p, err := st.CreatePolicy(c, identity.ManagedPolicy{AccountID: "111122223333", Name: "p"}, `{"Statement":[]}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetPolicy(c, "arn:aws:iam::111122223333:policy/p"); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("policy found under the wrong partition: %v", err)
	}
	if _, err := st.GetPolicy(c, p.ARN()); err != nil {
		t.Fatalf("GetPolicy(%s): %v", p.ARN(), err)
	}
}

// TestDeterministicIDs checks that ids come from the injected source.
func TestDeterministicIDs(t *testing.T) {
	open := func() *sqlstore.Store {
		return openStore(t, sqliteDSN(t), sqlstore.WithRandom(zeroReader{}))
	}
	a, b := open(), open()
	for _, st := range []*sqlstore.Store{a, b} {
		if _, err := st.CreateAccount(t.Context(), identity.Account{ID: "111122223333"}); err != nil {
			t.Fatal(err)
		}
	}
	ua, _ := a.CreateUser(t.Context(), identity.User{AccountID: "111122223333", Name: "x"})
	ub, _ := b.CreateUser(t.Context(), identity.User{AccountID: "111122223333", Name: "x"})
	if ua.ID != "AIDAAAAAAAAAAAAAAAAA" || ua.ID != ub.ID {
		t.Fatalf("ids %s / %s, want AIDA + 16 A from a zero reader", ua.ID, ub.ID)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// migrationFiles counts the migrations shipped in the source tree.
func migrationFiles(t *testing.T) int {
	t.Helper()
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations found: %v", err)
	}
	return len(files)
}
