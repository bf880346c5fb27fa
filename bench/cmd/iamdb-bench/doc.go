// Command iamdb-bench measures what logging in through iamdb costs compared
// with logging in to PostgreSQL directly and through PgBouncer, and to
// MariaDB directly, and prints one Markdown table. bench/run builds bin/iamdb and runs it; see
// bench/README.md for how to read the numbers.
//
// Everything is measured in one run on one machine so that the ratios are
// comparable even on a small, noisy host:
//
//	                     ┌──────────────── TLS + SCRAM ───────────────┐
//	client (pgconn,      │                                            ▼
//	pgbench) ──TLS+SCRAM─┼──▶ PgBouncer (session pool) ──TLS+SCRAM──▶ PostgreSQL
//	                     └──TLS+token─▶ iamdb serve ───TLS+SCRAM─────▶  (throwaway,
//	                                    (managed backend password)      testdb)
//
// For each target, in this order: memory per idle client connection (only
// for the PgBouncer and iamdb processes: VmRSS before and after opening N
// idle connections), new TLS logins per second (C goroutines each looping
// connect, SELECT 1, close), then pgbench -S TPS and latency; for iamdb,
// which runs with its defaults (upstream session pool on), the logins once
// more after a reload with the pool off, and how many logins reused an
// upstream session (from its /metrics). iamdb is
// measured last because its managed backend authentication replaces the
// database user's password on first login, which would lock the direct and
// PgBouncer targets out; each target's own process is stopped before the
// next one starts so that idle pooled server connections do not eat into
// PostgreSQL's max_connections.
//
// The MariaDB rows come last, from a throwaway MariaDB and a second iamdb
// serve with an engine: mysql instance in front of it: new TLS logins per
// second (go-sql-driver/mysql, the token via mysql_clear_password) and
// point-SELECT throughput over persistent connections, direct vs iamdb,
// with a third reference target: a TCP relay (this program run as
// `iamdb-bench tcp-relay LISTEN UPSTREAM`) that copies the direct target's
// bytes to MariaDB and does nothing else, so that its ratio to direct shows
// what any proxy process on the path costs on the machine. --only postgres
// or --only mariadb measures one engine's rows alone.
//
// Everything the command starts (PostgreSQL, MariaDB, PgBouncer, iamdb serve, temp
// directories) is removed again on exit, on error and on Ctrl-C; children
// also receive SIGKILL if the command itself is killed. The machine's own
// PostgreSQL is never used: the database comes from internal/testdb on a
// free port.
package main
