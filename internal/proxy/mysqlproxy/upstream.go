package mysqlproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/iamdb/iamdb/internal/proxy"
)

// greetingCache remembers the last greeting of each upstream address.
// Clients are greeted before iamdb connects to the upstream (that happens
// only once the login is verified), yet they should see the real server:
// its version, character set and capabilities. Every upstream login
// refreshes the entry, so an upgraded server is picked up by the next
// client.
type greetingCache struct {
	mu      sync.Mutex
	byAddr  map[string]*greeting
	probing map[string]chan struct{}
}

func newGreetingCache() *greetingCache {
	return &greetingCache{byAddr: map[string]*greeting{}, probing: map[string]chan struct{}{}}
}

func (c *greetingCache) store(addr string, g *greeting) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byAddr[addr] = g
}

// defaultGreeting is what clients see while the upstream has never been
// reached: flags every MySQL ≥ 5.7 and MariaDB ≥ 10.2 server supports.
var defaultGreeting = greeting{
	version: "8.0.0-iamdb",
	caps: capMySQL | capFoundRows | capLongFlag | capConnectWithDB | capLocalFiles | capProtocol41 |
		capInteractive | capTransactions | capSecureConnection | capMultiStatements | capMultiResults |
		capPSMultiResults | capPluginAuth | capConnectAttrs | capPluginAuthLenencData |
		capCanHandleExpiredPasswds | capSessionTrack | capDeprecateEOF,
	charset: 45, // utf8mb4_general_ci
	status:  2,  // SERVER_STATUS_AUTOCOMMIT
	plugin:  pluginNative,
}

// greetingFor returns the greeting for a new client: the upstream's as
// last seen, with iamdb's own connection id and scramble, CLIENT_SSL always
// offered and compression never. The first client of an upstream waits
// for one probe connection that reads its greeting; if the upstream cannot
// be reached, defaultGreeting stands in and the login fails later with the
// usual "upstream unavailable" error.
func (s *Server) greetingFor(ctx context.Context, st *settings, log *slog.Logger) *greeting {
	addr := st.upstream.Address
	c := s.greetings
	var tmpl *greeting
	for tmpl == nil {
		c.mu.Lock()
		g, ok := c.byAddr[addr]
		wait, probing := c.probing[addr]
		if !ok && !probing {
			wait = make(chan struct{})
			c.probing[addr] = wait
		}
		c.mu.Unlock()
		switch {
		case ok:
			tmpl = g
		case probing:
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				tmpl = &defaultGreeting
			}
		default:
			g, err := s.probeGreeting(ctx, st)
			c.mu.Lock()
			delete(c.probing, addr)
			if err == nil {
				c.byAddr[addr] = g
			}
			c.mu.Unlock()
			close(wait)
			if err != nil {
				log.Debug("cannot read the upstream's greeting; greeting with defaults", "upstream", addr, "err", err)
				g = &defaultGreeting
			}
			tmpl = g
		}
	}
	out := *tmpl
	out.connectionID = connectionID()
	out.scramble = newScramble()
	out.caps = (tmpl.caps &^ neverOffered) | capSSL | capProtocol41 | capSecureConnection | capPluginAuth |
		capPluginAuthLenencData | capConnectAttrs | capConnectWithDB
	if out.plugin != pluginNative && out.plugin != pluginCachingSHA2 {
		out.plugin = pluginNative
	}
	return &out
}

// probeGreeting connects to the upstream only to read its greeting.
func (s *Server) probeGreeting(ctx context.Context, st *settings) (*greeting, error) {
	dctx, cancel := context.WithTimeout(ctx, st.upstream.DialTimeout)
	defer cancel()
	conn, err := s.dial(dctx, "tcp", st.upstream.Address)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if d, ok := dctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	p, err := (&packetConn{rw: conn}).read(maxLoginPacket)
	if err != nil {
		return nil, err
	}
	return parseGreeting(p)
}

