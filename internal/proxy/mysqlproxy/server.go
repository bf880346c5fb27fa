package mysqlproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/proxy"
)

// The engine-neutral parts of the contract live in package proxy; these
// names keep mysqlproxy's API readable on its own.
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
	// Pool is the reuse of upstream sessions by IAM logins.
	Pool Pool
	// Admission is the instance's admission control; nil admits all.
	Admission proxy.Admission
}

// settings is an immutable, validated snapshot of Config. Each connection
// reads the snapshot current at accept time, so Update never disturbs a
// login or session in progress.
type settings struct {
	instance         *authn.Instance
	tls              *tls.Config // prepared: TLS ≥ 1.2
	authn            Authenticator
	backend          Backend
	upstream         Upstream
	handshakeTimeout time.Duration
	log              *slog.Logger
	obs              Observer
	audit            audit.Emitter
	statements       audit.StatementPolicy
	pool             Pool
	// upstreamNoPQ is upstream.TLS without the post-quantum key share,
	// used once pqDeclined: see upstreamTLSConfig.
	upstreamNoPQ *tls.Config
	pqDeclined   atomic.Bool
	admission    proxy.Admission
}

func (c Config) settings() (*settings, error) {
	switch {
	case c.Instance == nil || c.Instance.Name == "":
		return nil, errors.New("mysqlproxy: config without an instance name")
	case c.TLS == nil:
		return nil, fmt.Errorf("mysqlproxy: instance %s: no server TLS configuration (IAM logins require TLS)", c.Instance.Name)
	case c.Authenticator == nil:
		return nil, fmt.Errorf("mysqlproxy: instance %s: no authenticator", c.Instance.Name)
	case c.Backend == nil:
		return nil, fmt.Errorf("mysqlproxy: instance %s: no backend", c.Instance.Name)
	case c.Upstream.Address == "":
		return nil, fmt.Errorf("mysqlproxy: instance %s: no upstream address", c.Instance.Name)
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
		pool:             c.Pool,
		admission:        c.Admission,
	}
	if st.upstream.TLS != nil {
		st.upstream.TLS = st.upstream.TLS.Clone()
		st.upstream.TLS.DynamicRecordSizingDisabled = true // see serverTLS
		st.upstreamNoPQ = withoutPQKeyShare(st.upstream.TLS)
		if st.upstream.TLS.ServerName == "" {
			// Verify the upstream as the host it is dialled by, as
			// database clients do.
			st.upstream.TLS.ServerName, _, _ = net.SplitHostPort(st.upstream.Address)
		}
	}
	if st.upstream.DialTimeout <= 0 {
		st.upstream.DialTimeout = DefaultDialTimeout
	}
	if _, _, err := net.SplitHostPort(st.upstream.Address); err != nil {
		return nil, fmt.Errorf("mysqlproxy: instance %s: upstream address %q: %w", c.Instance.Name, st.upstream.Address, err)
	}
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

// serverTLS clones the operator's configuration with iamdb's floor, TLS
// 1.2. A GetConfigForClient callback replaces the whole configuration and
// must set it itself.
//
// Dynamic record sizing is off on both legs: it starts every connection
// with records of one TCP segment, growing over its first 128 KiB, and
// crypto/tls writes each record with its own system call, so a 32 KiB
// chunk of a result would take some twenty writes. Its purpose, letting
// a browser render the first bytes of a page early, does not apply to a
// relay that passes on whatever it reads at once.
func serverTLS(in *tls.Config) *tls.Config {
	c := in.Clone()
	c.DynamicRecordSizingDisabled = true
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// Server is one MySQL/MariaDB listener: it accepts clients, runs the login and
// relays sessions to the upstream. It is safe for concurrent use.
type Server struct {
	cur atomic.Pointer[settings]
	// greetings remembers each upstream's greeting, so that clients are
	// greeted as that server would greet them (see greetingFor).
	greetings *greetingCache
	// dial opens TCP connections to upstreams; tests replace it.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// life accepts, tracks, drains and closes client connections.
	life *proxy.Lifecycle
	// pool keeps upstream sessions for IAM logins to reuse.
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
		greetings: newGreetingCache(),
		dial:      (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
	}
	s.life = proxy.NewLifecycle("mysqlproxy", func() *slog.Logger { return s.cur.Load().log })
	s.pool = proxy.NewUpstreamPool[*upstreamSession](closeUpstream, func(idle int) {
		cur := s.cur.Load()
		if po, ok := cur.obs.(PoolObserver); ok {
			po.UpstreamPoolIdle(cur.instance.Name, idle)
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
		// Idle sessions lead to the previous upstream.
		s.pool.Flush()
	}
	s.pool.Configure(st.pool)
}

// FlushPool closes the idle upstream sessions, and those in use when
// their clients quit: they were opened under settings that changed (the
// backend login, say).
func (s *Server) FlushPool() { s.pool.Flush() }

// IdleUpstreamSessions is the number of upstream sessions the pool holds.
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

// Shutdown stops accepting, waits for logins and sessions to end until ctx
// is done, then closes the remaining ones and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.pool.Close()
	return s.life.Shutdown(ctx)
}

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	s.pool.Close()
	return s.life.Close()
}
