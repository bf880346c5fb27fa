package pgproxy

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/audit"
)

// BenchmarkLogin measures whole logins (TLS, authentication, SELECT 1,
// close) through iamdb with an IAM token and, side by side, directly to
// the same PostgreSQL with TLS and SCRAM-SHA-256. "iamdb" runs as
// configured by default: a login takes the upstream session the previous
// one left idle (reset with DISCARD ALL), so it costs the client's TLS
// handshake and the token check. "iamdb-pool-off" logs in to the upstream
// for every session (TLS and SCRAM), the price of the extra hop.
// "iamdb+audit" adds connect and disconnect events in a file audit log,
// fsynced before the client hears the login succeeded.
func BenchmarkLogin(b *testing.B) {
	h := newHarness(b, withPool(Pool{}))
	sink, err := audit.OpenFile(filepath.Join(b.TempDir(), "audit.jsonl"), audit.FileOptions{FailClosed: true})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	direct, err := pgx.ParseConfig(h.pg.TLSDSN("app", rolePass["app"], h.database))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		cfg   *pgx.ConnConfig
		audit audit.Emitter
		pool  bool
	}{
		{"iamdb", h.pgxConfig("app", tok, ""), audit.Nop{}, true},
		{"iamdb-pool-off", h.pgxConfig("app", tok, ""), audit.Nop{}, false},
		{"iamdb+audit", h.pgxConfig("app", tok, ""), sink, true},
		{"direct", direct, nil, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.audit != nil {
				cfg := h.cfg
				cfg.Audit = bc.audit
				cfg.Pool.Enabled = bc.pool
				h.srv.Update(cfg)
			}
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
