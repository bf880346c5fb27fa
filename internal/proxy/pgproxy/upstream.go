package pgproxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/iamdb/iamdb/internal/proxy"
)

// upstreamTemplate is the pgconn configuration every IAM login copies. It
// is parsed once from a fixed string and then overridden field by field,
// so the PG* environment of the iamdb process (PGHOST, PGSSLMODE …) cannot
// redirect or weaken the upstream leg.
func upstreamTemplate(u Upstream) (*pgconn.Config, error) {
	host, portText, err := net.SplitHostPort(u.Address)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", u.Address, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: port: %w", u.Address, err)
	}
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, fmt.Errorf("upstream connection settings: %w", err)
	}
	cfg.Host, cfg.Port = host, uint16(port)
	cfg.TLSConfig = u.TLS // already a private clone
	cfg.ConnectTimeout = u.DialTimeout
	cfg.Fallbacks = nil
	cfg.ValidateConnect = nil
	cfg.AfterConnect = nil
	cfg.RuntimeParams = nil
	cfg.MinProtocolVersion, cfg.MaxProtocolVersion = "3.0", "3.0"
	cfg.RequireAuth = ""
	cfg.SSLNegotiation = ""
	cfg.OnNotice, cfg.OnNotification = nil, nil
	return cfg, nil
}

// upstreamClientTLS is the operator's upstream TLS configuration with
// iamdb's floor of TLS 1.2.
func upstreamClientTLS(in *tls.Config) *tls.Config {
	c := in.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// withoutPQKeyShare is c offering classic key exchanges only, X25519
// first, unless the operator chose the key exchanges. Go's client always
// sends a key share of the hybrid X25519MLKEM768 when it may use it, and
// computing it was the largest avoidable cost of an upstream handshake:
// PostgreSQL built with OpenSSL before 3.5 cannot use it and settles on
// X25519. See settings.upstreamTLSConfig for when it is used.
func withoutPQKeyShare(c *tls.Config) *tls.Config {
	if c == nil || len(c.CurvePreferences) > 0 {
		return c
	}
	c = c.Clone()
	c.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}
	return c
}

// upstreamTLSConfig is the TLS configuration of the next upstream login:
// post-quantum key exchange is offered until an upstream handshake shows
// that the server does not take it, then no longer, until the
// configuration changes. An upstream that can use it keeps using it.
func (st *settings) upstreamTLSConfig() *tls.Config {
	if st.upstreamNoPQ != nil && st.pqDeclined.Load() {
		return st.upstreamNoPQ
	}
	return st.upstream.TLS
}

// notePQ records the key exchange an upstream handshake settled on.
func (st *settings) notePQ(offered *tls.Config, curve tls.CurveID) {
	if offered == st.upstream.TLS && curve != 0 && curve != tls.X25519MLKEM768 && st.upstreamNoPQ != st.upstream.TLS {
		st.pqDeclined.Store(true)
	}
}

// connectUpstream logs in to the upstream as l.user (TLS, SCRAM, md5 as
// the server asks) — or, for an IAM login (iam) when the pool holds an
// idle session of the same key, takes that one instead — and tells the
// client it is in: AuthenticationOk, the server's ParameterStatus values,
// iamdb's BackendKeyData and ReadyForQuery. When the upstream refuses the
// backend password of an IAM login (28P01, 28000) and the backend has a
// different one by now (another replica or 'iamdb db rotate' changed it),
// the login is tried once more, on a new connection, with the new one.
func (l *login) connectUpstream(ctx context.Context, password string, iam bool) (*session, *failure) {
	params := map[string]string{}
	for k, v := range l.params {
		switch {
		case k == "user" || k == "database" || strings.HasPrefix(k, "_pq_."):
		default:
			params[k] = v // application_name, options, DateStyle, client_encoding …
		}
	}
	if p := l.ac.Principal; p != nil {
		// Name the principal to the upstream, for its own logs.
		params[principalGUC] = p.ARN
		if l.st.statements.Enabled(l.user) {
			params["application_name"] = taggedApplicationName(l.params["application_name"], p)
		}
	}
	reuse := l.pooledSession(iam, password, params)
	if reuse != nil && reuse.bc != nil {
		return l.ready(ctx, reuse.bc, reuse)
	}
	b := &backendLogin{dial: l.dialUpstream, address: l.st.upstream.Address, tls: l.st.upstreamTLSConfig(),
		user: l.user, database: l.database, password: password, params: params, cache: l.srv.scram}
	hc, err := b.run(ctx)
	if iam && isPasswordRefusal(err) {
		// b.run closed the refused connection.
		if pw, ok := proxy.NewerPassword(ctx, l.st.backend, l.log, l.user, password); ok {
			b.password = pw
			if reuse != nil {
				reuse.Key = poolKeyFor(l.user, l.database, pw, params)
			}
			hc, err = b.run(ctx)
		}
	}
	if err != nil {
		var ue *upstreamAuthError
		if errors.As(err, &ue) {
			pgErr := ue.pg
			l.log.Warn("upstream refused the login", "code", pgErr.Code, "message", pgErr.Message)
			return nil, &failure{result: ResultUpstreamRejected, reason: "the upstream refused the login: " + pgErr.Code + " " + pgErr.Message,
				client: upstreamError(pgErr)}
		}
		if l.timedOut(ctx, err) && ctx.Err() != nil {
			f := l.classify(ctx, err, "upstream login")
			return nil, &f
		}
		return nil, l.unavailable(err)
	}
	l.st.notePQ(b.tls, hc.curve)
	if reuse != nil {
		reuse.bc, reuse.Conn, reuse.Created = hc, hc.conn, time.Now()
	}
	return l.ready(ctx, hc, reuse)
}