// upstreamLeg is a connection to the upstream between its greeting and
// the end of the login.
type upstreamLeg struct {
	conn   net.Conn // raw, then TLS
	pc     *packetConn
	greet  *greeting
	resp   *handshakeResponse // to send: the client's, with the flags for this leg
	secure bool
}

// dialUpstream connects, reads the greeting, checks that the upstream
// still has the capabilities the client was offered, and switches to TLS
// when configured. On failure the connection is closed.
func (l *login) dialUpstream(ctx context.Context) (*upstreamLeg, *failure) {
	up := l.st.upstream
	dctx, cancel := context.WithTimeout(ctx, up.DialTimeout)
	conn, err := l.srv.dial(dctx, "tcp", up.Address)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			f := l.classify(ctx, err, "upstream dial")
			return nil, &f
		}
		return nil, l.unavailable(err)
	}
	if !l.cc.SetUpstream(conn) {
		return nil, &failure{result: ResultClientClosed, reason: "the listener closed the connection during the login"}
	}
	leg := &upstreamLeg{conn: conn, pc: &packetConn{rw: conn}}
	fail := func(f *failure) (*upstreamLeg, *failure) {
		leg.conn.Close()
		return nil, f
	}
	conn.SetDeadline(l.deadline)
	p, err := leg.pc.read(maxLoginPacket)
	if err != nil {
		return fail(l.upstreamIOError(ctx, err))
	}
	g, err := parseGreeting(p)
	var me *mysqlError
	if errors.As(err, &me) {
		l.log.Warn("upstream refused the connection", "code", me.code, "message", me.message)
		return fail(&failure{result: ResultUpstreamRejected, reason: fmt.Sprintf("the upstream refused the connection: %d %s", me.code, me.message), client: me})
	}
	if err != nil {
		return fail(l.upstreamProtocol(err.Error()))
	}
	leg.greet = g
	l.srv.greetings.store(up.Address, g)

	// Every flag that shapes commands and results must be the same on both
	// legs: the upstream gets exactly the client's.
	want := l.caps &^ handshakeOnlyCaps
	if missing := want &^ g.caps; missing != 0 {
		l.log.Warn("the upstream no longer supports what the client was offered; the next client will be greeted as the upstream now is",
			"missing_capabilities", fmt.Sprintf("%#x", missing))
		return fail(&failure{result: ResultProtocolError, reason: fmt.Sprintf("the upstream no longer supports capabilities %#x the client was offered", missing),
			client: &mysqlError{code: erHandshake, sqlState: "08S01",
				message: fmt.Sprintf("iamdb: instance %s: the upstream server changed during the login; connect again", l.st.instance.Name)}})
	}
	caps := want | capProtocol41 | capSecureConnection | capPluginAuth | (g.caps & (capMySQL | capPluginAuthLenencData))
	if l.resp.database != "" {
		caps |= capConnectWithDB
	}
	attrs := l.upstreamAttrs()
	if attrs != nil && g.caps&capConnectAttrs != 0 {
		caps |= capConnectAttrs
	}
	if up.TLS != nil {
		if g.caps&capSSL == 0 {
			return fail(l.unavailable(errors.New("TLS is configured for the upstream, which does not offer it")))
		}
		caps |= capSSL
	}
	leg.resp = &handshakeResponse{caps: caps, maxPacket: l.resp.maxPacket, charset: l.resp.charset,
		user: l.resp.user, database: l.resp.database, attrs: attrs}
	if up.TLS != nil {
		if err := leg.pc.write(leg.resp.encode(true)); err != nil {
			return fail(l.upstreamIOError(ctx, err))
		}
		offered := l.st.upstreamTLSConfig()
		tc := tls.Client(conn, offered)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(l.upstreamIOError(ctx, fmt.Errorf("TLS handshake: %w", err)))
		}
		l.st.notePQ(offered, tc.ConnectionState().CurveID)
		leg.conn, leg.pc.rw, leg.secure = tc, tc, true
		l.cc.SetUpstream(tc)
	}
	return leg, nil
}

