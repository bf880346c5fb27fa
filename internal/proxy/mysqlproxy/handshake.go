package mysqlproxy

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// greeting is the server's Initial Handshake Packet (protocol 10).
// https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_v10.html
// https://mariadb.com/kb/en/connection/#initial-handshake-packet
type greeting struct {
	version      string
	connectionID uint32
	scramble     []byte // auth plugin data, without the trailing NUL
	caps         uint64 // extended MariaDB flags in the high 32 bits
	charset      byte
	status       uint16
	plugin       string
}

func (g *greeting) encode() []byte {
	b := []byte{10}
	b = append(b, g.version...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint32(b, g.connectionID)
	b = append(b, g.scramble[:8]...)
	b = append(b, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.caps))
	b = append(b, g.charset)
	b = binary.LittleEndian.AppendUint16(b, g.status)
	b = binary.LittleEndian.AppendUint16(b, uint16(g.caps>>16))
	b = append(b, byte(len(g.scramble)+1))
	b = append(b, make([]byte, 6)...)
	if g.caps&capMySQL == 0 {
		b = binary.LittleEndian.AppendUint32(b, uint32(g.caps>>32))
	} else {
		b = append(b, 0, 0, 0, 0)
	}
	b = append(b, g.scramble[8:]...)
	b = append(b, 0)
	b = append(b, g.plugin...)
	return append(b, 0)
}

// parseGreeting decodes an upstream's greeting. An ERR packet instead of a
// greeting (too many connections, host blocked …) is returned as such.
func parseGreeting(p []byte) (*greeting, error) {
	if len(p) > 0 && p[0] == pktERR {
		return nil, parseError(p)
	}
	r := &reader{b: p}
	if v := r.byte1("greeting"); r.err == nil && v != 10 {
		return nil, fmt.Errorf("%w: server protocol version %d, want 10", errProtocol, v)
	}
	g := &greeting{}
	g.version = r.cstring("server version", false)
	g.connectionID = r.uint32("connection id")
	g.scramble = append([]byte(nil), r.bytes(8, "scramble")...)
	r.bytes(1, "filler")
	g.caps = uint64(r.uint16("capabilities"))
	if r.err != nil {
		return nil, r.err
	}
	if g.caps&capProtocol41 == 0 {
		return nil, fmt.Errorf("%w: the server does not speak protocol 4.1", errProtocol)
	}
	g.charset = r.byte1("charset")
	g.status = r.uint16("status")
	g.caps |= uint64(r.uint16("capabilities")) << 16
	authLen := int(r.byte1("auth data length"))
	r.bytes(6, "reserved")
	ext := r.uint32("MariaDB capabilities")
	if g.caps&capMySQL == 0 {
		g.caps |= uint64(ext) << 32
	}
	if g.caps&capSecureConnection != 0 {
		n := max(13, authLen-8)
		part := r.bytes(n, "scramble")
		if len(part) > 0 && part[len(part)-1] == 0 {
			part = part[:len(part)-1]
		}
		g.scramble = append(g.scramble, part...)
	}
	if g.caps&capPluginAuth != 0 {
		g.plugin = r.cstring("auth plugin", true)
	}
	if r.err != nil {
		return nil, r.err
	}
	if g.plugin == "" {
		g.plugin = pluginNative
	}
	return g, nil
}

// handshakeResponse is the client's Handshake Response (protocol 4.1), or
// its first 32 bytes when they are an SSL request.
// https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_handshake_response.html
type handshakeResponse struct {
	caps       uint64
	maxPacket  uint32
	charset    byte
	user       string
	authData   []byte
	database   string
	plugin     string
	attrs      []byte // connection attributes, encoded as sent (key/value lenenc strings)
	sslRequest bool   // the 32-byte SSL request, nothing after it
}

