package pgproxy

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// BenchmarkLogin measures whole logins (TLS, authentication, SELECT 1,
// close) through iamdb with an IAM token and, side by side, directly to
// the same PostgreSQL with TLS and SCRAM-SHA-256. iamdb's login includes
// its own TLS-and-SCRAM login to the upstream, so the ratio is the price
// of the extra hop.
func BenchmarkLogin(b *testing.B) {
	h := newHarness(b)
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	direct, err := pgx.ParseConfig(h.pg.TLSDSN("app", rolePass["app"], h.database))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		cfg  *pgx.ConnConfig
	}{
		{"iamdb", h.pgxConfig("app", tok, "")},
		{"direct", direct},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				conn, err := pgx.ConnectConfig(ctx, bc.cfg)
				if err != nil {
					b.Fatal(err)
				}
				var one int
				if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
					b.Fatal(err)
				}
				conn.Close(ctx)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}
