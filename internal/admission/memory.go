package admission

import (
	"sync"
	"time"
)

// Bounds on the in-memory tables. A full table never refuses a login: an
// admitted token that cannot be remembered is counted again when reused,
// an address that cannot be tracked is not blocked. Both err on the side
// the operator can see in the metrics rather than on a hard failure.
const (
	maxTokens     = 1 << 18
	maxPrincipals = 1 << 16
	maxAddresses  = 1 << 16
	// sweepEvery spaces out full sweeps of a table that stays full of
	// live entries, so a flood does not turn every call into a sweep.
	sweepEvery = time.Second
)

// principalWindow is how long a principal, once counted, is not counted
// again by principals_per_second.
const principalWindow = time.Second

// memory is the in-memory state of one instance's limits: the limits
// themselves when Redis is not used (or not reachable), and in shared mode
// the connections of this replica, which are the truth its heartbeat
// writes to Redis. Times are unix nanoseconds.
type memory struct {
	mu sync.Mutex

	logins       int64            // GCRA theoretical arrival time
	principals   int64            // GCRA theoretical arrival time
	perPrincipal map[string]int64 // principal ARN → GCRA theoretical arrival time
	seen         map[string]int64 // principal ARN → end of its principalWindow
	tokens       map[string]int64 // admitted token id → end of its validity
	addrs        map[string]*addrState

	conns int
	users map[string]int // database user → connections; zeros kept for the heartbeat to clear in shared mode

	swept map[string]int64 // table → last full sweep
}

type addrState struct {
	failures     int
	lastFailure  int64
	backoffUntil int64
	blockedUntil int64
}

func newMemory() *memory {
	return &memory{
		perPrincipal: map[string]int64{},
		seen:         map[string]int64{},
		tokens:       map[string]int64{},
		addrs:        map[string]*addrState{},
		users:        map[string]int{},
		swept:        map[string]int64{},
	}
}

// gcra checks one event against a limit of rate per second with a burst of
// rate, given the limit's theoretical arrival time tat. It returns the new
// tat to store if the event is allowed, else how long until it would be.
// The same arithmetic as loginScript, in nanoseconds instead of
// microseconds.
func gcra(tat, now int64, rate int) (next int64, wait time.Duration) {
	interval := int64(time.Second) / int64(rate)
	if tat < now {
		tat = now
	}
	next = tat + interval
	allowAt := next - interval*int64(rate)
	if now < allowAt {
		return 0, time.Duration(allowAt - now)
	}
	return next, 0
}

// screen refuses an address that is blocked.
func (m *memory) screen(now int64, ip string) *Refusal {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.addrs[ip]; a != nil && a.blockedUntil > now {
		return blockRefusal(ip, time.Duration(a.blockedUntil-now))
	}
	return nil
}

// backingOff refuses an address that must wait after failed logins.
func (m *memory) backingOff(now int64, ip string) *Refusal {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.addrs[ip]; a != nil && a.backoffUntil > now {
		return backoffRefusal(ip, time.Duration(a.backoffUntil-now))
	}
	return nil
}

// remember records a block learnt from Redis, so that further connections
// from the address are refused without asking Redis again. (Blocks can
// only expire; a back-off may end early when a good login on another
// replica resets the address, so back-offs are always asked for.)
func (m *memory) remember(now int64, ip string, blockedFor time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.addr(now, ip); a != nil && blockedFor > 0 {
		a.blockedUntil = max(a.blockedUntil, now+int64(blockedFor))
	}
}

// failure is what one failed login did to its address.
type failure struct {
	failures int           // failures counted so far (at the block: the ones that caused it)
	blocked  time.Duration // > 0: the address is now blocked for this long
	backoff  time.Duration // > 0: the address must now wait this long
}

// failed counts a failed login from ip.
func (m *memory) failed(now int64, ip string, p FailurePolicy) failure {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.addr(now, ip)
	if a == nil {
		return failure{}
	}
	if p.Window > 0 && now-a.lastFailure > int64(p.Window) {
		a.failures = 0
	}
	a.failures++
	a.lastFailure = now
	f := failure{failures: a.failures}
	if p.BlockAfter > 0 && a.failures >= p.BlockAfter {
		a.blockedUntil = now + int64(p.BlockFor)
		a.failures, a.backoffUntil = 0, 0
		f.blocked = p.BlockFor
		return f
	}
	if d := p.backoff(a.failures); d > 0 {
		a.backoffUntil = now + int64(d)
		f.backoff = d
	}
	return f
}

// succeeded forgets the failures of ip.
func (m *memory) succeeded(ip string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgetFailures(ip)
}

func (m *memory) forgetFailures(ip string) {
	if a := m.addrs[ip]; a != nil {
		a.failures, a.backoffUntil = 0, 0
		if a.blockedUntil == 0 {
			delete(m.addrs, ip)
		}
	}
}

