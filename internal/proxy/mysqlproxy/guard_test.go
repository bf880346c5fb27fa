package mysqlproxy

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// packet frames payload with seq, for the guard tests.
func packet(seq byte, payload []byte) []byte {
	n := len(payload)
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, payload...)
}

// TestCommandGuard: COM_CHANGE_USER is caught at a command boundary and
// only there; everything else is forwarded byte for byte.
func TestCommandGuard(t *testing.T) {
	changeUser := append([]byte{comChangeUser}, "root\x00"...)
	// A LOAD DATA LOCAL transfer long enough that the client's sequence
	// numbers wrap: the packet with sequence 0 inside it starts with 0x11.
	var file []byte
	for seq := 2; seq < 2+300; seq++ {
		file = append(file, packet(byte(seq), changeUser)...)
	}
	file = append(file, packet(byte((2+300)%256), nil)...)
	big := make([]byte, maxPacketPayload)
	for _, tc := range []struct {
		name    string
		stream  []byte
		refused bool
	}{
		{"query", packet(0, []byte("\x03SELECT 1")), false},
		{"change user", append(packet(0, []byte("\x03SELECT 1")), packet(0, changeUser)...), true},
		{"file data with 0x11 at sequence 0", append(append(packet(0, []byte("\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t")), file...),
			packet(0, []byte("\x03SELECT 1"))...), false},
		{"change user after a file", append(append(packet(0, []byte("\x03LOAD DATA")), file...), packet(0, changeUser)...), true},
		{"continuation starting with 0x11", append(packet(0, append([]byte{0x03}, big[1:]...)), packet(1, changeUser)...), false},
		{"change user after a continuation", append(append(packet(0, append([]byte{0x03}, big[1:]...)), packet(1, []byte("x"))...),
			packet(0, changeUser)...), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			n, err := copyClientToUpstream(&out, bytes.NewReader(tc.stream), &clientWalker{})
			if tc.refused {
				if !errors.Is(err, errChangeUser) {
					t.Fatalf("err %v, want errChangeUser", err)
				}
				if !bytes.Equal(out.Bytes(), tc.stream[:len(tc.stream)-len(packet(0, changeUser))]) {
					t.Fatal("forwarded something other than the packets before COM_CHANGE_USER")
				}
				return
			}
			if err != io.EOF {
				t.Fatalf("err %v", err)
			}
			if n != int64(len(tc.stream)) || !bytes.Equal(out.Bytes(), tc.stream) {
				t.Fatalf("forwarded %d of %d bytes, or altered them", n, len(tc.stream))
			}
		})
	}
}

// TestHandshakeRoundTrip: what iamdb encodes, it decodes the same.
func TestHandshakeRoundTrip(t *testing.T) {
	g := &greeting{version: "5.5.5-10.11.19-MariaDB", connectionID: 7, scramble: newScramble(),
		caps: defaultGreeting.caps&^capMySQL | capMariaDBStmtBulk | capSSL, charset: 45, status: 2, plugin: pluginNative}
	got, err := parseGreeting(g.encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.version != g.version || got.connectionID != 7 || !bytes.Equal(got.scramble, g.scramble) || got.caps != g.caps || got.plugin != g.plugin {
		t.Fatalf("greeting %+v, want %+v", got, g)
	}
	h := &handshakeResponse{caps: g.caps | capConnectWithDB | capConnectAttrs | capPluginAuthLenencData, maxPacket: 1 << 24,
		charset: 33, user: "app", authData: []byte("token\x00"), database: "orders", plugin: pluginClear, attrs: []byte("\x04_pid\x0212")}
	hr, err := parseHandshakeResponse(h.encode(false))
	if err != nil {
		t.Fatal(err)
	}
	if hr.caps != h.caps || hr.user != "app" || string(hr.authData) != "token\x00" || hr.database != "orders" || hr.plugin != pluginClear || string(hr.attrs) != string(h.attrs) {
		t.Fatalf("response %+v", hr)
	}
	ssl, err := parseHandshakeResponse(h.encode(true))
	if err != nil || !ssl.sslRequest {
		t.Fatalf("SSL request: %+v %v", ssl, err)
	}
}

// TestScrambles: shapes and edge cases of the plugins' answers; their
// correctness is proven by real logins to MariaDB in the integration tests.
func TestScrambles(t *testing.T) {
	scramble := []byte("12345678901234567890")
	if got := scrambleNative(scramble, ""); got != nil {
		t.Fatalf("empty password: %x", got)
	}
	native := scrambleNative(scramble, "secret")
	sha2 := scrambleSHA2(scramble, "secret")
	if len(native) != 20 || len(sha2) != 32 || bytes.Equal(native, scrambleNative([]byte("09876543210987654321"), "secret")) {
		t.Fatalf("native %x sha2 %x", native, sha2)
	}
	sig, err := signEd25519(scramble, "secret")
	if err != nil || len(sig) != 64 {
		t.Fatalf("ed25519: %x %v", sig, err)
	}
	if _, err := authResponse(pluginClear, scramble, "secret", false); err == nil {
		t.Fatal("clear-text password allowed over a plaintext upstream")
	}
}
