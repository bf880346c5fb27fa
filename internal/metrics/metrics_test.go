package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// scrape fetches /metrics the way Prometheus does and returns the text.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	return string(body)
}

func TestEventsAppearAsSeries(t *testing.T) {
	m := New()
	m.AddInstance("billing")
	m.LoginFinished("orders", "ok", 3*time.Millisecond)
	m.LoginFinished("orders", "ok", 4*time.Millisecond)
	m.LoginFinished("orders", "ExpiredToken", time.Millisecond)
	m.LoginFinished("orders", "Cancel", time.Millisecond)
	m.SessionStarted("orders")
	m.SessionStarted("orders")
	m.SessionEnded("orders", 100, 2500, time.Second)
	m.UpstreamDialFailed("orders")
	m.UpstreamDialFailed("orders")

	text := scrape(t, m)
	for _, want := range []string{
		`iamdb_login_attempts_total{instance="orders",result="ok"} 2`,
		`iamdb_login_attempts_total{instance="orders",result="ExpiredToken"} 1`,
		`iamdb_login_attempts_total{instance="orders",result="Cancel"} 1`,
		// Three logins timed; the cancel request is not a handshake.
		`iamdb_handshake_seconds_count{instance="orders"} 3`,
		`iamdb_handshake_seconds_bucket{instance="orders",le="0.0025"} 1`,
		`iamdb_handshake_seconds_bucket{instance="orders",le="0.005"} 3`,
		`iamdb_active_sessions{instance="orders"} 1`,
		`iamdb_bytes_relayed_total{direction="client_to_upstream",instance="orders"} 100`,
		`iamdb_bytes_relayed_total{direction="upstream_to_client",instance="orders"} 2500`,
		`iamdb_upstream_dial_errors_total{instance="orders"} 2`,
		// An instance with no traffic yet is visible at zero.
		`iamdb_active_sessions{instance="billing"} 0`,
		`iamdb_login_attempts_total{instance="billing",result="ok"} 0`,
		// Runtime and process collectors are registered too.
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(text, want+"\n") && !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scraped:\n%s", text)
	}
}

// TestRegistriesAreIndependent guards against registering in the global
// registry: two servers in one process must not share or clash.
func TestRegistriesAreIndependent(t *testing.T) {
	a, b := New(), New()
	a.LoginFinished("orders", "ok", time.Millisecond)
	if text := scrape(t, b); strings.Contains(text, `iamdb_login_attempts_total{instance="orders"`) {
		t.Fatalf("second Metrics sees the first one's events:\n%s", text)
	}
}

// TestUpstreamPool: the pool's idle gauge follows the last report and
// reuses are counted per instance.
func TestUpstreamPool(t *testing.T) {
	m := New()
	m.UpstreamPoolIdle("orders", 3)
	m.UpstreamPoolIdle("orders", 2)
	m.UpstreamSessionReused("orders")
	m.UpstreamSessionReused("orders")
	m.UpstreamSessionReused("billing")
	text := scrape(t, m)
	for _, want := range []string{
		`iamdb_upstream_pool_idle_sessions{instance="orders"} 2`,
		`iamdb_upstream_pool_reused_total{instance="orders"} 2`,
		`iamdb_upstream_pool_reused_total{instance="billing"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("scrape lacks %q", want)
		}
	}
}
