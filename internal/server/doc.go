// Package server runs everything `iamdb serve` serves: one listener per
// configured database instance, the metrics and health endpoint, and the
// process's answers to SIGTERM (drain) and SIGHUP (reload).
//
// It owns no protocol: it wires the packages that do. Per instance it builds
// the backend login (dbauth), the wire-protocol listener of its engine
// (pgproxy for postgres, mysqlproxy for mysql, MariaDB included) with the
// one shared authenticator (authn) over the identity store, and a metrics
// observer (metrics):
//
//	Run ─┬─ pki.EnsureServerCert (every endpoint host) → reloadable certificate
//	     ├─ authn.New(store, sealer)                     one cache for all instances
//	     ├─ per instance: dbauth.NewPostgres|NewMySQL ─┐
//	     │                dbauth.UpstreamTLS ──────────┼─▶ pgproxy.New|mysqlproxy.New ─▶ Serve(listen)
//	     │                metrics observer  ───────────┘
//	     └─ metrics.listen: /metrics  /healthz  /readyz
//
// Both listener types sit behind one small interface (Serve, Shutdown,
// Close, ActiveSessions, plus their Update), so start, reload, drain and
// readiness are the same code for every engine.
//
//	ctx cancelled (SIGTERM) ─▶ /readyz 503 ─▶ Shutdown every listener: stop
//	    accepting, wait up to drain_timeout, close the rest ─▶ Run returns nil
//	Reload (SIGHUP) ─▶ config.Load again (a broken file is logged, nothing
//	    changes) ─▶ certificate re-issued for new endpoint hosts and re-read
//	    ─▶ dbauth Reload (secrets, admin password, iam_users) ─▶ listener Update
//	    (endpoints, upstream, TLS) for new sessions; live sessions keep going.
//
// What a reload cannot change — a listen address, the set of instances, the
// data dir, the store, the metrics address — is logged as needing a
// restart; the rest of the new file still takes effect.
//
// Certificates are served through tls.Config.GetCertificate reading an
// atomic pointer, so a reload swaps the certificate for the next handshake
// without touching listeners or sessions.
//
// Health: /healthz answers 200 while the process runs (liveness); /readyz
// answers 200 only when every listener is serving and the identity store
// answers, and 503 while starting or draining, so a load balancer stops
// sending new connections before the listeners close.
package server
