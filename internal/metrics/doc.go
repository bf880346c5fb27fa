// Package metrics exposes what the instance listeners do as Prometheus
// metrics.
//
// A Metrics value owns its own registry (never the global default one), so
// several servers can live in one process — tests run many — and nothing
// registered by a library behind our back ends up on /metrics. It
// implements the listeners' observer hook (pgproxy.Observer), which keeps
// counting out of the protocol code:
//
//	listener ──LoginFinished(instance, result, d)──▶ iamdb_login_attempts_total{instance,result}
//	                                                 iamdb_handshake_seconds{instance}
//	         ──SessionStarted / SessionEnded───────▶ iamdb_active_sessions{instance}
//	                                                 iamdb_bytes_relayed_total{instance,direction}
//	         ──UpstreamDialFailed──────────────────▶ iamdb_upstream_dial_errors_total{instance}
//	         ──UpstreamPoolIdle(instance, n)───────▶ iamdb_upstream_pool_idle_sessions{instance}
//	         ──UpstreamSessionReused───────────────▶ iamdb_upstream_pool_reused_total{instance}
//
// Admission control reports through hooks the server wires in:
//
//	admission ──Throttled(instance, limit)─────────▶ iamdb_admission_throttled_total{instance,limit}
//	          ──AddAdmission(instance, blocked)────▶ iamdb_admission_blocked_addresses{instance}
//	          ──RedisFallback(bool)────────────────▶ iamdb_admission_redis_fallback
//	authn     ──AddTokenCache(hits, misses)────────▶ iamdb_token_cache_hits_total, iamdb_token_cache_misses_total
//
// plus the standard go_* and process_* collectors. Result labels are short
// codes ("ok", "ExpiredToken", "AccessDenied", "TLSRequired" …), never a
// user name or anything from the token, so the series count stays bounded.
package metrics
