package pgproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/proxy"
)

// The engine-neutral parts of the contract live in package proxy; these
// names keep pgproxy's API readable on its own.
type (
	Authenticator = proxy.Authenticator
	Backend       = proxy.Backend
	Upstream      = proxy.Upstream
	Observer      = proxy.Observer
	NopObserver   = proxy.NopObserver
)

// Login results; see package proxy.
const (
	ResultOK                  = proxy.ResultOK
	ResultPasswordRelayed     = proxy.ResultPasswordRelayed
	ResultTLSRequired         = proxy.ResultTLSRequired
	ResultUpstreamUnavailable = proxy.ResultUpstreamUnavailable
	ResultUpstreamRejected    = proxy.ResultUpstreamRejected
	ResultHandshakeTimeout    = proxy.ResultHandshakeTimeout
	ResultCancel              = proxy.ResultCancel
	ResultClientClosed        = proxy.ResultClientClosed
	ResultProtocolError       = proxy.ResultProtocolError
	ResultInternalError       = proxy.ResultInternalError
)

// Defaults for zero durations; see package proxy.
const (
	DefaultHandshakeTimeout = proxy.DefaultHandshakeTimeout
	DefaultDialTimeout      = proxy.DefaultDialTimeout
)

// Config configures a Server.
type Config struct {
	Instance         *authn.Instance // name, region, account, resource id, endpoints
	TLS              *tls.Config     // server side; use GetCertificate for reloadable certs
	Authenticator    Authenticator
	Backend          Backend
	Upstream         Upstream
	HandshakeTimeout time.Duration // default 10s
	Logger           *slog.Logger  // default: discard
	Observer         Observer      // default: NopObserver
	// Audit records connect, disconnect and statement events; default
	// audit.Nop. An Emit error on an accepted login refuses it.
	Audit audit.Emitter
	// Statements selects the sessions whose statements are audited.
	Statements audit.StatementPolicy
	// Admission is the instance's admission control; nil admits all.
	Admission proxy.Admission
	// Pool lets IAM logins reuse upstream sessions that earlier clients
	// ended cleanly; off when Pool.Enabled is false.
	Pool Pool
}

// settings is an immutable, validated snapshot of Config. Each connection
// reads the snapshot current at accept time, so Update never disturbs a
// login or session in progress.
type settings struct {
	instance         *authn.Instance
	tls              *tls.Config // prepared: TLS ≥ 1.2, ALPN "postgresql"
	authn            Authenticator
	backend          Backend
	upstream         Upstream
	pgTemplate       *pgconn.Config // upstream leg of IAM logins
	handshakeTimeout time.Duration
	log              *slog.Logger
	obs              Observer
	audit            audit.Emitter
	statements       audit.StatementPolicy
	admission        proxy.Admission
	pool             Pool
	// upstreamNoPQ is upstream.TLS without the post-quantum key share,
	// used once pqDeclined: see upstreamTLSConfig.
	upstreamNoPQ *tls.Config
	pqDeclined   atomic.Bool
}

func (c Config) settings() (*settings, error) {
	switch {
	case c.Instance == nil || c.Instance.Name == "":
		return nil, errors.New("pgproxy: config without an instance name")
	case c.TLS == nil:
		return nil, fmt.Errorf("pgproxy: instance %s: no server TLS configuration (IAM logins require TLS)", c.Instance.Name)
	case c.Authenticator == nil:
		return nil, fmt.Errorf("pgproxy: instance %s: no authenticator", c.Instance.Name)
	case c.Backend == nil:
		return nil, fmt.Errorf("pgproxy: instance %s: no backend", c.Instance.Name)
	case c.Upstream.Address == "":
		return nil, fmt.Errorf("pgproxy: instance %s: no upstream address", c.Instance.Name)
	}
	st := &settings{
		instance:         c.Instance,
		tls:              serverTLS(c.TLS),
		authn:            c.Authenticator,
		backend:          c.Backend,
		upstream:         c.Upstream,
		handshakeTimeout: c.HandshakeTimeout,
		log:              c.Logger,
		obs:              c.Observer,
		audit:            c.Audit,
		statements:       c.Statements,
		admission:        c.Admission,
		pool:             c.Pool,
	}
	if st.upstream.TLS != nil {
		st.upstream.TLS = upstreamClientTLS(st.upstream.TLS)
		st.upstreamNoPQ = withoutPQKeyShare(st.upstream.TLS)
	}
	if st.upstream.DialTimeout <= 0 {
		st.upstream.DialTimeout = DefaultDialTimeout
	}
	tmpl, err := upstreamTemplate(st.upstream)
	if err != nil {
		return nil, fmt.Errorf("pgproxy: instance %s: %w", c.Instance.Name, err)
	}
	st.pgTemplate = tmpl
	if st.handshakeTimeout <= 0 {
		st.handshakeTimeout = DefaultHandshakeTimeout
	}
	if st.log == nil {
		st.log = slog.New(slog.DiscardHandler)
	}
	if st.obs == nil {
		st.obs = NopObserver{}
	}
	if st.audit == nil {
		st.audit = audit.Nop{}
	}
	st.log = st.log.With("instance", c.Instance.Name)
	return st, nil
}

