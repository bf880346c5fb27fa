package metrics

import (
	"strings"
	"testing"
)

// TestAdmission: refusals are counted by limit, the blocked-address and
// token-cache figures are read at scrape time, the fallback gauge follows
// the last report; registering an instance twice is harmless.
func TestAdmission(t *testing.T) {
	m := New()
	blocked, hits, misses := 2, uint64(7), uint64(3)
	m.AddAdmission("orders", func() int { return blocked })
	m.AddAdmission("orders", func() int { return 99 })
	m.AddTokenCache(func() uint64 { return hits }, func() uint64 { return misses })
	m.AddTokenCache(func() uint64 { return 0 }, func() uint64 { return 0 })
	m.Throttled("orders", "new_logins_per_second")
	m.Throttled("orders", "new_logins_per_second")
	m.Throttled("shop", "max_connections")
	m.RedisFallback(true)
	text := scrape(t, m)
	for _, want := range []string{
		`iamdb_admission_throttled_total{instance="orders",limit="new_logins_per_second"} 2`,
		`iamdb_admission_throttled_total{instance="shop",limit="max_connections"} 1`,
		`iamdb_admission_blocked_addresses{instance="orders"} 2`,
		`iamdb_admission_redis_fallback 1`,
		`iamdb_token_cache_hits_total 7`,
		`iamdb_token_cache_misses_total 3`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
	blocked = 0
	m.RedisFallback(false)
	text = scrape(t, m)
	for _, want := range []string{`iamdb_admission_blocked_addresses{instance="orders"} 0`, `iamdb_admission_redis_fallback 0`} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
}
