package pgproxy

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/text/secure/precis"
)

// backendConn is an upstream connection iamdb has logged in on, ready for
// the byte relay: what pgconn's Hijack gives, without pgconn.
type backendConn struct {
	conn      net.Conn
	pid       uint32
	secretKey []byte
	params    map[string]string
	txStatus  byte
	// auth is how the upstream authenticated iamdb: trust, password, md5,
	// SCRAM-SHA-256 or SCRAM-SHA-256-PLUS (for logs and tests).
	auth string
	// pending holds whole messages the server sent after ReadyForQuery and
	// that were read along with it; they go to the client first.
	pending []byte
	// curve is the TLS key exchange of the connection (0 without TLS).
	curve tls.CurveID
}

// backendLogin is the frontend side of a PostgreSQL login to the upstream.
//
// iamdb logs in to the upstream for every IAM session, so this is the login
// path's heaviest part. It does what pgconn.Connect does (TLS by
// SSLRequest, startup, cleartext / md5 / SCRAM-SHA-256[-PLUS]
// authentication) with one difference that matters: SCRAM's PBKDF2 (4096
// HMACs by default) is computed once per password, salt and iteration count
// and then taken from scramCache, as PgBouncer does, instead of on every
// login.
type backendLogin struct {
	dial     dialFunc
	address  string
	tls      *tls.Config // nil: plain TCP
	user     string
	database string
	password string
	params   map[string]string // startup parameters besides user and database
	cache    *scramCache
}

// upstreamAuthError is a refusal the upstream sent (ErrorResponse): relayed
// to the client as it is.
type upstreamAuthError struct{ pg *pgconn.PgError }

func (e *upstreamAuthError) Error() string { return e.pg.Error() }

func (b *backendLogin) run(ctx context.Context) (*backendConn, error) {
	conn, err := b.dial(ctx, "tcp", b.address)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", b.address, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Cancellation (shutdown, the client going away) interrupts a blocked
	// read or write at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	bc, err := b.login(conn)
	stop()
	if err != nil {
		conn.Close()
		if ctx.Err() != nil && !isUpstreamRefusal(err) {
			return nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return bc, nil
}

func isUpstreamRefusal(err error) bool {
	var ue *upstreamAuthError
	return errors.As(err, &ue)
}

func (b *backendLogin) login(conn net.Conn) (*backendConn, error) {
	var tlsConn *tls.Conn
	if b.tls != nil {
		var req [8]byte
		binary.BigEndian.PutUint32(req[0:4], 8)
		binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
		if _, err := conn.Write(req[:]); err != nil {
			return nil, fmt.Errorf("asking for TLS: %w", err)
		}
		var answer [1]byte
		if _, err := io.ReadFull(conn, answer[:]); err != nil {
			return nil, fmt.Errorf("asking for TLS: %w", err)
		}
		if answer[0] != 'S' {
			return nil, errors.New("the upstream does not accept TLS connections (upstream.tls is set)")
		}
		tlsConn = tls.Client(conn, b.tls)
		if err := tlsConn.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake with the upstream: %w", err)
		}
		conn = tlsConn
	}

	fe := pgproto3.NewFrontend(conn, conn)
	params := make(map[string]string, len(b.params)+2)
	for k, v := range b.params {
		params[k] = v
	}
	params["user"] = b.user
	if b.database != "" {
		params["database"] = b.database
	}
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params})
	if err := fe.Flush(); err != nil {
		return nil, fmt.Errorf("sending the startup message: %w", err)
	}

	bc := &backendConn{conn: conn, params: map[string]string{}, auth: "trust"}
	if tlsConn != nil {
		bc.curve = tlsConn.ConnectionState().CurveID
	}
	var sc *scramConversation
	for {
		msg, err := fe.Receive()
		if err != nil {
			return nil, fmt.Errorf("reading the upstream's reply: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.AuthenticationOk:
		case *pgproto3.AuthenticationCleartextPassword:
			bc.auth = "password"
			fe.Send(&pgproto3.PasswordMessage{Password: b.password})
		case *pgproto3.AuthenticationMD5Password:
			bc.auth = "md5"
			fe.Send(&pgproto3.PasswordMessage{Password: md5Password(b.user, b.password, m.Salt)})
		case *pgproto3.AuthenticationSASL:
			if sc, err = b.startSCRAM(m.AuthMechanisms, tlsConn); err != nil {
				return nil, err
			}
			bc.auth = sc.mechanism
			fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: sc.mechanism, Data: sc.clientFirst()})
		case *pgproto3.AuthenticationSASLContinue:
			if sc == nil {
				return nil, errors.New("the upstream continued a SASL exchange that was never started")
			}
			final, err := sc.clientFinal(m.Data)
			if err != nil {
				return nil, err
			}
			fe.Send(&pgproto3.SASLResponse{Data: final})
		case *pgproto3.AuthenticationSASLFinal:
			if sc == nil {
				return nil, errors.New("the upstream finished a SASL exchange that was never started")
			}
			if err := sc.verifyServer(m.Data); err != nil {
				return nil, err
			}
			continue
		case *pgproto3.ParameterStatus:
			bc.params[m.Name] = m.Value
			continue
		case *pgproto3.BackendKeyData:
			bc.pid, bc.secretKey = m.ProcessID, slices.Clone(m.SecretKey)
			continue
		case *pgproto3.NoticeResponse:
			continue
		case *pgproto3.ErrorResponse:
			return nil, &upstreamAuthError{pgconn.ErrorResponseToPgError(m)}
		case *pgproto3.ReadyForQuery:
			bc.txStatus = m.TxStatus
			for fe.ReadBufferLen() > 0 {
				more, err := fe.Receive()
				if err != nil {
					return nil, fmt.Errorf("reading after ReadyForQuery: %w", err)
				}
				if bc.pending, err = more.Encode(bc.pending); err != nil {
					return nil, err
				}
			}
			return bc, nil
		default:
			return nil, fmt.Errorf("unexpected %T from the upstream during login", msg)
		}
		if err := fe.Flush(); err != nil {
			return nil, fmt.Errorf("answering the upstream's authentication request: %w", err)
		}
	}
}

