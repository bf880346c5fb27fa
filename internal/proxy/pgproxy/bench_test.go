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
// the same PostgreSQL with TLS and SCRAM-SHA-256. iamdb's login includes
// its own TLS-and-SCRAM login to the upstream, so the ratio is the price
// of the extra hop. "iamdb+audit" writes connect and disconnect events to
// a file audit log, fsynced before the client hears the login succeeded;
// "iamdb" audits nothing.
func BenchmarkLogin(b *testing.B) {
	h := newHarness(b)
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
	}{
		{"iamdb", h.pgxConfig("app", tok, ""), audit.Nop{}},
		{"iamdb+audit", h.pgxConfig("app", tok, ""), sink},
		{"direct", direct, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.audit != nil {
				cfg := h.cfg
				cfg.Audit = bc.audit
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
