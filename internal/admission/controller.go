package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iamdb/iamdb/internal/authn"
)

// Options configure a Controller. Zero values take the defaults.
type Options struct {
	// Shared makes the limits hold across replicas; nil keeps them in
	// memory.
	Shared *Shared
	Logger *slog.Logger
	// Throttled is told about each refusal, by limit name (metrics).
	Throttled func(instance, limit string)
	// Now is the clock of the in-memory limits; default time.Now.
	Now func() time.Time
}

// Controller is the admission control of one instance. It is safe for
// concurrent use; SetLimits changes its limits while it is in use.
type Controller struct {
	instance  string
	log       *slog.Logger
	throttled func(instance, limit string)
	now       func() time.Time
	shared    *Shared
	lim       atomic.Pointer[Limits]
	mem       *memory

	// syncMu orders slot changes (read side) against the heartbeat that
	// rewrites this replica's counts to Redis (write side), so that a
	// count is never written between a slot's change in Redis and in
	// memory.
	syncMu sync.RWMutex
}

// New returns the controller of instance with limits lim.
func New(instance string, lim Limits, opt Options) *Controller {
	c := &Controller{
		instance:  instance,
		log:       opt.Logger,
		throttled: opt.Throttled,
		now:       opt.Now,
		shared:    opt.Shared,
		mem:       newMemory(),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("instance", instance)
	if c.now == nil {
		c.now = time.Now
	}
	c.SetLimits(lim)
	if c.shared != nil {
		c.shared.register(c)
	}
	return c
}

// SetLimits replaces the limits for what comes next; connections already
// admitted keep their slots.
func (c *Controller) SetLimits(lim Limits) { c.lim.Store(&lim) }

// Limits are the limits in force.
func (c *Controller) Limits() Limits { return *c.lim.Load() }

// Close detaches the controller from the shared state. Its replica's
// connections are rewritten to Redis no more.
func (c *Controller) Close() {
	if c.shared != nil {
		c.shared.unregister(c)
	}
}

// BlockedAddresses is the number of source addresses this replica knows
// to be blocked now (metrics).
func (c *Controller) BlockedAddresses() int { return c.mem.blocked(c.now().UnixNano()) }

// sharedNow returns the Shared to use for this call, nil for memory; or a
// refusal when Redis is unreachable and the mode is refuse.
func (c *Controller) sharedNow() (*Shared, *Refusal) {
	s := c.shared
	switch {
	case s == nil:
		return nil, nil
	case s.Available():
		return s, nil
	case s.refusing():
		return nil, sharedRefusal()
	}
	return nil, nil
}

// sharedFailed notes a failed Redis call; the refusal to return instead of
// falling back to memory when the mode is refuse.
func (c *Controller) sharedFailed(s *Shared, err error) *Refusal {
	s.failed(err)
	if s.refusing() {
		return sharedRefusal()
	}
	return nil
}

// refused reports a refusal and returns it as an error.
func (c *Controller) refused(r *Refusal) error {
	if c.throttled != nil {
		c.throttled(c.instance, r.Limit)
	}
	return r
}

// Screen refuses a source address that is blocked after repeated failed
// logins. Listeners call it first, before any TLS work: a blocked address
// is presumed hostile and gets nothing for free. (An address only backing
// off is refused by Admit, where its client can be told why.)
func (c *Controller) Screen(ctx context.Context, ip string) error {
	now := c.now().UnixNano()
	if r := c.mem.screen(now, ip); r != nil {
		return c.refused(r)
	}
	// Without Redis only this replica's own record of blocks is known.
	// Even with redis_failure: refuse the connection goes on: Admit
	// refuses it once the client can be told why in its own protocol.
	s := c.shared
	if s == nil || !s.Available() {
		return nil
	}
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	blockFor, err := s.rdb.PTTL(rctx, c.addrKey("block", ip)).Result()
	if err != nil {
		s.failed(err)
		return nil // memory said yes; Admit comes next
	}
	if blockFor <= 0 {
		return nil
	}
	c.mem.remember(now, ip, blockFor)
	return c.refused(blockRefusal(ip, blockFor))
}

// Admit takes a connection slot for dbUser, connecting from ip, unless
// the address is backing off after failed logins or max_connections or
// max_connections_per_user is reached. release gives the slot back; call
// it once, when the connection ends.
func (c *Controller) Admit(ctx context.Context, ip, dbUser string) (release func(), err error) {
	lim := c.Limits()
	now := c.now().UnixNano()
	c.syncMu.RLock()
	defer c.syncMu.RUnlock()
	s, r := c.sharedNow()
	if r != nil {
		return nil, c.refused(r)
	}
	if s != nil {
		rctx, cancel := s.ctx(ctx)
		res, err := admitScript.Run(rctx, s.rdb, []string{c.connsKey(), c.userKey(dbUser), keyReplicas, c.addrKey("backoff", ip)},
			s.replica, lim.MaxConnections, lim.MaxConnectionsPerUser, keyTTL.Milliseconds()).Int64Slice()
		cancel()
		switch {
		case err != nil || len(res) == 0:
			if err == nil {
				err = errors.New("admission script returned nothing")
			}
			if r := c.sharedFailed(s, err); r != nil {
				return nil, c.refused(r)
			}
			// Fall through to this replica's own counts.
		case res[0] == 1:
			return nil, c.refused(capRefusal(LimitConnections, lim.MaxConnections, dbUser))
		case res[0] == 2:
			return nil, c.refused(capRefusal(LimitConnectionsPerUser, lim.MaxConnectionsPerUser, dbUser))
		case res[0] == 3 && len(res) > 1:
			// Not remembered here as blocks are: a good login on another
			// replica may end the back-off any moment.
			return nil, c.refused(backoffRefusal(ip, time.Duration(res[1])*time.Millisecond))
		default:
			c.mem.add(dbUser)
			return c.releaser(dbUser), nil
		}
	}
	if r := c.mem.backingOff(now, ip); r != nil {
		return nil, c.refused(r)
	}
	if r := c.mem.admit(dbUser, lim); r != nil {
		return nil, c.refused(r)
	}
	return c.releaser(dbUser), nil
}

func (c *Controller) releaser(dbUser string) func() {
	var once sync.Once
	return func() { once.Do(func() { c.release(dbUser) }) }
}

func (c *Controller) release(dbUser string) {
	c.syncMu.RLock()
	defer c.syncMu.RUnlock()
	s := c.shared
	c.mem.release(dbUser, s != nil)
	if s == nil || !s.Available() {
		// Redis learns the count from the next heartbeat after it is back.
		return
	}
	ctx, cancel := s.ctx(context.Background())
	defer cancel()
	if err := releaseScript.Run(ctx, s.rdb, []string{c.connsKey(), c.userKey(dbUser)}, s.replica).Err(); err != nil {
		s.failed(err)
	}
}

// AdmitLogin admits a verified login by the rates: free when its token was
// admitted before and is still valid, else if new_logins_per_second,
// principals_per_second and new_logins_per_principal_per_second all allow
// it. A good token also resets the failure count of its source address ip.
func (c *Controller) AdmitLogin(ctx context.Context, ip string, d *authn.Decision) error {
	if d == nil || d.Principal == nil {
		return errors.New("admission: login without a decision")
	}
	lim := c.Limits()
	now := c.now()
	l := login{ip: ip, tokenID: d.TokenID, principal: d.Principal.ARN, until: d.ValidUntil.UnixNano()}
	s, r := c.sharedNow()
	if r != nil {
		return c.refused(r)
	}
	if s != nil {
		ttl := d.ValidUntil.Sub(now)
		if ttl < time.Millisecond {
			ttl = time.Millisecond
		}
		rctx, cancel := s.ctx(ctx)
		res, err := loginScript.Run(rctx, s.rdb, []string{
			c.key("token", l.tokenID), c.key("principal", l.principal), c.key("principal-seen", l.principal),
			c.key("rate", "principals"), c.key("rate", "logins"), c.addrKey("failures", ip), c.addrKey("backoff", ip),
		}, ttl.Milliseconds(), lim.NewLoginsPerPrincipalPerSecond, lim.PrincipalsPerSecond, lim.NewLoginsPerSecond,
			principalWindow.Milliseconds()).Int64Slice()
		cancel()
		if err == nil {
			c.mem.succeeded(ip)
			return c.loginResult(res, lim)
		}
		if r := c.sharedFailed(s, err); r != nil {
			return c.refused(r)
		}
	}
	if _, r := c.mem.admitLogin(now.UnixNano(), l, lim); r != nil {
		return c.refused(r)
	}
	return nil
}

func (c *Controller) loginResult(res []int64, lim Limits) error {
	if len(res) == 0 || res[0] != 2 {
		return nil
	}
	var wait time.Duration
	if len(res) > 2 {
		wait = time.Duration(res[2]) * time.Microsecond
	}
	switch {
	case len(res) > 1 && res[1] == 1:
		return c.refused(rateRefusal(LimitPerPrincipal, lim.NewLoginsPerPrincipalPerSecond, wait))
	case len(res) > 1 && res[1] == 2:
		return c.refused(rateRefusal(LimitPrincipals, lim.PrincipalsPerSecond, wait))
	}
	return c.refused(rateRefusal(LimitNewLogins, lim.NewLoginsPerSecond, wait))
}

// LoginFailed counts a refused token from ip. When the failure starts a
// block it returns a description of it for the operator, else "".
func (c *Controller) LoginFailed(ctx context.Context, ip string) string {
	p := c.Limits().Failures
	if p.BlockAfter <= 0 && p.BackoffAfter <= 0 {
		return ""
	}
	now := c.now().UnixNano()
	var f failure
	s, _ := c.sharedNow()
	counted := false
	if s != nil {
		rctx, cancel := s.ctx(ctx)
		res, err := failScript.Run(rctx, s.rdb, []string{c.addrKey("failures", ip), c.addrKey("backoff", ip), c.addrKey("block", ip)},
			max(p.Window, time.Millisecond).Milliseconds(), p.BlockAfter, max(p.BlockFor, time.Millisecond).Milliseconds(),
			p.BackoffAfter, p.Backoff.Milliseconds(), p.maxBackoff().Milliseconds()).Int64Slice()
		cancel()
		if err != nil {
			s.failed(err)
		} else if len(res) == 3 {
			counted = true
			f.failures = int(res[0])
			switch res[1] {
			case 2:
				f.blocked = time.Duration(res[2]) * time.Millisecond
			case 1:
				f.backoff = time.Duration(res[2]) * time.Millisecond
			}
			c.mem.remember(now, ip, f.blocked)
		}
	}
	if !counted {
		f = c.mem.failed(now, ip, p)
	}
	if f.blocked <= 0 {
		return ""
	}
	c.log.Warn("source address blocked after repeated failed logins", "remote_ip", ip, "failures", f.failures, "block_for", f.blocked.String())
	return fmt.Sprintf("%s is now blocked for %s after %d failed logins", ip, f.blocked, f.failures)
}

// Redis keys of this instance.
func (c *Controller) key(kind, id string) string {
	return keyPrefix + c.instance + ":" + kind + ":" + id
}
func (c *Controller) addrKey(kind, ip string) string { return c.key("addr-"+kind, ip) }
func (c *Controller) connsKey() string               { return keyPrefix + c.instance + ":connections" }
func (c *Controller) userKey(dbUser string) string   { return c.key("user-connections", dbUser) }
