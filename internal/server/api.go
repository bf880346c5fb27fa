package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/sts"
)

// startAPI serves the STS-compatible API on api.listen: plain HTTP only on
// a loopback address (for development and local CI, as sts.md allows),
// otherwise TLS with the data dir's server certificate, which then also
// names the API host.
func (s *server) startAPI(ctx context.Context) error {
	cfg := s.cfg
	svc, err := sts.New(sts.Config{
		Store:     s.dir.Store,
		Sealer:    s.dir.Sealer,
		Region:    cfg.Region,
		Partition: cfg.Partition,
		Logger:    s.log.With("component", "sts"),
		OnCall:    s.onSTSCall,
	})
	if err != nil {
		return fmt.Errorf("STS API: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("STS API: listening on %s (api.listen): %w", cfg.API.Listen, err)
	}
	scheme := "http"
	if !loopback(cfg.API.Listen) {
		cert, err := s.certificateFor(config.Instance{})
		if err != nil {
			ln.Close()
			return fmt.Errorf("STS API: %w", err)
		}
		s.apiTLS = cert
		scheme = "https"
	}
	s.api = &http.Server{
		Handler:           svc,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
	}
	if s.apiTLS != nil {
		s.api.TLSConfig = s.apiTLS.tlsConfig()
	}
	s.apiLn = ln
	go func() {
		var err error
		if s.apiTLS != nil {
			err = s.api.ServeTLS(ln, "", "")
		} else {
			err = s.api.Serve(ln)
		}
		if err != nil && err != http.ErrServerClosed {
			s.log.Error("STS API stopped", "err", err)
		}
	}()
	s.log.Info("STS API listening", "listen", ln.Addr().String(),
		"endpoint_url", scheme+"://"+ln.Addr().String(), "region", cfg.Region)
	return nil
}

// onSTSCall logs every identity-plane call: who asked for what and the
// outcome, never a credential.
func (s *server) onSTSCall(rec sts.CallRecord) {
	result := "ok"
	if rec.ErrorCode != "" {
		result = rec.ErrorCode
	}
	s.metrics.STSCall(rec.Action, result)
	s.auditSTSCall(rec)
	attrs := []any{"action", rec.Action, "request_id", rec.RequestID, "source_ip", rec.SourceIP, "access_key_id", rec.AccessKeyID}
	if rec.Caller != nil {
		attrs = append(attrs, "caller", rec.Caller.ARN)
	}
	if rec.ErrorCode != "" {
		s.log.Warn("STS call refused", append(attrs, "error_code", rec.ErrorCode, "reason", rec.ErrorMessage)...)
		return
	}
	if rec.Issued != nil {
		attrs = append(attrs, "issued", rec.Issued.ARN, "issued_key", rec.Issued.AccessKeyID, "expires", rec.Issued.Expiration)
	}
	s.log.Info("STS call", attrs...)
}

// loopback reports whether a listen address only accepts local clients.
func loopback(hostPort string) bool {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
