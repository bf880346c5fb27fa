package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

type testConn struct {
	raw     net.Conn
	aborted atomic.Bool
	done    chan struct{}
}

func (c *testConn) Abort() { c.aborted.Store(true); c.raw.Close() }

// TestLifecycle: connections are tracked while their work runs; Shutdown
// waits for them, then gives up at its deadline and aborts the rest; no new
// connection is accepted after it; Serve returns nil.
func TestLifecycle(t *testing.T) {
	life := NewLifecycle("test", func() *slog.Logger { return slog.New(slog.DiscardHandler) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan *testConn, 4)
	served := make(chan error, 1)
	go func() {
		served <- life.Serve(ln, func(raw net.Conn) (Conn, func()) {
			c := &testConn{raw: raw, done: make(chan struct{})}
			conns <- c
			return c, func() {
				defer close(c.done)
				buf := make([]byte, 1)
				raw.Read(buf) // until the client or Abort closes it
			}
		})
	}()

	quick, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	slow, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	c1, c2 := <-conns, <-conns

	shut := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	go func() { shut <- life.Shutdown(ctx) }()

	time.Sleep(50 * time.Millisecond)
	if late, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		late.Close()
		t.Fatal("a connection was accepted after Shutdown began")
	}
	quick.Close() // one session ends by itself while draining
	if err := <-shut; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline (one session never ended)", err)
	}
	for _, c := range []*testConn{c1, c2} {
		<-c.done
	}
	if c1.aborted.Load() == c2.aborted.Load() {
		t.Fatalf("exactly one session should have been aborted: %v %v", c1.aborted.Load(), c2.aborted.Load())
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve = %v, want nil after Shutdown", err)
	}
	if life.Context().Err() == nil {
		t.Fatal("the connections' context was not cancelled")
	}
}
