package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Conn is a client connection a Lifecycle tracks: Abort ends it at once,
// whether it is logging in or relaying.
type Conn interface {
	Abort()
}

// Lifecycle is what every listener does around its protocol: accept
// connections (riding out transient accept errors), track them, and on
// Shutdown stop accepting and wait for them to end, or on Close end them
// at once. A listener's Server holds one and hands it the protocol's
// per-connection work.
type Lifecycle struct {
	name string              // for errors: "pgproxy", "mysqlproxy"
	log  func() *slog.Logger // the current logger (it can change on reload)

	base       context.Context
	cancelBase context.CancelFunc

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[Conn]struct{}
}

// NewLifecycle returns a Lifecycle; log returns the logger in force.
func NewLifecycle(name string, log func() *slog.Logger) *Lifecycle {
	l := &Lifecycle{name: name, log: log, listeners: map[net.Listener]struct{}{}, conns: map[Conn]struct{}{}}
	l.base, l.cancelBase = context.WithCancel(context.Background())
	return l
}

// Context is the parent of every connection's context. It is cancelled
// when Shutdown gives up waiting or Close is called.
func (l *Lifecycle) Context() context.Context { return l.base }

// Serve accepts connections on ln until Shutdown or Close, then returns
// nil. For each connection, accept returns what to track and the work to
// run on its own goroutine; the connection is untracked when run returns.
// An accept failure that persists is returned.
func (l *Lifecycle) Serve(ln net.Listener, accept func(net.Conn) (Conn, func())) error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		ln.Close()
		return nil
	}
	l.listeners[ln] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.listeners, ln)
		l.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if l.isClosing() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%s: accept: %w", l.name, err)
			}
			// Out of file descriptors and the like: wait and retry rather
			// than spin or take the listener down.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log().Warn("accept failed; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c, run := accept(raw)
		if !l.track(c) {
			raw.Close()
			return nil
		}
		go func() {
			defer l.untrack(c)
			run()
		}()
	}
}

func (l *Lifecycle) isClosing() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closing
}

func (l *Lifecycle) track(c Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Lifecycle) untrack(c Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// stopAccepting closes every listener and refuses new connections.
func (l *Lifecycle) stopAccepting() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closing = true
	for ln := range l.listeners {
		ln.Close()
	}
}

// abortAll ends every tracked connection.
func (l *Lifecycle) abortAll() {
	l.mu.Lock()
	conns := make([]Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Abort()
	}
}

// Shutdown stops accepting, waits for logins and sessions to end until ctx
// is done, then ends the remaining ones and returns ctx's error.
func (l *Lifecycle) Shutdown(ctx context.Context) error {
	l.stopAccepting()
	// Polling, as net/http does: sessions end at the client's pace, so a
	// short tick costs nothing and needs no per-connection signalling.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		l.mu.Lock()
		n := len(l.conns)
		l.mu.Unlock()
		if n == 0 {
			l.cancelBase()
			return nil
		}
		select {
		case <-ctx.Done():
			l.cancelBase()
			l.abortAll()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close stops accepting and ends every connection at once.
func (l *Lifecycle) Close() error {
	l.stopAccepting()
	l.cancelBase()
	l.abortAll()
	return nil
}