// isPasswordRefusal reports whether err is the upstream refusing the
// login's credentials: invalid_password (28P01) or
// invalid_authorization_specification (28000).
func isPasswordRefusal(err error) bool {
	var ue *upstreamAuthError
	return errors.As(err, &ue) && (ue.pg.Code == "28P01" || ue.pg.Code == "28000")
}

// pooledSession is, for a login whose upstream session may be pooled, an
// idle session of its key taken from the pool, or a new one of that key
// to fill in; nil when the session may not be pooled.
func (l *login) pooledSession(pooled bool, password string, params map[string]string) *upstreamSession {
	gen, on := l.srv.pool.Generation()
	if _, replication := params["replication"]; !pooled || replication || l.ac == nil || l.ac.Principal == nil || !on {
		return nil
	}
	key := poolKeyFor(l.user, l.database, password, params)
	if s, ok := l.srv.pool.Get(key); ok {
		if po, ok := l.st.obs.(PoolObserver); ok {
			po.UpstreamSessionReused(l.st.instance.Name)
		}
		l.log.Debug("idle upstream session reused", "backend_pid", s.bc.pid)
		return s
	}
	return &upstreamSession{Pooled: proxy.Pooled{Key: key, Gen: gen}}
}

// ready takes over the upstream connection of hc and tells the client it
// is in.
func (l *login) ready(ctx context.Context, hc *backendConn, reuse *upstreamSession) (*session, *failure) {
	if !l.cc.SetUpstream(hc.conn) {
		hc.conn.Close()
		f := failure{result: ResultClientClosed}
		return nil, &f
	}
	// Whatever the server sent unprompted after ReadyForQuery goes to the
	// client after iamdb's own ReadyForQuery.
	sess := &session{upstream: hc.conn, pending: hc.pending, reuse: reuse}
	hc.pending = nil

	pid, secret, release, err := l.srv.keys.register(len(hc.secretKey), cancelTarget{
		upstream: l.st.upstream, pid: hc.pid, secret: slices.Clone(hc.secretKey), session: l.id})
	if err != nil {
		hc.conn.Close()
		l.log.Error("issuing a cancel key", "err", err)
		f := l.internal(ctx)
		return nil, &f
	}
	sess.release = release

	msgs := []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}
	for _, k := range slices.Sorted(maps.Keys(hc.params)) {
		msgs = append(msgs, &pgproto3.ParameterStatus{Name: k, Value: hc.params[k]})
	}
	tx := hc.txStatus
	if tx == 0 {
		tx = 'I'
	}
	msgs = append(msgs, &pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret}, &pgproto3.ReadyForQuery{TxStatus: tx})
	if f := l.auditAccepted(ctx, hc.pid); f != nil {
		hc.conn.Close()
		return sess, f
	}
	if err := send(l.client, msgs...); err != nil {
		hc.conn.Close()
		f := l.classify(ctx, err, "ready")
		return sess, &f
	}
	return sess, nil
}

