package pgproxy

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iamdb/iamdb/internal/audit"
)

// statementTap is the statement audit of a session, or nil when its
// database user is not under statement audit.
func (l *login) statementTap() func([]byte) {
	if !l.st.statements.Enabled(l.user) || l.ac == nil {
		return nil
	}
	ctx := audit.Deferred(context.WithoutCancel(l.srv.life.Context()))
	withParams := l.st.statements.Parameters
	t := newStmtTap(withParams, func(st audit.Statement) {
		if err := l.st.audit.Emit(ctx, l.ac.StatementEvent(st, withParams)); err != nil {
			l.log.Error("audit event not recorded", "event", audit.NameStatement, "err", err)
		}
	}, func(reason string) {
		l.log.Warn("statement audit stopped for this session", "reason", reason)
	})
	return t.feed
}

// runSession relays bytes both ways until either side closes, then
// reports the session's end. An upstream session the client left idle
// goes back to the pool for the next login (recycle).
func (s *Server) runSession(l *login, sess *session) {
	client, upstream := l.client, sess.upstream
	// The handshake deadline no longer applies: a session lasts as long as
	// the client wants it to.
	client.SetDeadline(time.Time{})
	upstream.SetDeadline(time.Time{})

	inst := l.st.instance.Name
	start := time.Now()
	s.active.Add(1)
	l.st.obs.SessionStarted(inst)
	l.log.Info("session started")

	if len(sess.pending) > 0 {
		if _, err := client.Write(sess.pending); err != nil {
			client.Close()
			upstream.Close()
		}
	}
	frames := &sessionFrames{upstream: upstreamFrames{status: 'I'}}
	end := relay(client, upstream, l.statementTap(), frames, sess.reuse != nil)
	closedBy := end.closedBy
	if l.cc.Aborted() {
		closedBy = audit.ClosedByShutdown
	}

	d := time.Since(start)
	// Before the session stops counting as active, so that whoever waits
	// for sessions to end before closing the audit log finds the event.
	l.auditDisconnect(time.Since(l.connectedAt), end.clientToUpstream, end.upstreamToClient, closedBy)
	s.active.Add(-1)
	l.st.obs.SessionEnded(inst, end.clientToUpstream, end.upstreamToClient, d)
	attrs := []any{"client_to_upstream", end.clientToUpstream, "upstream_to_client", end.upstreamToClient,
		"duration", d.Round(time.Millisecond).String(), "closed_by", closedBy}
	if end.err != nil {
		attrs = append(attrs, "err", end.err)
	}
	l.log.Info("session ended", attrs...)
	if end.upstreamOpen {
		s.recycle(l, sess, frames)
	}
}

// sessionFrames follows the message boundaries of both directions.
type sessionFrames struct {
	client   clientFrames
	upstream upstreamFrames
}

// relayEnd is how a relay ended.
type relayEnd struct {
	clientToUpstream, upstreamToClient int64
	// closedBy is the side that ended the session: "client" or "upstream".
	closedBy string
	// err is the first error that is not just the consequence of the end.
	err error
	// upstreamOpen: the client quit with Terminate, which was held back,
	// and the upstream connection is still open (relay with keep).
	upstreamOpen bool
}