// upstreamAttrs are the connection attributes of the upstream login: the
// client's, and for an IAM login the principal first (principalAttr). A
// client's own attribute of that name is dropped. nil: none to send.
func (l *login) upstreamAttrs() []byte {
	var attrs []byte
	if l.caps&capConnectAttrs != 0 {
		attrs = l.resp.attrs
	}
	p := l.ac.Principal
	if p == nil || !l.iam {
		return attrs
	}
	out := withAttr(nil, principalAttr, p.ARN)
	forEachAttr(attrs, func(k, v string) {
		if k != principalAttr {
			out = withAttr(out, k, v)
		}
	})
	return out
}

// withoutPQKeyShare is c offering classic key exchanges only, X25519
// first, unless the operator chose the key exchanges. Go's client always
// sends a key share of the hybrid X25519MLKEM768 when it may use it, and
// computing it is the largest avoidable cost of an upstream handshake:
// MariaDB and MySQL built with OpenSSL before 3.5 cannot use it and settle
// on X25519. See settings.upstreamTLSConfig for when it is used.
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

// upstreamIOError classifies a failed read or write on the upstream leg.
func (l *login) upstreamIOError(ctx context.Context, err error) *failure {
	if ctx.Err() != nil || !time.Now().Before(l.deadline) {
		f := l.classify(ctx, err, "upstream login")
		return &f
	}
	if errors.Is(err, errProtocol) {
		return l.upstreamProtocol(err.Error())
	}
	return l.unavailable(err)
}

func (l *login) upstreamProtocol(what string) *failure {
	l.log.Error("upstream protocol violation during login", "detail", what)
	return &failure{result: ResultProtocolError, reason: "unexpected answer from the upstream during login: " + what, client: &mysqlError{code: erHandshake, sqlState: "08S01",
		message: fmt.Sprintf("iamdb: instance %s: unexpected answer from the upstream during login", l.st.instance.Name)}}
}

// upstreamRejected relays the upstream's refusal (unknown database, wrong
// password …) with its own code and text.
func (l *login) upstreamRejected(p []byte, msg string) *failure {
	e := parseError(p)
	l.log.Warn(msg, "code", e.code, "message", e.message)
	return &failure{result: ResultUpstreamRejected, reason: fmt.Sprintf("the upstream refused the login: %d %s", e.code, e.message), client: e}
}

// upstreamSession gives an IAM login its upstream session: an idle one
// from the pool when there is one of the same kind (see pool.go), else a
// new login to the upstream.
func (l *login) upstreamSession(ctx context.Context, password string) (*session, *failure) {
	gen, on := l.srv.pool.Generation()
	if !on {
		sess, _, f := l.connectUpstream(ctx, password)
		return sess, f
	}
	key := l.poolKey(password)
	if us, ok := l.srv.pool.Get(key); ok {
		if !l.cc.SetUpstream(us.Conn) {
			return nil, &failure{result: ResultClientClosed, reason: "the listener closed the connection during the login"}
		}
		if po, ok := l.st.obs.(PoolObserver); ok {
			po.UpstreamSessionReused(l.st.instance.Name)
		}
		l.log.Debug("upstream session reused", "upstream_connection_id", us.id)
		sess := &session{upstream: us.Conn, upstreamID: us.id, loginOK: us.ok, reuse: us}
		return l.ready(ctx, sess, us.ok, "reused")
	}
	sess, password, f := l.connectUpstream(ctx, password)
	if f == nil {
		key = l.poolKey(password) // the password it logged in with
		sess.reuse = &upstreamSession{Pooled: proxy.Pooled{Key: key, Conn: sess.upstream, Created: time.Now(), Gen: gen},
			id: sess.upstreamID, ok: sess.loginOK}
	}
	return sess, f
}

