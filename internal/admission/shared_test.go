package admission

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/iamdb/iamdb/internal/testdb"
)

// replica is one process's view: its own Shared (Redis connection and
// heartbeat) and controller for the test's instance.
type replica struct {
	shared *Shared
	ctl    *Controller
	cnt    *counter
	logs   *syncBuffer
	falls  *transitions
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

// transitions records what the Fallback hook was told.
type transitions struct {
	mu  sync.Mutex
	got []bool
}

func (t *transitions) record(fallback bool) {
	t.mu.Lock()
	t.got = append(t.got, fallback)
	t.mu.Unlock()
}

func (t *transitions) list() []bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]bool(nil), t.got...)
}

type replicaOptions struct {
	url       string
	mode      FailureMode
	heartbeat time.Duration
}

func newReplica(t testing.TB, instance string, lim Limits, o replicaOptions) *replica {
	t.Helper()
	r := &replica{cnt: &counter{}, logs: &syncBuffer{}, falls: &transitions{}}
	var err error
	r.shared, err = Connect(o.url, SharedOptions{
		Mode:      o.mode,
		Logger:    slog.New(slog.NewTextHandler(r.logs, nil)),
		Fallback:  r.falls.record,
		Heartbeat: o.heartbeat,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.shared.Close() })
	r.ctl = New(instance, lim, Options{Shared: r.shared, Throttled: r.cnt.throttled})
	return r
}

func redisURL(t testing.TB) (string, *redis.Client) {
	t.Helper()
	rd := testdb.Redis(t)
	c := rd.Client()
	t.Cleanup(func() { c.Close() })
	return "redis://" + rd.Addr + "/0", c
}

// TestSharedRates: two replicas on one Redis enforce one set of rates.
// Redis's clock cannot be stopped, so counts are checked against bounds
// derived from the limit and the time the attempts took.
func TestSharedRates(t *testing.T) {
	url, _ := redisURL(t)

	t.Run("new logins across replicas", func(t *testing.T) {
		inst := instanceName(t)
		a := newReplica(t, inst, Limits{NewLoginsPerSecond: 5}, replicaOptions{url: url})
		b := newReplica(t, inst, Limits{NewLoginsPerSecond: 5}, replicaOptions{url: url})
		start := time.Now()
		admitted := 0
		for i := range 40 {
			r := a
			if i%2 == 1 {
				r = b
			}
			err := r.ctl.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprint("tok", i), time.Now()))
			if err == nil {
				admitted++
			} else if limitOf(t, err) != LimitNewLogins {
				t.Fatal(err)
			}
		}
		span := time.Since(start).Seconds()
		if max := 5 + int(5*span) + 1; admitted < 5 || admitted > max {
			t.Fatalf("two replicas admitted %d of 40 over %.2fs, want between the burst 5 and %d", admitted, span, max)
		}
		if got := a.cnt.get(LimitNewLogins) + b.cnt.get(LimitNewLogins); got != 40-admitted {
			t.Fatalf("throttled %d, want %d", got, 40-admitted)
		}
	})

	t.Run("a token admitted on one replica is free on another", func(t *testing.T) {
		inst := instanceName(t)
		a := newReplica(t, inst, Limits{NewLoginsPerSecond: 1}, replicaOptions{url: url})
		b := newReplica(t, inst, Limits{NewLoginsPerSecond: 1}, replicaOptions{url: url})
		d := decision("alice", "shared-token", time.Now())
		if err := a.ctl.AdmitLogin(bg, "10.0.0.1", d); err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			if err := b.ctl.AdmitLogin(bg, "10.0.0.1", d); err != nil {
				t.Fatalf("reuse %d on the other replica: %v", i, err)
			}
		}
	})

	t.Run("distinct principals", func(t *testing.T) {
		inst := instanceName(t)
		a := newReplica(t, inst, Limits{PrincipalsPerSecond: 2}, replicaOptions{url: url})
		b := newReplica(t, inst, Limits{PrincipalsPerSecond: 2}, replicaOptions{url: url})
		start := time.Now()
		admitted := 0
		for i := range 20 {
			r := []*replica{a, b}[i%2]
			p := fmt.Sprint("user", i)
			err := r.ctl.AdmitLogin(bg, "10.0.0.1", decision(p, p, time.Now()))
			if err == nil {
				admitted++
			} else if limitOf(t, err) != LimitPrincipals {
				t.Fatal(err)
			}
		}
		span := time.Since(start).Seconds()
		if max := 2 + int(2*span) + 1; admitted < 2 || admitted > max {
			t.Fatalf("admitted %d of 20 principals over %.2fs, want between 2 and %d", admitted, span, max)
		}
	})

	t.Run("per principal, without eating the instance budget", func(t *testing.T) {
		inst := instanceName(t)
		lim := Limits{NewLoginsPerPrincipalPerSecond: 2, NewLoginsPerSecond: 1000}
		a := newReplica(t, inst, lim, replicaOptions{url: url})
		b := newReplica(t, inst, lim, replicaOptions{url: url})
		start := time.Now()
		admitted := 0
		for i := range 20 {
			r := []*replica{a, b}[i%2]
			err := r.ctl.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprint("a", i), time.Now()))
			if err == nil {
				admitted++
			} else if limitOf(t, err) != LimitPerPrincipal {
				t.Fatal(err)
			}
		}
		span := time.Since(start).Seconds()
		if max := 2 + int(2*span) + 1; admitted < 2 || admitted > max {
			t.Fatalf("admitted %d of alice's 20 tokens over %.2fs, want between 2 and %d", admitted, span, max)
		}
		if err := b.ctl.AdmitLogin(bg, "10.0.0.1", decision("bob", "b0", time.Now())); err != nil {
			t.Fatalf("bob after alice's refusals: %v", err)
		}
	})

	t.Run("refused token counts again when retried", func(t *testing.T) {
		inst := instanceName(t)
		a := newReplica(t, inst, Limits{NewLoginsPerPrincipalPerSecond: 1}, replicaOptions{url: url})
		start := time.Now()
		if err := a.ctl.AdmitLogin(bg, "10.0.0.1", decision("alice", "t1", time.Now())); err != nil {
			t.Fatal(err)
		}
		refused := 0
		d := decision("alice", "t2", time.Now())
		for range 3 {
			if a.ctl.AdmitLogin(bg, "10.0.0.1", d) != nil {
				refused++
			}
		}
		// Each retry is a new login as far as the rate is concerned: none
		// gets through within the second after t1.
		if refused == 0 && time.Since(start) < time.Second {
			t.Fatal("a refused token was admitted as a reuse on its retry")
		}
	})
}

