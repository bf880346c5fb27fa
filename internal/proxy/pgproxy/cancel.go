package pgproxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Clients get iamdb's own (pid, secret) pair, never the upstream's: a
// client must not learn another server's key, and with several upstreams
// the pid alone would not say where to forward a cancel. The registry maps
// our pair to the upstream backend it stands for.

type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// cancelTarget is where a matched CancelRequest goes.
type cancelTarget struct {
	upstream Upstream
	pid      uint32
	secret   []byte
	session  string
}

type keyEntry struct {
	secret []byte
	target cancelTarget
}

type keyRegistry struct {
	mu sync.Mutex
	m  map[uint32]*keyEntry
}

func newKeyRegistry() *keyRegistry { return &keyRegistry{m: map[uint32]*keyEntry{}} }

// register issues a fresh (pid, secret) for target. secretLen follows the
// upstream's key length: 4 bytes under protocol 3.0, longer under 3.2.
// release forgets the pair when the session ends.
func (r *keyRegistry) register(secretLen int, target cancelTarget) (pid uint32, secret []byte, release func(), err error) {
	secretLen = min(max(secretLen, 4), 256)
	secret = make([]byte, secretLen)
	if _, err := rand.Read(secret); err != nil {
		return 0, nil, nil, fmt.Errorf("cancel key: %w", err)
	}
	var b [4]byte
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, nil, nil, fmt.Errorf("cancel key: %w", err)
		}
		// Positive and non-zero, like a real pid: some clients print or
		// store it as a signed int.
		pid = binary.BigEndian.Uint32(b[:]) & 0x7fffffff
		if _, taken := r.m[pid]; pid != 0 && !taken {
			break
		}
	}
	e := &keyEntry{secret: secret, target: target}
	r.m[pid] = e
	release = func() {
		r.mu.Lock()
		if r.m[pid] == e {
			delete(r.m, pid)
		}
		r.mu.Unlock()
	}
	return pid, secret, release, nil
}

// lookup finds the target of a cancel request, comparing the secret in
// constant time.
func (r *keyRegistry) lookup(pid uint32, secret []byte) (cancelTarget, bool) {
	r.mu.Lock()
	e := r.m[pid]
	r.mu.Unlock()
	if e == nil {
		// Compare anyway so a miss on the pid costs what a miss on the
		// secret does.
		subtle.ConstantTimeCompare(secret, secret)
		return cancelTarget{}, false
	}
	if subtle.ConstantTimeCompare(e.secret, secret) != 1 {
		return cancelTarget{}, false
	}
	return e.target, true
}

// forwardCancel sends a CancelRequest with the upstream's key to the
// upstream, over TLS when the upstream is configured for it, and waits for
// the server to close the connection (PostgreSQL answers a cancel with
// nothing).
func forwardCancel(ctx context.Context, dial dialFunc, t cancelTarget) error {
	dctx, cancel := context.WithTimeout(ctx, t.upstream.DialTimeout)
	conn, err := dial(dctx, "tcp", t.upstream.Address)
	cancel()
	if err != nil {
		return fmt.Errorf("dial upstream %s: %w", t.upstream.Address, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var c net.Conn = conn
	if t.upstream.TLS != nil {
		if c, err = upstreamTLS(ctx, conn, t.upstream.TLS); err != nil {
			return err
		}
	}
	msg, err := (&pgproto3.CancelRequest{ProcessID: t.pid, SecretKey: t.secret}).Encode(nil)
	if err != nil {
		return fmt.Errorf("encode cancel request: %w", err)
	}
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("send cancel request to %s: %w", t.upstream.Address, err)
	}
	io.Copy(io.Discard, io.LimitReader(c, 1024))
	return nil
}

// upstreamTLS negotiates TLS with a PostgreSQL server: SSLRequest, 'S',
// then the handshake.
func upstreamTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) (net.Conn, error) {
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:], 8)
	binary.BigEndian.PutUint32(req[4:], codeSSLRequest)
	if _, err := conn.Write(req[:]); err != nil {
		return nil, fmt.Errorf("upstream SSLRequest: %w", err)
	}
	var resp [1]byte
	if _, err := io.ReadFull(conn, resp[:]); err != nil {
		return nil, fmt.Errorf("upstream SSLRequest: %w", err)
	}
	if resp[0] != 'S' {
		return nil, fmt.Errorf("upstream refused TLS (answered %q to SSLRequest)", resp[0])
	}
	tc := tls.Client(conn, cfg.Clone())
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("upstream TLS handshake: %w", err)
	}
	return tc, nil
}
