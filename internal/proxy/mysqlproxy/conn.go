package mysqlproxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"syscall"
	"time"

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
	host     string // the client's address, as MySQL names it in errors

	client   net.Conn    // raw, then the TLS connection over it
	pc       *packetConn // the client leg's packets
	tls      bool
	iam      bool               // the user logs in with IAM
	greet    *greeting          // what the client was greeted with
	resp     *handshakeResponse // what the client answered
	caps     uint64             // the client's capabilities, as far as iamdb offered them
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
	upstream   net.Conn
	upstreamID uint32 // the upstream's connection id: CONNECTION_ID() in the session
	loginOK    []byte // the upstream's OK packet that ended its login
	// reuse is set when the upstream session may go back to the pool
	// when its client quits (an IAM login with the pool on).
	reuse *upstreamSession
}

// failure ends a login: what the client is told (nil: nothing, the
// connection is simply closed) and the result for metrics.
type failure struct {
	result string
	client *mysqlError
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
	l := &login{srv: s, st: st, cc: cc, client: cc.Raw, start: time.Now(), host: proxy.RemoteIP(cc.Raw)}
	l.pc = &packetConn{rw: cc.Raw}
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
	s.runSession(l, sess)
}

// errNoLogin: the client closed the connection without answering the
// greeting: a port probe or health check, not a login attempt.
var errNoLogin = errors.New("closed before a handshake response")

