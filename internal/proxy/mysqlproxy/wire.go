package mysqlproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Every read during the login is exact (io.ReadFull of a 4-byte header,
// then the payload), never buffered: no plaintext read ahead can leak past
// the switch to TLS, and nothing sits in a buffer when the session turns
// into a raw byte relay.

const (
	// maxLoginPacket bounds packets exchanged during a login: a token is at
	// most 16 KiB, handshake responses with connection attributes, RSA
	// public keys and error messages are far smaller.
	maxLoginPacket = 64 << 10
	// maxPacketPayload is the largest payload of one physical packet; a
	// payload of exactly this size is continued in the next packet.
	maxPacketPayload = 1<<24 - 1
)

var errProtocol = errors.New("protocol violation")

// Capability flags (CLIENT_*), MySQL's in the low 32 bits and MariaDB's
// extended ones shifted into the high 32 bits, so one uint64 carries both.
// https://dev.mysql.com/doc/dev/mysql-server/latest/group__group__cs__capabilities__flags.html
// https://mariadb.com/kb/en/connection/#capabilities
const (
	capMySQL                     uint64 = 1 << 0 // CLIENT_LONG_PASSWORD; unset by MariaDB ≥ 10.2 servers
	capFoundRows                 uint64 = 1 << 1
	capLongFlag                  uint64 = 1 << 2
	capConnectWithDB             uint64 = 1 << 3
	capCompress                  uint64 = 1 << 5
	capLocalFiles                uint64 = 1 << 7
	capProtocol41                uint64 = 1 << 9
	capInteractive               uint64 = 1 << 10
	capSSL                       uint64 = 1 << 11
	capTransactions              uint64 = 1 << 13
	capSecureConnection          uint64 = 1 << 15
	capMultiStatements           uint64 = 1 << 16
	capMultiResults              uint64 = 1 << 17
	capPSMultiResults            uint64 = 1 << 18
	capPluginAuth                uint64 = 1 << 19
	capConnectAttrs              uint64 = 1 << 20
	capPluginAuthLenencData      uint64 = 1 << 21
	capCanHandleExpiredPasswds   uint64 = 1 << 22
	capSessionTrack              uint64 = 1 << 23
	capDeprecateEOF              uint64 = 1 << 24
	capOptionalResultsetMetadata uint64 = 1 << 25
	capZstdCompression           uint64 = 1 << 26
	capQueryAttributes           uint64 = 1 << 27
	capSSLVerifyServerCert       uint64 = 1 << 30
	capRememberOptions           uint64 = 1 << 31

	// MariaDB's extended capabilities start at bit 32; they pass through
	// as the upstream offers them (progress reports, bulk operations,
	// extended and cached metadata …).
	capMariaDBStmtBulk      uint64 = 1 << 34
	capMariaDBCacheMetadata uint64 = 1 << 36
)

// handshakeOnlyCaps only shape the login itself (TLS, how the user,
// database, authentication data and attributes are encoded, whether
// MariaDB's extended flags are present). iamdb chooses them per leg; every
// other flag changes how commands and results are framed or behave and
// must be the same on both legs for a byte relay to be correct.
const handshakeOnlyCaps = capMySQL | capConnectWithDB | capSSL | capSecureConnection | capPluginAuth |
	capConnectAttrs | capPluginAuthLenencData | capSSLVerifyServerCert | capRememberOptions

// neverOffered are flags iamdb does not offer clients: compression would
// need iamdb to speak the compressed protocol in its own OK packet.
const neverOffered = capCompress | capZstdCompression

// Packet headers that open a login reply or an answer.
const (
	pktOK          = 0x00
	pktAuthMore    = 0x01
	pktAuthSwitch  = 0xfe
	pktEOF         = 0xfe
	pktLocalInfile = 0xfb
	pktERR         = 0xff
	sslRequestSize = 32
)

// Commands (the first byte of a command packet).
// https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_command_phase.html
const (
	comQuit             = 0x01
	comInitDB           = 0x02
	comQuery            = 0x03
	comFieldList        = 0x04
	comProcessInfo      = 0x0a
	comChangeUser       = 0x11
	comBinlogDump       = 0x12
	comStmtPrepare      = 0x16
	comStmtExecute      = 0x17
	comStmtSendLongData = 0x18
	comStmtClose        = 0x19
	comStmtReset        = 0x1a
	comSetOption        = 0x1b
	comStmtFetch        = 0x1c
	comBinlogDumpGTID   = 0x1e
	comResetConnection  = 0x1f
	comStmtBulkExecute  = 0xfa // MariaDB
)

// answered reports whether the server answers cmd: COM_QUIT,
// COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA get no answer.
func answered(cmd byte) bool {
	return cmd != comQuit && cmd != comStmtClose && cmd != comStmtSendLongData
}

// Authentication plugins.
const (
	pluginNative       = "mysql_native_password"
	pluginCachingSHA2  = "caching_sha2_password"
	pluginClear        = "mysql_clear_password"
	pluginSHA256       = "sha256_password"
	pluginEd25519      = "client_ed25519"
	scrambleLen        = 20
	cachingFastAuthOK  = 3
	cachingPerformFull = 4
	cachingPubKeyReq   = 2
)

// packetConn reads and writes whole packets on one leg of a login and
// keeps that leg's sequence number: each packet carries the number after
// the previous one, whichever side sent it.
type packetConn struct {
	rw  io.ReadWriter
	seq byte
}

// read reads one logical packet (joining continuations) of at most max
// bytes and sets the next sequence number.
func (p *packetConn) read(max int) ([]byte, error) {
	var out []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(p.rw, hdr[:]); err != nil {
			if out != nil {
				return nil, unexpectedEOF(err)
			}
			return nil, err
		}
		n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		if len(out)+n > max {
			return nil, fmt.Errorf("%w: packet of %d bytes during the login (at most %d)", errProtocol, len(out)+n, max)
		}
		if hdr[3] != p.seq {
			return nil, fmt.Errorf("%w: packet sequence number %d, want %d", errProtocol, hdr[3], p.seq)
		}
		p.seq++
		start := len(out)
		out = append(out, make([]byte, n)...)
		if _, err := io.ReadFull(p.rw, out[start:]); err != nil {
			return nil, unexpectedEOF(err)
		}
		if out == nil {
			out = []byte{}
		}
		if n < maxPacketPayload {
			return out, nil
		}
	}
}

