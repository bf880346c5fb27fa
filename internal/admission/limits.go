package admission

import (
	"fmt"
	"time"
)

// Names of the limits, as the configuration names them; they appear in
// refusals, logs and the limit label of metrics.
const (
	LimitNewLogins             = "new_logins_per_second"
	LimitPrincipals            = "principals_per_second"
	LimitPerPrincipal          = "new_logins_per_principal_per_second"
	LimitConnections           = "max_connections"
	LimitConnectionsPerUser    = "max_connections_per_user"
	LimitFailedLogins          = "failed_logins"
	LimitSharedLimitsUnhealthy = "redis_failure"
)

// Limits of one instance. Zero switches a limit off.
type Limits struct {
	NewLoginsPerSecond             int // distinct tokens admitted per second
	PrincipalsPerSecond            int // distinct principals admitted per second
	NewLoginsPerPrincipalPerSecond int // distinct tokens per second of one principal
	MaxConnections                 int // client connections of the instance
	MaxConnectionsPerUser          int // client connections as one database user
	Failures                       FailurePolicy
}

// FailurePolicy is the protection against repeated failed logins from one
// source address.
type FailurePolicy struct {
	BlockAfter   int           // failures that block the address; 0: never block
	BlockFor     time.Duration // how long a block lasts
	Window       time.Duration // failures are forgotten after this long without one
	BackoffAfter int           // failures after which the address must wait; 0: no back-off
	Backoff      time.Duration // the first wait; it doubles with each further failure
	MaxBackoff   time.Duration // the longest wait; default BlockFor, else a minute
}

// maxBackoff is the cap on one back-off.
func (p FailurePolicy) maxBackoff() time.Duration {
	switch {
	case p.MaxBackoff > 0:
		return p.MaxBackoff
	case p.BlockFor > 0:
		return p.BlockFor
	}
	return time.Minute
}

// backoff is the wait after the n-th failure (n ≥ BackoffAfter).
func (p FailurePolicy) backoff(n int) time.Duration {
	if p.BackoffAfter <= 0 || n < p.BackoffAfter || p.Backoff <= 0 {
		return 0
	}
	d, ceiling := p.Backoff, p.maxBackoff()
	for i := p.BackoffAfter; i < n && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// Refusal is a connection or login refused by admission control. Its
// message is fit for the database client and the audit trail: it names the
// limit and never a token or secret.
type Refusal struct {
	Limit      string        // one of the Limit* names
	Detail     string        // "new_logins_per_second 50 exceeded"
	RetryAfter time.Duration // when known, how long until the limit allows again
}

func (r *Refusal) Error() string { return "login throttled (" + r.Detail + ")" }

func rateRefusal(limit string, rate int, retry time.Duration) *Refusal {
	return &Refusal{Limit: limit, Detail: fmt.Sprintf("%s %d exceeded", limit, rate), RetryAfter: retry}
}

func capRefusal(limit string, max int, dbUser string) *Refusal {
	d := fmt.Sprintf("%s %d reached", limit, max)
	if limit == LimitConnectionsPerUser {
		d += fmt.Sprintf(" for user %q", dbUser)
	}
	return &Refusal{Limit: limit, Detail: d}
}

func blockRefusal(ip string, left time.Duration) *Refusal {
	return &Refusal{Limit: LimitFailedLogins, RetryAfter: left,
		Detail: fmt.Sprintf("%s: too many failed logins from %s; blocked for %s", LimitFailedLogins, ip, roundUp(left))}
}

func backoffRefusal(ip string, left time.Duration) *Refusal {
	return &Refusal{Limit: LimitFailedLogins, RetryAfter: left,
		Detail: fmt.Sprintf("%s: repeated failed logins from %s; retry in %s", LimitFailedLogins, ip, roundUp(left))}
}

func sharedRefusal() *Refusal {
	return &Refusal{Limit: LimitSharedLimitsUnhealthy,
		Detail: "shared limits unavailable: Redis is unreachable and redis_failure is refuse"}
}

// roundUp shows a wait in whole units that are never shorter than the wait.
func roundUp(d time.Duration) time.Duration {
	unit := time.Millisecond
	if d >= 10*time.Second {
		unit = time.Second
	}
	return ((d + unit - 1) / unit) * unit
}