// connectUpstream logs in to the upstream as the client's user with the
// backend password, and on success hands the upstream's OK packet to the
// client. When the upstream refuses the password (ER_ACCESS_DENIED_ERROR)
// and the backend has a different one by now (another replica or 'iamdb
// db rotate' changed it), that connection is closed and the login is tried
// once more, on a new one, with the new password. It returns the password
// of the last attempt.
func (l *login) connectUpstream(ctx context.Context, password string) (*session, string, *failure) {
	sess, refusal, f := l.loginUpstream(ctx, password)
	if refusal != nil && parseError(refusal).code == erAccessDenied {
		if pw, ok := proxy.NewerPassword(ctx, l.st.backend, l.log, l.resp.user, password); ok {
			sess.upstream.Close()
			password = pw
			sess, refusal, f = l.loginUpstream(ctx, password)
		}
	}
	if refusal != nil {
		f = l.upstreamRejected(refusal, "upstream refused the login")
	}
	return sess, password, f
}

// loginUpstream logs in to the upstream as the client's user with
// password, answering whatever authentication plugin the upstream asks
// for, and on success hands the upstream's OK packet to the client. When
// the upstream refuses the login, refusal is its ERR packet, not yet
// logged or relayed, and the session holds the upstream connection.
func (l *login) loginUpstream(ctx context.Context, password string) (sess *session, refusal []byte, f *failure) {
	leg, f := l.dialUpstream(ctx)
	if f != nil {
		return nil, nil, f
	}
	sess = &session{upstream: leg.conn, upstreamID: leg.greet.connectionID}
	fail := func(f *failure) (*session, []byte, *failure) { return sess, nil, f }

	plugin, scramble := leg.greet.plugin, leg.greet.scramble
	data, err := authResponse(plugin, scramble, password, leg.secure)
	if err != nil {
		return fail(l.upstreamAuthUnsupported(err))
	}
	leg.resp.plugin, leg.resp.authData = plugin, data
	if err := leg.pc.write(leg.resp.encode(false)); err != nil {
		return fail(l.upstreamIOError(ctx, err))
	}
	for {
		p, err := leg.pc.read(maxLoginPacket)
		if err != nil {
			return fail(l.upstreamIOError(ctx, err))
		}
		if len(p) == 0 {
			return fail(l.upstreamProtocol("empty packet"))
		}
		var answer []byte
		switch p[0] {
		case pktOK:
			sess.loginOK = p
			sess, f = l.ready(ctx, sess, p, "upstream login")
			return sess, nil, f
		case pktERR:
			return sess, p, nil
		case pktAuthSwitch:
			if len(p) == 1 {
				return fail(l.upstreamAuthUnsupported(errors.New("the upstream asks for the pre-4.1 password scheme")))
			}
			var data []byte
			if plugin, data, err = parseAuthSwitch(p); err != nil {
				return fail(l.upstreamProtocol(err.Error()))
			}
			scramble = withoutNUL(data)
			if answer, err = authResponse(plugin, scramble, password, leg.secure); err != nil {
				return fail(l.upstreamAuthUnsupported(err))
			}
		case pktAuthMore:
			more := p[1:]
			switch {
			case plugin == pluginCachingSHA2 && bytes.Equal(more, []byte{cachingFastAuthOK}):
				continue // OK follows
			case plugin == pluginCachingSHA2 && bytes.Equal(more, []byte{cachingPerformFull}):
				if leg.secure {
					answer = append([]byte(password), 0)
				} else {
					answer = []byte{cachingPubKeyReq}
				}
			case plugin == pluginCachingSHA2 || plugin == pluginSHA256:
				// The server's RSA public key, asked for above.
				if answer, err = rsaPassword(more, scramble, password); err != nil {
					return fail(l.upstreamProtocol(err.Error()))
				}
			default:
				return fail(l.upstreamProtocol(fmt.Sprintf("unexpected authentication data for plugin %s", plugin)))
			}
		default:
			return fail(l.upstreamProtocol(fmt.Sprintf("unexpected packet 0x%02x during login", p[0])))
		}
		if err := leg.pc.write(answer); err != nil {
			return fail(l.upstreamIOError(ctx, err))
		}
	}
}

