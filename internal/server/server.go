package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iamdb/iamdb/internal/admission"
	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/datadir"
	"github.com/iamdb/iamdb/internal/dbauth"
	"github.com/iamdb/iamdb/internal/metrics"
	"github.com/iamdb/iamdb/internal/pki"
	"github.com/iamdb/iamdb/internal/proxy"
	"github.com/iamdb/iamdb/internal/proxy/mysqlproxy"
	"github.com/iamdb/iamdb/internal/proxy/pgproxy"
)

// The pieces Run wires together must fit the listeners' hooks.
var (
	_ proxy.Observer      = (*metrics.Metrics)(nil)
	_ proxy.Authenticator = (*authn.Authenticator)(nil)
	_ backend             = (*dbauth.Postgres)(nil)
	_ backend             = (*dbauth.MySQL)(nil)
	_ engineListener      = (*pgproxy.Server)(nil)
	_ engineListener      = (*mysqlproxy.Server)(nil)
)

// The metrics follow both listeners' upstream session pools.
var (
	_ pgproxy.PoolObserver    = (*metrics.Metrics)(nil)
	_ mysqlproxy.PoolObserver = (*metrics.Metrics)(nil)
)

// engineListener is what Run needs of a wire-protocol listener; pgproxy
// and mysqlproxy servers behave the same way behind it.
type engineListener interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
	ActiveSessions() int
}

// backend is an instance's backend login (dbauth), of either engine.
type backend interface {
	proxy.Backend
	Reload(context.Context, config.Instance) error
	Close()
}

// Options is what Run needs. Config and DataDir are required.
type Options struct {
	// Config is the configuration in force at start.
	Config *config.Config
	// ConfigPath is re-read on reload; "" means a reload keeps Config and
	// only re-reads certificates and secrets.
	ConfigPath string
	// DataDir holds the identity store, the sealer and the CA.
	DataDir *datadir.Dir
	Logger  *slog.Logger
	// Reload receives one value per SIGHUP.
	Reload <-chan struct{}
	// Ready is called once every listener is serving (tests wait on it).
	Ready func()
	// Now is the clock certificates are issued with; default time.Now.
	Now func() time.Time
}

// storeCheckTimeout bounds the identity store probe behind /readyz, so a
// hung store makes the endpoint answer 503 rather than hang the prober.
const storeCheckTimeout = 2 * time.Second

// server is one run of Run.
type server struct {
	opt     Options
	log     *slog.Logger
	now     func() time.Time
	cfg     *config.Config // the configuration in force (only the Run goroutine touches it)
	dir     *datadir.Dir
	ca      *pki.CA
	certs   map[[2]string]*certificate // by cert and key path
	authn   *authn.Authenticator
	metrics *metrics.Metrics
	audit   *audit.FileSink // every producer's audit log (audit.go)

	// Admission control (admission.go): a controller per instance, and
	// the Redis connection they share when redis: is set.
	admission map[string]*admission.Controller
	shared    *admission.Shared

	http   *http.Server
	httpLn net.Listener

	api    *http.Server // the STS-compatible API
	apiLn  net.Listener
	apiTLS *certificate // nil when the API is plain HTTP on loopback

	listeners []*listener
	ready     atomic.Bool
	serveErr  chan error
	wg        sync.WaitGroup
}

// listener is one instance's listener and what it was built from.
type listener struct {
	name    string          // immutable; read by /readyz while a reload runs
	inst    config.Instance // in force, touched only by Run's goroutine; Listen never changes
	cert    *certificate
	backend backend
	proxy   engineListener
	update  func(listenerConfig) // the listener's Update
	ln      net.Listener
	log     *slog.Logger
	serving atomic.Bool
}

// Run serves until ctx is cancelled, then drains: /readyz turns 503, every
// listener stops accepting, sessions get up to the configured drain_timeout
// to finish and the rest are closed. It returns nil after a clean drain and
// an error when it cannot start or a listener fails.
func Run(ctx context.Context, opt Options) error {
	s, err := start(ctx, opt)
	if err != nil {
		return err
	}
	return s.loop(ctx)
}

