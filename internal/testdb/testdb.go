package testdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// ErrNotInstalled reports that a server's binaries (or the OS user it must
// run as) are missing from this machine. scripts/deps.sh installs them.
var ErrNotInstalled = errors.New("not installed")

// sharedStartTimeout bounds the start of a shared server; a cold MariaDB on a
// busy two-core machine takes a few seconds, never minutes.
const sharedStartTimeout = 2 * time.Minute

// shared holds one lazily started server per test binary. A failed start is
// remembered so that every later test fails (or skips) at once instead of
// retrying a slow start that will fail again.
type shared[T any] struct {
	mu      sync.Mutex
	srv     *T
	err     error
	elapsed time.Duration
}

func (s *shared[T]) get(tb testing.TB, what string, start func(context.Context) (*T, error)) *T {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil && s.err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), sharedStartTimeout)
		t0 := time.Now()
		s.srv, s.err = start(ctx)
		s.elapsed = time.Since(t0)
		cancel()
		if s.err == nil {
			tb.Logf("testdb: started shared %s in %v", what, s.elapsed.Round(time.Millisecond))
		}
	}
	if s.err != nil {
		unavailable(tb, s.err)
	}
	return s.srv
}

// reset forgets the shared server (after StopAll) so a later call starts a
// new one rather than handing out a stopped server.
func (s *shared[T]) reset() *T {
	s.mu.Lock()
	defer s.mu.Unlock()
	srv := s.srv
	s.srv, s.err = nil, nil
	return srv
}

var (
	sharedPG    shared[PG]
	sharedMaria shared[MariaDBServer]
	sharedRedis shared[RedisServer]
)

// Postgres returns the PostgreSQL server shared by all tests of this test
// binary, starting it on first use. It has TLS enabled (see PG.CAFile) and
// lives until StopAll; tests that need a clean slate use NewDatabase.
func Postgres(tb testing.TB) *PG {
	tb.Helper()
	return sharedPG.get(tb, "PostgreSQL", func(ctx context.Context) (*PG, error) {
		return StartPostgres(ctx, PGOptions{TLS: true})
	})
}

// MariaDB returns the MariaDB server shared by all tests of this test binary,
// starting it on first use. It has TLS enabled (see MariaDBServer.CAFile)
// and lives until StopAll.
func MariaDB(tb testing.TB) *MariaDBServer {
	tb.Helper()
	return sharedMaria.get(tb, "MariaDB", func(ctx context.Context) (*MariaDBServer, error) {
		return StartMariaDB(ctx, MariaDBOptions{TLS: true})
	})
}

// Redis returns the Redis server shared by all tests of this test binary,
// starting it on first use. It lives until StopAll.
func Redis(tb testing.TB) *RedisServer {
	tb.Helper()
	return sharedRedis.get(tb, "Redis", StartRedis)
}

// StopAll stops the shared servers and any server started with StartPostgres,
// StartMariaDB or StartRedis that is still running, and removes their
// directories. Call it from TestMain after m.Run. It is safe to call more than
// once, and a later Postgres, MariaDB or Redis call starts a fresh server.
func StopAll() {
	sharedPG.reset()
	sharedMaria.reset()
	sharedRedis.reset()
	for _, s := range running.all() {
		if err := s.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testdb: %v\n", err)
		}
	}
}

// stopper is any server this package started.
type stopper interface{ Stop() error }

// registry tracks running servers so StopAll can stop those a caller forgot.
type registry struct {
	mu   sync.Mutex
	srvs map[stopper]struct{}
}

var running registry

func (r *registry) add(s stopper) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srvs == nil {
		r.srvs = map[stopper]struct{}{}
	}
	r.srvs[s] = struct{}{}
}

func (r *registry) remove(s stopper) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.srvs, s)
}

func (r *registry) all() []stopper {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]stopper, 0, len(r.srvs))
	for s := range r.srvs {
		out = append(out, s)
	}
	return out
}

// inCI reports whether we run in continuous integration, where a missing
// server must fail the build rather than silently skip the tests needing it.
func inCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// unavailable ends the test when a server cannot be had: a missing
// installation skips outside CI (with what to install) and fails in CI; any
// other start-up error always fails.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	switch {
	case !errors.Is(err, ErrNotInstalled):
		tb.Fatalf("testdb: %v", err)
	case inCI():
		tb.Fatalf("testdb: %v (CI is set, so this fails instead of skipping; run scripts/deps.sh in the CI image)", err)
	default:
		tb.Skipf("testdb: %v; run scripts/deps.sh to install it", err)
	}
}
