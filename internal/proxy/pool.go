package proxy

import (
	"container/list"
	"crypto/x509"
	"errors"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// Upstream session reuse, the engine-independent part: the bounds, the
// LRU order, the idle watch and the flushes. What makes a session
// reusable, how it is reset and how it is closed is the engine's.
//
// While a session is idle one goroutine waits on a read of it, with the
// idle timeout or max lifetime as its deadline: the upstream closing it
// or sending anything at all removes it at once, and the deadline expires
// it. A login that takes a session ends that read with a deadline in the
// past and learns the verdict, so a session that died just then is
// discarded and the login dials afresh.

// Pool configures the reuse of upstream sessions by IAM logins.
type Pool struct {
	Enabled bool
	// MaxIdle bounds the idle upstream sessions of the listener (default
	// DefaultPoolMaxIdle); the least recently used makes room.
	MaxIdle int
	// MaxIdlePerKey bounds those of one key: database user, database,
	// principal and client settings (default
	// min(DefaultPoolMaxIdlePerKey, MaxIdle)).
	MaxIdlePerKey int
	// IdleTimeout closes a session idle this long (default 60s).
	IdleTimeout time.Duration
	// MaxLifetime closes a session this old when it next becomes idle,
	// or while it is (default 1h).
	MaxLifetime time.Duration
}

// Pool defaults for zero values.
const (
	DefaultPoolMaxIdle       = 20
	DefaultPoolMaxIdlePerKey = 10
	DefaultPoolIdleTimeout   = 60 * time.Second
	DefaultPoolMaxLifetime   = time.Hour
)

// WithDefaults fills in the zero values.
func (p Pool) WithDefaults() Pool {
	if p.MaxIdle <= 0 {
		p.MaxIdle = DefaultPoolMaxIdle
	}
	if p.MaxIdlePerKey <= 0 {
		p.MaxIdlePerKey = DefaultPoolMaxIdlePerKey
	}
	p.MaxIdlePerKey = min(p.MaxIdlePerKey, p.MaxIdle)
	if p.IdleTimeout <= 0 {
		p.IdleTimeout = DefaultPoolIdleTimeout
	}
	if p.MaxLifetime <= 0 {
		p.MaxLifetime = DefaultPoolMaxLifetime
	}
	return p
}

// PoolObserver is an Observer that also follows the upstream session
// pool; a listener reports to its Observer when it implements it.
type PoolObserver interface {
	// UpstreamPoolIdle is the number of idle upstream sessions now held.
	UpstreamPoolIdle(instance string, idle int)
	// UpstreamSessionReused counts a login served by an idle session.
	UpstreamSessionReused(instance string)
}

// Pooled is what the pool keeps of an upstream session; an engine's
// session type embeds it.
type Pooled struct {
	Key     string
	Conn    net.Conn
	Created time.Time
	Gen     uint64 // the pool's generation when the session was opened

	// While in the pool, guarded by UpstreamPool.mu: its place in the
	// LRU list (nil once removed), and whether a login took it.
	elem    *list.Element
	taken   bool
	verdict chan error // the idle read's outcome, for the login that took it
}

func (p *Pooled) pooled() *Pooled { return p }

// PooledSession is an engine's session type: a pointer to a struct that
// embeds Pooled.
type PooledSession interface {
	comparable
	pooled() *Pooled
}

// UpstreamPool holds the idle upstream sessions of one listener.
type UpstreamPool[S PooledSession] struct {
	now       func() time.Time
	closeConn func(net.Conn) // ends a session politely
	report    func(idle int) // called with mu held, on every change

	mu     sync.Mutex
	cfg    Pool
	closed bool
	// gen counts flushes: a session opened before the last one (under
	// settings since replaced) is not kept when its client ends.
	gen   uint64
	byKey map[string][]S // most recently returned last
	lru   list.List      // of S, least recently returned first
}

// NewUpstreamPool is an empty pool, off until configured.
func NewUpstreamPool[S PooledSession](closeConn func(net.Conn), report func(idle int)) *UpstreamPool[S] {
	return &UpstreamPool[S]{now: time.Now, closeConn: closeConn, report: report, byKey: map[string][]S{}}
}

// Configure applies cfg; sessions beyond its bounds, or all of them when
// the pool is off, are closed.
func (p *UpstreamPool[S]) Configure(cfg Pool) {
	if cfg.Enabled {
		cfg = cfg.WithDefaults()
	}
	p.mu.Lock()
	p.cfg = cfg
	var drop []S
	for p.lru.Len() > 0 && (!cfg.Enabled || p.lru.Len() > cfg.MaxIdle) {
		drop = append(drop, p.removeLocked(p.lru.Front().Value.(S)))
	}
	if cfg.Enabled {
		for _, k := range slices.Collect(maps.Keys(p.byKey)) {
			for len(p.byKey[k]) > cfg.MaxIdlePerKey {
				drop = append(drop, p.removeLocked(p.byKey[k][0]))
			}
		}
	}
	p.report(p.lru.Len())
	p.mu.Unlock()
	p.closeAll(drop)
}

// Generation is the generation a session opened now gets (Pooled.Gen);
// on is false when the pool is off or closed.
func (p *UpstreamPool[S]) Generation() (gen uint64, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen, p.cfg.Enabled && !p.closed
}

// Idle is the number of idle sessions held.
func (p *UpstreamPool[S]) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

// Get takes an idle session of key that is still alive; ok is false
// when there is none.
func (p *UpstreamPool[S]) Get(key string) (s S, ok bool) {
	for {
		p.mu.Lock()
		ss := p.byKey[key]
		if len(ss) == 0 {
			p.mu.Unlock()
			var zero S
			return zero, false
		}
		s := ss[len(ss)-1]
		b := s.pooled()
		p.removeLocked(s)
		b.taken = true
		lifetime := p.cfg.MaxLifetime
		p.mu.Unlock()

		// End the idle read; its outcome says whether the upstream is
		// still there and silent.
		b.Conn.SetReadDeadline(time.Unix(1, 0))
		err := <-b.verdict
		if err == nil && p.now().Sub(b.Created) >= lifetime {
			err = errors.New("max lifetime reached")
		}
		if err != nil {
			p.closeConn(b.Conn)
			continue
		}
		b.Conn.SetReadDeadline(time.Time{})
		b.taken, b.verdict = false, nil
		return s, true
	}
}

// Put keeps s, reset and idle, for a later login; s is closed instead
// when the pool is off, closed, flushed since s was opened or full for its
// key, or s is too old, and Put says why.
func (p *UpstreamPool[S]) Put(s S) (notKept string) {
	b := s.pooled()
	now := p.now()
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	expires := now.Add(cfg.IdleTimeout)
	if end := b.Created.Add(cfg.MaxLifetime); end.Before(expires) {
		expires = end
	}
	if !cfg.Enabled || !expires.After(now) {
		p.closeConn(b.Conn)
		return "the pool is off or the session reached its max lifetime"
	}
	// Set before the session is visible to Get, whose past deadline
	// must not be overwritten.
	b.Conn.SetReadDeadline(expires)
	b.verdict = make(chan error, 1)

	var drop []S
	p.mu.Lock()
	if p.closed || !p.cfg.Enabled || b.Gen != p.gen || len(p.byKey[b.Key]) >= p.cfg.MaxIdlePerKey {
		p.mu.Unlock()
		p.closeConn(b.Conn)
		return "the pool is closed, was flushed since the session was opened, or holds max_idle_per_key such sessions"
	}
	for p.lru.Len() >= p.cfg.MaxIdle {
		drop = append(drop, p.removeLocked(p.lru.Front().Value.(S)))
	}
	b.elem = p.lru.PushBack(s)
	p.byKey[b.Key] = append(p.byKey[b.Key], s)
	p.report(p.lru.Len())
	p.mu.Unlock()
	p.closeAll(drop)
	go p.watch(s)
	return ""
}

// watch waits on a read of an idle session until its deadline, the
// upstream closing it or sending something, or Get ending the read.
func (p *UpstreamPool[S]) watch(s S) {
	b := s.pooled()
	var one [1]byte
	n, err := b.Conn.Read(one[:])
	switch {
	case n > 0:
		err = errors.New("the upstream sent something to an idle session")
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = nil // silent until the deadline: idle timeout, or Get
	case err == nil:
		err = errors.New("empty read")
	}
	p.mu.Lock()
	if b.taken {
		p.mu.Unlock()
		b.verdict <- err
		return
	}
	if b.elem == nil {
		// Already removed (and closed) by Configure, Flush or eviction.
		p.mu.Unlock()
		return
	}
	p.removeLocked(s)
	p.mu.Unlock()
	p.closeConn(b.Conn)
}

// removeLocked takes s out of the pool; p.mu is held.
func (p *UpstreamPool[S]) removeLocked(s S) S {
	b := s.pooled()
	p.lru.Remove(b.elem)
	b.elem = nil
	ss := p.byKey[b.Key]
	if i := slices.Index(ss, s); i >= 0 {
		ss = slices.Delete(ss, i, i+1)
	}
	if len(ss) == 0 {
		delete(p.byKey, b.Key)
	} else {
		p.byKey[b.Key] = ss
	}
	p.report(p.lru.Len())
	return s
}

// Flush closes every idle session; sessions in use are closed instead of
// kept when their clients quit.
func (p *UpstreamPool[S]) Flush() {
	p.mu.Lock()
	p.gen++
	drop := make([]S, 0, p.lru.Len())
	for p.lru.Len() > 0 {
		drop = append(drop, p.removeLocked(p.lru.Front().Value.(S)))
	}
	p.mu.Unlock()
	p.closeAll(drop)
}

// Close flushes the pool and keeps it empty.
func (p *UpstreamPool[S]) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Flush()
}

func (p *UpstreamPool[S]) closeAll(ss []S) {
	for _, s := range ss {
		p.closeConn(s.pooled().Conn)
	}
}

// SameUpstream reports whether a and b reach the same server in the same
// way, so that sessions opened under a stay good under b.
func SameUpstream(a, b Upstream) bool {
	if a.Address != b.Address || (a.TLS == nil) != (b.TLS == nil) {
		return false
	}
	if a.TLS == nil {
		return true
	}
	x, y := a.TLS, b.TLS
	certsEqual := func(p, q *x509.CertPool) bool { return p == q || p != nil && q != nil && p.Equal(q) }
	return x.ServerName == y.ServerName && x.InsecureSkipVerify == y.InsecureSkipVerify &&
		x.MinVersion == y.MinVersion && x.MaxVersion == y.MaxVersion && certsEqual(x.RootCAs, y.RootCAs) &&
		len(x.Certificates) == 0 && len(y.Certificates) == 0 &&
		x.GetClientCertificate == nil && y.GetClientCertificate == nil &&
		x.VerifyPeerCertificate == nil && y.VerifyPeerCertificate == nil &&
		x.VerifyConnection == nil && y.VerifyConnection == nil
}
