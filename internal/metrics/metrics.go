package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Directions of iamdb_bytes_relayed_total.
const (
	ClientToUpstream = "client_to_upstream"
	UpstreamToClient = "upstream_to_client"
)

// resultCancel is the result listeners report for a forwarded cancel
// request: it is counted as an attempt but is not a login handshake, so it
// stays out of the latency histogram.
const resultCancel = "Cancel"

// Metrics holds the collectors of one server. Its methods are safe for
// concurrent use.
type Metrics struct {
	reg       *prometheus.Registry
	logins    *prometheus.CounterVec
	handshake *prometheus.HistogramVec
	active    *prometheus.GaugeVec
	bytes     *prometheus.CounterVec
	dialErrs  *prometheus.CounterVec
	stsCalls  *prometheus.CounterVec
	adm       *admissionMetrics // admission.go

	// Upstream session pool of the listeners (both engines).
	poolIdle   *prometheus.GaugeVec
	poolReused *prometheus.CounterVec
}

// New returns collectors registered in a fresh registry, with the Go runtime
// and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iamdb_login_attempts_total",
			Help: "Logins finished by an instance listener, by result (ok or the refusal code).",
		}, []string{"instance", "result"}),
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "iamdb_handshake_seconds",
			Help: "Time from accepting a client connection to the end of its login, accepted or refused.",
			// Token verification is sub-millisecond; an upstream login over
			// TLS with SCRAM takes milliseconds to tens of milliseconds; the
			// top buckets catch slow clients up to the handshake timeout.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"instance"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "iamdb_active_sessions",
			Help: "Client sessions currently relayed to the upstream.",
		}, []string{"instance"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iamdb_bytes_relayed_total",
			Help: "Bytes relayed by finished sessions, by direction.",
		}, []string{"instance", "direction"}),
		dialErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iamdb_upstream_dial_errors_total",
			Help: "Failed attempts to reach the upstream database.",
		}, []string{"instance"}),
		stsCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "iamdb_sts_calls_total",
			Help: "Calls to the STS-compatible API, by action and result (ok or the AWS error code).",
		}, []string{"action", "result"}),
	}
	m.reg.MustRegister(
		m.logins, m.handshake, m.active, m.bytes, m.dialErrs, m.stsCalls,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.poolIdle = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "iamdb_upstream_pool_idle_sessions",
		Help: "Idle upstream sessions kept for IAM logins to reuse.",
	}, []string{"instance"})
	m.poolReused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "iamdb_upstream_pool_reused_total",
		Help: "IAM logins served by an idle upstream session instead of a new upstream login.",
	}, []string{"instance"})
	m.reg.MustRegister(m.poolIdle, m.poolReused)
	m.adm = newAdmissionMetrics(m.reg)
	return m
}

// Registry is the registry the collectors live in, for callers that add
// their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// AddInstance creates the per-instance series at zero, so dashboards and
// alerts see an instance from the start rather than after its first event.
func (m *Metrics) AddInstance(instance string) {
	m.active.WithLabelValues(instance)
	m.handshake.WithLabelValues(instance)
	m.dialErrs.WithLabelValues(instance)
	m.bytes.WithLabelValues(instance, ClientToUpstream)
	m.bytes.WithLabelValues(instance, UpstreamToClient)
	m.logins.WithLabelValues(instance, "ok")
}

// LoginFinished counts a login attempt and records how long it took.
func (m *Metrics) LoginFinished(instance, result string, d time.Duration) {
	m.logins.WithLabelValues(instance, result).Inc()
	if result != resultCancel {
		m.handshake.WithLabelValues(instance).Observe(d.Seconds())
	}
}

// SessionStarted counts a session that became ready.
func (m *Metrics) SessionStarted(instance string) {
	m.active.WithLabelValues(instance).Inc()
}

// SessionEnded counts a session that ended and the bytes it relayed.
func (m *Metrics) SessionEnded(instance string, clientToUpstream, upstreamToClient int64, _ time.Duration) {
	m.active.WithLabelValues(instance).Dec()
	if clientToUpstream > 0 {
		m.bytes.WithLabelValues(instance, ClientToUpstream).Add(float64(clientToUpstream))
	}
	if upstreamToClient > 0 {
		m.bytes.WithLabelValues(instance, UpstreamToClient).Add(float64(upstreamToClient))
	}
}

// UpstreamDialFailed counts a connection to the upstream that could not be
// made.
func (m *Metrics) UpstreamDialFailed(instance string) {
	m.dialErrs.WithLabelValues(instance).Inc()
}

// STSCall counts one call to the STS-compatible API.
func (m *Metrics) STSCall(action, result string) {
	if action == "" {
		action = "unknown"
	}
	m.stsCalls.WithLabelValues(action, result).Inc()
}

// UpstreamPoolIdle records how many idle upstream sessions an instance
// holds.
func (m *Metrics) UpstreamPoolIdle(instance string, idle int) {
	m.poolIdle.WithLabelValues(instance).Set(float64(idle))
}

// UpstreamSessionReused counts a login served by an idle upstream session.
func (m *Metrics) UpstreamSessionReused(instance string) {
	m.poolReused.WithLabelValues(instance).Inc()
}