func md5Password(user, password string, salt [4]byte) string {
	inner := md5.Sum([]byte(password + user))
	h := hex.EncodeToString(inner[:])
	outer := md5.Sum(append([]byte(h), salt[:]...))
	return "md5" + hex.EncodeToString(outer[:])
}

// sslRequestCode is the SSLRequest magic number.
const sslRequestCode = 80877103

// scramConversation is one SCRAM-SHA-256 exchange (RFC 5802, RFC 7677).
type scramConversation struct {
	mechanism   string
	gs2Header   string // "n,,", "y,," or "p=tls-server-end-point,,"
	cbindData   []byte // the server certificate's hash for -PLUS
	clientNonce string
	password    string
	cache       *scramCache

	clientFirstBare string
	authMessage     string
	serverKey       []byte
}

func (b *backendLogin) startSCRAM(mechanisms []string, tlsConn *tls.Conn) (*scramConversation, error) {
	var nonce [18]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	sc := &scramConversation{clientNonce: base64.RawStdEncoding.EncodeToString(nonce[:]),
		password: normalizePassword(b.password), cache: b.cache}
	switch {
	case tlsConn != nil && slices.Contains(mechanisms, "SCRAM-SHA-256-PLUS"):
		cb, err := serverEndPoint(tlsConn)
		if err != nil {
			return nil, err
		}
		sc.mechanism, sc.gs2Header, sc.cbindData = "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,", cb
	case slices.Contains(mechanisms, "SCRAM-SHA-256"):
		sc.mechanism, sc.gs2Header = "SCRAM-SHA-256", "n,,"
		if tlsConn != nil {
			// On TLS without -PLUS on offer: say we could bind, so a
			// server that did offer it would detect a stripped offer.
			sc.gs2Header = "y,,"
		}
	default:
		return nil, fmt.Errorf("the upstream offers SASL mechanisms %v; iamdb speaks SCRAM-SHA-256", mechanisms)
	}
	return sc, nil
}

func (sc *scramConversation) clientFirst() []byte {
	sc.clientFirstBare = "n=,r=" + sc.clientNonce
	return []byte(sc.gs2Header + sc.clientFirstBare)
}

