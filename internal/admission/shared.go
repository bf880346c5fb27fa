package admission

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// FailureMode says what the limits do while Redis cannot be reached.
type FailureMode string

const (
	// FailLocal enforces every limit per replica, in memory, until Redis
	// answers again (the default: availability over exact global limits).
	FailLocal FailureMode = "local"
	// FailRefuse refuses every new connection until Redis answers again.
	FailRefuse FailureMode = "refuse"
)

// SharedOptions tune a Shared. Zero values take the defaults.
type SharedOptions struct {
	Mode   FailureMode
	Logger *slog.Logger
	// Fallback is told when the limits stop or start being shared.
	Fallback func(fallback bool)
	// Heartbeat is how often a replica proves it is alive and rewrites its
	// connection counts, and how often Redis is probed while unreachable.
	// Default 1s; a replica's connections stop counting HeartbeatTTL
	// (default 5 heartbeats) after its last heartbeat.
	Heartbeat    time.Duration
	HeartbeatTTL time.Duration
	// Timeout bounds one Redis call; default 1s. A call that takes longer
	// counts as Redis being unreachable.
	Timeout time.Duration
	// Replica names this process in Redis; default host name, pid and a
	// random suffix, so that a restarted process is a new replica.
	Replica string
}

// Shared is the Redis connection the controllers of one process share, with
// its health: reachable, or fallen back. It is safe for concurrent use.
type Shared struct {
	rdb       *redis.Client
	replica   string
	log       *slog.Logger
	onFall    func(bool)
	heartbeat time.Duration
	ttl       time.Duration
	timeout   time.Duration

	mode  atomic.Value // FailureMode
	state atomic.Int32 // stateUnknown, stateUp or stateDown

	mu   sync.Mutex
	ctls map[*Controller]struct{}

	stop chan struct{}
	done chan struct{}
}

// Connect opens the shared state at a redis:// or rediss:// URL. It does
// not wait for Redis: an unreachable Redis at start is a fallback like any
// other, so a replica can start while Redis is down.
func Connect(url string, opt SharedOptions) (*Shared, error) {
	ro, err := redis.ParseURL(url)
	if err != nil {
		// The URL may hold a password: say what is wrong without it.
		return nil, errors.New("redis: not a valid redis:// URL (redis://[user:password@]host:port/db)")
	}
	if opt.Timeout <= 0 {
		opt.Timeout = time.Second
	}
	// Fail fast and let the fallback take over rather than retrying:
	// a login waits on these calls.
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = opt.Timeout, opt.Timeout, opt.Timeout
	ro.MaxRetries = -1
	return NewShared(redis.NewClient(ro), opt), nil
}

// NewShared is Connect over an existing client, which Close closes.
func NewShared(rdb *redis.Client, opt SharedOptions) *Shared {
	if opt.Mode == "" {
		opt.Mode = FailLocal
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Heartbeat <= 0 {
		opt.Heartbeat = time.Second
	}
	if opt.HeartbeatTTL <= 0 {
		opt.HeartbeatTTL = 5 * opt.Heartbeat
	}
	if opt.Timeout <= 0 {
		opt.Timeout = time.Second
	}
	if opt.Replica == "" {
		opt.Replica = replicaID()
	}
	s := &Shared{
		rdb:       rdb,
		replica:   opt.Replica,
		log:       opt.Logger,
		onFall:    opt.Fallback,
		heartbeat: opt.Heartbeat,
		ttl:       opt.HeartbeatTTL,
		timeout:   opt.Timeout,
		ctls:      map[*Controller]struct{}{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.mode.Store(opt.Mode)
	// The first beat decides whether to start shared or fallen back.
	s.beat()
	go s.loop()
	return s
}

func replicaID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// SetMode changes what happens while Redis is unreachable (on reload).
func (s *Shared) SetMode(m FailureMode) {
	if m == "" {
		m = FailLocal
	}
	s.mode.Store(m)
}

func (s *Shared) refusing() bool { return s.mode.Load().(FailureMode) == FailRefuse }

// Health of the Redis connection.
const (
	stateUnknown int32 = iota // before the first heartbeat
	stateUp
	stateDown
)

// Available reports whether the limits are shared right now.
func (s *Shared) Available() bool { return s.state.Load() == stateUp }

// Close stops the heartbeat and closes the Redis client. The replica's
// connections stop counting once its heartbeat lapses.
func (s *Shared) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.done
	return s.rdb.Close()
}

func (s *Shared) register(c *Controller) {
	s.mu.Lock()
	s.ctls[c] = struct{}{}
	s.mu.Unlock()
	if s.Available() {
		s.syncController(c)
	}
}

func (s *Shared) unregister(c *Controller) {
	s.mu.Lock()
	delete(s.ctls, c)
	s.mu.Unlock()
}

func (s *Shared) controllers() []*Controller {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Controller, 0, len(s.ctls))
	for c := range s.ctls {
		out = append(out, c)
	}
	return out
}

func (s *Shared) loop() {
	defer close(s.done)
	t := time.NewTicker(s.heartbeat)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.beat()
		}
	}
}

