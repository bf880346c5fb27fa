package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// startHTTP binds metrics.listen and serves /metrics, /healthz and /readyz.
func (s *server) startHTTP(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics endpoint: listening on %s (metrics.listen): %w", s.cfg.Metrics.Listen, err)
	}
	s.httpLn = ln
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := s.http.Serve(ln); err != nil && err != http.ErrServerClosed {
			s.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	s.log.Info("metrics and health endpoint listening", "listen", ln.Addr().String(), "paths", "/metrics /healthz /readyz")
	return nil
}

// readyz tells a load balancer whether to send new connections here.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	notReady := func(reason string) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, reason)
	}
	if !s.ready.Load() {
		notReady("not ready: starting or draining")
		return
	}
	for _, l := range s.listeners {
		if !l.serving.Load() {
			notReady("not ready: instance " + l.name + " is not serving")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), storeCheckTimeout)
	defer cancel()
	if _, err := s.dir.Store.Generation(ctx); err != nil {
		s.log.Warn("readiness check: the identity store does not answer", "err", err)
		notReady("not ready: the identity store does not answer")
		return
	}
	fmt.Fprintln(w, "ok")
}