func start(ctx context.Context, opt Options) (_ *server, err error) {
	if opt.Config == nil {
		return nil, errors.New("server: no configuration")
	}
	if opt.DataDir == nil {
		return nil, errors.New("server: no data directory")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	cfg := opt.Config
	if err := checkEngines(cfg); err != nil {
		return nil, err
	}
	if len(cfg.Instances) == 0 {
		return nil, errors.New("the configuration has no instances: add one under instances: (see docs/configuration.md)")
	}
	s := &server{
		opt:      opt,
		log:      opt.Logger,
		now:      opt.Now,
		cfg:      cfg,
		dir:      opt.DataDir,
		certs:    map[[2]string]*certificate{},
		metrics:  metrics.New(),
		serveErr: make(chan error, len(cfg.Instances)+1),
	}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()

	if s.ca, err = pki.LoadCA(s.dir.Path); err != nil {
		return nil, err
	}
	if err := s.ensureServerCert(cfg); err != nil {
		return nil, err
	}
	s.authn = authn.New(s.dir.Store, s.dir.Sealer, authn.Options{})
	if err := s.openAudit(); err != nil {
		return nil, err
	}
	if err := s.openAdmission(); err != nil {
		return nil, err
	}

	if err := s.startHTTP(ctx); err != nil {
		return nil, err
	}
	if err := s.startAPI(ctx); err != nil {
		return nil, err
	}
	// The backends' admin connections outlive the start-up context's
	// cancellation: that cancellation is the drain signal, and draining
	// sessions still need their backends.
	base := context.WithoutCancel(ctx)
	for _, in := range cfg.Instances {
		l, err := s.newListener(base, in)
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", in.Name, err)
		}
		s.listeners = append(s.listeners, l)
	}
	for _, l := range s.listeners {
		s.serve(l)
		l.log.Info("listening", "engine", l.inst.Engine, "listen", l.ln.Addr().String(),
			"endpoints", l.inst.Endpoints, "upstream", l.inst.Upstream.Address, "backend_auth", l.inst.BackendAuth.Mode)
	}
	s.ready.Store(true)
	if opt.Ready != nil {
		opt.Ready()
	}
	return s, nil
}

// checkEngines refuses engines this version has no listener for, before
// anything is opened or bound.
func checkEngines(cfg *config.Config) error {
	for _, in := range cfg.Instances {
		switch in.Engine {
		case "postgres", "mysql":
		default:
			return fmt.Errorf("instance %s: unknown engine %q: use postgres, or mysql (also for MariaDB)", in.Name, in.Engine)
		}
	}
	return nil
}

// ensureServerCert makes the data dir's certificate name every endpoint
// host of the instances that use it, re-issuing it when one is missing.
func (s *server) ensureServerCert(cfg *config.Config) error {
	var hosts []string
	for _, in := range cfg.Instances {
		if in.TLS == nil {
			hosts = append(hosts, endpointHosts(in.Endpoints)...)
		}
	}
	if !loopback(cfg.API.Listen) {
		hosts = append(hosts, endpointHosts([]string{cfg.API.Listen})...)
	}
	issued, err := pki.EnsureServerCert(s.dir.Path, s.ca, hosts, s.now())
	if err != nil {
		return fmt.Errorf("issuing the server certificate: %w", err)
	}
	if issued {
		s.log.Info("issued a server certificate", "hosts", pki.Hosts(hosts), "file", filepath.Join(s.dir.Path, pki.ServerCertFile))
	}
	return nil
}

// certificateFor returns the (shared) certificate an instance presents.
func (s *server) certificateFor(in config.Instance) (*certificate, error) {
	key := [2]string{filepath.Join(s.dir.Path, pki.ServerCertFile), filepath.Join(s.dir.Path, pki.ServerKeyFile)}
	if in.TLS != nil {
		key = [2]string{in.TLS.Cert, in.TLS.Key}
	}
	if c, ok := s.certs[key]; ok {
		return c, nil
	}
	c, err := newCertificate(key[0], key[1])
	if err != nil {
		return nil, err
	}
	s.certs[key] = c
	return c, nil
}

