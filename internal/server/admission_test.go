package server

import (
	"log/slog"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/admission"
	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/metrics"
)

// TestAdmissionFor: an instance's limits reach its controller, which
// survives a reload (new limits, same state) and is left out of the
// listener when limits.enabled is false.
func TestAdmissionFor(t *testing.T) {
	s := &server{log: slog.New(slog.DiscardHandler), metrics: metrics.New(), admission: map[string]*admission.Controller{}}
	cfg, err := config.Parse([]byte(`instances:
  - name: orders
    engine: postgres
    resource_id: db-A
    listen: 127.0.0.1:1
    upstream: {address: 127.0.0.1:2}
    backend_auth: {mode: trust}
    limits: {max_connections: 1, max_connections_per_user: 1, new_logins_per_principal_per_second: 3, failed_logins: {block_after: 0, block_for: 1m}}
`))
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Instances[0]
	adm := s.admissionFor(in)
	ctl := s.admission["orders"]
	if adm == nil || ctl == nil || adm != ctl {
		t.Fatalf("no controller for an instance with limits on: %v", adm)
	}
	want := admission.Limits{NewLoginsPerSecond: config.DefaultNewLoginsPerSecond, PrincipalsPerSecond: config.DefaultPrincipalsPerSecond,
		NewLoginsPerPrincipalPerSecond: 3, MaxConnections: 1, MaxConnectionsPerUser: 1,
		Failures: admission.FailurePolicy{BlockAfter: 0, BlockFor: time.Minute, Window: config.DefaultFailureWindow.D(),
			BackoffAfter: config.DefaultFailedLoginsBackoff, Backoff: config.DefaultBackoff.D()}}
	if got := ctl.Limits(); got != want {
		t.Fatalf("limits %+v, want %+v", got, want)
	}
	release, err := ctl.Admit(t.Context(), "10.0.0.1", "app")
	if err != nil {
		t.Fatal(err)
	}
	defer release()

	in.Limits.MaxConnections = 2
	if s.admissionFor(in); s.admission["orders"] != ctl || ctl.Limits().MaxConnections != 2 {
		t.Fatal("a reload replaced the controller or kept the old limits")
	}
	// The slot taken before the reload still counts.
	if _, err := ctl.Admit(t.Context(), "10.0.0.1", "app"); err == nil {
		t.Fatal("max_connections_per_user 1 admitted a second connection after the reload")
	}

	off := false
	in.Limits.Enabled = &off
	if adm := s.admissionFor(in); adm != nil {
		t.Fatalf("limits.enabled false still gives the listener %v", adm)
	}
}
