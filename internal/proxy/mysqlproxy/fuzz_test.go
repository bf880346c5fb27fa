package mysqlproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/pki"
)

// fuzzConn is a client connection that sends data and then goes silent.
// Once the data is used up, a read returns the deadline error if a
// deadline is set (the clock is taken to have reached it), and fails the
// test if none is: a login must never wait on a client without one.
type fuzzConn struct {
	t        *testing.T
	mu       sync.Mutex
	in       []byte
	deadline bool
	closed   bool
}

func (c *fuzzConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return 0, net.ErrClosed
	case len(c.in) > 0:
		n := copy(b, c.in)
		c.in = c.in[n:]
		return n, nil
	case c.deadline:
		return 0, os.ErrDeadlineExceeded
	}
	c.t.Fatal("read from the client without a deadline")
	return 0, nil
}

func (c *fuzzConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(b), nil
}

func (c *fuzzConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *fuzzConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = !t.IsZero()
	return nil
}
func (c *fuzzConn) SetReadDeadline(t time.Time) error { return c.SetDeadline(t) }
func (c *fuzzConn) SetWriteDeadline(time.Time) error  { return nil }
func (c *fuzzConn) LocalAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6432} }
func (c *fuzzConn) RemoteAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 50000} }

// refuseAll is an Authenticator that refuses every token.
type refuseAll struct{}

func (refuseAll) Authenticate(context.Context, authn.Request) (*authn.Decision, error) {
	return nil, &authn.Error{Code: "MalformedToken", Detail: "fuzz"}
}

// FuzzHandshake feeds arbitrary bytes as a client's answer to the
// greeting: the login must never panic, must end, and must close the
// client connection.
func FuzzHandshake(f *testing.F) {
	dir := f.TempDir()
	ca, err := pki.CreateCA(dir, "fuzz CA", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue([]string{"localhost"}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{
		Instance:      &authn.Instance{Name: "orders", Region: "us-east-1", Endpoints: []string{"localhost:3306"}},
		TLS:           &tls.Config{Certificates: []tls.Certificate{cert}},
		Authenticator: refuseAll{},
		Backend:       &testBackend{iam: map[string]bool{"app": true}},
		Upstream:      Upstream{Address: "upstream.invalid:3306", DialTimeout: time.Second},
	})
	if err != nil {
		f.Fatal(err)
	}
	// The upstream is down: relayed logins fail at once, and the fuzzer
	// never touches the network.
	srv.dial = func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("connection refused")
	}
	defer srv.Close()
	st := srv.cur.Load()

	f.Fuzz(func(t *testing.T, data []byte) {
		c := &fuzzConn{t: t, in: data}
		srv.handle(&clientConn{Raw: c}, st)
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.closed {
			t.Fatal("login ended with the client connection open")
		}
	})
}

func TestPacketBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"too long", "\xff\xff\x01\x01"},
		{"wrong sequence", "\x01\x00\x00\x05x"},
	} {
		_, err := (&packetConn{rw: &rwBuf{r: strings.NewReader(tc.in)}, seq: 1}).read(maxLoginPacket)
		if !errors.Is(err, errProtocol) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

type rwBuf struct {
	r io.Reader
}

func (b *rwBuf) Read(p []byte) (int, error)  { return b.r.Read(p) }
func (b *rwBuf) Write(p []byte) (int, error) { return len(p), nil }
