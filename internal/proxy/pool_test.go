package proxy

import (
	"io"
	"net"
	"testing"
	"time"
)

type testSession struct{ Pooled }

// pipeSession is an upstream session over an in-memory pipe; the far end
// discards what it is sent.
func pipeSession(t *testing.T, key string, created time.Time) (*testSession, net.Conn) {
	near, far := net.Pipe()
	go io.Copy(io.Discard, far)
	t.Cleanup(func() { near.Close(); far.Close() })
	return &testSession{Pooled{Key: key, Conn: near, Created: created}}, far
}

// TestUpstreamPool exercises the pool's bounds, order and health checks
// without a database.
func TestUpstreamPool(t *testing.T) {
	var reported []int
	p := NewUpstreamPool[*testSession](func(c net.Conn) { c.Close() }, func(n int) { reported = append(reported, n) })
	p.Configure(Pool{Enabled: true, MaxIdle: 3, MaxIdlePerKey: 2})
	now := time.Now()
	a1, _ := pipeSession(t, "a", now)
	a2, _ := pipeSession(t, "a", now)
	a3, _ := pipeSession(t, "a", now)
	b1, bFar := pipeSession(t, "b", now)
	c1, cFar := pipeSession(t, "c", now)
	old, _ := pipeSession(t, "a", now.Add(-2*DefaultPoolMaxLifetime))

	if p.Put(a1) != "" || p.Put(a2) != "" {
		t.Fatal("put refused below the bounds")
	}
	if p.Put(a3) == "" {
		t.Fatal("a third session of key a kept with max_idle_per_key 2")
	}
	if p.Put(old) == "" {
		t.Fatal("a session past its max lifetime kept")
	}
	if p.Put(b1) != "" || p.Put(c1) != "" {
		t.Fatal("put refused")
	}
	// c1 made room by evicting the least recently returned: a1.
	if n := p.Idle(); n != 3 {
		t.Fatalf("%d idle, want 3", n)
	}
	if got, _ := p.Get("a"); got != a2 {
		t.Fatalf("get(a) = %p, want a2 %p (a1 was evicted)", got, a2)
	}
	if _, ok := p.Get("a"); ok {
		t.Fatal("get(a) found a second session")
	}

	// The upstream closing an idle session, or speaking on it, removes it.
	bFar.Close()
	cFar.Write([]byte{'E'})
	for range 500 {
		if p.Idle() == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := p.Get("b"); ok {
		t.Fatal("a dead session was handed out")
	}
	if _, ok := p.Get("c"); ok {
		t.Fatal("a dead session was handed out")
	}
	if n := p.Idle(); n != 0 {
		t.Fatalf("%d idle, want 0", n)
	}

	// A session opened before a flush is not kept.
	e1, _ := pipeSession(t, "e", now)
	e1.Gen, _ = p.Generation()
	p.Flush()
	if p.Put(e1) == "" {
		t.Fatal("a session opened before a flush was kept")
	}

	d1, _ := pipeSession(t, "d", now)
	p.Put(d1)
	p.Configure(Pool{Enabled: false})
	if _, on := p.Generation(); p.Idle() != 0 || on {
		t.Fatalf("disabled pool holds %d", p.Idle())
	}
	p.Configure(Pool{Enabled: true})
	p.Close()
	d2, _ := pipeSession(t, "d", now)
	if p.Put(d2) == "" {
		t.Fatal("a closed pool kept a session")
	}
	if len(reported) == 0 || reported[len(reported)-1] != 0 {
		t.Fatalf("reported idle counts %v, want the last to be 0", reported)
	}
}
