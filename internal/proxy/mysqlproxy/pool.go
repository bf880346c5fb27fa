package mysqlproxy

import (
	"container/list"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// Upstream session reuse. Logging in to MariaDB costs a TCP connection, a
// TLS handshake and the authentication exchange; an IAM client that
// reconnects often pays it every time. So an upstream session whose client
// ended cleanly is reset and kept for the next IAM login of the same kind:
//
//	client ── COM_QUIT ─▶ mysqlproxy (not forwarded)
//	                      upstream idle? (respTracker: every command
//	                      answered, no transaction open, nothing half sent)
//	                      ── COM_RESET_CONNECTION, COM_INIT_DB database,
//	                         SELECT DATABASE(), CURRENT_ROLE() ──────▶ upstream
//	                      ◀── OK, OK, the login's database and role ──
//	                      idle pool, by key
//	next IAM login, same key, token verified and authorized:
//	client ◀── the OK packet of the session's own login ── mysqlproxy
//
// COM_RESET_CONNECTION rolls back, drops temporary tables, deallocates
// prepared statements, clears user variables and session settings and
// restores the login's character set, but MariaDB keeps the current
// database and the active role: COM_INIT_DB restores the former, and a
// session whose role is no longer the one it had after its login (read
// once, when the session is new) is closed instead.
//
// The key is everything the upstream login sent that shapes the session:
// database user, database, capabilities, character set, maximum packet
// size and connection attributes (which name the principal, so sessions
// are never shared between principals) and the backend password it
// logged in with (a rotated or changed password retires the sessions
// opened with the old one). The client taking a session was greeted with
// the instance's version and capabilities and chose the same ones as the
// session's first client. Anything unusual — a transaction open, an
// answer unfinished, a client gone without COM_QUIT, COM_CHANGE_USER, an
// error during the reset — closes the upstream session instead.
// Password-relayed (non-IAM) sessions are never kept.
//
// While a session is idle one goroutine waits on a read of it, with the
// idle timeout or max lifetime as its deadline: the upstream closing it
// (KILL, wait_timeout, a restart) or sending anything at all removes it
// at once, and the deadline expires it. A login that takes a session ends
// that read with a deadline in the past and learns the verdict, so a
// session that died just then is discarded and the login dials afresh.

// Pool configures the reuse of upstream sessions by IAM logins.
type Pool struct {
	Enabled bool
	// MaxIdle bounds the idle upstream sessions of the listener (default
	// DefaultPoolMaxIdle); the least recently used makes room.
	MaxIdle int
	// MaxIdlePerKey bounds those of one database user, database, principal
	// and client settings (default min(DefaultPoolMaxIdlePerKey, MaxIdle)).
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

// resetTimeout bounds the reset of a session going back to the pool, and
// the reading of its role when it is new.
const resetTimeout = 5 * time.Second

// poolKey identifies the sessions a login may take: see poolKeyFor.
type poolKey string

// poolKey is the key of the upstream session this login would open with
// password: every field of the upstream handshake response but the
// authentication data, which the password stands for (as a hash).
func (l *login) poolKey(password string) poolKey {
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, l.caps)
	b = binary.LittleEndian.AppendUint32(b, l.resp.maxPacket)
	b = append(b, l.resp.charset)
	for _, s := range []string{l.resp.user, l.resp.database, string(l.upstreamAttrs())} {
		b = appendLenenc(b, uint64(len(s)))
		b = append(b, s...)
	}
	sum := sha256.Sum256([]byte(password))
	return poolKey(append(b, sum[:]...))
}

// upstreamSession is an upstream connection that may serve one IAM client
// after another.
type upstreamSession struct {
	key     poolKey
	conn    net.Conn
	id      uint32 // the upstream's connection id
	ok      []byte // the OK packet that ended its login
	created time.Time
	gen     uint64 // the pool generation it was opened in

	// The active role after the login (CURRENT_ROLE(), nil for NULL),
	// read once when the session is new; roleKnown false when the
	// upstream has no CURRENT_ROLE() (MySQL 5.7).
	read      bool
	role      *string
	roleKnown bool

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
	gen    uint64                         // counts flushes: older sessions are not kept
	byKey  map[poolKey][]*upstreamSession // most recently returned last
	lru    list.List                      // of *upstreamSession, least recently returned first
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
	p.mu.Unlock()
	closeSessions(drop)
}

// generation is the current generation when the pool is on; ok false
// when it is off or closed.
func (p *upstreamPool) generation() (gen uint64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen, p.cfg.Enabled && !p.closed
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
		s.conn.SetReadDeadline(time.Unix(1, 0))
		err := <-s.verdict
		if err == nil && p.now().Sub(s.created) >= lifetime {
			err = errors.New("max lifetime reached")
		}
		if err != nil {
			closeUpstream(s.conn)
			continue
		}
		s.conn.SetReadDeadline(time.Time{})
		s.taken, s.verdict = false, nil
		return s
	}
}