// write sends payload as one packet (login packets are far below the
// continuation size) with the leg's next sequence number.
func (p *packetConn) write(payload []byte) error {
	if len(payload) >= maxPacketPayload {
		return fmt.Errorf("login packet of %d bytes", len(payload))
	}
	b := make([]byte, 4, 4+len(payload))
	b[0], b[1], b[2], b[3] = byte(len(payload)), byte(len(payload)>>8), byte(len(payload)>>16), p.seq
	p.seq++
	_, err := p.rw.Write(append(b, payload...))
	return err
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// mysqlError is an ERR packet: what a login failure tells the client.
type mysqlError struct {
	code     uint16
	sqlState string
	message  string
}

func (e *mysqlError) Error() string {
	return fmt.Sprintf("ERROR %d (%s): %s", e.code, e.sqlState, e.message)
}

func (e *mysqlError) encode() []byte {
	b := []byte{pktERR, byte(e.code), byte(e.code >> 8), '#'}
	state := e.sqlState
	if len(state) != 5 {
		state = "HY000"
	}
	b = append(b, state...)
	return append(b, e.message...)
}

// parseError decodes an ERR packet (with or without the SQLSTATE marker:
// a server refusing a connection before its greeting sends none).
func parseError(p []byte) *mysqlError {
	e := &mysqlError{code: 1105, sqlState: "HY000"}
	if len(p) < 3 || p[0] != pktERR {
		e.message = "malformed error packet"
		return e
	}
	e.code = binary.LittleEndian.Uint16(p[1:3])
	rest := p[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.sqlState, rest = string(rest[1:6]), rest[6:]
	}
	e.message = string(rest)
	return e
}

// Errors a login may end with (MySQL/MariaDB error codes).
const (
	erAccessDenied    = 1045 // ER_ACCESS_DENIED_ERROR, SQLSTATE 28000
	erHandshake       = 1043 // ER_HANDSHAKE_ERROR, SQLSTATE 08S01
	erUnknown         = 1105 // ER_UNKNOWN_ERROR
	erNotSupported    = 1235 // ER_NOT_SUPPORTED_YET, SQLSTATE 42000
	erSPDoesNotExist  = 1305 // ER_SP_DOES_NOT_EXIST: FUNCTION CURRENT_ROLE does not exist
	erParseError      = 1064 // ER_PARSE_ERROR
	crConnectionError = 2003 // CR_CONN_HOST_ERROR, what clients show for an unreachable server
)

func accessDenied(user, host string) *mysqlError {
	return &mysqlError{code: erAccessDenied, sqlState: "28000",
		message: fmt.Sprintf("Access denied for user '%s'@'%s' (using password: YES)", user, host)}
}

// Length-encoded integers and strings.
// https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_integers.html

func appendLenenc(b []byte, n uint64) []byte {
	switch {
	case n < 251:
		return append(b, byte(n))
	case n < 1<<16:
		return append(b, 0xfc, byte(n), byte(n>>8))
	case n < 1<<24:
		return append(b, 0xfd, byte(n), byte(n>>8), byte(n>>16))
	default:
		return binary.LittleEndian.AppendUint64(append(b, 0xfe), n)
	}
}

// reader decodes the fields of one packet; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated %s", errProtocol, what)
	}
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil || n < 0 || len(r.b) < n {
		r.fail(what)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte1(what string) byte {
	b := r.bytes(1, what)
	if b == nil {
		return 0
	}
	return b[0]
}

func (r *reader) uint16(what string) uint16 {
	b := r.bytes(2, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *reader) uint32(what string) uint32 {
	b := r.bytes(4, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// cstring reads a NUL-terminated string; at the end of the packet a
// missing terminator is tolerated when lenient (some servers omit the last
// one).
func (r *reader) cstring(what string, lenient bool) string {
	if r.err != nil {
		return ""
	}
	i := bytes.IndexByte(r.b, 0)
	if i < 0 {
		if !lenient {
			r.fail(what)
			return ""
		}
		s := string(r.b)
		r.b = nil
		return s
	}
	s := string(r.b[:i])
	r.b = r.b[i+1:]
	return s
}

func (r *reader) lenenc(what string) uint64 {
	first := r.byte1(what)
	switch first {
	case 0xfc:
		return uint64(r.uint16(what))
	case 0xfd:
		b := r.bytes(3, what)
		if b == nil {
			return 0
		}
		return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16
	case 0xfe:
		b := r.bytes(8, what)
		if b == nil {
			return 0
		}
		return binary.LittleEndian.Uint64(b)
	case 0xfb, 0xff:
		r.fail(what)
		return 0
	}
	return uint64(first)
}

func (r *reader) lenencBytes(what string) []byte {
	n := r.lenenc(what)
	if n > uint64(len(r.b)) {
		r.fail(what)
		return nil
	}
	return r.bytes(int(n), what)
}
