package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"sync"
)

// ClientConn is one accepted client connection as a listener tracks it, so
// that Shutdown and Close can end it whatever phase it is in: logging in
// (its context is cancelled) or relaying (both legs are closed).
type ClientConn struct {
	Raw net.Conn

	mu       sync.Mutex
	aborted  bool
	cancel   context.CancelFunc
	upstream net.Conn
}

// SetCancel records how to cancel the connection's login; an already
// aborted connection is cancelled at once.
func (cc *ClientConn) SetCancel(cancel context.CancelFunc) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.cancel = cancel
	if cc.aborted {
		cancel()
	}
}

// SetUpstream records the upstream connection; false (and the connection
// closed) when the client connection was aborted meanwhile.
func (cc *ClientConn) SetUpstream(c net.Conn) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.aborted {
		c.Close()
		return false
	}
	cc.upstream = c
	return true
}

// Aborted reports whether Shutdown or Close ended the connection.
func (cc *ClientConn) Aborted() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.aborted
}

// Abort ends the connection: its login is cancelled, both legs closed.
func (cc *ClientConn) Abort() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.aborted = true
	if cc.cancel != nil {
		cc.cancel()
	}
	cc.Raw.Close()
	if cc.upstream != nil {
		cc.upstream.Close()
	}
}

// RemoteIP is the client's address without the port.
func RemoteIP(c net.Conn) string {
	addr := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// SessionID names a connection in every log line and audit event about it.
func SessionID() string {
	var b [6]byte
	rand.Read(b[:]) // never fails since Go 1.24
	return hex.EncodeToString(b[:])
}
