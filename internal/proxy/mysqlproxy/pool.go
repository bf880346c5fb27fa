package mysqlproxy

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/iamdb/iamdb/internal/proxy"
)

// Upstream session reuse. Logging in to MariaDB costs a TCP connection, a
// TLS handshake and the authentication exchange; an IAM client that
// reconnects often pays it every time. So an upstream session whose client
// ended cleanly is reset and kept for the next IAM login of the same kind:
//
//	client ── COM_QUIT ─▶ mysqlproxy (not forwarded)
//	                      upstream idle? (respTracker: every command
//	                      answered, no transaction open, nothing half sent)
//	                      ── COM_RESET_CONNECTION, COM_INIT_DB database,
//	                         SELECT DATABASE(), CURRENT_ROLE() ──────▶ upstream
//	                      ◀── OK, OK, the login's database and role ──
//	                      idle pool, by key
//	next IAM login, same key, token verified and authorized:
//	client ◀── the OK packet of the session's own login ── mysqlproxy
//
// COM_RESET_CONNECTION rolls back, drops temporary tables, deallocates
// prepared statements, clears user variables and session settings and
// restores the login's character set, but MariaDB keeps the current
// database and the active role: COM_INIT_DB restores the former, and a
// session whose role is no longer the one it had after its login (read
// once, when the session is new) is closed instead.
//
// The key is everything the upstream login sent that shapes the session:
// database user, database, capabilities, character set, maximum packet
// size and connection attributes (which name the principal, so sessions
// are never shared between principals) and the backend password it
// logged in with (a rotated or changed password retires the sessions
// opened with the old one). The client taking a session was greeted with
// the instance's version and capabilities and chose the same ones as the
// session's first client. Anything unusual — a transaction open, an
// answer unfinished, a client gone without COM_QUIT, COM_CHANGE_USER, an
// error during the reset — closes the upstream session instead.
// Password-relayed (non-IAM) sessions are never kept.
//
// The pool itself (bounds, idle watch, flushes) is proxy.UpstreamPool.

// Pool configures the reuse of upstream sessions by IAM logins.
type Pool = proxy.Pool

// PoolObserver is an Observer that also follows the upstream session
// pool; the Server reports to its Observer when it implements it.
type PoolObserver = proxy.PoolObserver

// resetTimeout bounds the reset of a session going back to the pool, and
// the reading of its role when it is new.
const resetTimeout = 5 * time.Second

// poolKey is the key of the upstream session this login would open with
// password: every field of the upstream handshake response but the
// authentication data, which the password stands for (as a hash).
func (l *login) poolKey(password string) string {
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, l.caps)
	b = binary.LittleEndian.AppendUint32(b, l.resp.maxPacket)
	b = append(b, l.resp.charset)
	for _, s := range []string{l.resp.user, l.resp.database, string(l.upstreamAttrs())} {
		b = appendLenenc(b, uint64(len(s)))
		b = append(b, s...)
	}
	sum := sha256.Sum256([]byte(password))
	return string(append(b, sum[:]...))
}

// upstreamSession is an upstream connection that may serve one IAM client
// after another.
type upstreamSession struct {
	proxy.Pooled
	id uint32 // the upstream's connection id
	ok []byte // the OK packet that ended its login

	// The active role after the login (CURRENT_ROLE(), nil for NULL),
	// read once when the session is new; roleKnown false when the
	// upstream has no CURRENT_ROLE() (MySQL 5.7).
	read      bool
	role      *string
	roleKnown bool
}

// upstreamPool holds the idle upstream sessions of one listener.
type upstreamPool = proxy.UpstreamPool[*upstreamSession]

// closeUpstream ends an upstream session politely: COM_QUIT, then close,
// so that the server counts no aborted connection.
func closeUpstream(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	c.Write([]byte{1, 0, 0, 0, comQuit})
	c.Close()
}

// readRole reads the active role of a new session (see upstreamSession).
// It runs right after the client was told it is in, before the relay
// starts: the client's first command waits meanwhile.
func readRole(c net.Conn, caps uint64, s *upstreamSession) error {
	c.SetDeadline(time.Now().Add(resetTimeout))
	defer c.SetDeadline(time.Time{})
	s.read = true
	if err := writeCommand(c, []byte("\x03SELECT CURRENT_ROLE()")); err != nil {
		return err
	}
	row, err := readRow(&packetConn{rw: c, seq: 1}, caps, 1)
	var me *mysqlError
	if errors.As(err, &me) && (me.code == erSPDoesNotExist || me.code == erParseError) {
		return nil // no roles on this server: no CURRENT_ROLE()
	}
	if err != nil {
		return err
	}
	s.role, s.roleKnown = row[0], true
	return nil
}

