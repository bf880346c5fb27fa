package mysqlproxy

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/audit"
)

// benchTargets are iamdb (IAM token, upstream session pool on, an audit
// log as iamdb serve has), the same with the pool off and, side by side,
// the same MariaDB directly with TLS and mysql_native_password.
func benchTargets(b *testing.B) (*harness, []benchTarget) {
	iamdb := func(pool bool) (*harness, *mysql.Config) {
		sink, err := audit.OpenFile(filepath.Join(b.TempDir(), "audit.jsonl"), audit.FileOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sink.Close() })
		h := newHarness(b, withPool(Pool{Enabled: pool}), withAudit(sink, audit.StatementPolicy{}))
		id, secret := h.user("alice", connectPolicy("app"))
		return h, h.driverConfig("app", h.sdkToken(h.endpoint, testRegion, "app", id, secret, ""))
	}
	h, pooled := iamdb(true)
	_, unpooled := iamdb(false)
	unpooled.DBName = h.database // the same tables
	upTLS, err := h.my.TLSConfig()
	if err != nil {
		b.Fatal(err)
	}
	direct, err := mysql.ParseDSN(h.my.DSN("app", userPass["app"], h.database))
	if err != nil {
		b.Fatal(err)
	}
	direct.TLS = upTLS
	return h, []benchTarget{{"iamdb", pooled}, {"iamdb-pool-off", unpooled}, {"direct", direct}}
}

type benchTarget struct {
	name string
	cfg  *mysql.Config
}

// BenchmarkLogin measures whole logins (TLS, authentication, DO 1,
// close) by 8 concurrent clients, as the bench's logins row does. iamdb's
// login includes its own login to the upstream, or the reset of a pooled
// upstream session.
func BenchmarkLogin(b *testing.B) {
	_, targets := benchTargets(b)
	for _, bc := range targets {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			c, err := mysql.NewConnector(bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(8 / max(1, runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					conn, err := c.Connect(ctx) // a new login every time
					if err == nil {
						_, err = conn.(driver.ExecerContext).ExecContext(ctx, "DO 1", nil)
						if cerr := conn.Close(); err == nil {
							err = cerr
						}
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}

// BenchmarkPointSelect measures a prepared point select on 8 persistent
// connections, as the bench's MariaDB throughput row does.
func BenchmarkPointSelect(b *testing.B) {
	h, targets := benchTargets(b)
	root := sqlRoot(b, h)
	if _, err := root.Exec("CREATE TABLE IF NOT EXISTS " + h.database + ".sbtest (id INT PRIMARY KEY, c CHAR(120) NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	if _, err := root.Exec("INSERT IGNORE INTO " + h.database + ".sbtest SELECT seq, REPEAT('c', 120) FROM " + h.database + ".seq_1_to_1000"); err != nil {
		b.Fatal(err)
	}
	for _, bc := range targets {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			c, err := mysql.NewConnector(bc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			db := sql.OpenDB(c)
			defer db.Close()
			b.SetParallelism(8 / max(1, runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				conn, err := db.Conn(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				defer conn.Close()
				stmt, err := conn.PrepareContext(ctx, "SELECT c FROM sbtest WHERE id = ?")
				if err != nil {
					b.Error(err)
					return
				}
				defer stmt.Close()
				var s string
				id := 0
				for pb.Next() {
					id = id%1000 + 1
					if err := stmt.QueryRowContext(ctx, id).Scan(&s); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
		})
	}
}

// BenchmarkFollow is what following the packets costs the relay per
// point select, without any I/O: the client's COM_STMT_EXECUTE through
// the walker, the upstream's answer through the response tracker (as
// with the pool on), and the same with statement audit on top.
func BenchmarkFollow(b *testing.B) {
	c := &conversation{caps: capProtocol41 | capDeprecateEOF | capMariaDBCacheMetadata}
	exec := packet(0, execute(1, false, 0, nil, binary.LittleEndian.AppendUint32(nil, 42)))
	var answer []byte
	for i, p := range c.resultSetMeta(true, false, 2, []string{"c"}, append([]byte{0, 0}, lenencString(strings.Repeat("c", 120))...)) {
		answer = append(answer, packet(byte(i+1), p)...)
	}
	for _, bc := range []struct {
		name  string
		audit bool
	}{{"tracker", false}, {"tracker+statement audit", true}} {
		b.Run(bc.name, func(b *testing.B) {
			tr := newRespTracker(c.caps)
			w := &clientWalker{track: tr}
			if bc.audit {
				w.tap = newStmtTap(c.caps, true, func(audit.Statement) {})
				tr.onPrepared = w.tap.learn
				w.tap.learn(1, "SELECT c FROM sbtest WHERE id = ?", 1)
				w.tap.command(execute(1, true, 0, []byte{typeLong, 0}, binary.LittleEndian.AppendUint32(nil, 42)))
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := w.scan(exec); err != nil {
					b.Fatal(err)
				}
				tr.feed(answer)
			}
			if !tr.idle() {
				b.Fatal("the tracker lost track")
			}
		})
	}
}
