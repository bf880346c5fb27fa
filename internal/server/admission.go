package server

import (
	"fmt"

	"github.com/iamdb/iamdb/internal/admission"
	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/proxy"
)

// Admission control: one controller per instance, kept across reloads so
// that connection counts, rates and blocks survive a SIGHUP; one Redis
// connection for all of them when redis: is set.
var _ proxy.Admission = (*admission.Controller)(nil)

// openAdmission connects the shared limits when the configuration names a
// Redis. An unreachable Redis does not stop the start: the limits fall
// back as configured (redis_failure) until it answers.
func (s *server) openAdmission() error {
	s.admission = map[string]*admission.Controller{}
	s.metrics.AddTokenCache(
		func() uint64 { return s.authn.TokenCacheStats().Hits },
		func() uint64 { return s.authn.TokenCacheStats().Misses },
	)
	if s.cfg.Redis == "" {
		return nil
	}
	shared, err := admission.Connect(s.cfg.Redis, admission.SharedOptions{
		Mode:     admission.FailureMode(s.cfg.RedisFailure),
		Logger:   s.log.With("component", "admission"),
		Fallback: s.metrics.RedisFallback,
	})
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	s.shared = shared
	return nil
}

// admissionFor is the admission control of in under its current limits,
// nil when limits.enabled is false. Only the Run goroutine calls it.
func (s *server) admissionFor(in config.Instance) proxy.Admission {
	lim := admissionLimits(in.Limits)
	c := s.admission[in.Name]
	if c == nil {
		c = admission.New(in.Name, lim, admission.Options{
			Shared:    s.shared,
			Logger:    s.log,
			Throttled: s.metrics.Throttled,
		})
		s.admission[in.Name] = c
		s.metrics.AddAdmission(in.Name, c.BlockedAddresses)
	} else {
		c.SetLimits(lim)
	}
	if !in.Limits.On() {
		return nil
	}
	return c
}

// reloadAdmission applies what a reload may change outside the instances:
// what to do while Redis is unreachable. Another Redis needs a restart
// (keepUnreloadable).
func (s *server) reloadAdmission(next *config.Config) {
	if s.shared != nil {
		s.shared.SetMode(admission.FailureMode(next.RedisFailure))
	}
}

func (s *server) closeAdmission() {
	for _, c := range s.admission {
		c.Close()
	}
	if s.shared != nil {
		s.shared.Close()
		s.shared = nil
	}
}

// admissionLimits translates an instance's limits: section (defaults
// applied by config) into the controller's terms.
func admissionLimits(l config.Limits) admission.Limits {
	fl := l.FailedLogins
	deref := func(p *int) int {
		if p == nil {
			return 0
		}
		return *p
	}
	return admission.Limits{
		NewLoginsPerSecond:             l.NewLoginsPerSecond,
		PrincipalsPerSecond:            l.PrincipalsPerSecond,
		NewLoginsPerPrincipalPerSecond: l.NewLoginsPerPrincipalPerSecond,
		MaxConnections:                 l.MaxConnections,
		MaxConnectionsPerUser:          l.MaxConnectionsPerUser,
		Failures: admission.FailurePolicy{
			BlockAfter:   deref(fl.BlockAfter),
			BlockFor:     fl.BlockFor.D(),
			Window:       fl.Window.D(),
			BackoffAfter: deref(fl.BackoffAfter),
			Backoff:      fl.Backoff.D(),
		},
	}
}
