package pgproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
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
// reports the session's end.
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
	c2u, u2c, closedBy, err := relay(client, upstream, l.statementTap())
	if l.cc.Aborted() {
		closedBy = audit.ClosedByShutdown
	}

	d := time.Since(start)
	// Before the session stops counting as active, so that whoever waits
	// for sessions to end before closing the audit log finds the event.
	l.auditDisconnect(time.Since(l.connectedAt), c2u, u2c, closedBy)
	s.active.Add(-1)
	l.st.obs.SessionEnded(inst, c2u, u2c, d)
	attrs := []any{"client_to_upstream", c2u, "upstream_to_client", u2c, "duration", d.Round(time.Millisecond).String(), "closed_by", closedBy}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	l.log.Info("session ended", attrs...)
}

// relay copies client→upstream and upstream→client concurrently. When
// either direction ends, both connections are closed so the other
// direction ends too. It returns the byte counts, which side ended the
// session (the direction that stopped first: "client" or "upstream") and
// the first error that is not just the consequence of that close. tap,
// if not nil, sees every chunk from the client before it is forwarded.
func relay(client, upstream net.Conn, tap func([]byte)) (clientToUpstream, upstreamToClient int64, closedBy string, err error) {
	var once sync.Once
	// A client that ends its session sends Terminate, which makes the
	// upstream close too: whichever EOF the relay sees first, the client
	// closed the session.
	var terminated atomic.Bool
	closeBoth := func(by string) {
		once.Do(func() {
			if by == audit.ClosedByUpstream && terminated.Load() {
				by = audit.ClosedByClient
			}
			closedBy = by
			client.Close()
			upstream.Close()
		})
	}
	watch := func(chunk []byte) {
		terminated.Store(bytes.HasSuffix(chunk, terminateMessage))
		if tap != nil {
			tap(chunk)
		}
	}
	errs := make(chan error, 2)
	go func() {
		var err error
		clientToUpstream, err = copyClientToUpstream(upstream, client, watch)
		closeBoth(audit.ClosedByClient)
		errs <- err
	}()
	go func() {
		var err error
		upstreamToClient, err = copyUpstreamToClient(client, upstream)
		closeBoth(audit.ClosedByUpstream)
		errs <- err
	}()
	first, second := <-errs, <-errs
	return clientToUpstream, upstreamToClient, closedBy, firstRealErr(first, second)
}

// terminateMessage is the frontend Terminate message: 'X' and a length of 4.
var terminateMessage = []byte{'X', 0, 0, 0, 4}

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

func copyClientToUpstream(upstream, client net.Conn, tap func([]byte)) (int64, error) {
	if tap == nil {
		return copyConn(upstream, client)
	}
	return copyConn(upstream, tapReader{client, tap})
}

// tapReader shows every chunk read to tap before the relay forwards it,
// so a statement is audited before the upstream runs it.
type tapReader struct {
	net.Conn
	tap func([]byte)
}

func (r tapReader) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.tap(p[:n])
	}
	return n, err
}

func copyUpstreamToClient(client, upstream net.Conn) (int64, error) {
	return copyConn(client, upstream)
}

func copyConn(dst io.Writer, src io.Reader) (int64, error) {
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	return io.CopyBuffer(dst, src, *buf)
}