// authnInstance is what the authenticator knows of an instance.
func (s *server) authnInstance(cfg *config.Config, in config.Instance) *authn.Instance {
	account := cfg.AccountID
	if account == "" {
		account = s.dir.Meta.AccountID
	}
	return &authn.Instance{
		Name:       in.Name,
		Engine:     in.Engine,
		Region:     in.Region,
		AccountID:  account,
		Partition:  cfg.Partition,
		ResourceID: in.ResourceID,
		Endpoints:  append([]string(nil), in.Endpoints...),
	}
}

// listenerConfig is the configuration of either listener package; their
// Config types carry the same fields.
type listenerConfig struct {
	Instance         *authn.Instance
	TLS              *tls.Config
	Authenticator    proxy.Authenticator
	Backend          proxy.Backend
	Upstream         proxy.Upstream
	HandshakeTimeout time.Duration
	Logger           *slog.Logger
	Observer         proxy.Observer
	Audit            audit.Emitter
	Statements       audit.StatementPolicy
	Admission        proxy.Admission
	Pool             pgproxy.Pool // mysqlproxy.Pool has the same fields
}

func (c listenerConfig) postgres() pgproxy.Config {
	return pgproxy.Config{
		Instance: c.Instance, TLS: c.TLS, Authenticator: c.Authenticator, Backend: c.Backend,
		Upstream: c.Upstream, HandshakeTimeout: c.HandshakeTimeout, Logger: c.Logger, Observer: c.Observer,
		Audit: c.Audit, Statements: c.Statements, Pool: c.Pool,
		Admission: c.Admission,
	}
}

func (c listenerConfig) mysql() mysqlproxy.Config {
	return mysqlproxy.Config{
		Instance: c.Instance, TLS: c.TLS, Authenticator: c.Authenticator, Backend: c.Backend,
		Upstream: c.Upstream, HandshakeTimeout: c.HandshakeTimeout, Logger: c.Logger, Observer: c.Observer,
		Audit: c.Audit, Statements: c.Statements, Pool: mysqlproxy.Pool(c.Pool),
		Admission: c.Admission,
	}
}

// proxyConfig is the listener configuration for in.
func (s *server) proxyConfig(cfg *config.Config, in config.Instance, cert *certificate, b backend) (listenerConfig, error) {
	upTLS, err := dbauth.UpstreamTLS(in.Upstream)
	if err != nil {
		return listenerConfig{}, fmt.Errorf("upstream TLS: %w", err)
	}
	return listenerConfig{
		Instance:      s.authnInstance(cfg, in),
		TLS:           cert.tlsConfig(),
		Authenticator: s.authn,
		Backend:       b,
		Upstream: proxy.Upstream{
			Address:     in.Upstream.Address,
			TLS:         upTLS,
			DialTimeout: in.Upstream.DialTimeout.D(),
		},
		HandshakeTimeout: in.HandshakeTimeout.D(),
		Logger:           s.log, // the listener adds the instance attribute itself
		Observer:         s.metrics,
		Audit:            s.auditEmitter(),
		Statements:       statementPolicy(in),
		Admission:        s.admissionFor(in),
		Pool: pgproxy.Pool{
			Enabled:       in.Pool.On(),
			MaxIdle:       in.Pool.MaxIdle,
			MaxIdlePerKey: in.Pool.MaxIdlePerKey,
			IdleTimeout:   in.Pool.IdleTimeout.D(),
			MaxLifetime:   in.Pool.MaxLifetime.D(),
		},
	}, nil
}

// newBackend prepares the backend login of in for its engine.
func (s *server) newBackend(ctx context.Context, in config.Instance) (backend, error) {
	if in.Engine == "mysql" {
		return dbauth.NewMySQL(ctx, dbauth.MySQLOptions{
			Instance: in,
			Store:    s.dir.Store,
			Sealer:   s.dir.Sealer,
			Now:      s.now,
			Logger:   s.log, // dbauth adds the instance attribute itself
		})
	}
	return dbauth.NewPostgres(ctx, dbauth.PostgresOptions{
		Instance: in,
		Store:    s.dir.Store,
		Sealer:   s.dir.Sealer,
		Now:      s.now,
		Logger:   s.log,
	})
}

