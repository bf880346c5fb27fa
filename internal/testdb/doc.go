// Package testdb starts throwaway PostgreSQL, MariaDB and Redis servers from
// the machine's own binaries, for integration tests and for `iamdb demo`.
//
// iamdb is a proxy; its tests are only convincing against real servers and
// real clients, so nothing here is a mock. Each server runs as a child
// process on a free loopback port, with its data, Unix socket, logs and
// certificates in a private directory under the temp dir. A database the
// machine already runs (PostgreSQL on 5432, MariaDB on 3306, Redis on 6379)
// is never used or touched, and test binaries running in parallel never
// collide.
//
// # In tests
//
// Each test binary shares one server per engine. It is started on first use
// and stopped by StopAll, which TestMain must call:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		testdb.StopAll()
//		os.Exit(code)
//	}
//
//	func TestLogin(t *testing.T) {
//		pg := testdb.Postgres(t)      // *testdb.PG, shared
//		dsn := pg.NewDatabase(t)      // fresh database, dropped when t ends
//		conn, err := pgx.Connect(ctx, dsn)
//		...
//		my := testdb.MariaDB(t)       // root over TCP: my.DSN("root", my.RootPassword, "")
//		rd := testdb.Redis(t)         // rd.Addr
//	}
//
// Shared servers outlive individual tests on purpose: on an idle two-core
// machine PostgreSQL (initdb included) and MariaDB (mariadb-install-db
// included) each take about half a second to start and Redis a tenth, which
// a package with fifty integration tests should pay once, not fifty times. Tests isolate themselves
// with NewDatabase, unique role names, or Redis key prefixes. A test that
// needs a server configured differently calls StartPostgres, StartMariaDB or
// StartRedis and stops it with t.Cleanup.
//
// The shared PostgreSQL and MariaDB have TLS enabled (CAFile, TLSConfig,
// PG.TLSDSN); plain connections still work. PostgreSQL authenticates TCP
// clients with scram-sha-256 and the superuser "postgres" with a random
// Password, and trusts its Unix socket. MariaDB's root has a random
// RootPassword on every account (socket and TCP).
//
// When a server's binaries are missing, the test is skipped with a message
// naming what to install (scripts/deps.sh installs all of it). With CI set
// (CI=true) the test fails instead: a CI run that silently skipped its
// integration tests would prove nothing. Any other start-up failure fails
// the test, with the tail of the server's log in the message. The full logs
// are in the private directory while the server runs (PostgreSQL:
// DataDir/postgres.log; MariaDB: BaseDir/mysqld.log).
//
// # Finding the binaries
//
// PostgreSQL: the directory of postgres or initdb on PATH (symlinks
// followed), else the highest version in /usr/lib/postgresql/*/bin, where
// Debian installs it without linking it into PATH. initdb and postgres
// always come from one directory because data directories are tied to a
// major version. MariaDB: mariadb-install-db (or mysql_install_db) and
// mariadbd (or mysqld) on PATH or in /usr/bin, /usr/sbin and similar. Redis:
// redis-server.
//
// # Running as root
//
// initdb and postgres refuse to run as root, so as root the PostgreSQL
// processes run as the "postgres" OS user, and MariaDB's as "mysql"; the
// private directory is handed to that user and placed under a parent it can
// traverse (/tmp when TMPDIR is not). The Debian server packages create
// both users; without them, start-up fails with ErrNotInstalled.
//
// # Server settings
//
// Both SQL servers trade durability for speed (PostgreSQL: fsync,
// synchronous_commit and full_page_writes off, initdb --no-sync; MariaDB:
// innodb_flush_log_at_trx_commit=0, no doublewrite, no binary log) because
// their data is deleted on Stop anyway. They allow many connections
// (PostgreSQL 300, MariaDB 400) so that connection-storm tests of the proxy
// hit the proxy's limits, not the server's.
//
// # Lifetime and cleanup
//
// Every server runs in its own process group. Stop sends the engine's fast
// shutdown signal (SIGINT for PostgreSQL, SIGTERM for MariaDB and Redis),
// kills the group if it lingers, and removes the private directory. If the
// test binary is killed before StopAll runs, the servers receive SIGKILL
// through the Linux parent-death signal, and the next use of this package
// removes directories whose owning process is gone.
//
// A freshly chosen free port can be taken by another process before the
// server binds it; start-up then sees "Address already in use" in the
// server log and retries on another port. Readiness probes also check that
// the server answering is ours (its data directory, socket or pid), not one
// that won such a race.
package testdb