// resetUpstream resets a session its client left idle (see the comment
// at the top) and checks that it is back in the state of its login.
func resetUpstream(c net.Conn, caps uint64, database string, s *upstreamSession) error {
	c.SetDeadline(time.Now().Add(resetTimeout))
	check, cols := "SELECT DATABASE()", 1
	if s.roleKnown {
		check, cols = "SELECT DATABASE(), CURRENT_ROLE()", 2
	}
	// One write for the three commands: the server answers them in order.
	var b []byte
	b = appendCommand(b, []byte{comResetConnection})
	if database != "" {
		b = appendCommand(b, append([]byte{comInitDB}, database...))
	}
	b = appendCommand(b, append([]byte{comQuery}, check...))
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("sending COM_RESET_CONNECTION: %w", err)
	}
	for _, what := range []string{"COM_RESET_CONNECTION", "COM_INIT_DB"} {
		if what == "COM_INIT_DB" && database == "" {
			continue
		}
		p, err := (&packetConn{rw: c, seq: 1}).read(maxLoginPacket)
		if err != nil {
			return fmt.Errorf("reading the answer to %s: %w", what, err)
		}
		if len(p) == 0 || p[0] != pktOK {
			if len(p) > 0 && p[0] == pktERR {
				return fmt.Errorf("%s failed: %w", what, parseError(p))
			}
			return fmt.Errorf("unexpected answer %x to %s", p, what)
		}
	}
	row, err := readRow(&packetConn{rw: c, seq: 1}, caps, cols)
	if err != nil {
		return fmt.Errorf("reading the session's database and role: %w", err)
	}
	if db := row[0]; (db == nil) != (database == "") || db != nil && *db != database {
		return fmt.Errorf("the database is not the login's after COM_INIT_DB")
	}
	if s.roleKnown && !sameValue(row[1], s.role) {
		return errors.New("the client changed the active role (SET ROLE), which COM_RESET_CONNECTION keeps")
	}
	c.SetDeadline(time.Time{})
	return nil
}

func sameValue(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

// appendCommand frames a command packet (sequence number 0).
func appendCommand(b, payload []byte) []byte {
	n := len(payload)
	b = append(b, byte(n), byte(n>>8), byte(n>>16), 0)
	return append(b, payload...)
}

func writeCommand(c net.Conn, payload []byte) error {
	_, err := c.Write(appendCommand(nil, payload))
	return err
}

// readRow reads the answer to a query that returns one row of n columns
// in the text protocol; nil values are NULL. An ERR packet is returned
// as a *mysqlError.
func readRow(pc *packetConn, caps uint64, n int) ([]*string, error) {
	p, err := pc.read(maxLoginPacket)
	if err != nil {
		return nil, err
	}
	if len(p) > 0 && p[0] == pktERR {
		return nil, parseError(p)
	}
	r := &reader{b: p}
	if cols := r.lenenc("column count"); r.err != nil || cols != uint64(n) {
		return nil, fmt.Errorf("%w: %d columns, want %d", errProtocol, cols, n)
	}
	skip := n
	if caps&capOptionalResultsetMetadata != 0 && r.byte1("metadata follows") == 0 {
		skip = 0
	}
	if caps&capDeprecateEOF == 0 {
		skip++ // the EOF after the definitions
	}
	var row []*string
	for i := 0; ; i++ {
		p, err := pc.read(maxLoginPacket)
		if err != nil {
			return nil, err
		}
		switch {
		case i < skip:
		case len(p) > 0 && p[0] == pktERR:
			return nil, parseError(p)
		case len(p) > 0 && p[0] == pktEOF && len(p) < maxPacketPayload:
			if row == nil {
				return nil, fmt.Errorf("%w: no row", errProtocol)
			}
			return row, nil
		case row != nil:
			return nil, fmt.Errorf("%w: more than one row", errProtocol)
		default:
			r := &reader{b: p}
			for range n {
				if len(r.b) > 0 && r.b[0] == 0xfb {
					r.b = r.b[1:]
					row = append(row, nil)
					continue
				}
				v := string(r.lenencBytes("value"))
				row = append(row, &v)
			}
			if r.err != nil {
				return nil, r.err
			}
		}
	}
}