// run drives the login. It returns the ready session, or nil after telling
// the client why not; and the result for metrics ("" when the connection
// ended before a handshake response, which is not a login attempt).
func (l *login) run(ctx context.Context) (*session, string) {
	if f := l.screen(ctx); f != nil {
		return nil, l.finish(*f)
	}
	if err := l.handshake(ctx); err != nil {
		if errors.Is(err, errNoLogin) {
			l.log.Debug("connection closed before a handshake response")
			return nil, ""
		}
		return nil, l.finish(l.classify(ctx, err, "handshake"))
	}
	if l.resp.user == "" {
		l.log.Info("handshake response without a user name")
		return nil, l.finish(failure{result: ResultProtocolError, client: accessDenied("", l.host)})
	}
	if f := l.admit(ctx); f != nil {
		return nil, l.finish(*f)
	}
	iam, err := l.st.backend.IsIAMUser(ctx, l.resp.user)
	if err != nil {
		l.log.Error("cannot tell whether the user logs in with IAM", "err", err)
		return nil, l.finish(l.internal(ctx))
	}
	l.iam = iam
	var sess *session
	var f *failure
	if iam {
		sess, f = l.loginIAM(ctx)
	} else {
		sess, f = l.loginPassword(ctx)
	}
	if f != nil {
		if sess != nil {
			sess.upstream.Close()
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

// handshake greets the client, switches to TLS when it asks and reads its
// handshake response.
func (l *login) handshake(ctx context.Context) error {
	l.greet = l.srv.greetingFor(ctx, l.st, l.log)
	if err := l.pc.write(l.greet.encode()); err != nil {
		if isClosed(err) {
			return errNoLogin
		}
		return err
	}
	p, err := l.pc.read(maxLoginPacket)
	if err != nil {
		if errors.Is(err, io.EOF) || isReset(err) {
			return errNoLogin
		}
		return err
	}
	resp, err := parseHandshakeResponse(p)
	if err != nil {
		return err
	}
	if resp.sslRequest {
		if err := l.startTLS(ctx); err != nil {
			return err
		}
		if p, err = l.pc.read(maxLoginPacket); err != nil {
			return unexpectedEOF(err)
		}
		if resp, err = parseHandshakeResponse(p); err != nil {
			return err
		}
		if resp.sslRequest || resp.caps&capSSL == 0 {
			return fmt.Errorf("%w: unexpected handshake response after the SSL request", errProtocol)
		}
	}
	l.resp = resp
	// A client may claim more than it was offered (CLIENT_MYSQL, say);
	// only what both support counts.
	l.caps = resp.caps & (l.greet.caps | capMySQL)
	l.log = l.log.With("user", resp.user, "database", resp.database, "tls", l.tls)
	l.auditStarted()
	return nil
}

func (l *login) startTLS(ctx context.Context) error {
	tc := tls.Server(l.client, l.st.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		if l.timedOut(ctx, err) {
			return err
		}
		l.log.Info("client TLS handshake failed", "err", err)
		return fmt.Errorf("TLS handshake: %w", err)
	}
	l.client = tc
	l.pc.rw = tc
	l.tls = true
	return nil
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
		if err := l.pc.write(f.client.encode()); err != nil {
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
		return failure{result: ResultHandshakeTimeout, reason: fmt.Sprintf("login did not complete within %s (%s)", l.st.handshakeTimeout, phase), client: &mysqlError{code: erHandshake, sqlState: "08S01",
			message: fmt.Sprintf("iamdb: instance %s: login did not complete within %s", l.st.instance.Name, l.st.handshakeTimeout)}}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isClosed(err):
		l.log.Debug("client closed the connection during login", "phase", phase)
		return failure{result: ResultClientClosed, reason: "the client closed the connection during " + phase}
	case errors.Is(err, errProtocol):
		l.log.Info("protocol violation during login", "phase", phase, "err", err)
		return failure{result: ResultProtocolError, reason: phase + ": " + err.Error(), client: &mysqlError{code: erHandshake, sqlState: "08S01", message: "Bad handshake"}}
	default:
		l.log.Info("login failed", "phase", phase, "err", err)
		return failure{result: ResultProtocolError, reason: phase + ": " + err.Error()}
	}
}

func (l *login) timedOut(ctx context.Context, err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(ctx.Err(), context.DeadlineExceeded) || !time.Now().Before(l.deadline)
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (l *login) internal(ctx context.Context) failure {
	if l.timedOut(ctx, ctx.Err()) {
		return l.classify(ctx, ctx.Err(), "backend")
	}
	return failure{result: ResultInternalError, reason: "internal error (see the iamdb log)", client: &mysqlError{code: erUnknown, sqlState: "HY000",
		message: fmt.Sprintf("iamdb: instance %s: internal error (see the iamdb log, session %s)", l.st.instance.Name, l.id)}}
}

// loginIAM asks for the token, verifies it and logs in to the upstream.
func (l *login) loginIAM(ctx context.Context) (*session, *failure) {
	user := l.resp.user
	if !l.tls {
		// Refused before any password is asked for: the token must never
		// cross the network in the clear.
		l.log.Warn("login refused", "reason", ResultTLSRequired, "detail", "IAM user connected without TLS")
		return nil, &failure{result: ResultTLSRequired, client: &mysqlError{code: erAccessDenied, sqlState: "28000",
			message: fmt.Sprintf("Access denied for user '%s'@'%s': connection requires TLS for IAM authentication (mariadb/mysql --ssl, tls=true)", user, l.host)}}
	}
	token, f := l.readToken(ctx)
	if f != nil {
		return nil, f
	}
	dec, err := l.st.authn.Authenticate(ctx, authn.Request{
		Token:           token,
		Instance:        l.st.instance,
		DBUser:          user,
		Database:        l.resp.database,
		SourceIP:        l.host,
		SecureTransport: true,
	})
	l.ac.SetDecision(dec, err)
	if err != nil {
		return nil, l.loginFailed(ctx, err, l.refuse(ctx, err))
	}
	if f := l.admitLogin(ctx, dec); f != nil {
		return nil, f
	}
	l.log = l.log.With("principal", dec.Principal.ARN, "token_id", dec.TokenID)
	l.log.Info("IAM login accepted", "access_key_id", dec.Principal.AccessKeyID)

	password, err := l.st.backend.Password(ctx, user)
	if err != nil {
		l.log.Error("no upstream password for the IAM user", "err", err)
		f := l.internal(ctx)
		return nil, &f
	}
	return l.upstreamSession(ctx, password)
}

// readToken gets the token as a clear-text password: at once when the
// client already used mysql_clear_password, else after an auth switch to
// it, whatever plugin the client started with.
func (l *login) readToken(ctx context.Context) (string, *failure) {
	l.passwordStep = true
	if l.resp.plugin == pluginClear {
		return string(withoutNUL(l.resp.authData)), nil
	}
	if err := l.pc.write(authSwitch(pluginClear, append(append([]byte(nil), l.greet.scramble...), 0))); err != nil {
		f := l.classify(ctx, err, "password request")
		return "", &f
	}
	p, err := l.pc.read(maxLoginPacket)
	if err != nil {
		f := l.classify(ctx, unexpectedEOF(err), "password")
		return "", &f
	}
	return string(withoutNUL(p)), nil
}

// refuse logs the precise reason of a refused IAM login and gives the
// client only MySQL's generic access denied error, as RDS does.
func (l *login) refuse(ctx context.Context, err error) *failure {
	result, reason, attrs, isAuthn := proxy.Refusal(err)
	if !isAuthn && l.timedOut(ctx, err) {
		f := l.classify(ctx, err, "authenticate")
		return &f
	}
	l.log.Warn("login refused", attrs...)
	return &failure{result: result, reason: reason, client: accessDenied(l.resp.user, l.host)}
}

func (l *login) unavailable(err error) *failure {
	l.st.obs.UpstreamDialFailed(l.st.instance.Name)
	l.log.Error("upstream unavailable", "upstream", l.st.upstream.Address, "err", err)
	return &failure{result: ResultUpstreamUnavailable, reason: fmt.Sprintf("upstream %s is unavailable: %v", l.st.upstream.Address, err), client: &mysqlError{code: crConnectionError, sqlState: "HY000",
		message: fmt.Sprintf("iamdb: instance %s: upstream %s is unavailable", l.st.instance.Name, l.st.upstream.Address)}}
}

// connectionID is the id in a client's greeting. The upstream's own id is
// not known yet when the client is greeted (iamdb connects to the upstream
// only after the login was verified), so it is a random number above the
// range servers count in, where it cannot name another session by
// accident: CONNECTION_ID() and KILL use the upstream's real ids.
func connectionID() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:]) | 1<<31
}
