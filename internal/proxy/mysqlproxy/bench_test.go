package mysqlproxy

import (
	"context"
	"database/sql"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// BenchmarkLogin measures whole logins (TLS, authentication, SELECT 1,
// close) through iamdb with an IAM token and, side by side, directly to
// the same MariaDB with TLS and mysql_native_password. iamdb's login
// includes its own TLS login to the upstream, so the ratio is the price
// of the extra hop.
func BenchmarkLogin(b *testing.B) {
	h := newHarness(b)
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	upTLS, err := h.my.TLSConfig()
	if err != nil {
		b.Fatal(err)
	}
	if err := mysql.RegisterTLSConfig("bench-direct", upTLS); err != nil {
		b.Fatal(err)
	}
	direct, err := mysql.ParseDSN(h.my.DSN("app", userPass["app"], h.database))
	if err != nil {
		b.Fatal(err)
	}
	direct.TLSConfig = "bench-direct"
	for _, bc := range []struct {
		name string
		cfg  *mysql.Config
	}{
		{"iamdb", h.driverConfig("app", tok)},
		{"direct", direct},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			c, err := mysql.NewConnector(bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			db := sql.OpenDB(c)
			defer db.Close()
			db.SetMaxIdleConns(0) // every iteration is a new login
			for b.Loop() {
				var one int
				if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}