// TestSharedCaps: max_connections and max_connections_per_user across two
// replicas; a dead replica's connections stop counting; counts lost by
// Redis come back with the next heartbeat.
func TestSharedCaps(t *testing.T) {
	url, rc := redisURL(t)
	inst := instanceName(t)
	lim := Limits{MaxConnections: 3, MaxConnectionsPerUser: 2}
	a := newReplica(t, inst, lim, replicaOptions{url: url, heartbeat: 50 * time.Millisecond})
	b := newReplica(t, inst, lim, replicaOptions{url: url, heartbeat: 50 * time.Millisecond})

	relA1, err := a.ctl.Admit(bg, "10.0.0.1", "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ctl.Admit(bg, "10.0.0.1", "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ctl.Admit(bg, "10.0.0.1", "app"); limitOf(t, err) != LimitConnectionsPerUser {
		t.Fatalf("3rd app connection, on the other replica: %v", err)
	}
	relB, err := b.ctl.Admit(bg, "10.0.0.1", "report")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ctl.Admit(bg, "10.0.0.1", "other"); limitOf(t, err) != LimitConnections {
		t.Fatalf("4th connection: %v", err)
	}
	if _, err := a.ctl.Admit(bg, "10.0.0.1", "other"); limitOf(t, err) != LimitConnections {
		t.Fatalf("4th connection on the first replica: %v", err)
	}
	relA1()
	relB2, err := b.ctl.Admit(bg, "10.0.0.1", "app")
	if err != nil {
		t.Fatalf("after a release on the other replica: %v", err)
	}

	t.Run("counts come back after Redis loses them", func(t *testing.T) {
		if err := rc.Del(bg, b.ctl.connsKey()).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the heartbeat to rewrite the counts", func() bool {
			a, _ := rc.HGet(bg, b.ctl.connsKey(), a.shared.replica).Int()
			b, _ := rc.HGet(bg, b.ctl.connsKey(), b.shared.replica).Int()
			return a == 1 && b == 2
		})
		if _, err := b.ctl.Admit(bg, "10.0.0.1", "other"); limitOf(t, err) != LimitConnections {
			t.Fatalf("4th connection after the rewrite: %v", err)
		}
	})

	t.Run("a dead replica's connections stop counting", func(t *testing.T) {
		a.shared.Close() // its heartbeat stops: as if the process died holding one slot
		waitFor(t, "the dead replica's slot to expire", func() bool {
			rel, err := b.ctl.Admit(bg, "10.0.0.1", "other")
			if err == nil {
				rel()
				return true
			}
			return false
		})
		if v, _ := rc.HExists(bg, b.ctl.connsKey(), a.shared.replica).Result(); v {
			t.Fatal("the dead replica's field was not removed")
		}
	})
	relB()
	relB2()
	waitFor(t, "the releases to reach Redis", func() bool {
		return rc.HExists(bg, b.ctl.connsKey(), b.shared.replica).Val() == false
	})
}

