package sqlstore_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
)

func testBackendPasswords(t *testing.T, st *sqlstore.Store) {
	ctx := t.Context()
	if _, _, err := st.GetBackendPassword(ctx, "orders", "app"); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("Get before Put: %v, want ErrNotFound", err)
	}
	gen, err := st.Generation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC)
	if err := st.PutBackendPassword(ctx, "orders", "app", []byte("sealed-1"), t0); err != nil {
		t.Fatal(err)
	}
	sealed, at, err := st.GetBackendPassword(ctx, "orders", "app")
	if err != nil || !bytes.Equal(sealed, []byte("sealed-1")) || !at.Equal(t0) {
		t.Fatalf("Get = %q, %v, %v; want sealed-1, %v", sealed, at, err, t0)
	}

	// Replacing keeps one row per (instance, user).
	t1 := t0.Add(24 * time.Hour)
	if err := st.PutBackendPassword(ctx, "orders", "app", []byte("sealed-2"), t1); err != nil {
		t.Fatal(err)
	}
	sealed, at, err = st.GetBackendPassword(ctx, "orders", "app")
	if err != nil || !bytes.Equal(sealed, []byte("sealed-2")) || !at.Equal(t1) {
		t.Fatalf("Get after replace = %q, %v, %v", sealed, at, err)
	}

	// Instances are separate namespaces.
	if _, _, err := st.GetBackendPassword(ctx, "billing", "app"); !errors.Is(err, identity.ErrNotFound) {
		t.Fatalf("other instance: %v, want ErrNotFound", err)
	}
	for _, u := range []string{"zed", "Report"} {
		if err := st.PutBackendPassword(ctx, "orders", u, []byte("x"), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.PutBackendPassword(ctx, "billing", "other", []byte("x"), t0); err != nil {
		t.Fatal(err)
	}
	users, err := st.ListBackendPasswordUsers(ctx, "orders")
	if err != nil || !slices.Equal(users, []string{"Report", "app", "zed"}) {
		t.Fatalf("List(orders) = %v, %v", users, err)
	}
	if err := st.PutBackendPassword(ctx, "orders", "app", nil, t0); !errors.Is(err, identity.ErrInvalidInput) {
		t.Fatalf("Put of an empty value: %v, want ErrInvalidInput", err)
	}

	if g, _ := st.Generation(ctx); g != gen {
		t.Fatalf("backend password writes bumped the generation %d → %d", gen, g)
	}
}

func TestBackendPasswordsSQLite(t *testing.T) {
	testBackendPasswords(t, openStore(t, sqliteDSN(t)))
}

func TestBackendPasswordsPostgres(t *testing.T) {
	testBackendPasswords(t, openStore(t, postgresDSN(t)))
}
