package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/iamdb/iamdb/internal/identity"
)

var _ identity.Store = (*Store)(nil)

type dialect int

const (
	dialectSQLite dialect = iota
	dialectPostgres
)

func (d dialect) String() string {
	if d == dialectPostgres {
		return "postgres"
	}
	return "sqlite"
}

// Store is the SQL implementation of identity.Store.
type Store struct {
	db        *sql.DB
	dialect   dialect
	sealer    *identity.Sealer
	ids       *identity.IDs
	now       func() time.Time
	partition string
	dsn       string
	opts      []Option
}

type config struct {
	partition string
	now       func() time.Time
	rand      io.Reader
}

// Option configures a Store.
type Option func(*config)

// WithPartition sets the ARN partition of returned records (default "aws").
func WithPartition(p string) Option { return func(c *config) { c.partition = p } }

// WithClock injects the clock used for created-at times.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithRandom injects the source of ids and secrets (default crypto/rand).
// The Sealer has its own nonce source.
func WithRandom(r io.Reader) Option { return func(c *config) { c.rand = r } }

// Open connects to the store named by dsn and applies pending migrations.
//
//	postgres://user@host:5432/db?sslmode=disable   PostgreSQL (also postgresql://)
//	sqlite:///var/lib/iamdb/iamdb.db              SQLite, absolute path
//	./iamdb-data/iamdb.db                         SQLite, plain file path
//
// SQLite runs in WAL mode with a busy timeout, foreign keys on, and
// immediate transactions so concurrent writers queue instead of failing.
func Open(ctx context.Context, dsn string, sealer *identity.Sealer, opts ...Option) (*Store, error) {
	if sealer == nil {
		return nil, errors.New("open identity store: a sealer (master key) is required")
	}
	cfg := config{partition: identity.DefaultPartition, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	var (
		db  *sql.DB
		d   dialect
		err error
	)
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		d = dialectPostgres
		db, err = sql.Open("pgx", dsn)
	default:
		d = dialectSQLite
		path := strings.TrimPrefix(dsn, "sqlite://")
		if path == "" {
			return nil, errors.New("open identity store: empty SQLite path")
		}
		if strings.Contains(path, "?") {
			return nil, fmt.Errorf("open identity store: SQLite path %q must not contain '?'; iamdb sets the connection options itself", path)
		}
		db, err = sql.Open("sqlite", path+"?_txlock=immediate"+
			"&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"+
			"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)")
		if path == ":memory:" {
			// Every connection would see its own empty database.
			db.SetMaxOpenConns(1)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open identity store (%s): %w", d, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open identity store (%s): %w", d, err)
	}
	if err := migrate(ctx, db, d); err != nil {
		db.Close()
		return nil, fmt.Errorf("open identity store (%s): %w", d, err)
	}
	return &Store{
		db:        db,
		dialect:   d,
		sealer:    sealer,
		ids:       identity.NewIDs(cfg.rand),
		now:       cfg.now,
		partition: cfg.partition,
		dsn:       dsn,
		opts:      opts,
	}, nil
}

// Close closes the database handle.
func (s *Store) Close() error { return s.db.Close() }

// DB exposes the handle for tests and diagnostics (e.g. checking that no
// plaintext secret reaches a row). Do not write through it.
func (s *Store) DB() *sql.DB { return s.db }

// Generation returns the write counter.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	var g int64
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM generation WHERE id = 1`).Scan(&g); err != nil {
		return 0, fmt.Errorf("read store generation: %w", err)
	}
	return g, nil
}

type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// write runs fn in a transaction that first bumps the generation. Bumping
// first takes the write lock at once: on SQLite the transaction is
// IMMEDIATE anyway, on PostgreSQL the row lock on the generation row
// serializes writers, which makes check-then-insert rules (two keys per
// user, five versions per policy) race-free.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE generation SET value = value + 1 WHERE id = 1`); err != nil {
		tx.Rollback()
		return fmt.Errorf("bump store generation: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// stamp is the current time at the store's precision (microseconds, UTC).
func (s *Store) stamp() time.Time { return time.UnixMicro(s.now().UnixMicro()).UTC() }

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

func nameKey(name string) string { return strings.ToLower(name) }

func encodeJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only maps of strings and string slices are encoded here.
		panic(fmt.Sprintf("sqlstore: encode %T: %v", v, err))
	}
	return string(b)
}

func decodeTags(s string) (map[string]string, error) {
	m := map[string]string{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("decode stored tags: %w", err)
	}
	return m, nil
}

func decodeList(s string) ([]string, error) {
	var l []string
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("decode stored list: %w", err)
	}
	return l, nil
}

func cloneTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func normPath(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

func matchPrefix(path, prefix string) bool {
	return prefix == "" || strings.HasPrefix(path, prefix)
}

// Reopen opens another, independent handle on the same database with the
// same sealer and options, as a second replica would.
func (s *Store) Reopen(ctx context.Context) (identity.Store, error) {
	return Open(ctx, s.dsn, s.sealer, s.opts...)
}
