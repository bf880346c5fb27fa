package pgproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/proxy"
)

// clientConn is one accepted connection as the Server tracks it.
type clientConn = proxy.ClientConn

// login is the state of one connection from accept to a ready session.
type login struct {
	srv      *Server
	st       *settings
	cc       *clientConn
	id       string
	log      *slog.Logger
	start    time.Time
	deadline time.Time

	client   net.Conn // raw, then the TLS connection over it
	tls      bool
	version  uint32
	params   map[string]string
	ip       string // the client's address, without the port
	user     string
	database string
	reported bool

	// Audit: the connection's record, whether the login reached the
	// password step, and whether its accepted connect event was written.
	ac           *audit.Conn
	passwordStep bool
	connected    bool
	connectedAt  time.Time

	// slot is the connection's admission slot, given back when it ends.
	slot func()
}

// session is a login that succeeded: both legs ready for the byte relay.
type session struct {
	upstream net.Conn
	release  func() // forgets the cancel key
	pending  []byte // upstream messages read during login, not yet sent
	// reuse, for IAM logins when the pool is on, lets the upstream
	// session serve later logins after a clean end (pool.go).
	reuse *upstreamSession
}

// failure ends a login: what the client is told (nil: nothing, the
// connection is simply closed) and the result for metrics.
type failure struct {
	result string
	client *pgproto3.ErrorResponse
	reason string // for the operator (audit errorMessage); never sent to the client
}

