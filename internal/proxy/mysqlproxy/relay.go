package mysqlproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iamdb/iamdb/internal/audit"
)

// runSession relays both ways until either side closes, then reports the
// session's end.
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
	l.log.Info("session started", "upstream_connection_id", sess.upstreamID)

	if us := sess.reuse; us != nil && !us.read {
		if err := readRole(upstream, l.caps, us); err != nil {
			// Part of the answer may still be unread: relaying now would
			// hand it to the client as the answer to its first command.
			l.log.Warn("reading the new upstream session's role failed; ending the session", "err", err)
			sess.reuse = nil
			upstream.Close()
		}
	}
	res := relay(client, upstream, l.relayOptions(sess))
	if l.cc.Aborted() {
		res.closedBy = audit.ClosedByShutdown
	}

	d := time.Since(start)
	// Before the session stops counting as active, so that whoever waits
	// for sessions to end before closing the audit log finds the event.
	l.auditDisconnect(time.Since(l.connectedAt), res.c2u, res.u2c, res.closedBy)
	s.active.Add(-1)
	l.st.obs.SessionEnded(inst, res.c2u, res.u2c, d)
	attrs := []any{"client_to_upstream", res.c2u, "upstream_to_client", res.u2c, "duration", d.Round(time.Millisecond).String(), "closed_by", res.closedBy}
	if errors.Is(res.err, errChangeUser) {
		l.log.Warn("COM_CHANGE_USER refused; session closed", attrs...)
		return
	}
	if res.err != nil {
		attrs = append(attrs, "err", res.err)
	}
	l.log.Info("session ended", attrs...)
	switch {
	case res.reusable:
		s.recycle(l, sess)
	case sess.reuse != nil && res.closedBy == audit.ClosedByClient:
		l.log.Debug("upstream session closed, not pooled: the client left it busy, in a transaction or without COM_QUIT")
	}
}

// recycle resets the upstream session of a client that quit and puts it
// in the pool, or closes it when the reset fails.
func (s *Server) recycle(l *login, sess *session) {
	if err := resetUpstream(sess.upstream, l.caps, l.resp.database, sess.reuse); err != nil {
		l.log.Info("upstream session closed, not pooled: reset failed", "upstream_connection_id", sess.upstreamID, "err", err)
		closeUpstream(sess.upstream)
		return
	}
	if why := s.pool.Put(sess.reuse); why != "" {
		l.log.Debug("upstream session closed, not pooled: "+why, "upstream_connection_id", sess.upstreamID)
		return
	}
	l.log.Debug("upstream session pooled", "upstream_connection_id", sess.upstreamID)
}

// relayOptions is what the relay does for this session besides copying:
// statement audit when the database user is under it, and keeping the
// upstream when the client quits when the session may be reused.
func (l *login) relayOptions(sess *session) relayOptions {
	var opt relayOptions
	if sess.reuse != nil {
		opt.keepOnQuit = true
		opt.tracker = newRespTracker(l.caps)
	}
	if !l.st.statements.Enabled(l.resp.user) || l.ac == nil {
		return opt
	}
	ctx := audit.Deferred(context.WithoutCancel(l.srv.life.Context()))
	withParams := l.st.statements.Parameters
	opt.tap = newStmtTap(l.caps, withParams, func(st audit.Statement) {
		if err := l.st.audit.Emit(ctx, l.ac.StatementEvent(st, withParams)); err != nil {
			l.log.Error("audit event not recorded", "event", audit.NameStatement, "err", err)
		}
	})
	if opt.tracker == nil {
		opt.tracker = newRespTracker(l.caps)
	}
	opt.tracker.onPrepared = opt.tap.learn
	opt.tracker.onLost = func(reason string) {
		l.log.Warn("statement audit no longer follows the upstream's answers; executed statements are recorded by id only", "reason", reason)
	}
	return opt
}

// relayOptions says what the relay does besides copying.
type relayOptions struct {
	tap     *stmtTap     // statement audit of the client's commands, or nil
	tracker *respTracker // follows the upstream's answers, or nil; required by tap
	// keepOnQuit stops the relay at the client's COM_QUIT without
	// forwarding it, leaving the upstream open when its session can be
	// reused (relayResult.reusable).
	keepOnQuit bool
}

// relayResult is how a session ended.
type relayResult struct {
	c2u, u2c int64
	closedBy string
	err      error
	// reusable: the client quit with COM_QUIT, every answer was delivered
	// and no transaction is open; the upstream connection was left open
	// (keepOnQuit). Otherwise it is closed.
	reusable bool
}

// errChangeUser: the client sent COM_CHANGE_USER, which would let the
// session become another database user without a token for that user.
var errChangeUser = errors.New("COM_CHANGE_USER")

// errQuit: the client sent COM_QUIT and the relay stops without
// forwarding it (relayOptions.keepOnQuit).
var errQuit = errors.New("COM_QUIT")

var changeUserRefused = &mysqlError{code: erNotSupported, sqlState: "42000",
	message: "iamdb: COM_CHANGE_USER is not supported; open a new connection as the other user, with a token for that user"}

