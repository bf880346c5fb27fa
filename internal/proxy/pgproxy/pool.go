package pgproxy

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/iamdb/iamdb/internal/proxy"
)

// Upstream session reuse. Logging in to PostgreSQL costs a TLS handshake,
// SCRAM and a forked backend; an IAM client that reconnects often pays it
// every time. So, like PgBouncer's session pooling, an upstream session
// whose client ended cleanly is reset and kept for the next IAM login of
// the same kind:
//
//	client ── Terminate ─▶ pgproxy (not forwarded)
//	                       upstream idle? (frames: every request answered,
//	                       ReadyForQuery 'I', nothing half sent)
//	                       ── DISCARD ALL ─────────────────────────▶ upstream
//	                       ◀── CommandComplete, ReadyForQuery 'I' ──
//	                       idle pool, by key
//	next IAM login, same key, token verified and authorized:
//	client ◀── AuthenticationOk, the session's ParameterStatus,
//	           a fresh BackendKeyData, ReadyForQuery ── pgproxy
//
// The key is everything that decides what the session is: database user,
// database, every startup parameter sent upstream (which name the
// principal, so sessions are never shared between principals) and the
// backend password it logged in with (a rotated or changed password
// retires the sessions opened with the old one). Anything unusual — a
// transaction open, a COPY or an extended-protocol exchange unfinished, a
// client gone without Terminate, an error or a non-idle status after
// DISCARD ALL — closes the upstream session instead. Password-relayed
// (non-IAM) sessions are never kept. The pool itself (bounds, idle watch,
// flushes) is proxy.UpstreamPool.

// Pool configures the reuse of upstream sessions by IAM logins.
type Pool = proxy.Pool

// PoolObserver is an Observer that also follows the upstream session
// pool; the Server reports to its Observer when it implements it.
type PoolObserver = proxy.PoolObserver

// resetTimeout bounds DISCARD ALL on a session going back to the pool.
const resetTimeout = 5 * time.Second

// discardAll is the Query message that resets a session: it closes
// cursors, resets settings and the session user, deallocates prepared
// statements, unlistens, releases advisory locks and drops temporary
// tables.
var discardAll = frame('Q', []byte("DISCARD ALL\x00"))

// terminateMessage is the frontend Terminate message: 'X' and a length of 4.
var terminateMessage = []byte{'X', 0, 0, 0, 4}

// poolKeyFor is the key of a session of user on database, logged in with
// password and the startup parameters params (besides user and database).
// NUL separates the parts: it cannot occur in startup parameters. The
// password enters as a hash only.
func poolKeyFor(user, database, password string, params map[string]string) string {
	var b strings.Builder
	b.WriteString(user)
	b.WriteByte(0)
	b.WriteString(database)
	b.WriteByte(0)
	for _, k := range slices.Sorted(maps.Keys(params)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(params[k])
		b.WriteByte(0)
	}
	sum := sha256.Sum256([]byte(password))
	b.Write(sum[:])
	return b.String()
}

// upstreamSession is an upstream connection that may serve one IAM client
// after another.
type upstreamSession struct {
	proxy.Pooled
	bc *backendConn // the connection, the upstream's key and its ParameterStatus values
}

// upstreamPool holds the idle upstream sessions of one listener.
type upstreamPool = proxy.UpstreamPool[*upstreamSession]

// closeUpstream ends an upstream session politely: Terminate, then close,
// so that the server logs no lost connection.
func closeUpstream(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.Write(terminateMessage)
	c.Close()
}

// resetUpstream runs DISCARD ALL on a session its client left idle and
// reads up to the ReadyForQuery that must follow, with status idle.
// ParameterStatus messages on the way (RESET ALL reports the settings it
// restores) update params, which the next client is shown.
func resetUpstream(c net.Conn, params map[string]string) error {
	c.SetDeadline(time.Now().Add(resetTimeout))
	if _, err := c.Write(discardAll); err != nil {
		return fmt.Errorf("sending DISCARD ALL: %w", err)
	}
	done := false
	for {
		typ, body, err := readMessage(c, maxAuthMessageLen)
		if err != nil {
			return fmt.Errorf("reading the answer to DISCARD ALL: %w", err)
		}
		switch typ {
		case 'C':
			done = string(body) == "DISCARD ALL\x00"
		case 'Z':
			if !done || len(body) != 1 || body[0] != 'I' {
				return fmt.Errorf("ReadyForQuery %q after DISCARD ALL (completed: %v)", body, done)
			}
			c.SetDeadline(time.Time{})
			return nil
		case 'S':
			var ps pgproto3.ParameterStatus
			if err := ps.Decode(body); err != nil {
				return fmt.Errorf("ParameterStatus: %w", err)
			}
			params[ps.Name] = ps.Value
		case 'N', 'A':
			// A notice, or a notification that arrived before UNLISTEN.
		case 'E':
			var e pgproto3.ErrorResponse
			if err := e.Decode(body); err != nil {
				return fmt.Errorf("DISCARD ALL failed (undecodable error: %w)", err)
			}
			return fmt.Errorf("DISCARD ALL failed: %s %s", e.Code, e.Message)
		default:
			return fmt.Errorf("unexpected message %q in the answer to DISCARD ALL", typ)
		}
	}
}

// recycle puts the upstream session of a finished session back in the
// pool when the client left it idle and DISCARD ALL resets it, and closes
// it otherwise.
func (s *Server) recycle(l *login, sess *session, frames *sessionFrames) {
	// The finished client's cancel key must not reach the next client's
	// queries.
	sess.release()
	up := sess.reuse
	if !frames.upstream.idleAfter(&frames.client) {
		l.log.Debug("upstream session closed, not pooled: the client quit while it was busy",
			"tx_status", string(rune(frames.upstream.status)), "requests", frames.client.requests, "answered", frames.upstream.ready)
		closeUpstream(sess.upstream)
		return
	}
	if err := resetUpstream(sess.upstream, up.bc.params); err != nil {
		l.log.Info("upstream session closed, not pooled: reset failed", "backend_pid", up.bc.pid, "err", err)
		closeUpstream(sess.upstream)
		return
	}
	if why := s.pool.Put(up); why != "" {
		l.log.Debug("upstream session closed, not pooled: "+why, "backend_pid", up.bc.pid)
	} else {
		l.log.Debug("upstream session pooled", "backend_pid", up.bc.pid)
	}
}
