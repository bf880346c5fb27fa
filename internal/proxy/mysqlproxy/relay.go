package mysqlproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
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
	l.log.Info("session started")

	c2u, u2c, err := relay(client, upstream)

	d := time.Since(start)
	s.active.Add(-1)
	l.st.obs.SessionEnded(inst, c2u, u2c, d)
	attrs := []any{"client_to_upstream", c2u, "upstream_to_client", u2c, "duration", d.Round(time.Millisecond).String()}
	if errors.Is(err, errChangeUser) {
		l.log.Warn("COM_CHANGE_USER refused; session closed", attrs...)
		return
	}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	l.log.Info("session ended", attrs...)
}

// errChangeUser: the client sent COM_CHANGE_USER, which would let the
// session become another database user without a token for that user.
var errChangeUser = errors.New("COM_CHANGE_USER")

var changeUserRefused = &mysqlError{code: erNotSupported, sqlState: "42000",
	message: "iamdb: COM_CHANGE_USER is not supported; open a new connection as the other user, with a token for that user"}

// relay copies client→upstream (watching commands) and upstream→client
// (raw bytes) concurrently. When either direction ends, both connections
// are closed so the other direction ends too. A COM_CHANGE_USER ends the
// session: the upstream is closed, what it had already sent is passed on,
// then the client gets an ERR packet.
func relay(client, upstream net.Conn) (clientToUpstream, upstreamToClient int64, err error) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			upstream.Close()
		})
	}
	var changingUser atomic.Bool
	u2cDone := make(chan error, 1)
	go func() {
		var err error
		upstreamToClient, err = copyUpstreamToClient(client, upstream)
		if !changingUser.Load() {
			closeBoth()
		}
		u2cDone <- err
	}()
	clientToUpstream, c2uErr := copyClientToUpstream(upstream, client)
	if errors.Is(c2uErr, errChangeUser) {
		changingUser.Store(true)
		// A client that does not read must not hold the session open.
		client.SetWriteDeadline(time.Now().Add(time.Second))
		upstream.Close()
		<-u2cDone
		(&packetConn{rw: client, seq: 1}).write(changeUserRefused.encode())
		closeBoth()
		return clientToUpstream, upstreamToClient, errChangeUser
	}
	closeBoth()
	u2cErr := <-u2cDone
	return clientToUpstream, upstreamToClient, firstRealErr(c2uErr, u2cErr)
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

func copyUpstreamToClient(client, upstream net.Conn) (int64, error) {
	buf := bufPool.Get().(*[]byte)
	defer bufPool.Put(buf)
	return io.CopyBuffer(client, upstream, *buf)
}

// commandGuard follows the client's packet stream well enough to know
// which packets start a command, so that COM_CHANGE_USER can be refused.
// Only the client's side is needed: a command is a packet with sequence
// number 0; the only other packets a client sends after the login are the
// continuations of payloads of 16 MiB or more, and the contents of a LOAD
// DATA LOCAL file, which start at sequence 2 (after the server's request)
// and run on, wrapping past 255 to 0, until an empty packet. The server
// applies the same rules (a wrong sequence number ends its connection),
// so a client cannot make it read as a command what the guard reads as
// file data.
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

// copyClientToUpstream forwards the client's packets unchanged and stops
// with errChangeUser, before forwarding it, at a COM_CHANGE_USER.
func copyClientToUpstream(upstream io.Writer, client io.Reader) (int64, error) {
	br := bufio.NewReaderSize(client, 32<<10)
	bw := bufio.NewWriterSize(upstream, 32<<10)
	var g commandGuard
	var n int64
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			bw.Flush()
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return n, fmt.Errorf("client packet header: %w", err)
			}
			return n, err
		}
		length := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		if g.next(length, hdr[3]) && length > 0 {
			first, err := br.Peek(1)
			if err != nil {
				bw.Flush()
				return n, unexpectedEOF(err)
			}
			if first[0] == comChangeUser {
				bw.Flush()
				return n, errChangeUser
			}
		}
		if _, err := bw.Write(hdr[:]); err != nil {
			return n, err
		}
		m, err := io.CopyN(bw, br, int64(length))
		n += 4 + m
		if err != nil {
			bw.Flush()
			return n, unexpectedEOF(err)
		}
		// Flush whenever the client has nothing more queued: batching what
		// arrived together without ever holding back a command.
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return n, err
			}
		}
	}
}