// relay copies client→upstream (watching commands) and upstream→client
// concurrently. When either direction ends, both connections are closed
// so the other direction ends too; closedBy names the side that ended
// first ("client" when it quit, even if the upstream's close arrives
// first). A COM_CHANGE_USER ends the session: the upstream is closed,
// what it had already sent is passed on, then the client gets an ERR
// packet. With keepOnQuit, a COM_QUIT stops both directions and closes
// only the client.
func relay(client, upstream net.Conn, opt relayOptions) relayResult {
	var res relayResult
	var once sync.Once
	// A client that ends its session sends COM_QUIT, which makes the
	// upstream close too: whichever EOF the relay sees first, the client
	// closed the session.
	var quit atomic.Bool
	closeBoth := func(by string) {
		once.Do(func() {
			if by == audit.ClosedByUpstream && quit.Load() {
				by = audit.ClosedByClient
			}
			res.closedBy = by
			client.Close()
			upstream.Close()
		})
	}
	var stopping atomic.Bool
	u2cDone := make(chan error, 1)
	go func() {
		var err error
		res.u2c, err = copyUpstreamToClient(client, upstream, opt.tracker)
		if !stopping.Load() {
			closeBoth(audit.ClosedByUpstream)
		}
		u2cDone <- err
	}()
	w := &clientWalker{tap: opt.tap, track: opt.tracker, stopOnQuit: opt.keepOnQuit, quit: &quit}
	c2u, c2uErr := copyClientToUpstream(upstream, client, w)
	res.c2u = c2u
	switch {
	case errors.Is(c2uErr, errChangeUser):
		stopping.Store(true)
		// A client that does not read must not hold the session open.
		client.SetWriteDeadline(time.Now().Add(time.Second))
		upstream.Close()
		<-u2cDone
		(&packetConn{rw: client, seq: 1}).write(changeUserRefused.encode())
		closeBoth(audit.ClosedByClient)
		res.err = errChangeUser
		return res
	case errors.Is(c2uErr, errQuit):
		stopping.Store(true)
		// Stop reading the upstream without closing it. A read that times
		// out leaves a TLS connection usable.
		upstream.SetReadDeadline(time.Now())
		u2cErr := <-u2cDone
		once.Do(func() { res.closedBy = audit.ClosedByClient })
		client.Close()
		upstream.SetReadDeadline(time.Time{})
		if res.closedBy == audit.ClosedByClient && errors.Is(u2cErr, os.ErrDeadlineExceeded) && opt.tracker != nil && opt.tracker.idle() && !w.unresettable {
			res.reusable = true
			return res
		}
		// COM_QUIT after all, so that the server counts no aborted
		// connection.
		closeUpstream(upstream)
		if realErr(u2cErr) && !errors.Is(u2cErr, os.ErrDeadlineExceeded) {
			res.err = u2cErr
		}
		return res
	}
	closeBoth(audit.ClosedByClient)
	u2cErr := <-u2cDone
	res.err = firstRealErr(c2uErr, u2cErr)
	return res
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

// copyUpstreamToClient copies the upstream's bytes as they come, showing
// each chunk to the tracker first when there is one.
func copyUpstreamToClient(client io.Writer, upstream io.Reader, t *respTracker) (int64, error) {
	if t != nil {
		upstream = trackReader{upstream, t}
	}
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	return io.CopyBuffer(client, upstream, *buf)
}

type trackReader struct {
	r io.Reader
	t *respTracker
}

func (r trackReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.feed(p[:n])
	}
	return n, err
}

// copyClientToUpstream forwards the client's bytes unchanged, chunk by
// chunk, while a clientWalker follows the packets in them. It stops with
// errChangeUser before a COM_CHANGE_USER, and with errQuit before a
// COM_QUIT when the walker keeps the upstream; what came before is
// forwarded. At most a packet header is held back between reads: a
// command is recognised by its first byte.
func copyClientToUpstream(upstream io.Writer, client io.Reader, w *clientWalker) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var n int64
	held := 0
	for {
		nr, rerr := client.Read(buf[held:])
		if nr > 0 {
			chunk := buf[:held+nr]
			stop, hold, serr := w.scan(chunk)
			fwd := chunk[:len(chunk)-hold]
			if serr != nil {
				fwd = chunk[:stop]
			}
			if len(fwd) > 0 {
				m, werr := upstream.Write(fwd)
				n += int64(m)
				if werr != nil {
					return n, werr
				}
			}
			if serr != nil {
				return n, serr
			}
			held = copy(buf, chunk[len(fwd):])
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) && (held > 0 || w.left > 0) {
				return n, fmt.Errorf("client packet: %w", io.ErrUnexpectedEOF)
			}
			return n, rerr
		}
	}
}