// addr returns the state of ip, creating it when there is room.
func (m *memory) addr(now int64, ip string) *addrState {
	if a := m.addrs[ip]; a != nil {
		return a
	}
	if len(m.addrs) >= maxAddresses {
		m.sweep("addrs", now, func() {
			for k, a := range m.addrs {
				if a.blockedUntil <= now && a.backoffUntil <= now && now-a.lastFailure > int64(time.Hour) {
					delete(m.addrs, k)
				}
			}
		})
		if len(m.addrs) >= maxAddresses {
			return nil
		}
	}
	a := &addrState{}
	m.addrs[ip] = a
	return a
}

// blocked counts the addresses blocked now.
func (m *memory) blocked(now int64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, a := range m.addrs {
		if a.blockedUntil > now {
			n++
		}
	}
	return n
}

// login is one login to admit by the rates.
type login struct {
	ip        string
	tokenID   string
	principal string
	until     int64 // end of the token's validity
}

// admitLogin forgets ip's failures (the token was good) and admits the
// login if its token was admitted before, or if every rate allows a new
// one; only then are the rates charged.
func (m *memory) admitLogin(now int64, l login, lim Limits) (reused bool, r *Refusal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgetFailures(l.ip)
	if until, ok := m.tokens[l.tokenID]; ok && until > now {
		return true, nil
	}
	var perPrincipal, principals, logins int64
	if lim.NewLoginsPerPrincipalPerSecond > 0 {
		next, wait := gcra(m.perPrincipal[l.principal], now, lim.NewLoginsPerPrincipalPerSecond)
		if wait > 0 {
			return false, rateRefusal(LimitPerPrincipal, lim.NewLoginsPerPrincipalPerSecond, wait)
		}
		perPrincipal = next
	}
	newPrincipal := false
	if lim.PrincipalsPerSecond > 0 && m.seen[l.principal] <= now {
		newPrincipal = true
		next, wait := gcra(m.principals, now, lim.PrincipalsPerSecond)
		if wait > 0 {
			return false, rateRefusal(LimitPrincipals, lim.PrincipalsPerSecond, wait)
		}
		principals = next
	}
	if lim.NewLoginsPerSecond > 0 {
		next, wait := gcra(m.logins, now, lim.NewLoginsPerSecond)
		if wait > 0 {
			return false, rateRefusal(LimitNewLogins, lim.NewLoginsPerSecond, wait)
		}
		logins = next
	}
	if perPrincipal != 0 {
		m.putBounded("perPrincipal", m.perPrincipal, l.principal, perPrincipal, now, maxPrincipals, func(v int64) bool { return v <= now })
	}
	if newPrincipal {
		m.principals = principals
		m.putBounded("seen", m.seen, l.principal, now+int64(principalWindow), now, maxPrincipals, func(v int64) bool { return v <= now })
	}
	if logins != 0 {
		m.logins = logins
	}
	m.putBounded("tokens", m.tokens, l.tokenID, l.until, now, maxTokens, func(v int64) bool { return v <= now })
	return false, nil
}

// putBounded sets t[k] = v unless t is full of entries that are not stale.
func (m *memory) putBounded(name string, t map[string]int64, k string, v, now int64, limit int, stale func(int64) bool) {
	if _, ok := t[k]; !ok && len(t) >= limit {
		m.sweep(name, now, func() {
			for k, v := range t {
				if stale(v) {
					delete(t, k)
				}
			}
		})
		if len(t) >= limit {
			return
		}
	}
	t[k] = v
}

// sweep runs fn unless the table was swept less than sweepEvery ago.
func (m *memory) sweep(name string, now int64, fn func()) {
	if now-m.swept[name] < int64(sweepEvery) {
		return
	}
	m.swept[name] = now
	fn()
}

// admit takes a connection slot for dbUser if the caps allow it.
func (m *memory) admit(dbUser string, lim Limits) *Refusal {
	m.mu.Lock()
	defer m.mu.Unlock()
	if lim.MaxConnections > 0 && m.conns >= lim.MaxConnections {
		return capRefusal(LimitConnections, lim.MaxConnections, dbUser)
	}
	if lim.MaxConnectionsPerUser > 0 && m.users[dbUser] >= lim.MaxConnectionsPerUser {
		return capRefusal(LimitConnectionsPerUser, lim.MaxConnectionsPerUser, dbUser)
	}
	m.conns++
	m.users[dbUser]++
	return nil
}

// add takes a slot that Redis admitted, whatever the local caps say.
func (m *memory) add(dbUser string) {
	m.mu.Lock()
	m.conns++
	m.users[dbUser]++
	m.mu.Unlock()
}

// release gives a slot back. keepZero keeps a user whose count drops to
// zero, for the heartbeat to clear its field in Redis.
func (m *memory) release(dbUser string, keepZero bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns--
	m.users[dbUser]--
	if m.users[dbUser] <= 0 && !keepZero {
		delete(m.users, dbUser)
	}
}

// connections is a snapshot of this replica's connections.
func (m *memory) connections() (int, map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	users := make(map[string]int, len(m.users))
	for u, n := range m.users {
		users[u] = n
	}
	return m.conns, users
}

// dropZeros forgets users whose zero count Redis now knows.
func (m *memory) dropZeros(users map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for u, n := range users {
		if n <= 0 && m.users[u] <= 0 {
			delete(m.users, u)
		}
	}
}
