// Package sqlstore implements identity.Store on SQL: embedded SQLite
// (modernc.org/sqlite, pure Go) for one machine, PostgreSQL (pgx stdlib)
// for replicas sharing one store.
//
// # One dialect
//
// Both databases accept the same SQL here: $1 placeholders, TEXT ids that
// iamdb generates, BIGINT times in unix microseconds (UTC), JSON lists and
// tag maps in TEXT columns, BYTEA for sealed secrets, ON CONFLICT upserts.
// Open picks the driver from the DSN:
//
//	postgres://… or postgresql://…   PostgreSQL
//	sqlite:///abs/path/iamdb.db      SQLite
//	./relative/iamdb.db              SQLite (a plain path)
//
// SQLite connections run with journal_mode=WAL, busy_timeout=10s,
// foreign_keys=ON and BEGIN IMMEDIATE transactions, so concurrent writers
// wait for each other instead of failing with SQLITE_BUSY on lock upgrade.
//
// # Writes
//
// Every write runs in one transaction whose first statement increments the
// generation row. That statement takes the write lock at once: on SQLite it
// is the IMMEDIATE transaction's lock, on PostgreSQL the row lock serializes
// writers, which is what makes rules checked by counting (two keys per
// user, five policy versions) safe under concurrency without SERIALIZABLE.
// Identity-plane writes are rare and small, so one writer at a time costs
// nothing that matters.
//
// # Migrations
//
// migrations/NNNN_name.sql are embedded and applied in version order in a
// single transaction, recorded in schema_migrations; a second Open applies
// nothing. On PostgreSQL the transaction first takes an advisory lock so
// replicas starting together migrate once. A database whose schema is newer
// than the binary is refused with a message to upgrade. Released migration
// files are never edited; changes go in a new file.
package sqlstore
