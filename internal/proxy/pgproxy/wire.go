package pgproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Every read during the login is exact (io.ReadFull of a length-prefixed
// frame), never buffered: no plaintext read ahead can leak past the switch
// to TLS, and nothing sits in a buffer when the session turns into a raw
// byte relay. A login is a handful of messages, so the extra syscalls cost
// nothing that matters.

// Startup packet codes (the int32 after the length).
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
)

const (
	// maxStartupLen is PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
	maxStartupLen = 10_000
	// maxAuthMessageLen bounds messages exchanged during a login: a token
	// is at most 16 KiB, SASL messages and errors are far smaller.
	maxAuthMessageLen = 64 << 10
	// tlsRecordType starts a TLS ClientHello: a client using direct TLS
	// (PostgreSQL 17 sslnegotiation=direct) sends it instead of a startup
	// packet. No valid startup length begins with this byte.
	tlsRecordType = 0x16
)

var errProtocol = errors.New("protocol violation")

// startupPacket is one length-prefixed packet before the regular message
// flow: StartupMessage, SSLRequest, GSSENCRequest or CancelRequest.
type startupPacket struct {
	raw  []byte // the whole packet, length included, as received
	code uint32
}

func (p startupPacket) body() []byte { return p.raw[4:] }

// readStartupPacket reads one startup packet. header is the first four
// bytes when the caller already consumed them (direct TLS detection).
func readStartupPacket(r io.Reader, header []byte) (startupPacket, error) {
	var hdr [4]byte
	if header != nil {
		copy(hdr[:], header)
	} else if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return startupPacket{}, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > maxStartupLen {
		return startupPacket{}, fmt.Errorf("%w: startup packet length %d", errProtocol, n)
	}
	raw := make([]byte, n)
	copy(raw, hdr[:])
	if _, err := io.ReadFull(r, raw[4:]); err != nil {
		return startupPacket{}, unexpectedEOF(err)
	}
	return startupPacket{raw: raw, code: binary.BigEndian.Uint32(raw[4:8])}, nil
}

// readMessage reads one regular message: type byte, int32 length, body.
func readMessage(r io.Reader, maxLen int) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[1:])))
	if n < 4 || n-4 > maxLen {
		return 0, nil, fmt.Errorf("%w: message %q of length %d", errProtocol, hdr[0], n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return hdr[0], body, nil
}

// frame re-assembles a message read by readMessage, for forwarding.
func frame(typ byte, body []byte) []byte {
	b := make([]byte, 5, 5+len(body))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseStartup decodes a StartupMessage. Protocol 3.x of any minor version
// is accepted as PostgreSQL does (the caller negotiates it down); other
// major versions are an error.
func parseStartup(p startupPacket) (version uint32, params map[string]string, err error) {
	body := p.body()
	version = p.code
	if version>>16 != 3 {
		return version, nil, fmt.Errorf("%w: unsupported frontend protocol %d.%d", errProtocol, version>>16, version&0xffff)
	}
	// pgproto3 only decodes 3.0 and 3.2; the parameters are the same
	// for every 3.x, so decode a copy labelled 3.0.
	b := make([]byte, len(body))
	copy(b, body)
	binary.BigEndian.PutUint32(b, pgproto3.ProtocolVersion30)
	var m pgproto3.StartupMessage
	if err := m.Decode(b); err != nil {
		return version, nil, fmt.Errorf("%w: %v", errProtocol, err)
	}
	return version, m.Parameters, nil
}

// send encodes msgs and writes them in one write.
func send(w io.Writer, msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = m.Encode(buf); err != nil {
			return fmt.Errorf("encode %T: %w", m, err)
		}
	}
	_, err := w.Write(buf)
	return err
}

// fatal is an ErrorResponse with severity FATAL, the only kind a login
// failure sends before closing the connection.
func fatal(code, message string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: message}
}

// prefixConn replays bytes already read before reading from the conn, so a
// direct-TLS ClientHello whose first bytes were consumed to recognise it
// still reaches the TLS server whole.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
