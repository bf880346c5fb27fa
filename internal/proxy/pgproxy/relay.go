package pgproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

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
	c2u, u2c, err := relay(client, upstream)

	d := time.Since(start)
	s.active.Add(-1)
	l.st.obs.SessionEnded(inst, c2u, u2c, d)
	attrs := []any{"client_to_upstream", c2u, "upstream_to_client", u2c, "duration", d.Round(time.Millisecond).String()}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	l.log.Info("session ended", attrs...)
}

// relay copies client→upstream and upstream→client concurrently. When
// either direction ends, both connections are closed so the other
// direction ends too. It returns the byte counts and the first error that
// is not just the consequence of that close.
func relay(client, upstream net.Conn) (clientToUpstream, upstreamToClient int64, err error) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			upstream.Close()
		})
	}
	errs := make(chan error, 2)
	go func() {
		var err error
		clientToUpstream, err = copyClientToUpstream(upstream, client)
		closeBoth()
		errs <- err
	}()
	go func() {
		var err error
		upstreamToClient, err = copyUpstreamToClient(client, upstream)
		closeBoth()
		errs <- err
	}()
	first, second := <-errs, <-errs
	return clientToUpstream, upstreamToClient, firstRealErr(first, second)
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

func copyClientToUpstream(upstream, client net.Conn) (int64, error) {
	return copyConn(upstream, client)
}

func copyUpstreamToClient(client, upstream net.Conn) (int64, error) {
	return copyConn(client, upstream)
}

func copyConn(dst, src net.Conn) (int64, error) {
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	return io.CopyBuffer(dst, src, *buf)
}