// dialUpstream opens the TCP connection of an upstream login within
// upstream.dial_timeout; the login's own deadline bounds the rest.
func (l *login) dialUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	d := l.st.upstream.DialTimeout
	if d <= 0 {
		d = DefaultDialTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return l.srv.dial(dctx, network, addr)
}

// upstreamError relays the upstream's refusal with its own code and text.
func upstreamError(e *pgconn.PgError) *pgproto3.ErrorResponse {
	sev := e.Severity
	if sev == "" {
		sev = "FATAL"
	}
	unloc := e.SeverityUnlocalized
	if unloc == "" {
		unloc = sev
	}
	return &pgproto3.ErrorResponse{Severity: sev, SeverityUnlocalized: unloc, Code: e.Code, Message: e.Message,
		Detail: e.Detail, Hint: e.Hint, Routine: e.Routine}
}

// Authentication request codes (the int32 after 'R').
const (
	authOK                = 0
	authCleartextPassword = 3
	authMD5Password       = 5
	authSASL              = 10
	authSASLContinue      = 11
	authSASLFinal         = 12
)

// loginPassword relays an ordinary password login of a user that is not
// IAM-enabled, the way PgBouncer does: the client's StartupMessage goes to
// the upstream unchanged and authentication messages are passed back and
// forth until the upstream says yes or no. Only two things change: the
// SCRAM-SHA-256-PLUS mechanism is withdrawn (channel binding cannot span
// the client's TLS session and iamdb's), and the BackendKeyData becomes
// iamdb's own.
func (l *login) loginPassword(ctx context.Context, startup []byte) (*session, *failure) {
	if l.tls && l.st.upstream.TLS != nil {
		return l.loginPasswordCaptured(ctx)
	}
	dctx, cancel := context.WithTimeout(ctx, l.st.upstream.DialTimeout)
	conn, err := l.srv.dial(dctx, "tcp", l.st.upstream.Address)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			f := l.classify(ctx, err, "upstream dial")
			return nil, &f
		}
		return nil, l.unavailable(err)
	}
	if !l.cc.SetUpstream(conn) {
		return nil, &failure{result: ResultClientClosed}
	}
	l.passwordStep = true
	var upstreamPID uint32
	sess := &session{upstream: conn, release: func() {}}
	fail := func(f *failure) (*session, *failure) {
		sess.upstream.Close()
		return sess, f
	}
	conn.SetDeadline(l.deadline)
	if l.st.upstream.TLS != nil {
		tc, err := upstreamTLS(ctx, conn, l.st.upstreamTLSConfig())
		if err != nil {
			return fail(l.unavailable(err))
		}
		sess.upstream = tc
	}
	up := sess.upstream
	if _, err := up.Write(startup); err != nil {
		return fail(l.unavailable(err))
	}

	authenticated := false
	for {
		typ, body, err := readMessage(up, maxAuthMessageLen)
		if err != nil {
			if l.timedOut(ctx, err) {
				f := l.classify(ctx, err, "upstream login")
				return fail(&f)
			}
			return fail(l.unavailable(fmt.Errorf("reading the upstream's login messages: %w", err)))
		}
		out := frame(typ, body)
		expectAnswer := false
		switch typ {
		case 'R':
			if len(body) < 4 {
				return fail(l.upstreamProtocol("short authentication message"))
			}
			switch code := binary.BigEndian.Uint32(body); code {
			case authOK:
				authenticated = true
			case authCleartextPassword, authMD5Password, authSASLContinue:
				expectAnswer = true
			case authSASLFinal:
			case authSASL:
				if out, err = withoutChannelBinding(body); err != nil {
					return fail(l.upstreamProtocol(err.Error()))
				}
				expectAnswer = true
			default:
				l.log.Warn("upstream asks for an authentication method iamdb cannot relay", "method", code)
				return fail(&failure{result: ResultUpstreamRejected, client: fatal("28000",
					fmt.Sprintf("iamdb: instance %s: the upstream asks for authentication method %d, which iamdb cannot relay", l.st.instance.Name, code))})
			}
		case 'K':
			var key pgproto3.BackendKeyData
			if err := key.Decode(body); err != nil {
				return fail(l.upstreamProtocol(err.Error()))
			}
			upstreamPID = key.ProcessID
			pid, secret, release, err := l.srv.keys.register(len(key.SecretKey), cancelTarget{
				upstream: l.st.upstream, pid: key.ProcessID, secret: key.SecretKey, session: l.id})
			if err != nil {
				l.log.Error("issuing a cancel key", "err", err)
				f := l.internal(ctx)
				return fail(&f)
			}
			sess.release = release
			if out, err = (&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret}).Encode(nil); err != nil {
				f := l.internal(ctx)
				return fail(&f)
			}
		case 'E':
			var e pgproto3.ErrorResponse
			reason := "the upstream refused the login"
			if err := e.Decode(body); err == nil {
				l.log.Warn("upstream refused the relayed password login", "code", e.Code, "message", e.Message)
				reason += ": " + e.Code + " " + e.Message
			}
			if _, err := l.client.Write(out); err != nil {
				l.log.Debug("relaying the upstream's error", "err", err)
			}
			return fail(&failure{result: ResultUpstreamRejected, reason: reason})
		case 'S', 'N', 'v':
			// ParameterStatus, NoticeResponse, NegotiateProtocolVersion.
		case 'Z':
			if !authenticated {
				return fail(l.upstreamProtocol("ReadyForQuery before AuthenticationOk"))
			}
			if f := l.auditAccepted(ctx, upstreamPID); f != nil {
				l.client.SetWriteDeadline(time.Now().Add(time.Second))
				send(l.client, f.client)
				return fail(&failure{result: f.result, reason: f.reason})
			}
		default:
			return fail(l.upstreamProtocol(fmt.Sprintf("unexpected message %q during login", typ)))
		}
		if _, err := l.client.Write(out); err != nil {
			f := l.classify(ctx, err, "relaying login")
			return fail(&f)
		}
		if typ == 'Z' {
			l.log.Info("password login relayed", "mode", "messages")
			return sess, nil
		}
		if !expectAnswer {
			continue
		}
		ctyp, cbody, err := readMessage(l.client, maxAuthMessageLen)
		if err != nil {
			f := l.classify(ctx, err, "password")
			return fail(&f)
		}
		if ctyp != 'p' {
			f := l.classify(ctx, fmt.Errorf("%w: expected a password message, got %q", errProtocol, ctyp), "password")
			return fail(&f)
		}
		if _, err := up.Write(frame(ctyp, cbody)); err != nil {
			return fail(l.unavailable(err))
		}
	}
}