// newProxy builds the wire-protocol listener of engine and its Update.
func newProxy(engine string, lc listenerConfig) (engineListener, func(listenerConfig), error) {
	if engine == "mysql" {
		p, err := mysqlproxy.New(lc.mysql())
		if err != nil {
			return nil, nil, err
		}
		return p, func(lc listenerConfig) { p.Update(lc.mysql()) }, nil
	}
	p, err := pgproxy.New(lc.postgres())
	if err != nil {
		return nil, nil, err
	}
	return p, func(lc listenerConfig) { p.Update(lc.postgres()) }, nil
}

func (s *server) newListener(ctx context.Context, in config.Instance) (_ *listener, err error) {
	l := &listener{name: in.Name, inst: in, log: s.log.With("instance", in.Name)}
	if l.cert, err = s.certificateFor(in); err != nil {
		return nil, err
	}
	l.backend, err = s.newBackend(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("backend login: %w", err)
	}
	defer func() {
		if err != nil {
			if l.proxy != nil {
				l.proxy.Close()
			}
			l.backend.Close()
		}
	}()
	pc, err := s.proxyConfig(s.cfg, in, l.cert, l.backend)
	if err != nil {
		return nil, err
	}
	if l.proxy, l.update, err = newProxy(in.Engine, pc); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	if l.ln, err = lc.Listen(ctx, "tcp", in.Listen); err != nil {
		return nil, fmt.Errorf("listening on %s (listen:): %w", in.Listen, err)
	}
	s.metrics.AddInstance(in.Name)
	return l, nil
}

// serve runs a listener's accept loop; an unexpected end is reported on
// serveErr.
func (s *server) serve(l *listener) {
	l.serving.Store(true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := l.proxy.Serve(l.ln)
		l.serving.Store(false)
		if err != nil {
			s.serveErr <- fmt.Errorf("instance %s: listener stopped: %w", l.name, err)
		}
	}()
}

func (s *server) loop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return s.drain()
		case <-s.opt.Reload:
			s.reload(context.WithoutCancel(ctx))
		case err := <-s.serveErr:
			s.log.Error("a listener failed; shutting down", "err", err)
			s.drain()
			return err
		}
	}
}

// drain is the SIGTERM path.
func (s *server) drain() error {
	s.ready.Store(false)
	timeout := s.cfg.DrainTimeout.D()
	total := 0
	for _, l := range s.listeners {
		total += l.proxy.ActiveSessions()
	}
	s.log.Info("draining: no new connections; waiting for sessions to finish", "sessions", total, "drain_timeout", timeout.String())

	// The listeners close what is left when this context ends; counting just
	// before ending it tells the operator how many sessions were cut off.
	dctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var closed atomic.Int64
	timer := time.AfterFunc(timeout, func() {
		n := 0
		for _, l := range s.listeners {
			n += l.proxy.ActiveSessions()
		}
		closed.Store(int64(n))
		cancel()
	})
	var wg sync.WaitGroup
	for _, l := range s.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.proxy.Shutdown(dctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				l.log.Error("shutting down the listener", "err", err)
			}
		}()
	}
	wg.Wait()
	timer.Stop()
	s.wg.Wait()
	s.log.Info("drained", "sessions_finished", total-int(closed.Load()), "sessions_closed", closed.Load())
	s.closeAll()
	return nil
}

// closeAll releases everything start opened; safe on a partial start.
func (s *server) closeAll() {
	for _, l := range s.listeners {
		if l.proxy != nil {
			l.proxy.Close()
		}
		if l.ln != nil {
			l.ln.Close()
		}
		if l.backend != nil {
			l.backend.Close()
		}
	}
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			s.http.Close()
		}
	} else if s.httpLn != nil {
		s.httpLn.Close()
	}
	if s.api != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.api.Shutdown(ctx); err != nil {
			s.api.Close()
		}
	} else if s.apiLn != nil {
		s.apiLn.Close()
	}
	s.closeAudit()
	s.closeAdmission()
}