// alpnProtocol is what PostgreSQL 17+ clients offer in ALPN, and require
// for direct TLS (sslnegotiation=direct).
const alpnProtocol = "postgresql"

// serverTLS clones the operator's configuration with iamdb's floor: TLS
// 1.2 and the PostgreSQL ALPN name. A GetConfigForClient callback replaces
// the whole configuration and must set both itself.
func serverTLS(in *tls.Config) *tls.Config {
	c := in.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	c.NextProtos = []string{alpnProtocol}
	return c
}

// Server is one PostgreSQL listener: it accepts clients, runs the login and
// relays sessions to the upstream. It is safe for concurrent use.
type Server struct {
	cur  atomic.Pointer[settings]
	keys *keyRegistry
	// scram keeps SCRAM keys of upstream logins across sessions.
	scram *scramCache
	// dial opens TCP connections to upstreams; tests replace it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// life accepts, tracks, drains and closes client connections.
	life *proxy.Lifecycle
	// pool holds idle upstream sessions for IAM logins to reuse.
	pool *upstreamPool

	active atomic.Int64
}

// New validates cfg and returns a Server that is not yet listening.
func New(cfg Config) (*Server, error) {
	st, err := cfg.settings()
	if err != nil {
		return nil, err
	}
	s := &Server{
		keys:  newKeyRegistry(),
		scram: newSCRAMCache(4096),
		dial:  (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
	}
	s.life = proxy.NewLifecycle("pgproxy", func() *slog.Logger { return s.cur.Load().log })
	s.pool = proxy.NewUpstreamPool[*upstreamSession](closeUpstream, func(idle int) {
		if st := s.cur.Load(); st != nil {
			if po, ok := st.obs.(PoolObserver); ok {
				po.UpstreamPoolIdle(st.instance.Name, idle)
			}
		}
	})
	s.cur.Store(st)
	s.pool.Configure(st.pool)
	return s, nil
}

// Update swaps the configuration for new connections (certificates,
// backend, upstream, instance, authenticator). Logins in progress and live
// sessions keep what they started with. An invalid cfg is logged and
// ignored, keeping the previous configuration.
func (s *Server) Update(cfg Config) {
	old := s.cur.Load()
	if cfg.Logger == nil {
		cfg.Logger = old.log
	}
	if cfg.Observer == nil {
		cfg.Observer = old.obs
	}
	if cfg.Audit == nil {
		cfg.Audit = old.audit
	}
	st, err := cfg.settings()
	if err != nil {
		old.log.Error("configuration update ignored", "err", err)
		return
	}
	s.cur.Store(st)
	if !proxy.SameUpstream(old.upstream, st.upstream) {
		// Sessions of the previous upstream settings must not serve logins
		// under the new ones.
		s.pool.Flush()
	}
	s.pool.Configure(st.pool)
}

// FlushPool closes every idle upstream session, so that new logins open
// fresh ones: for when the backend login settings change.
func (s *Server) FlushPool() { s.pool.Flush() }

// IdleUpstreamSessions is the number of idle upstream sessions pooled.
func (s *Server) IdleUpstreamSessions() int { return s.pool.Idle() }

// ActiveSessions is the number of sessions past login, relaying.
func (s *Server) ActiveSessions() int { return int(s.active.Load()) }

// Serve accepts connections on ln until Shutdown or Close, then returns
// nil. Any other accept failure that persists is returned.
func (s *Server) Serve(ln net.Listener) error {
	return s.life.Serve(ln, func(c net.Conn) (proxy.Conn, func()) {
		cc := &clientConn{Raw: c}
		return cc, func() { s.serveConn(cc) }
	})
}

// Shutdown stops accepting, closes the idle upstream sessions, waits for
// logins and sessions to end until ctx is done, then closes the remaining
// ones and returns ctx's error. Sessions that end meanwhile close their
// upstream sessions too.
func (s *Server) Shutdown(ctx context.Context) error {
	s.pool.Close()
	return s.life.Shutdown(ctx)
}

// Close stops accepting and closes every connection, idle upstream
// sessions included, at once.
func (s *Server) Close() error {
	s.pool.Close()
	return s.life.Close()
}
