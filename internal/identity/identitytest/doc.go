// Package identitytest holds the conformance suite every identity.Store
// implementation must pass, so the SQLite and PostgreSQL stores (and any
// future one) behave identically.
//
// Usage, in an implementation's test:
//
//	func TestConformance(t *testing.T) {
//		identitytest.RunConformance(t, func(t *testing.T) identity.Store {
//			st, err := mystore.Open(ctx, freshDatabase(t), identitytest.Sealer(t))
//			...
//			t.Cleanup(func() { st.Close() })
//			return st
//		})
//	}
//
// open must return a store on a fresh, empty database that seals secrets
// with identitytest.Sealer (the suite opens sealed secrets with the same
// key to prove they round-trip). Optional capabilities are discovered by
// interface:
//
//   - Reopen(ctx) (identity.Store, error): a second handle on the same
//     database; the suite checks that handles see each other's writes.
//   - DB() *sql.DB: raw access; the suite reads stored rows to prove no
//     plaintext secret or session token reaches the database.
//
// A store that lacks either fails the suite: both are part of the contract
// of a persistent store.
package identitytest