// loginPasswordCaptured handles a password login when both legs are TLS.
// Relaying SCRAM message by message cannot work then: a client on TLS that
// is not offered SCRAM-SHA-256-PLUS says so in its first SCRAM message
// (gs2 flag "y"), the signed exchange cannot be altered, and an upstream
// on TLS, which does support channel binding, must then refuse the login
// as a downgrade. So iamdb asks the client for its password itself, over
// the client's TLS session, and logs in with it as pgconn does with any
// password (SCRAM with channel binding to the upstream, md5 or cleartext,
// as the upstream asks); the upstream's refusal is relayed unchanged.
func (l *login) loginPasswordCaptured(ctx context.Context) (*session, *failure) {
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
	password, f := l.readPassword(ctx)
	if f != nil {
		return nil, f
	}
	sess, f := l.connectUpstream(ctx, password, false)
	if f == nil {
		l.log.Info("password login relayed", "mode", "pgconn")
	}
	return sess, f
}

func (l *login) upstreamProtocol(what string) *failure {
	l.log.Error("upstream protocol violation during login", "detail", what)
	return &failure{result: ResultProtocolError, reason: "upstream protocol violation: " + what, client: fatal("08P01",
		fmt.Sprintf("iamdb: instance %s: unexpected answer from the upstream during login", l.st.instance.Name))}
}

// withoutChannelBinding re-encodes AuthenticationSASL without the
// mechanisms that need channel binding.
func withoutChannelBinding(body []byte) ([]byte, error) {
	var m pgproto3.AuthenticationSASL
	if err := m.Decode(body); err != nil {
		return nil, fmt.Errorf("AuthenticationSASL: %w", err)
	}
	keep := slices.DeleteFunc(slices.Clone(m.AuthMechanisms), func(s string) bool { return strings.HasSuffix(s, "-PLUS") })
	if len(keep) == 0 {
		return nil, fmt.Errorf("the upstream offers only SASL mechanisms with channel binding (%s)", strings.Join(m.AuthMechanisms, ", "))
	}
	m.AuthMechanisms = keep
	return m.Encode(nil)
}