// TestSharedFailedLogins: failures from one address on any replica add up;
// the block is seen by all, touches no other address and expires; a
// success anywhere resets the count.
func TestSharedFailedLogins(t *testing.T) {
	url, _ := redisURL(t)
	inst := instanceName(t)
	lim := Limits{Failures: FailurePolicy{BlockAfter: 3, BlockFor: 300 * time.Millisecond, Window: time.Hour}}
	a := newReplica(t, inst, lim, replicaOptions{url: url})
	b := newReplica(t, inst, lim, replicaOptions{url: url})
	const bad, other = "192.0.2.7", "192.0.2.8"

	a.ctl.LoginFailed(bg, bad)
	a.ctl.LoginFailed(bg, bad)
	if err := b.ctl.AdmitLogin(bg, bad, decision("alice", "good", time.Now())); err != nil {
		t.Fatal(err)
	}
	if block := b.ctl.LoginFailed(bg, bad); block != "" {
		t.Fatalf("a success did not reset the count: %s", block)
	}
	a.ctl.LoginFailed(bg, bad)
	if block := b.ctl.LoginFailed(bg, bad); !strings.Contains(block, "after 3 failed logins") {
		t.Fatalf("3rd failure across replicas: %q", block)
	}
	for _, r := range []*replica{a, b} {
		if limitOf(t, r.ctl.Screen(bg, bad)) != LimitFailedLogins {
			t.Fatal("a replica does not see the block")
		}
		if err := r.ctl.Screen(bg, other); err != nil {
			t.Fatalf("another address: %v", err)
		}
	}
	waitFor(t, "the block to expire", func() bool {
		return a.ctl.Screen(bg, bad) == nil && b.ctl.Screen(bg, bad) == nil
	})

	t.Run("back-off", func(t *testing.T) {
		inst := instanceName(t)
		lim := Limits{Failures: FailurePolicy{BackoffAfter: 2, Backoff: time.Minute, Window: time.Hour}}
		a := newReplica(t, inst, lim, replicaOptions{url: url})
		b := newReplica(t, inst, lim, replicaOptions{url: url})
		a.ctl.LoginFailed(bg, bad)
		if rel, err := b.ctl.Admit(bg, bad, "app"); err != nil {
			t.Fatalf("one failure: %v", err)
		} else {
			rel()
		}
		b.ctl.LoginFailed(bg, bad)
		for _, r := range []*replica{a, b} {
			if err := r.ctl.Screen(bg, bad); err != nil {
				t.Fatalf("a back-off refused before TLS: %v", err)
			}
			_, err := r.ctl.Admit(bg, bad, "app")
			var ref *Refusal
			if limitOf(t, err) != LimitFailedLogins || !errors.As(err, &ref) || ref.RetryAfter <= 50*time.Second {
				t.Fatalf("after 2 failures across replicas: %v", err)
			}
			rel, err := r.ctl.Admit(bg, other, "app")
			if err != nil {
				t.Fatalf("another address: %v", err)
			}
			rel()
		}
		if err := a.ctl.AdmitLogin(bg, bad, decision("alice", "good", time.Now())); err != nil {
			t.Fatal(err)
		}
		rel, err := b.ctl.Admit(bg, bad, "app")
		if err != nil {
			t.Fatalf("a success on one replica did not end the back-off on the other: %v", err)
		}
		rel()
	})
}

