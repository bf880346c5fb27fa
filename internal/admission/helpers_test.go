package admission

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/testdb"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testdb.StopAll()
	os.Exit(code)
}

// clock is a manual clock for the in-memory limits.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// decision is a verified login of principal with token id tok, valid for
// 15 minutes from now.
func decision(principal, tok string, now time.Time) *authn.Decision {
	return &authn.Decision{
		Principal:  &authn.Principal{ARN: "arn:aws:iam::123456789012:user/" + principal},
		TokenID:    tok,
		ValidUntil: now.Add(15 * time.Minute),
	}
}

// limitOf returns the limit name of a refusal, "" for nil, and fails the
// test for any other error.
func limitOf(t testing.TB, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("want *Refusal, got %T %v", err, err)
	}
	if !strings.HasPrefix(r.Error(), "login throttled (") || !strings.Contains(r.Error(), r.Limit) {
		t.Fatalf("refusal message %q does not name limit %s", r.Error(), r.Limit)
	}
	return r.Limit
}

// counter counts refusals by limit, as the metrics do.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) throttled(_, limit string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[limit]++
}

func (c *counter) get(limit string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[limit]
}

// forwarder is a TCP relay in front of Redis that the test can cut and
// re-point, to make Redis unreachable and bring it (or another one) back.
type forwarder struct {
	ln net.Listener

	mu     sync.Mutex
	target string // "" while cut
	conns  map[net.Conn]struct{}
}

func newForwarder(t testing.TB, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go f.serve()
	t.Cleanup(func() { ln.Close(); f.cut() })
	return f
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }
func (f *forwarder) url() string  { return "redis://" + f.addr() + "/0" }

func (f *forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.relay(c)
	}
}

func (f *forwarder) relay(c net.Conn) {
	f.mu.Lock()
	target := f.target
	f.mu.Unlock()
	if target == "" {
		c.Close()
		return
	}
	u, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	if f.target == "" {
		f.mu.Unlock()
		c.Close()
		u.Close()
		return
	}
	f.conns[c], f.conns[u] = struct{}{}, struct{}{}
	f.mu.Unlock()
	go func() { io.Copy(u, c); u.Close(); c.Close() }()
	io.Copy(c, u)
	c.Close()
	u.Close()
}

// cut makes Redis unreachable: open connections are closed, new ones are
// closed at once.
func (f *forwarder) cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.target = ""
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// point makes Redis at target reachable again.
func (f *forwarder) point(target string) {
	f.mu.Lock()
	f.target = target
	f.mu.Unlock()
}

// waitFor polls cond until it holds, failing the test after a minute: for
// state that changes in the background (heartbeats), never a measure of
// speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// instanceName is a Redis key namespace of this test alone.
func instanceName(t testing.TB) string {
	return fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), time.Now().UnixNano())
}

var bg = context.Background()
