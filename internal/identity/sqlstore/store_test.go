package sqlstore_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/identitytest"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
	"github.com/iamdb/iamdb/internal/testdb"
)

var _ identity.Store = (*sqlstore.Store)(nil)

func TestMain(m *testing.M) {
	code := m.Run()
	testdb.StopAll()
	os.Exit(code)
}

func openStore(t *testing.T, dsn string, opts ...sqlstore.Option) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.Open(t.Context(), dsn, identitytest.Sealer(t), opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", dsn, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func sqliteDSN(t *testing.T) string {
	return "sqlite://" + filepath.Join(t.TempDir(), "iamdb.db")
}

func postgresDSN(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("PostgreSQL tests need a server; skipped with -short")
	}
	return testdb.Postgres(t).NewDatabase(t)
}

func TestConformanceSQLite(t *testing.T) {
	identitytest.RunConformance(t, func(t *testing.T) identity.Store {
		return openStore(t, sqliteDSN(t))
	})
}

func TestConformancePostgres(t *testing.T) {
	identitytest.RunConformance(t, func(t *testing.T) identity.Store {
		return openStore(t, postgresDSN(t))
	})
}