func (sc *scramConversation) clientFinal(serverFirst []byte) ([]byte, error) {
	var nonce, saltB64, iterText string
	for _, attr := range strings.Split(string(serverFirst), ",") {
		k, v, ok := strings.Cut(attr, "=")
		if !ok {
			continue
		}
		switch k {
		case "r":
			nonce = v
		case "s":
			saltB64 = v
		case "i":
			iterText = v
		}
	}
	if !strings.HasPrefix(nonce, sc.clientNonce) || len(nonce) == len(sc.clientNonce) {
		return nil, errors.New("SCRAM: the upstream's nonce does not extend iamdb's")
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil || len(salt) == 0 {
		return nil, errors.New("SCRAM: the upstream sent an invalid salt")
	}
	iter, err := strconv.Atoi(iterText)
	if err != nil || iter < 1 || iter > 10_000_000 {
		return nil, errors.New("SCRAM: the upstream sent an invalid iteration count")
	}
	keys, err := sc.cache.keys(sc.password, salt, iter)
	if err != nil {
		return nil, err
	}
	channel := base64.StdEncoding.EncodeToString(append([]byte(sc.gs2Header), sc.cbindData...))
	withoutProof := "c=" + channel + ",r=" + nonce
	sc.authMessage = sc.clientFirstBare + "," + string(serverFirst) + "," + withoutProof
	storedKey := sha256.Sum256(keys.clientKey[:])
	signature := hmacSum(storedKey[:], sc.authMessage)
	proof := make([]byte, len(signature))
	subtle.XORBytes(proof, keys.clientKey[:], signature)
	sc.serverKey = keys.serverKey[:]
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

func (sc *scramConversation) verifyServer(serverFinal []byte) error {
	v, ok := strings.CutPrefix(string(serverFinal), "v=")
	if !ok {
		return fmt.Errorf("SCRAM: the upstream's final message is not a verifier")
	}
	got, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return errors.New("SCRAM: the upstream's verifier is not base64")
	}
	if !hmac.Equal(got, hmacSum(sc.serverKey, sc.authMessage)) {
		return errors.New("SCRAM: the upstream did not prove it knows the password (server signature mismatch)")
	}
	return nil
}

func hmacSum(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// normalizePassword applies SASLprep as PostgreSQL and pgx do: ASCII
// passwords are unchanged; others are normalised when they can be and used
// raw otherwise (PostgreSQL accepts passwords SASLprep rejects).
func normalizePassword(p string) string {
	for i := 0; i < len(p); i++ {
		if p[i] >= 0x80 {
			if n, err := precis.OpaqueString.String(p); err == nil {
				return n
			}
			return p
		}
	}
	return p
}

// serverEndPoint is the tls-server-end-point channel binding data: the
// server certificate's hash with its signature's hash function (SHA-256
// for MD5 and SHA-1), RFC 5929 section 4.1.
func serverEndPoint(c *tls.Conn) ([]byte, error) {
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("SCRAM channel binding: the upstream presented no certificate")
	}
	cert := certs[0]
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil, fmt.Errorf("SCRAM channel binding is undefined for certificate signature algorithm %v", cert.SignatureAlgorithm)
	}
	h.Write(cert.Raw)
	return h.Sum(nil), nil
}

// scramCache keeps SCRAM's ClientKey and ServerKey per password, salt and
// iteration count, so PBKDF2 runs once per password rather than per login.
// Keys are derived from the password and are as sensitive: they live only
// in this process's memory, indexed by a hash of the password, and the
// cache is bounded.
type scramCache struct {
	mu      sync.Mutex
	max     int
	entries map[scramCacheKey]scramKeys
}

type scramCacheKey struct {
	password [sha256.Size]byte
	salt     string
	iter     int
}

type scramKeys struct{ clientKey, serverKey [sha256.Size]byte }

func newSCRAMCache(max int) *scramCache {
	return &scramCache{max: max, entries: map[scramCacheKey]scramKeys{}}
}

func (c *scramCache) keys(password string, salt []byte, iter int) (scramKeys, error) {
	k := scramCacheKey{sha256.Sum256([]byte(password)), string(salt), iter}
	if c != nil {
		c.mu.Lock()
		v, ok := c.entries[k]
		c.mu.Unlock()
		if ok {
			return v, nil
		}
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		return scramKeys{}, fmt.Errorf("SCRAM: deriving the salted password: %w", err)
	}
	var v scramKeys
	copy(v.clientKey[:], hmacSum(salted, "Client Key"))
	copy(v.serverKey[:], hmacSum(salted, "Server Key"))
	if c != nil {
		c.mu.Lock()
		if len(c.entries) >= c.max {
			clear(c.entries) // passwords rotate rarely; refilling costs one PBKDF2 each
		}
		c.entries[k] = v
		c.mu.Unlock()
	}
	return v, nil
}