// commandGuard follows the client's packet stream well enough to know
// which packets start a command. Only the client's side is needed: a
// command is a packet with sequence number 0; the only other packets a
// client sends after the login are the continuations of payloads of 16 MiB
// or more, and the contents of a LOAD DATA LOCAL file, which start at
// sequence 2 (after the server's request) and run on, wrapping past 255 to
// 0, until an empty packet. The server applies the same rules (a wrong
// sequence number ends its connection), so a client cannot make it read as
// a command what the guard reads as file data.
type commandGuard struct {
	inFile  bool // inside a LOAD DATA LOCAL transfer
	expect  byte // next sequence number of the transfer
	cont    bool // the previous packet had the maximum size: this one continues it
	logical int  // bytes so far of the current logical packet
}

// next classifies a packet header; command is true for a command's first
// packet, whose first payload byte the caller must check.
func (g *commandGuard) next(length int, seq byte) (command bool) {
	switch {
	case g.cont:
		// Continuation of a large payload: not a new packet.
	case g.inFile && seq == g.expect:
		g.logical = 0
	case seq == 0:
		g.inFile, g.logical = false, 0
		command = true
	default:
		// The first packet of a LOCAL INFILE transfer (or a stray one,
		// which the server refuses and disconnects for).
		g.inFile, g.logical = true, 0
	}
	if g.inFile {
		g.expect = seq + 1
	}
	g.logical += length
	g.cont = length == maxPacketPayload
	if g.inFile && !g.cont && g.logical == 0 {
		g.inFile = false // the empty packet that ends the file
	}
	return command
}

// clientWalker follows the client's stream chunk by chunk: commandGuard
// says which packets are commands; COM_CHANGE_USER (always) and COM_QUIT
// (when the upstream is kept) stop the relay before they are forwarded;
// whole commands go to the statement tap and queue their answers with
// the response tracker.
type clientWalker struct {
	guard commandGuard
	left  int  // payload bytes of the current physical packet still to come
	plen  int  // length of the current physical packet
	seq   byte // its sequence number
	cmd   int  // the current logical packet's command; -1: not a command
	keep  bool // collect the command's payload for the tap
	body  []byte

	tap        *stmtTap
	track      *respTracker
	stopOnQuit bool
	quit       *atomic.Bool // set when a COM_QUIT is forwarded
	// unresettable: the client changed session state that
	// COM_RESET_CONNECTION does not restore (COM_SET_OPTION switches
	// multi-statements for the connection), so the session is not reused.
	unresettable bool
}

// scan follows chunk. stop is where a command that ends the relay begins
// (with err errChangeUser or errQuit); hold is how many bytes at the end
// must wait for the next chunk (a header, or a command's header without
// its first byte), which scan did not consume.
func (w *clientWalker) scan(chunk []byte) (stop, hold int, err error) {
	for i := 0; i < len(chunk); {
		if w.left > 0 {
			n := min(w.left, len(chunk)-i)
			if w.keep && len(w.body) < maxTapCommand {
				w.body = append(w.body, chunk[i:i+min(n, maxTapCommand-len(w.body))]...)
			}
			w.left -= n
			i += n
			if w.left == 0 {
				w.packetEnd()
			}
			continue
		}
		rest := chunk[i:]
		if len(rest) < 4 {
			return -1, len(rest), nil
		}
		length := int(rest[0]) | int(rest[1])<<8 | int(rest[2])<<16
		if length > 0 && len(rest) < 5 {
			return -1, len(rest), nil
		}
		seq := rest[3]
		continuing := w.guard.cont
		if w.guard.next(length, seq) {
			var c byte // an empty command: the server answers with an error
			if length > 0 {
				c = rest[4]
			}
			switch {
			case length > 0 && c == comChangeUser:
				return i, 0, errChangeUser
			case length > 0 && c == comSetOption:
				w.unresettable = true
			case length == 1 && c == comQuit:
				if w.stopOnQuit {
					return i, 0, errQuit
				}
				if w.quit != nil {
					w.quit.Store(true)
				}
			}
			w.cmd = int(c)
			w.body = w.body[:0]
			w.keep = w.tap != nil && tapped(c)
		} else if !continuing {
			w.cmd, w.keep = -1, false // LOCAL INFILE data
		}
		w.plen, w.seq, w.left = length, seq, length
		i += 4
		if length == 0 {
			w.packetEnd()
		}
	}
	return -1, 0, nil
}

// tapped reports whether statement audit needs the command's payload.
func tapped(c byte) bool {
	switch c {
	case comQuery, comStmtPrepare, comStmtExecute, comStmtBulkExecute, comStmtSendLongData,
		comStmtClose, comStmtReset, comResetConnection:
		return true
	}
	return false
}

// packetEnd ends a physical packet; the logical one ends with the first
// packet shorter than the maximum.
func (w *clientWalker) packetEnd() {
	if w.plen == maxPacketPayload || w.cmd < 0 {
		return
	}
	c := byte(w.cmd)
	w.cmd = -1
	var text string
	if w.keep {
		text = w.tap.command(w.body)
		if cap(w.body) > 64<<10 {
			w.body = nil // do not hold a large buffer for the session's life
		}
	}
	if w.track != nil && answered(c) {
		w.track.expect(c, w.seq, text)
	}
}
