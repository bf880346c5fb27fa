package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// admissionMetrics are the collectors of admission control and of the
// verified-token cache.
type admissionMetrics struct {
	reg       *prometheus.Registry
	throttled *prometheus.CounterVec
	fallback  prometheus.Gauge

	mu      sync.Mutex
	blocked map[string]bool // instances whose blocked-addresses gauge is registered
	tokens  bool            // the token cache collectors are registered
}

func newAdmissionMetrics(reg *prometheus.Registry) *admissionMetrics {
	a := &admissionMetrics{
		reg: reg,
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iamdb_admission_throttled_total",
			Help: "Connections and logins refused by admission control, by the limit that refused them.",
		}, []string{"instance", "limit"}),
		fallback: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "iamdb_admission_redis_fallback",
			Help: "1 while Redis is configured but unreachable and limits are enforced per replica (or, with redis_failure: refuse, logins refused); 0 while limits are shared.",
		}),
		blocked: map[string]bool{},
	}
	reg.MustRegister(a.throttled, a.fallback)
	return a
}

// Throttled counts a connection or login refused by limit (a config key
// such as new_logins_per_second, or failed_logins for a blocked address).
func (m *Metrics) Throttled(instance, limit string) {
	m.adm.throttled.WithLabelValues(instance, limit).Inc()
}

// RedisFallback records whether shared limits have fallen back because
// Redis is unreachable.
func (m *Metrics) RedisFallback(fallback bool) {
	v := 0.0
	if fallback {
		v = 1
	}
	m.adm.fallback.Set(v)
}

// AddAdmission exposes an instance's count of blocked source addresses,
// read at each scrape. A second call for the same instance is ignored.
func (m *Metrics) AddAdmission(instance string, blocked func() int) {
	a := m.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.blocked[instance] {
		return
	}
	a.blocked[instance] = true
	a.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "iamdb_admission_blocked_addresses",
		Help:        "Source addresses blocked now after repeated failed logins.",
		ConstLabels: prometheus.Labels{"instance": instance},
	}, func() float64 { return float64(blocked()) }))
}

// AddTokenCache exposes the verified-token cache's hits and misses, read at
// each scrape. A second call is ignored.
func (m *Metrics) AddTokenCache(hits, misses func() uint64) {
	a := m.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tokens {
		return
	}
	a.tokens = true
	a.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "iamdb_token_cache_hits_total",
			Help: "IAM logins whose token was verified before and came from the verified-token cache.",
		}, func() float64 { return float64(hits()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "iamdb_token_cache_misses_total",
			Help: "IAM logins whose token was verified in full.",
		}, func() float64 { return float64(misses()) }),
	)
}