// parseHandshakeResponse decodes what a client sends after the greeting.
func parseHandshakeResponse(p []byte) (*handshakeResponse, error) {
	r := &reader{b: p}
	h := &handshakeResponse{}
	h.caps = uint64(r.uint32("capabilities"))
	if r.err != nil {
		return nil, r.err
	}
	if h.caps&capProtocol41 == 0 {
		return nil, fmt.Errorf("%w: the client does not speak protocol 4.1", errProtocol)
	}
	h.maxPacket = r.uint32("max packet size")
	h.charset = r.byte1("charset")
	r.bytes(19, "filler")
	ext := r.uint32("MariaDB capabilities")
	if r.err != nil {
		return nil, r.err
	}
	if h.caps&capMySQL == 0 {
		h.caps |= uint64(ext) << 32
	}
	if len(r.b) == 0 {
		if h.caps&capSSL == 0 {
			return nil, fmt.Errorf("%w: handshake response without a user", errProtocol)
		}
		h.sslRequest = true
		return h, nil
	}
	h.user = r.cstring("user", false)
	switch {
	case h.caps&capPluginAuthLenencData != 0:
		h.authData = r.lenencBytes("auth data")
	case h.caps&capSecureConnection != 0:
		h.authData = r.bytes(int(r.byte1("auth data")), "auth data")
	default:
		h.authData = []byte(r.cstring("auth data", true))
	}
	h.authData = append([]byte(nil), h.authData...)
	if h.caps&capConnectWithDB != 0 && len(r.b) > 0 {
		h.database = r.cstring("database", true)
	}
	if h.caps&capPluginAuth != 0 && len(r.b) > 0 {
		h.plugin = r.cstring("auth plugin", true)
	}
	if h.caps&capConnectAttrs != 0 && len(r.b) > 0 {
		h.attrs = append([]byte(nil), r.lenencBytes("connection attributes")...)
	}
	if r.err != nil {
		return nil, r.err
	}
	return h, nil
}

// encode builds the packet; ssl: only the 32-byte SSL request.
func (h *handshakeResponse) encode(ssl bool) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(h.caps))
	b = binary.LittleEndian.AppendUint32(b, h.maxPacket)
	b = append(b, h.charset)
	b = append(b, make([]byte, 19)...)
	if h.caps&capMySQL == 0 {
		b = binary.LittleEndian.AppendUint32(b, uint32(h.caps>>32))
	} else {
		b = append(b, 0, 0, 0, 0)
	}
	if ssl {
		return b
	}
	b = append(b, h.user...)
	b = append(b, 0)
	if h.caps&capPluginAuthLenencData != 0 {
		b = appendLenenc(b, uint64(len(h.authData)))
	} else {
		b = append(b, byte(len(h.authData)))
	}
	b = append(b, h.authData...)
	if h.caps&capConnectWithDB != 0 {
		b = append(b, h.database...)
		b = append(b, 0)
	}
	b = append(b, h.plugin...)
	b = append(b, 0)
	if h.caps&capConnectAttrs != 0 {
		b = appendLenenc(b, uint64(len(h.attrs)))
		b = append(b, h.attrs...)
	}
	return b
}

// authSwitch is an Auth Switch Request: use plugin with this data.
func authSwitch(plugin string, data []byte) []byte {
	b := append([]byte{pktAuthSwitch}, plugin...)
	b = append(b, 0)
	return append(b, data...)
}

// parseAuthSwitch decodes an upstream's Auth Switch Request; the plugin
// data keeps its trailing NUL, if any, as the client plugins expect it.
func parseAuthSwitch(p []byte) (plugin string, data []byte, err error) {
	r := &reader{b: p[1:]}
	plugin = r.cstring("auth switch", true)
	if r.err != nil {
		return "", nil, r.err
	}
	return plugin, r.b, nil
}

// newScramble is a fresh 20-byte nonce of printable characters: clients
// read the second half as a C string, so it must hold no NUL.
func newScramble() []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
	b := make([]byte, scrambleLen)
	rand.Read(b) // never fails since Go 1.24
	for i := range b {
		b[i] = alphabet[b[i]&63]
	}
	return b
}

// withoutNUL strips the terminating NUL of a clear-text password.
func withoutNUL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == 0 {
		return b[:n-1]
	}
	return b
}