// relay copies client→upstream and upstream→client concurrently. When
// either direction ends, both connections are closed so the other
// direction ends too — except, with keep, when the client quits with
// Terminate: then the Terminate is not forwarded, the upstream→client copy
// is stopped by a read deadline and the upstream connection stays open
// for the caller to recycle. tap, if not nil, sees every chunk from the
// client before it is forwarded; frames follows both streams.
func relay(client, upstream net.Conn, tap func([]byte), frames *sessionFrames, keep bool) relayEnd {
	var (
		end    relayEnd
		once   sync.Once
		closed bool
		// A client that ends its session sends Terminate, which makes the
		// upstream close too: whichever EOF the relay sees first, the
		// client closed the session.
		terminated atomic.Bool
	)
	closeBoth := func(by string) {
		once.Do(func() {
			if by == audit.ClosedByUpstream && terminated.Load() {
				by = audit.ClosedByClient
			}
			end.closedBy, closed = by, true
			client.Close()
			upstream.Close()
		})
	}
	var (
		c2uErr, u2cErr error
		held           bool // the client's Terminate was held back
		u2cStopped     bool // the upstream→client copy ended without an upstream failure
		wg             sync.WaitGroup
	)
	var uf *upstreamFrames
	if keep {
		uf = &frames.upstream
	}
	wg.Go(func() {
		end.clientToUpstream, held, c2uErr = copyClientToUpstream(upstream, client, tap, &frames.client, keep, &terminated)
		if held {
			// Stop the other direction without closing the upstream; the
			// client, having said goodbye, is closed.
			upstream.SetReadDeadline(time.Unix(1, 0))
			client.Close()
			return
		}
		closeBoth(audit.ClosedByClient)
	})
	wg.Go(func() {
		var readErr, writeErr error
		end.upstreamToClient, readErr, writeErr = copyUpstreamToClient(client, upstream, uf)
		u2cErr = cmp.Or(readErr, writeErr)
		if keep && terminated.Load() && (writeErr != nil || errors.Is(readErr, os.ErrDeadlineExceeded)) {
			// The client quit: its connection is closed or the copy was
			// stopped on purpose. Whether the upstream stays is decided
			// once both directions are done.
			u2cStopped = true
			return
		}
		closeBoth(audit.ClosedByUpstream)
	})
	wg.Wait()
	if held && u2cStopped && !closed {
		// The client's Terminate was held back and neither side failed.
		end.closedBy, end.upstreamOpen = audit.ClosedByClient, true
		return end
	}
	closeBoth(audit.ClosedByClient)
	end.err = firstRealErr(c2uErr, u2cErr)
	return end
}

func firstRealErr(a, b error) error {
	if realErr(a) {
		return a
	}
	if realErr(b) {
		return b
	}
	return nil
}

// realErr is false for the errors every session ends with: EOF, and reads
// on a connection the other direction already closed.
func realErr(err error) bool {
	return err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyClientToUpstream forwards the client's stream, following its frames.
// It stops after a Terminate message; with hold, the Terminate itself is
// not forwarded (held), unless its header was split across reads and
// partly forwarded already. terminated is set before the
// Terminate is forwarded: the upstream closes as soon as it reads it, and
// whoever sees that EOF must already know the client ended the session.
func copyClientToUpstream(upstream, client net.Conn, tap func([]byte), frames *clientFrames, hold bool, terminated *atomic.Bool) (n int64, held bool, err error) {
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for {
		nr, rerr := client.Read(*buf)
		if nr > 0 {
			chunk := (*buf)[:nr]
			if tap != nil {
				// Before forwarding, so a statement is audited before the
				// upstream runs it.
				tap(chunk)
			}
			upTo, terminate, whole := frames.feed(chunk)
			fwd := chunk[:upTo]
			if terminate {
				held = hold && whole
				terminated.Store(true)
				if held {
					fwd = chunk[:upTo-len(terminateMessage)]
				}
			}
			if len(fwd) > 0 {
				nw, werr := upstream.Write(fwd)
				n += int64(nw)
				if werr != nil {
					return n, false, werr
				}
			}
			if terminate {
				return n, held, nil
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				rerr = nil
			}
			return n, false, rerr
		}
	}
}

// copyUpstreamToClient forwards the upstream's stream, following its
// frames when frames is not nil. It tells a failed read of the upstream
// from a failed write to the client.
func copyUpstreamToClient(client, upstream net.Conn, frames *upstreamFrames) (n int64, readErr, writeErr error) {
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	for {
		nr, rerr := upstream.Read(*buf)
		if nr > 0 {
			if frames != nil {
				frames.feed((*buf)[:nr])
			}
			nw, werr := client.Write((*buf)[:nr])
			n += int64(nw)
			if werr != nil {
				return n, nil, werr
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				rerr = nil
			}
			return n, rerr, nil
		}
	}
}
