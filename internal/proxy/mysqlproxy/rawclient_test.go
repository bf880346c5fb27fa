package mysqlproxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// rawClient speaks the protocol by hand, for what no ordinary client
// exposes: the exact packets of a refused login, COM_CHANGE_USER and
// COM_RESET_CONNECTION.
type rawClient struct {
	t     testing.TB
	conn  net.Conn
	pc    *packetConn
	greet *greeting
}

func (h *harness) rawDial() *rawClient {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	rc := &rawClient{t: h.t, conn: c, pc: &packetConn{rw: c}}
	p, err := rc.pc.read(maxLoginPacket)
	if err != nil {
		h.t.Fatalf("reading the greeting: %v", err)
	}
	if rc.greet, err = parseGreeting(p); err != nil {
		h.t.Fatalf("greeting: %v", err)
	}
	return rc
}

const rawClientCaps = capLongFlag | capProtocol41 | capSecureConnection | capPluginAuth | capPluginAuthLenencData |
	capTransactions | capMultiResults | capConnectWithDB

// rawLogin logs in over TLS as user with the token (or password) as a
// clear-text password, answering the proxy's auth switch.
func (h *harness) rawLogin(user, password string) (*rawClient, error) {
	h.t.Helper()
	return h.rawLoginTo(h.database, user, password)
}

// rawLoginTo is rawLogin with the given database ("": none).
func (h *harness) rawLoginTo(database, user, password string) (*rawClient, error) {
	h.t.Helper()
	rc := h.rawDial()
	caps := rawClientCaps | capSSL | capMySQL
	if database == "" {
		caps &^= capConnectWithDB
	}
	resp := &handshakeResponse{caps: caps, maxPacket: 1 << 24, charset: 45,
		user: user, database: database, plugin: pluginNative}
	resp.authData = scrambleNative(rc.greet.scramble, password)
	if err := rc.pc.write(resp.encode(true)); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(h.caFile)
	if err != nil {
		h.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(rc.conn, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	rc.conn, rc.pc.rw = tc, tc
	if err := rc.pc.write(resp.encode(false)); err != nil {
		return nil, err
	}
	for {
		p, err := rc.pc.read(maxLoginPacket)
		if err != nil {
			return nil, err
		}
		switch p[0] {
		case pktOK:
			return rc, nil
		case pktERR:
			return nil, parseError(p)
		case pktAuthSwitch:
			plugin, data, _ := parseAuthSwitch(p)
			var answer []byte
			switch plugin {
			case pluginClear:
				answer = append([]byte(password), 0)
			case pluginNative:
				answer = scrambleNative(withoutNUL(data), password)
			default:
				return nil, fmt.Errorf("auth switch to %s", plugin)
			}
			if err := rc.pc.write(answer); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unexpected packet %x", p)
		}
	}
}

// command sends a command and returns the first packet of the answer.
func (rc *rawClient) command(payload []byte) ([]byte, error) {
	rc.pc.seq = 0
	if err := rc.pc.write(payload); err != nil {
		return nil, err
	}
	return rc.pc.read(1 << 24)
}

// query runs a statement that returns one row of one column (or none) and
// returns that value ("NULL" for NULL).
func (rc *rawClient) query(q string) (string, error) {
	p, err := rc.command(append([]byte{0x03}, q...))
	if err != nil {
		return "", err
	}
	switch p[0] {
	case pktERR:
		return "", parseError(p)
	case pktOK:
		return "", nil
	}
	r := &reader{b: p}
	if n := r.lenenc("column count"); n != 1 {
		return "", fmt.Errorf("%d columns", n)
	}
	if _, err := rc.pc.read(1 << 24); err != nil { // column definition
		return "", err
	}
	if _, err := rc.pc.read(1 << 24); err != nil { // EOF (no CLIENT_DEPRECATE_EOF)
		return "", err
	}
	value := ""
	for {
		p, err := rc.pc.read(1 << 24)
		if err != nil {
			return "", err
		}
		if p[0] == pktAuthSwitch && len(p) < 9 { // EOF
			return value, nil
		}
		if p[0] == pktERR {
			return "", parseError(p)
		}
		if p[0] == 0xfb {
			value = "NULL"
			continue
		}
		r := &reader{b: p}
		value = string(r.lenencBytes("value"))
		if r.err != nil {
			return "", r.err
		}
	}
}

func mysqlCode(err error) uint16 {
	var e *mysqlError
	if errors.As(err, &e) {
		return e.code
	}
	return 0
}