func (l *login) upstreamAuthUnsupported(err error) *failure {
	l.log.Error("cannot log in to the upstream", "err", err)
	return &failure{result: ResultUpstreamRejected, reason: "cannot log in to the upstream: " + err.Error(), client: &mysqlError{code: erAccessDenied, sqlState: "28000",
		message: fmt.Sprintf("iamdb: instance %s: %v", l.st.instance.Name, err)}}
}

// ready passes the upstream's OK packet to the client: the session is
// relayed from here on.
func (l *login) ready(ctx context.Context, sess *session, ok []byte, how string) (*session, *failure) {
	if f := l.auditAccepted(ctx, sess.upstreamID); f != nil {
		return sess, f
	}
	if err := l.pc.write(ok); err != nil {
		f := l.classify(ctx, err, "ready")
		return sess, &f
	}
	l.log.Debug("upstream login complete", "mode", how)
	return sess, nil
}

// loginPassword relays the ordinary password login of a user that is not
// IAM-enabled. The client answered iamdb's scramble, which the upstream
// never saw, so iamdb connects to the upstream first and sends the client
// an auth switch carrying the upstream's own scramble. From then on the
// client and the upstream authenticate each other as if directly (native,
// caching_sha2 with its RSA exchange, ed25519 …): iamdb forwards each
// packet, renumbering them for each leg, and never learns a password
// except where the plugin itself sends one in clear text over TLS.
func (l *login) loginPassword(ctx context.Context) (*session, *failure) {
	leg, f := l.dialUpstream(ctx)
	if f != nil {
		return nil, f
	}
	sess := &session{upstream: leg.conn, upstreamID: leg.greet.connectionID}
	fail := func(f *failure) (*session, *failure) { return sess, f }
	l.passwordStep = true
	clientAnswer := func() ([]byte, *failure) {
		p, err := l.pc.read(maxLoginPacket)
		if err != nil {
			f := l.classify(ctx, unexpectedEOF(err), "password")
			return nil, &f
		}
		return p, nil
	}

	plugin, scramble := leg.greet.plugin, leg.greet.scramble
	if plugin != pluginNative && plugin != pluginCachingSHA2 {
		plugin = pluginNative
	}
	if err := l.pc.write(authSwitch(plugin, append(append([]byte(nil), scramble...), 0))); err != nil {
		f := l.classify(ctx, err, "password request")
		return fail(&f)
	}
	answer, f := clientAnswer()
	if f != nil {
		return fail(f)
	}
	leg.resp.plugin, leg.resp.authData = plugin, answer
	if err := leg.pc.write(leg.resp.encode(false)); err != nil {
		return fail(l.upstreamIOError(ctx, err))
	}
	for {
		p, err := leg.pc.read(maxLoginPacket)
		if err != nil {
			return fail(l.upstreamIOError(ctx, err))
		}
		if len(p) == 0 {
			return fail(l.upstreamProtocol("empty packet"))
		}
		switch p[0] {
		case pktOK:
			sess, f := l.ready(ctx, sess, p, "relay")
			if f == nil {
				l.log.Info("password login relayed", "plugin", plugin)
			}
			return sess, f
		case pktERR:
			return fail(l.upstreamRejected(p, "upstream refused the relayed password login"))
		case pktAuthSwitch:
			if len(p) == 1 {
				return fail(l.upstreamAuthUnsupported(errors.New("the upstream asks for the pre-4.1 password scheme")))
			}
			var data []byte
			if plugin, data, err = parseAuthSwitch(p); err != nil {
				return fail(l.upstreamProtocol(err.Error()))
			}
			scramble = withoutNUL(data)
			if (plugin == pluginClear || plugin == pluginSHA256) && (!l.tls || !leg.secure) {
				return fail(l.upstreamAuthUnsupported(fmt.Errorf(
					"the upstream asks for authentication plugin %s, which sends the password in clear text; use TLS on both legs", plugin)))
			}
		case pktAuthMore:
			more := p[1:]
			if plugin == pluginCachingSHA2 && bytes.Equal(more, []byte{cachingFastAuthOK}) {
				if err := l.pc.write(p); err != nil {
					f := l.classify(ctx, err, "relaying login")
					return fail(&f)
				}
				continue // OK follows, the client says nothing
			}
			if plugin == pluginCachingSHA2 && bytes.Equal(more, []byte{cachingPerformFull}) && l.tls != leg.secure {
				return l.fullAuthAcrossLegs(ctx, sess, leg, p, scramble)
			}
		default:
			return fail(l.upstreamProtocol(fmt.Sprintf("unexpected packet 0x%02x during login", p[0])))
		}
		if err := l.pc.write(p); err != nil {
			f := l.classify(ctx, err, "relaying login")
			return fail(&f)
		}
		answer, f := clientAnswer()
		if f != nil {
			return fail(f)
		}
		if err := leg.pc.write(answer); err != nil {
			return fail(l.upstreamIOError(ctx, err))
		}
	}
}