func (s *Server) serveConn(cc *clientConn) {
	defer cc.Raw.Close()
	st := s.cur.Load()
	defer func() {
		// One broken connection must not take the listener down.
		if r := recover(); r != nil {
			st.log.Error("connection handler panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	s.handle(cc, st)
}

// handle runs the login on cc and then relays the session.
func (s *Server) handle(cc *clientConn, st *settings) {
	l := &login{srv: s, st: st, cc: cc, client: cc.Raw, start: time.Now(), ip: proxy.RemoteIP(cc.Raw)}
	l.id = proxy.SessionID()
	l.log = st.log.With("session", l.id, "remote", cc.Raw.RemoteAddr().String())
	l.deadline = l.start.Add(st.handshakeTimeout)
	ctx, cancel := context.WithDeadline(s.life.Context(), l.deadline)
	defer cancel()
	cc.SetCancel(cancel)
	if err := cc.Raw.SetDeadline(l.deadline); err != nil {
		l.log.Debug("set handshake deadline", "err", err)
		return
	}

	defer l.releaseSlot()
	sess, result := l.run(ctx)
	l.report(result)
	if sess == nil {
		l.client.Close()
		return
	}
	defer sess.release()
	s.runSession(l, sess)
}

// run drives the login. It returns the ready session, or nil after telling
// the client why not; and the result for metrics ("" when the connection
// ended before a startup packet, which is not a login attempt).
func (l *login) run(ctx context.Context) (*session, string) {
	if f := l.screen(ctx); f != nil {
		return nil, l.finish(*f)
	}
	pkt, err := l.negotiate(ctx)
	if errors.Is(err, errNoStartup) {
		l.log.Debug("connection closed before a startup packet")
		return nil, ""
	}
	if err != nil {
		return nil, l.finish(l.classify(ctx, err, "negotiation"))
	}
	if pkt.code == codeCancelRequest {
		l.cancelRequest(ctx, pkt)
		return nil, ResultCancel
	}
	if f := l.startup(pkt); f != nil {
		return nil, l.finish(*f)
	}
	l.auditStarted()
	if f := l.admit(ctx); f != nil {
		return nil, l.finish(*f)
	}
	iam, err := l.st.backend.IsIAMUser(ctx, l.user)
	if err != nil {
		l.log.Error("cannot tell whether the user logs in with IAM", "err", err)
		return nil, l.finish(l.internal(ctx))
	}
	var sess *session
	var f *failure
	if iam {
		sess, f = l.loginIAM(ctx)
	} else {
		sess, f = l.loginPassword(ctx, pkt.raw)
	}
	if f != nil {
		if sess != nil && sess.release != nil {
			sess.release()
		}
		result := l.finish(*f)
		l.auditEnded(*f)
		return nil, result
	}
	if iam {
		return sess, ResultOK
	}
	return sess, ResultPasswordRelayed
}

// report records the login's result once; "" is no login attempt.
func (l *login) report(result string) {
	if l.reported || result == "" {
		return
	}
	l.reported = true
	l.st.obs.LoginFinished(l.st.instance.Name, result, time.Since(l.start))
}

// finish tells the client about a failed login, briefly and without
// waiting on a client that does not read.
func (l *login) finish(f failure) string {
	l.report(f.result)
	if f.client != nil {
		l.client.SetWriteDeadline(time.Now().Add(time.Second))
		if err := send(l.client, f.client); err != nil {
			l.log.Debug("sending the error to the client", "err", err)
		}
	}
	return f.result
}

// classify turns an I/O error during the login into a failure.
func (l *login) classify(ctx context.Context, err error, phase string) failure {
	switch {
	case l.timedOut(ctx, err):
		l.log.Warn("login timed out", "phase", phase, "timeout", l.st.handshakeTimeout)
		return failure{result: ResultHandshakeTimeout, reason: fmt.Sprintf("login did not complete within %s (%s)", l.st.handshakeTimeout, phase), client: fatal("08006",
			fmt.Sprintf("iamdb: instance %s: login did not complete within %s", l.st.instance.Name, l.st.handshakeTimeout))}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err):
		l.log.Debug("client closed the connection during login", "phase", phase)
		return failure{result: ResultClientClosed, reason: "the client closed the connection during " + phase}
	case errors.Is(err, errProtocol):
		l.log.Info("protocol violation during login", "phase", phase, "err", err)
		return failure{result: ResultProtocolError, reason: phase + ": " + err.Error(), client: fatal("08P01", "iamdb: "+err.Error())}
	default:
		l.log.Info("login failed", "phase", phase, "err", err)
		return failure{result: ResultProtocolError, reason: phase + ": " + err.Error()}
	}
}

func (l *login) timedOut(ctx context.Context, err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(ctx.Err(), context.DeadlineExceeded) || !time.Now().Before(l.deadline)
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (l *login) internal(ctx context.Context) failure {
	if l.timedOut(ctx, ctx.Err()) {
		return l.classify(ctx, ctx.Err(), "backend")
	}
	return failure{result: ResultInternalError, reason: "internal error (see the iamdb log)", client: fatal("XX000",
		fmt.Sprintf("iamdb: instance %s: internal error (see the iamdb log, session %s)", l.st.instance.Name, l.id))}
}

// errNoStartup: the client closed the connection without sending a byte.
var errNoStartup = errors.New("closed before a startup packet")

// negotiate reads startup packets until a StartupMessage or a
// CancelRequest, answering SSLRequest (TLS) and GSSENCRequest (refused)
// and accepting direct TLS.
func (l *login) negotiate(ctx context.Context) (startupPacket, error) {
	gssTried := false
	for first := true; ; first = false {
		var hdr [4]byte
		if _, err := io.ReadFull(l.client, hdr[:]); err != nil {
			if first && err == io.EOF {
				// A port probe or health check, not a login attempt.
				return startupPacket{}, errNoStartup
			}
			return startupPacket{}, err
		}
		if first && hdr[0] == tlsRecordType {
			if err := l.startTLS(ctx, &prefixConn{Conn: l.client, prefix: hdr[:]}, true); err != nil {
				return startupPacket{}, err
			}
			continue
		}
		pkt, err := readStartupPacket(l.client, hdr[:])
		if err != nil {
			return startupPacket{}, err
		}
		switch pkt.code {
		case codeSSLRequest:
			if l.tls || len(pkt.raw) != 8 {
				return startupPacket{}, fmt.Errorf("%w: unexpected SSLRequest", errProtocol)
			}
			if _, err := l.client.Write([]byte{'S'}); err != nil {
				return startupPacket{}, err
			}
			if err := l.startTLS(ctx, l.client, false); err != nil {
				return startupPacket{}, err
			}
		case codeGSSENCRequest:
			if l.tls || gssTried || len(pkt.raw) != 8 {
				return startupPacket{}, fmt.Errorf("%w: unexpected GSSENCRequest", errProtocol)
			}
			gssTried = true
			if _, err := l.client.Write([]byte{'N'}); err != nil {
				return startupPacket{}, err
			}
		default:
			return pkt, nil
		}
	}
}

func (l *login) startTLS(ctx context.Context, conn net.Conn, direct bool) error {
	tc := tls.Server(conn, l.st.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		if l.timedOut(ctx, err) {
			return err
		}
		l.log.Info("client TLS handshake failed", "err", err)
		return fmt.Errorf("TLS handshake: %w", err)
	}
	if direct && tc.ConnectionState().NegotiatedProtocol != alpnProtocol {
		// PostgreSQL refuses direct TLS without ALPN so that a TLS
		// connection meant for another protocol cannot be confused with it.
		return fmt.Errorf("%w: direct TLS connection without ALPN %q", errProtocol, alpnProtocol)
	}
	l.client = tc
	l.tls = true
	return nil
}

// startup decodes the StartupMessage.
func (l *login) startup(pkt startupPacket) *failure {
	version, params, err := parseStartup(pkt)
	if err != nil {
		l.log.Info("bad startup message", "err", err)
		return &failure{result: ResultProtocolError, client: fatal("08P01", "iamdb: "+err.Error())}
	}
	l.version, l.params = version, params
	l.user = params["user"]
	if l.user == "" {
		l.log.Info("startup message without a user name")
		return &failure{result: ResultProtocolError, client: fatal("28000", "no PostgreSQL user name specified in startup packet")}
	}
	l.database = params["database"]
	if l.database == "" {
		l.database = l.user
	}
	l.log = l.log.With("user", l.user, "database", l.database, "tls", l.tls)
	return nil
}

// cancelRequest forwards a cancel whose key matches a live session.
func (l *login) cancelRequest(ctx context.Context, pkt startupPacket) {
	var m pgproto3.CancelRequest
	if err := m.Decode(pkt.body()); err != nil {
		l.log.Info("malformed cancel request", "err", err)
		return
	}
	t, ok := l.srv.keys.lookup(m.ProcessID, m.SecretKey)
	if !ok {
		l.log.Warn("cancel request matches no session", "pid", m.ProcessID)
		return
	}
	if err := forwardCancel(ctx, l.srv.dial, t); err != nil {
		l.log.Warn("forwarding cancel request", "target_session", t.session, "err", err)
		return
	}
	l.log.Info("cancel request forwarded", "target_session", t.session)
}

// loginIAM asks for the token, verifies it and logs in to the upstream.
func (l *login) loginIAM(ctx context.Context) (*session, *failure) {
	if !l.tls {
		l.log.Warn("login refused", "reason", ResultTLSRequired, "detail", "IAM user connected without TLS")
		return nil, &failure{result: ResultTLSRequired, client: fatal("28000",
			fmt.Sprintf("connection requires TLS (sslmode=require or stricter) for IAM authentication of user %q", l.user))}
	}
	var msgs []pgproto3.BackendMessage
	if npv := l.negotiateVersion(); npv != nil {
		msgs = append(msgs, npv)
	}
	msgs = append(msgs, &pgproto3.AuthenticationCleartextPassword{})
	if err := send(l.client, msgs...); err != nil {
		f := l.classify(ctx, err, "password request")
		return nil, &f
	}
	l.passwordStep = true
	token, f := l.readPassword(ctx)
	if f != nil {
		return nil, f
	}
	dec, err := l.st.authn.Authenticate(ctx, authn.Request{
		Token:           token,
		Instance:        l.st.instance,
		DBUser:          l.user,
		Database:        l.database,
		SourceIP:        l.ip,
		SecureTransport: true,
	})
	l.auditDecision(dec, err)
	if err != nil {
		return nil, l.loginFailed(ctx, err, l.refuse(ctx, err))
	}
	if f := l.admitLogin(ctx, dec); f != nil {
		return nil, f
	}
	l.log = l.log.With("principal", dec.Principal.ARN, "token_id", dec.TokenID)
	l.log.Info("IAM login accepted", "access_key_id", dec.Principal.AccessKeyID)

	password, err := l.st.backend.Password(ctx, l.user)
	if err != nil {
		l.log.Error("no upstream password for the IAM user", "err", err)
		f := l.internal(ctx)
		return nil, &f
	}
	return l.connectUpstream(ctx, password, true)
}

// readPassword reads the client's PasswordMessage. By hand rather than
// with a pgproto3.Backend: its 'p' decoding depends on SetAuthType, and
// its read-ahead buffer would have to be drained before the relay.
func (l *login) readPassword(ctx context.Context) (string, *failure) {
	typ, body, err := readMessage(l.client, maxAuthMessageLen)
	if err != nil {
		f := l.classify(ctx, err, "password")
		return "", &f
	}
	if typ != 'p' {
		f := l.classify(ctx, fmt.Errorf("%w: expected a password message, got %q", errProtocol, typ), "password")
		return "", &f
	}
	var pm pgproto3.PasswordMessage
	if err := pm.Decode(body); err != nil {
		f := l.classify(ctx, fmt.Errorf("%w: password message: %v", errProtocol, err), "password")
		return "", &f
	}
	return pm.Password, nil
}

// refuse logs the precise reason of a refused IAM login and gives the
// client only PostgreSQL's generic PAM failure, as RDS does.
func (l *login) refuse(ctx context.Context, err error) *failure {
	result, reason, attrs, isAuthn := proxy.Refusal(err)
	if !isAuthn && l.timedOut(ctx, err) {
		f := l.classify(ctx, err, "authenticate")
		return &f
	}
	l.log.Warn("login refused", attrs...)
	return &failure{result: result, reason: reason, client: fatal("28P01", fmt.Sprintf("PAM authentication failed for user %q", l.user))}
}

// negotiateVersion is the NegotiateProtocolVersion to send when the client
// asked for more than protocol 3.0 (the upstream leg of an IAM login speaks
// 3.0) or for protocol options (_pq_.*), which iamdb does not implement.
func (l *login) negotiateVersion() *pgproto3.NegotiateProtocolVersion {
	var opts []string
	for k := range l.params {
		if strings.HasPrefix(k, "_pq_.") {
			opts = append(opts, k)
		}
	}
	if l.version == pgproto3.ProtocolVersion30 && len(opts) == 0 {
		return nil
	}
	return &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: opts}
}

func (l *login) unavailable(err error) *failure {
	l.st.obs.UpstreamDialFailed(l.st.instance.Name)
	l.log.Error("upstream unavailable", "upstream", l.st.upstream.Address, "err", err)
	return &failure{result: ResultUpstreamUnavailable, reason: fmt.Sprintf("upstream %s is unavailable: %v", l.st.upstream.Address, err), client: fatal("08006",
		fmt.Sprintf("iamdb: instance %s: upstream %s is unavailable", l.st.instance.Name, l.st.upstream.Address))}
}
