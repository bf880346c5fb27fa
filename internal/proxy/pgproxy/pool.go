package pgproxy

import (
	"container/list"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Upstream session reuse. Logging in to PostgreSQL costs a TLS handshake,
// SCRAM and a forked backend; an IAM client that reconnects often pays it
// every time. So, like PgBouncer's session pooling, an upstream session
// whose client ended cleanly is reset and kept for the next IAM login of
// the same kind:
//
//	client ── Terminate ─▶ pgproxy (not forwarded)
//	                       upstream idle? (frames: every request answered,
//	                       ReadyForQuery 'I', nothing half sent)
//	                       ── DISCARD ALL ─────────────────────────▶ upstream
//	                       ◀── CommandComplete, ReadyForQuery 'I' ──
//	                       idle pool, by key
//	next IAM login, same key, token verified and authorized:
//	client ◀── AuthenticationOk, the session's ParameterStatus,
//	           a fresh BackendKeyData, ReadyForQuery ── pgproxy
//
// The key is everything that decides what the session is: database user,
// database, every startup parameter sent upstream (which name the
// principal, so sessions are never shared between principals) and the
// backend password it logged in with (a rotated or changed password
// retires the sessions opened with the old one). Anything unusual — a
// transaction open, a COPY or an extended-protocol exchange unfinished, a
// client gone without Terminate, an error or a non-idle status after
// DISCARD ALL — closes the upstream session instead. Password-relayed
// (non-IAM) sessions are never kept.
//
// While a session is idle one goroutine waits on a read of it, with the
// idle timeout or max lifetime as its deadline: the upstream closing it
// (pg_terminate_backend, a restart) or sending anything at all removes it
// at once, and the deadline expires it. A login that takes a session ends
// that read with a deadline in the past and learns the verdict, so a
// session that died just then is discarded and the login dials afresh.

// Pool configures the reuse of upstream sessions by IAM logins.
type Pool struct {
	Enabled bool
	// MaxIdle bounds the idle upstream sessions of the listener (default
	// DefaultPoolMaxIdle); the least recently used makes room.
	MaxIdle int
	// MaxIdlePerKey bounds those of one database user, database and set
	// of startup parameters (default min(DefaultPoolMaxIdlePerKey, MaxIdle)).
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

func (p Pool) withDefaults() Pool {
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
// pool; the Server reports to its Observer when it implements it.
type PoolObserver interface {
	// UpstreamPoolIdle is the number of idle upstream sessions now held.
	UpstreamPoolIdle(instance string, idle int)
	// UpstreamSessionReused counts a login served by an idle session.
	UpstreamSessionReused(instance string)
}

// resetTimeout bounds DISCARD ALL on a session going back to the pool.
const resetTimeout = 5 * time.Second

// discardAll is the Query message that resets a session: it closes
// cursors, resets settings and the session user, deallocates prepared
// statements, unlistens, releases advisory locks and drops temporary
// tables.
var discardAll = frame('Q', []byte("DISCARD ALL\x00"))

// terminateMessage is the frontend Terminate message: 'X' and a length of 4.
var terminateMessage = []byte{'X', 0, 0, 0, 4}

// poolKey identifies the sessions a login may take: see poolKeyFor.
type poolKey string

// poolKeyFor is the key of a session of user on database, logged in with
// password and the startup parameters params (besides user and database).
// NUL separates the parts: it cannot occur in startup parameters. The
// password enters as a hash only.
func poolKeyFor(user, database, password string, params map[string]string) poolKey {
	var b strings.Builder
	b.WriteString(user)
	b.WriteByte(0)
	b.WriteString(database)
	b.WriteByte(0)
	for _, k := range slices.Sorted(maps.Keys(params)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(params[k])
		b.WriteByte(0)
	}
	sum := sha256.Sum256([]byte(password))
	b.Write(sum[:])
	return poolKey(b.String())
}

// upstreamSession is an upstream connection that may serve one IAM client
// after another.
type upstreamSession struct {
	key     poolKey
	bc      *backendConn // the connection, the upstream's key and its ParameterStatus values
	created time.Time
	epoch   uint64 // the pool's epoch before the session was opened

	// While in the pool, guarded by upstreamPool.mu: its place in the
	// LRU list (nil once removed), and whether a login took it.
	elem    *list.Element
	taken   bool
	verdict chan error // the idle read's outcome, for the login that took it
}

// upstreamPool holds the idle upstream sessions of one listener.
type upstreamPool struct {
	now    func() time.Time
	report func(idle int) // called with mu held, on every change

	mu     sync.Mutex
	cfg    Pool
	closed bool
	// epoch counts flushes: a session opened before the last one (under
	// settings since replaced) is not kept when its client ends.
	epoch uint64
	byKey map[poolKey][]*upstreamSession // most recently returned last
	lru   list.List                      // of *upstreamSession, least recently returned first
}

func newUpstreamPool(report func(int)) *upstreamPool {
	return &upstreamPool{now: time.Now, report: report, byKey: map[poolKey][]*upstreamSession{}}
}

// configure applies cfg; sessions beyond its bounds, or all of them when
// the pool is off, are closed.
func (p *upstreamPool) configure(cfg Pool) {
	if cfg.Enabled {
		cfg = cfg.withDefaults()
	}
	p.mu.Lock()
	p.cfg = cfg
	var drop []*upstreamSession
	for p.lru.Len() > 0 && (!cfg.Enabled || p.lru.Len() > cfg.MaxIdle) {
		drop = append(drop, p.removeLocked(p.lru.Front().Value.(*upstreamSession)))
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
	closeSessions(drop)
}

func (p *upstreamPool) enabled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.Enabled && !p.closed
}

// newSession is a session of key to be opened now, for put to keep later.
func (p *upstreamPool) newSession(key poolKey) *upstreamSession {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &upstreamSession{key: key, epoch: p.epoch}
}

// idle is the number of idle sessions held.
func (p *upstreamPool) idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

// get takes an idle session of key that is still alive, or returns nil.
func (p *upstreamPool) get(key poolKey) *upstreamSession {
	for {
		p.mu.Lock()
		ss := p.byKey[key]
		if len(ss) == 0 {
			p.mu.Unlock()
			return nil
		}
		s := ss[len(ss)-1]
		p.removeLocked(s)
		s.taken = true
		lifetime := p.cfg.MaxLifetime
		p.mu.Unlock()

		// End the idle read; its outcome says whether the upstream is
		// still there and silent.
		s.bc.conn.SetReadDeadline(time.Unix(1, 0))
		err := <-s.verdict
		if err == nil && p.now().Sub(s.created) >= lifetime {
			err = errors.New("max lifetime reached")
		}
		if err != nil {
			closeUpstream(s.bc.conn)
			continue
		}
		s.bc.conn.SetReadDeadline(time.Time{})
		s.taken, s.verdict = false, nil
		return s
	}
}

// put keeps s, reset and idle, for a later login, and reports whether it
// did; s is closed instead when the pool is off, closed or full for its
// key, or s is too old or from before the last flush.
func (p *upstreamPool) put(s *upstreamSession) bool {
	now := p.now()
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	expires := now.Add(cfg.IdleTimeout)
	if end := s.created.Add(cfg.MaxLifetime); end.Before(expires) {
		expires = end
	}
	if !cfg.Enabled || !expires.After(now) {
		closeUpstream(s.bc.conn)
		return false
	}
	// Set before the session is visible to get, whose past deadline
	// must not be overwritten.
	s.bc.conn.SetReadDeadline(expires)
	s.verdict = make(chan error, 1)

	var drop []*upstreamSession
	p.mu.Lock()
	if p.closed || !p.cfg.Enabled || s.epoch != p.epoch || len(p.byKey[s.key]) >= p.cfg.MaxIdlePerKey {
		p.mu.Unlock()
		closeUpstream(s.bc.conn)
		return false
	}
	for p.lru.Len() >= p.cfg.MaxIdle {
		drop = append(drop, p.removeLocked(p.lru.Front().Value.(*upstreamSession)))
	}
	s.elem = p.lru.PushBack(s)
	p.byKey[s.key] = append(p.byKey[s.key], s)
	p.report(p.lru.Len())
	p.mu.Unlock()
	closeSessions(drop)
	go p.watch(s)
	return true
}

// watch waits on a read of an idle session until its deadline, the
// upstream closing it or sending something, or get ending the read.
func (p *upstreamPool) watch(s *upstreamSession) {
	var b [1]byte
	n, err := s.bc.conn.Read(b[:])
	switch {
	case n > 0:
		err = errors.New("the upstream sent a message to an idle session")
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = nil // silent until the deadline: idle timeout, or get
	case err == nil:
		err = errors.New("empty read")
	}
	p.mu.Lock()
	if s.taken {
		p.mu.Unlock()
		s.verdict <- err
		return
	}
	if s.elem == nil {
		// Already removed (and closed) by configure, flush or eviction.
		p.mu.Unlock()
		return
	}
	p.removeLocked(s)
	p.mu.Unlock()
	closeUpstream(s.bc.conn)
}

// removeLocked takes s out of the pool; p.mu is held.
func (p *upstreamPool) removeLocked(s *upstreamSession) *upstreamSession {
	p.lru.Remove(s.elem)
	s.elem = nil
	ss := p.byKey[s.key]
	if i := slices.Index(ss, s); i >= 0 {
		ss = slices.Delete(ss, i, i+1)
	}
	if len(ss) == 0 {
		delete(p.byKey, s.key)
	} else {
		p.byKey[s.key] = ss
	}
	p.report(p.lru.Len())
	return s
}

// flush closes every idle session, and those in use when they end.
func (p *upstreamPool) flush() {
	p.mu.Lock()
	p.epoch++
	drop := make([]*upstreamSession, 0, p.lru.Len())
	for p.lru.Len() > 0 {
		drop = append(drop, p.removeLocked(p.lru.Front().Value.(*upstreamSession)))
	}
	p.mu.Unlock()
	closeSessions(drop)
}

// close flushes the pool and keeps it empty.
func (p *upstreamPool) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.flush()
}

func closeSessions(ss []*upstreamSession) {
	for _, s := range ss {
		closeUpstream(s.bc.conn)
	}
}

// closeUpstream ends an upstream session politely: Terminate, then close,
// so that the server logs no lost connection.
func closeUpstream(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.Write(terminateMessage)
	c.Close()
}

// resetUpstream runs DISCARD ALL on a session its client left idle and
// reads up to the ReadyForQuery that must follow, with status idle.
// ParameterStatus messages on the way (RESET ALL reports the settings it
// restores) update params, which the next client is shown.
func resetUpstream(c net.Conn, params map[string]string) error {
	c.SetDeadline(time.Now().Add(resetTimeout))
	if _, err := c.Write(discardAll); err != nil {
		return fmt.Errorf("sending DISCARD ALL: %w", err)
	}
	done := false
	for {
		typ, body, err := readMessage(c, maxAuthMessageLen)
		if err != nil {
			return fmt.Errorf("reading the answer to DISCARD ALL: %w", err)
		}
		switch typ {
		case 'C':
			done = string(body) == "DISCARD ALL\x00"
		case 'Z':
			if !done || len(body) != 1 || body[0] != 'I' {
				return fmt.Errorf("ReadyForQuery %q after DISCARD ALL (completed: %v)", body, done)
			}
			c.SetDeadline(time.Time{})
			return nil
		case 'S':
			var ps pgproto3.ParameterStatus
			if err := ps.Decode(body); err != nil {
				return fmt.Errorf("ParameterStatus: %w", err)
			}
			params[ps.Name] = ps.Value
		case 'N', 'A':
			// A notice, or a notification that arrived before UNLISTEN.
		case 'E':
			var e pgproto3.ErrorResponse
			if err := e.Decode(body); err != nil {
				return fmt.Errorf("DISCARD ALL failed (undecodable error: %w)", err)
			}
			return fmt.Errorf("DISCARD ALL failed: %s %s", e.Code, e.Message)
		default:
			return fmt.Errorf("unexpected message %q in the answer to DISCARD ALL", typ)
		}
	}
}

// recycle puts the upstream session of a finished session back in the
// pool when the client left it idle and DISCARD ALL resets it, and closes
// it otherwise.
func (s *Server) recycle(l *login, sess *session, frames *sessionFrames) {
	// The finished client's cancel key must not reach the next client's
	// queries.
	sess.release()
	up := sess.reuse
	if !frames.upstream.idleAfter(&frames.client) {
		l.log.Debug("upstream session closed, not pooled: the client quit while it was busy",
			"tx_status", string(rune(frames.upstream.status)), "requests", frames.client.requests, "answered", frames.upstream.ready)
		closeUpstream(sess.upstream)
		return
	}
	if err := resetUpstream(sess.upstream, up.bc.params); err != nil {
		l.log.Info("upstream session closed, not pooled: reset failed", "backend_pid", up.bc.pid, "err", err)
		closeUpstream(sess.upstream)
		return
	}
	if s.pool.put(up) {
		l.log.Debug("upstream session pooled", "backend_pid", up.bc.pid)
	} else {
		l.log.Debug("upstream session closed, not pooled: the pool is off, closed or full, or the session too old or opened under settings since replaced", "backend_pid", up.bc.pid)
	}
}

// sameUpstream reports whether a and b reach the same server in the same
// way, so that sessions opened under a stay good under b.
func sameUpstream(a, b Upstream) bool {
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