// fullAuthAcrossLegs handles caching_sha2_password's full authentication
// when one leg is TLS and the other is not. A TLS client sends its password
// in clear text, which must not go on to a plaintext upstream: iamdb
// encrypts it with the upstream's RSA key instead. A plaintext client
// would ask for an RSA key, which a TLS upstream does not expect; that
// combination is refused.
func (l *login) fullAuthAcrossLegs(ctx context.Context, sess *session, leg *upstreamLeg, perform, scramble []byte) (*session, *failure) {
	fail := func(f *failure) (*session, *failure) { return sess, f }
	if !l.tls {
		return fail(l.upstreamAuthUnsupported(errors.New(
			"caching_sha2_password full authentication of a client without TLS to an upstream with TLS is not supported; connect with TLS")))
	}
	if err := l.pc.write(perform); err != nil {
		f := l.classify(ctx, err, "relaying login")
		return fail(&f)
	}
	p, err := l.pc.read(maxLoginPacket)
	if err != nil {
		f := l.classify(ctx, unexpectedEOF(err), "password")
		return fail(&f)
	}
	password := string(withoutNUL(p))
	if err := leg.pc.write([]byte{cachingPubKeyReq}); err != nil {
		return fail(l.upstreamIOError(ctx, err))
	}
	key, err := leg.pc.read(maxLoginPacket)
	if err != nil {
		return fail(l.upstreamIOError(ctx, err))
	}
	if len(key) == 0 || key[0] != pktAuthMore {
		if len(key) > 0 && key[0] == pktERR {
			return fail(l.upstreamRejected(key, "upstream refused the relayed password login"))
		}
		return fail(l.upstreamProtocol("no RSA public key after a request for it"))
	}
	enc, err := rsaPassword(key[1:], scramble, password)
	if err != nil {
		return fail(l.upstreamProtocol(err.Error()))
	}
	if err := leg.pc.write(enc); err != nil {
		return fail(l.upstreamIOError(ctx, err))
	}
	ok, err := leg.pc.read(maxLoginPacket)
	if err != nil {
		return fail(l.upstreamIOError(ctx, err))
	}
	switch {
	case len(ok) > 0 && ok[0] == pktOK:
		l.log.Info("password login relayed", "plugin", pluginCachingSHA2)
		return l.ready(ctx, sess, ok, "relay")
	case len(ok) > 0 && ok[0] == pktERR:
		return fail(l.upstreamRejected(ok, "upstream refused the relayed password login"))
	}
	return fail(l.upstreamProtocol("unexpected answer to the encrypted password"))
}