// put keeps s, reset and idle, for a later login; s is closed instead
// when the pool is off, closed, flushed since s was opened or full for its
// key, or s is too old, and put says why.
func (p *upstreamPool) put(s *upstreamSession) (notKept string) {
	now := p.now()
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	expires := now.Add(cfg.IdleTimeout)
	if end := s.created.Add(cfg.MaxLifetime); end.Before(expires) {
		expires = end
	}
	if !cfg.Enabled || !expires.After(now) {
		closeUpstream(s.conn)
		return "the pool is off or the session reached its max lifetime"
	}
	// Set before the session is visible to get, whose past deadline
	// must not be overwritten.
	s.conn.SetReadDeadline(expires)
	s.verdict = make(chan error, 1)

	var drop []*upstreamSession
	p.mu.Lock()
	if p.closed || !p.cfg.Enabled || s.gen != p.gen || len(p.byKey[s.key]) >= p.cfg.MaxIdlePerKey {
		p.mu.Unlock()
		closeUpstream(s.conn)
		return "the pool is closed, was flushed, or holds max_idle_per_key such sessions"
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
	return ""
}

// watch waits on a read of an idle session until its deadline, the
// upstream closing it or sending something, or get ending the read.
func (p *upstreamPool) watch(s *upstreamSession) {
	var b [1]byte
	n, err := s.conn.Read(b[:])
	switch {
	case n > 0:
		err = errors.New("the upstream sent a packet to an idle session")
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
	closeUpstream(s.conn)
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

// flush closes every idle session; sessions in use are closed instead of
// kept when their clients quit.
func (p *upstreamPool) flush() {
	p.mu.Lock()
	p.gen++
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
		closeUpstream(s.conn)
	}
}

// closeUpstream ends an upstream session politely: COM_QUIT, then close,
// so that the server counts no aborted connection.
func closeUpstream(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.Write([]byte{1, 0, 0, 0, comQuit})
	c.Close()
}

// readRole reads the active role of a new session (see upstreamSession).
// It runs right after the client was told it is in, before the relay
// starts: the client's first command waits meanwhile.
func readRole(c net.Conn, caps uint64, s *upstreamSession) error {
	c.SetDeadline(time.Now().Add(resetTimeout))
	defer c.SetDeadline(time.Time{})
	s.read = true
	if err := writeCommand(c, []byte("\x03SELECT CURRENT_ROLE()")); err != nil {
		return err
	}
	row, err := readRow(&packetConn{rw: c, seq: 1}, caps, 1)
	var me *mysqlError
	if errors.As(err, &me) && (me.code == erSPDoesNotExist || me.code == erParseError) {
		return nil // no roles on this server: no CURRENT_ROLE()
	}
	if err != nil {
		return err
	}
	s.role, s.roleKnown = row[0], true
	return nil
}

// resetUpstream resets a session its client left idle (see the comment
// at the top) and checks that it is back in the state of its login.
func resetUpstream(c net.Conn, caps uint64, database string, s *upstreamSession) error {
	c.SetDeadline(time.Now().Add(resetTimeout))
	check, cols := "SELECT DATABASE()", 1
	if s.roleKnown {
		check, cols = "SELECT DATABASE(), CURRENT_ROLE()", 2
	}
	// One write for the three commands: the server answers them in order.
	var b []byte
	b = appendCommand(b, []byte{comResetConnection})
	if database != "" {
		b = appendCommand(b, append([]byte{comInitDB}, database...))
	}
	b = appendCommand(b, append([]byte{comQuery}, check...))
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("sending COM_RESET_CONNECTION: %w", err)
	}
	for _, what := range []string{"COM_RESET_CONNECTION", "COM_INIT_DB"} {
		if what == "COM_INIT_DB" && database == "" {
			continue
		}
		p, err := (&packetConn{rw: c, seq: 1}).read(maxLoginPacket)
		if err != nil {
			return fmt.Errorf("reading the answer to %s: %w", what, err)
		}
		if len(p) == 0 || p[0] != pktOK {
			if len(p) > 0 && p[0] == pktERR {
				return fmt.Errorf("%s failed: %w", what, parseError(p))
			}
			return fmt.Errorf("unexpected answer %x to %s", p, what)
		}
	}
	row, err := readRow(&packetConn{rw: c, seq: 1}, caps, cols)
	if err != nil {
		return fmt.Errorf("reading the session's database and role: %w", err)
	}
	if db := row[0]; (db == nil) != (database == "") || db != nil && *db != database {
		return fmt.Errorf("the database is not the login's after COM_INIT_DB")
	}
	if s.roleKnown && !sameValue(row[1], s.role) {
		return errors.New("the client changed the active role (SET ROLE), which COM_RESET_CONNECTION keeps")
	}
	c.SetDeadline(time.Time{})
	return nil
}

func sameValue(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// appendCommand frames a command packet (sequence number 0).
func appendCommand(b, payload []byte) []byte {
	n := len(payload)
	b = append(b, byte(n), byte(n>>8), byte(n>>16), 0)
	return append(b, payload...)
}

func writeCommand(c net.Conn, payload []byte) error {
	_, err := c.Write(appendCommand(nil, payload))
	return err
}

// readRow reads the answer to a query that returns one row of n columns
// in the text protocol; nil values are NULL. An ERR packet is returned
// as a *mysqlError.
func readRow(pc *packetConn, caps uint64, n int) ([]*string, error) {
	p, err := pc.read(maxLoginPacket)
	if err != nil {
		return nil, err
	}
	if len(p) > 0 && p[0] == pktERR {
		return nil, parseError(p)
	}
	r := &reader{b: p}
	if cols := r.lenenc("column count"); r.err != nil || cols != uint64(n) {
		return nil, fmt.Errorf("%w: %d columns, want %d", errProtocol, cols, n)
	}
	skip := n
	if caps&capOptionalResultsetMetadata != 0 && r.byte1("metadata follows") == 0 {
		skip = 0
	}
	if caps&capDeprecateEOF == 0 {
		skip++ // the EOF after the definitions
	}
	var row []*string
	for i := 0; ; i++ {
		p, err := pc.read(maxLoginPacket)
		if err != nil {
			return nil, err
		}
		switch {
		case i < skip:
		case len(p) > 0 && p[0] == pktERR:
			return nil, parseError(p)
		case len(p) > 0 && p[0] == pktEOF && len(p) < maxPacketPayload:
			if row == nil {
				return nil, fmt.Errorf("%w: no row", errProtocol)
			}
			return row, nil
		case row != nil:
			return nil, fmt.Errorf("%w: more than one row", errProtocol)
		default:
			r := &reader{b: p}
			for range n {
				if len(r.b) > 0 && r.b[0] == 0xfb {
					r.b = r.b[1:]
					row = append(row, nil)
					continue
				}
				v := string(r.lenencBytes("value"))
				row = append(row, &v)
			}
			if r.err != nil {
				return nil, r.err
			}
		}
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