// TestSharedFallback: Redis going away mid-use falls back to per-replica
// limits (logged and reported once), or refuses in refuse mode; when Redis
// is back the limits are shared again and the counts are rewritten.
func TestSharedFallback(t *testing.T) {
	rd := testdb.Redis(t)
	rc := rd.Client()
	defer rc.Close()
	fw := newForwarder(t, rd.Addr)
	inst := instanceName(t)
	r := newReplica(t, inst, Limits{MaxConnections: 2, NewLoginsPerSecond: 1000}, replicaOptions{url: fw.url(), heartbeat: 50 * time.Millisecond})
	if !r.shared.Available() {
		t.Fatal("not shared at start")
	}
	if _, err := r.ctl.Admit(bg, "10.0.0.1", "app"); err != nil {
		t.Fatal(err)
	}

	fw.cut()
	// Local limits keep working: one more slot, then max_connections.
	if _, err := r.ctl.Admit(bg, "10.0.0.1", "app"); err != nil {
		t.Fatalf("fallback admit: %v", err)
	}
	if _, err := r.ctl.Admit(bg, "10.0.0.1", "app"); limitOf(t, err) != LimitConnections {
		t.Fatalf("fallback cap: %v", err)
	}
	if r.shared.Available() {
		t.Fatal("still shared with Redis cut off")
	}
	for i := range 100 {
		r.ctl.Screen(bg, "10.0.0.1")
		if err := r.ctl.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprint("t", i), time.Now())); err != nil {
			t.Fatalf("fallback login %d: %v", i, err)
		}
	}
	if n := r.logs.count("Redis is unreachable"); n != 1 {
		t.Fatalf("the fallback was logged %d times, want once", n)
	}

	r.shared.SetMode(FailRefuse)
	if err := r.ctl.AdmitLogin(bg, "10.0.0.1", decision("alice", "refused", time.Now())); limitOf(t, err) != LimitSharedLimitsUnhealthy {
		t.Fatalf("refuse mode while Redis is away: %v", err)
	}
	if _, err := r.ctl.Admit(bg, "10.0.0.1", "report"); limitOf(t, err) != LimitSharedLimitsUnhealthy || !strings.Contains(err.Error(), "redis_failure") {
		t.Fatalf("refuse mode: %v", err)
	}

	fw.point(rd.Addr)
	waitFor(t, "the limits to be shared again", r.shared.Available)
	if n := r.logs.count("Redis answers again"); n != 1 {
		t.Fatalf("the recovery was logged %d times, want once", n)
	}
	if got := r.falls.list(); fmt.Sprint(got) != "[false true false]" {
		t.Fatalf("fallback metric told %v, want [false true false]", got)
	}
	// The slot taken while Redis was away is in Redis now.
	if n, _ := rc.HGet(bg, r.ctl.connsKey(), r.shared.replica).Int(); n != 2 {
		t.Fatalf("connections in Redis after recovery: %d, want 2", n)
	}
	if _, err := r.ctl.Admit(bg, "10.0.0.1", "report"); limitOf(t, err) != LimitConnections {
		t.Fatalf("shared cap after recovery: %v", err)
	}
}

// TestSharedUnreachableAtStart: a replica starts while Redis is down, in
// memory, and shares once Redis answers.
func TestSharedUnreachableAtStart(t *testing.T) {
	rd := testdb.Redis(t)
	fw := newForwarder(t, "")
	r := newReplica(t, instanceName(t), Limits{MaxConnections: 1}, replicaOptions{url: fw.url(), heartbeat: 50 * time.Millisecond})
	if r.shared.Available() {
		t.Fatal("shared with Redis unreachable")
	}
	rel, err := r.ctl.Admit(bg, "10.0.0.1", "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ctl.Admit(bg, "10.0.0.1", "app"); limitOf(t, err) != LimitConnections {
		t.Fatalf("local cap: %v", err)
	}
	rel()
	fw.point(rd.Addr)
	waitFor(t, "the limits to be shared", r.shared.Available)
	if _, err := Connect("http://nope", SharedOptions{}); err == nil {
		t.Fatal("Connect accepted a URL that is not redis://")
	}
}