// beat proves this replica alive and rewrites its connection counts; while
// Redis is unreachable it is the probe that notices Redis is back.
func (s *Shared) beat() {
	ctx, cancel := s.ctx(context.Background())
	defer cancel()
	err := heartbeatScript.Run(ctx, s.rdb, []string{keyReplicas}, s.replica, s.ttl.Milliseconds()).Err()
	if err == nil {
		for _, c := range s.controllers() {
			if err = s.syncController(c); err != nil {
				break
			}
		}
	}
	if err != nil {
		s.failed(err)
		return
	}
	switch s.state.Swap(stateUp) {
	case stateUnknown:
		s.log.Info("limits are shared across replicas through Redis", "replica", s.replica)
	case stateDown:
		s.log.Info("Redis answers again: limits are shared across replicas again", "replica", s.replica)
	default:
		return
	}
	if s.onFall != nil {
		s.onFall(false)
	}
}

// syncController rewrites the connections of this replica for c's
// instance: the in-memory counts are the truth, Redis the sum.
func (s *Shared) syncController(c *Controller) error {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	conns, users := c.mem.connections()
	ctx, cancel := s.ctx(context.Background())
	defer cancel()
	ttl := keyTTL
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		k := c.connsKey()
		if conns > 0 {
			p.HSet(ctx, k, s.replica, conns)
			p.PExpire(ctx, k, ttl)
		} else {
			p.HDel(ctx, k, s.replica)
		}
		for u, n := range users {
			k := c.userKey(u)
			if n > 0 {
				p.HSet(ctx, k, s.replica, n)
				p.PExpire(ctx, k, ttl)
			} else {
				p.HDel(ctx, k, s.replica)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.mem.dropZeros(users)
	return nil
}

// failed notes that Redis could not be reached; the first failure after a
// healthy spell is logged, later ones are not.
func (s *Shared) failed(err error) {
	if s.state.Swap(stateDown) != stateDown {
		if s.refusing() {
			s.log.Error("Redis is unreachable: refusing new connections until it answers again (redis_failure: refuse)", "err", err)
		} else {
			s.log.Warn("Redis is unreachable: limits are enforced per replica, in memory, until it answers again", "err", err)
		}
		if s.onFall != nil {
			s.onFall(true)
		}
	}
}

// ctx bounds one Redis call. It is detached from the caller's
// cancellation: a client that hangs up mid-call must not make Redis look
// unreachable.
func (s *Shared) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(parent), s.timeout)
}

// Redis keys. Each instance has its own; keyReplicas is global.
const (
	keyPrefix   = "iamdb:admission:"
	keyReplicas = keyPrefix + "replicas"
	// keyTTL bounds how long connection counts outlive their last update,
	// so that keys of users that are gone do not pile up.
	keyTTL = time.Hour
)
