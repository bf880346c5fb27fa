package mysqlproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/admission"
	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/proxy"
	"github.com/iamdb/iamdb/internal/sigv4"
	"github.com/iamdb/iamdb/internal/testdb"
)

// withAdmission gives the listener admission control.
func withAdmission(a proxy.Admission) harnessOption {
	return func(c *Config) { c.Admission = a }
}

// dialCounter relays the listener's upstream connections to the real
// server and counts them: a throttled login must not open one.
type dialCounter struct {
	ln     net.Listener
	target string
	n      atomic.Int64
}

func countUpstreamDials(t *testing.T, target string) *dialCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dialCounter{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.n.Add(1)
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", d.target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.Close() }()
				io.Copy(c, u)
			}()
		}
	}()
	return d
}

func (d *dialCounter) option() harnessOption {
	return func(c *Config) { c.Upstream.Address = d.ln.Addr().String() }
}

// tokensAt signs n distinct tokens for dbUser with one key, one second
// apart going back from now, all within their 15 minutes.
func (h *harness) tokensAt(n int, dbUser, keyID, secret string) []string {
	h.t.Helper()
	now := time.Now()
	out := make([]string, n)
	for i := range out {
		tok, err := sigv4.Sign(sigv4.SignInput{Endpoint: h.endpoint, Region: testRegion, DBUser: dbUser,
			AccessKeyID: keyID, SecretAccessKey: secret, Time: now.Add(-time.Duration(i) * time.Second)})
		if err != nil {
			h.t.Fatal(err)
		}
		out[i] = tok
	}
	return out
}

// warm has the authenticator load a key and its principal's policies with
// a token of its own, as in steady state.
func (h *harness) warm(t *testing.T, dbUser, token string) {
	t.Helper()
	if _, err := h.authn.Authenticate(context.Background(), authn.Request{Token: token, Instance: h.inst, DBUser: dbUser}); err != nil {
		t.Fatal(err)
	}
}

// burst is the outcome of many logins at once.
type burst struct {
	ok, throttled int
	admitted      []string // tokens that logged in
	message       string   // one throttled error's message
	span          time.Duration
}

func (b *burst) add(tok string, code uint16, msg string) {
	switch code {
	case 0:
		b.ok++
		b.admitted = append(b.admitted, tok)
	case erConCount:
		b.throttled++
		b.message = msg
	}
}

// pendingLogin is a client that has been asked for its clear-text password
// and not answered yet.
type pendingLogin struct {
	conn net.Conn
	pc   *packetConn
}

// startLogin connects over TLS, answers the greeting as user with
// mysql_native_password and waits for the switch to mysql_clear_password.
func (h *harness) startLogin(user string) (*pendingLogin, error) {
	c, err := net.DialTimeout("tcp", h.addr, 20*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	pc := &packetConn{rw: c}
	p, err := pc.read(maxLoginPacket)
	if err != nil {
		c.Close()
		return nil, err
	}
	greet, err := parseGreeting(p)
	if err != nil {
		c.Close()
		return nil, err
	}
	resp := &handshakeResponse{caps: rawClientCaps | capSSL | capMySQL, maxPacket: 1 << 24, charset: 45,
		user: user, database: h.database, plugin: pluginNative, authData: scrambleNative(greet.scramble, "x")}
	if err := pc.write(resp.encode(true)); err != nil {
		c.Close()
		return nil, err
	}
	pem, err := os.ReadFile(h.caFile)
	if err != nil {
		c.Close()
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	pc.rw = tc
	if err := pc.write(resp.encode(false)); err != nil {
		c.Close()
		return nil, err
	}
	if p, err = pc.read(maxLoginPacket); err != nil {
		c.Close()
		return nil, err
	}
	if p[0] != pktAuthSwitch {
		c.Close()
		return nil, fmt.Errorf("answered the handshake with %x, want an auth switch", p[0])
	}
	return &pendingLogin{conn: tc, pc: pc}, nil
}

// finish sends the token and returns 0 for an OK, else the ERR's code and
// message; then hangs up.
func (p *pendingLogin) finish(token string) (code uint16, msg string, err error) {
	defer p.conn.Close()
	if err := p.pc.write(append([]byte(token), 0)); err != nil {
		return 0, "", err
	}
	pkt, err := p.pc.read(maxLoginPacket)
	if err != nil {
		return 0, "", err
	}
	switch pkt[0] {
	case pktOK:
		return 0, "", nil
	case pktERR:
		e := parseError(pkt)
		return e.code, e.message, nil
	}
	return 0, "", fmt.Errorf("answered the token with %x", pkt[0])
}

// loginBurst opens one client per token up to the password request, then
// lets them all answer at once: the admission decisions fall within a
// moment however slow the machine is at TLS and upstream logins. Every
// login must end in a session or in 1040.
func (h *harness) loginBurst(t *testing.T, user string, tokens []string) burst {
	t.Helper()
	pending := make([]*pendingLogin, len(tokens))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range tokens {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p, err := h.startLogin(user)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			pending[i] = p
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var mu sync.Mutex
	var b burst
	start := time.Now()
	for i, p := range pending {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, msg, err := p.finish(tokens[i])
			mu.Lock()
			defer mu.Unlock()
			if err != nil || (code != 0 && code != erConCount) {
				t.Errorf("login %d neither accepted nor throttled: %d %s %v", i, code, msg, err)
				return
			}
			b.add(tokens[i], code, msg)
		}()
	}
	wg.Wait()
	b.span = time.Since(start)
	return b
}

// driverCode is the MySQL error number go-sql-driver reports, 0 for none.
func driverCode(err error) (uint16, string) {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number, me.Message
	}
	return 0, ""
}

// login logs in once with go-sql-driver (from cfg's network) and hangs up.
func (h *harness) login(ctx context.Context, cfg *mysql.Config) error {
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	conn, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	return conn.Close()
}

// connectAll logs in with each token through go-sql-driver, 16 at a time.
func (h *harness) connectAll(t *testing.T, user string, tokens []string) burst {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var b burst
	work := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tok := range work {
				err := h.login(ctx, h.driverConfig(user, tok))
				code, msg := driverCode(err)
				mu.Lock()
				if err != nil && code != erConCount {
					t.Errorf("login neither accepted nor throttled: %v", err)
				} else {
					b.add(tok, code, msg)
				}
				mu.Unlock()
			}
		}()
	}
	for _, tok := range tokens {
		work <- tok
	}
	close(work)
	wg.Wait()
	return b
}

func throttledEvents(evs []*audit.Event) []*audit.Event {
	var out []*audit.Event
	for _, e := range evs {
		if e.EventName == audit.NameConnect && e.ErrorCode == ResultThrottled {
			out = append(out, e)
		}
	}
	return out
}

// TestAdmissionNewLogins: a burst of 300 logins with distinct tokens at
// new_logins_per_second 50 is cut to what GCRA allows (the burst of 50
// plus 50 a second), the rest refused with 1040 before any upstream work
// and audited; 300 logins that reuse one admitted token all pass.
func TestAdmissionNewLogins(t *testing.T) {
	ctl := admission.New("orders", admission.Limits{NewLoginsPerSecond: 50}, admission.Options{})
	sink, path := openSink(t)
	dials := countUpstreamDials(t, testdb.MariaDB(t).Addr())
	h := newHarness(t, withAdmission(ctl), withAudit(sink, audit.StatementPolicy{}), dials.option(),
		func(c *Config) { c.HandshakeTimeout = 2 * time.Minute })
	id, secret := h.user("alice", connectPolicy("app"))
	toks := h.tokensAt(301, "app", id, secret)
	h.warm(t, "app", toks[300])

	b := h.loginBurst(t, "app", toks[:300])
	limit := 50 + int(50*b.span.Seconds()) + 1
	t.Logf("300 distinct tokens: %d accepted, %d throttled in %v", b.ok, b.throttled, b.span)
	if b.ok+b.throttled != 300 || b.throttled == 0 || b.ok < 50 || b.ok > limit {
		t.Fatalf("%d accepted, %d throttled over %v: want 300 in all, at least the burst of 50 accepted and at most %d", b.ok, b.throttled, b.span, limit)
	}
	want := "iamdb: instance orders: login throttled (new_logins_per_second 50 exceeded); retry with back-off"
	if b.message != want {
		t.Fatalf("throttled message %q, want %q", b.message, want)
	}
	// One extra connection reads the upstream's greeting once.
	if n := dials.n.Load(); n > int64(b.ok)+1 {
		t.Fatalf("%d upstream connections for %d accepted logins: throttled logins dialled", n, b.ok)
	}
	h.obs.wait(t, ResultThrottled, b.throttled)
	evs := throttledEvents(events(t, path, 300+b.ok))
	if len(evs) != b.throttled {
		t.Fatalf("%d Throttled connect events, want %d", len(evs), b.throttled)
	}
	for _, e := range evs {
		if !strings.Contains(e.ErrorMessage, "new_logins_per_second 50 exceeded") || e.UserIdentity == nil || !strings.HasSuffix(e.UserIdentity.ARN, ":user/alice") {
			t.Fatalf("throttled event: %+v", e)
		}
	}

	reused := make([]string, 300)
	for i := range reused {
		reused[i] = b.admitted[0]
	}
	if b := h.connectAll(t, "app", reused); b.ok != 300 {
		t.Fatalf("300 logins reusing one token: %d accepted, %d throttled", b.ok, b.throttled)
	}
}

// TestAdmissionPrincipals: distinct principals per second and the
// per-principal rate.
func TestAdmissionPrincipals(t *testing.T) {
	t.Run("principals_per_second", func(t *testing.T) {
		ctl := admission.New("orders", admission.Limits{PrincipalsPerSecond: 5}, admission.Options{})
		h := newHarness(t, withAdmission(ctl), func(c *Config) { c.HandshakeTimeout = 2 * time.Minute })
		var tokens, warmup []string
		for i := range 40 {
			id, secret := h.user(fmt.Sprint("user", i), connectPolicy("app"))
			toks := h.tokensAt(2, "app", id, secret)
			tokens, warmup = append(tokens, toks[0]), append(warmup, toks[1])
		}
		for _, tok := range warmup {
			h.warm(t, "app", tok)
		}
		b := h.loginBurst(t, "app", tokens)
		limit := 5 + int(5*b.span.Seconds()) + 1
		t.Logf("40 principals: %d accepted, %d throttled in %v", b.ok, b.throttled, b.span)
		if b.throttled == 0 || b.ok < 5 || b.ok > limit {
			t.Fatalf("%d accepted, %d throttled over %v: want at least 5 and at most %d accepted", b.ok, b.throttled, b.span, limit)
		}
		if !strings.Contains(b.message, "principals_per_second 5 exceeded") {
			t.Fatalf("message %q", b.message)
		}
	})
	t.Run("new_logins_per_principal_per_second", func(t *testing.T) {
		ctl := admission.New("orders", admission.Limits{NewLoginsPerPrincipalPerSecond: 5}, admission.Options{})
		h := newHarness(t, withAdmission(ctl), func(c *Config) { c.HandshakeTimeout = 2 * time.Minute })
		id, secret := h.user("alice", connectPolicy("app"))
		toks := h.tokensAt(61, "app", id, secret)
		h.warm(t, "app", toks[60])
		b := h.loginBurst(t, "app", toks[:60])
		limit := 5 + int(5*b.span.Seconds()) + 1
		t.Logf("60 tokens of one principal: %d accepted, %d throttled in %v", b.ok, b.throttled, b.span)
		if b.throttled == 0 || b.ok < 5 || b.ok > limit {
			t.Fatalf("%d accepted, %d throttled over %v: want at least 5 and at most %d accepted", b.ok, b.throttled, b.span, limit)
		}
		if !strings.Contains(b.message, "new_logins_per_principal_per_second 5 exceeded") {
			t.Fatalf("message %q", b.message)
		}
		bobID, bobSecret := h.user("bob", connectPolicy("app"))
		if b := h.connectAll(t, "app", h.tokensAt(1, "app", bobID, bobSecret)); b.ok != 1 {
			t.Fatalf("bob after alice's refusals: %+v", b)
		}
	})
}

// TestAdmissionConnectionCaps: max_connections and max_connections_per_user
// — N sessions open, the next refused, one closed, a new one accepted.
func TestAdmissionConnectionCaps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctl := admission.New("orders", admission.Limits{MaxConnections: 4, MaxConnectionsPerUser: 3}, admission.Options{})
	sink, path := openSink(t)
	h := newHarness(t, withAdmission(ctl), withAudit(sink, audit.StatementPolicy{}))
	id, secret := h.user("alice", connectPolicy("app", "report"))
	appTok := h.tokensAt(1, "app", id, secret)[0]
	reportTok := h.tokensAt(1, "report", id, secret)[0]

	type closer interface{ Close() error }
	var open []closer
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := range 3 {
		c, err := h.connect(ctx, "app", appTok)
		if err != nil {
			t.Fatalf("app session %d: %v", i+1, err)
		}
		open = append(open, c)
	}
	_, err := h.connect(ctx, "app", appTok)
	if code, msg := driverCode(err); code != erConCount || !strings.Contains(msg, `max_connections_per_user 3 reached for user "app"`) {
		t.Fatalf("4th app session: %v", err)
	}
	c, err := h.connect(ctx, "report", reportTok)
	if err != nil {
		t.Fatalf("report beside 3 app sessions: %v", err)
	}
	open = append(open, c)
	_, err = h.connect(ctx, "report", reportTok)
	if code, msg := driverCode(err); code != erConCount || !strings.Contains(msg, "max_connections 4 reached") {
		t.Fatalf("5th session: %v", err)
	}
	_, err = h.connect(ctx, relayUser, relayPassword)
	if code, _ := driverCode(err); code != erConCount {
		t.Fatalf("password user over max_connections: %v", err)
	}

	open[0].Close()
	open = open[1:]
	waitUntilMy(t, "the closed session's slot to be free", func() bool {
		c, err := h.connect(ctx, "app", appTok)
		if err != nil {
			if code, _ := driverCode(err); code != erConCount {
				t.Fatalf("after closing a session: %v", err)
			}
			return false
		}
		open = append(open, c)
		return true
	})

	var evs []*audit.Event
	waitUntilMy(t, "the refusals' audit events", func() bool {
		evs = throttledEvents(events(t, path, 1))
		return len(evs) >= 3
	})
	if !strings.Contains(evs[0].ErrorMessage, "max_connections_per_user 3 reached") || evs[0].RequestParameters["dbUser"] != "app" {
		t.Fatalf("first throttled event %+v", evs[0])
	}
}

// sourceNet registers (once) a go-sql-driver network that connects from
// the loopback address ip.
var sourceNets sync.Map

func sourceNet(ip string) string {
	name := "tcp-from-" + ip
	if _, loaded := sourceNets.LoadOrStore(name, true); !loaded {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 20 * time.Second}
		mysql.RegisterDialContext(name, func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		})
	}
	return name
}

// TestAdmissionFailedLogins: bad tokens from 127.0.0.2 block it — a good
// token from there is refused too, before the greeting — while 127.0.0.1
// logs in; the block expires by itself.
func TestAdmissionFailedLogins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctl := admission.New("orders", admission.Limits{Failures: admission.FailurePolicy{
		BlockAfter: 3, BlockFor: 2 * time.Second, Window: time.Hour}}, admission.Options{})
	sink, path := openSink(t)
	h := newHarness(t, withAdmission(ctl), withAudit(sink, audit.StatementPolicy{}))
	id, secret := h.user("alice", connectPolicy("app"))
	good := h.tokensAt(1, "app", id, secret)[0]
	// The same token with the last signature digit changed, always to
	// another digit.
	last := byte('0')
	if good[len(good)-1] == '0' {
		last = '1'
	}
	bad := good[:len(good)-1] + string(last)

	loginFrom := func(ip, tok string) error {
		cfg := h.driverConfig("app", tok)
		cfg.Net = sourceNet(ip)
		return h.login(ctx, cfg)
	}
	for i := range 3 {
		if code, _ := driverCode(loginFrom("127.0.0.2", bad)); code != erAccessDenied {
			t.Fatalf("bad token %d: want access denied", i+1)
		}
	}
	err := loginFrom("127.0.0.2", good)
	if code, msg := driverCode(err); code != erConCount || !strings.Contains(msg, "failed_logins: too many failed logins from 127.0.0.2") {
		t.Fatalf("good token from the blocked address: %v", err)
	}
	if err := loginFrom("127.0.0.1", good); err != nil {
		t.Fatalf("another address: %v", err)
	}
	if ctl.BlockedAddresses() != 1 {
		t.Fatalf("blocked addresses: %d", ctl.BlockedAddresses())
	}
	waitUntilMy(t, "the block to expire", func() bool { return loginFrom("127.0.0.2", good) == nil })

	var blocked bool
	for _, e := range events(t, path, 5) {
		if e.ErrorCode == "InvalidSignature" && strings.Contains(e.ErrorMessage, "127.0.0.2 is now blocked for 2s after 3 failed logins") {
			blocked = true
		}
	}
	if !blocked {
		t.Fatal("no connect event records the block")
	}
	h.logs.find(t, "connection refused", "reason", ResultThrottled)
}

// TestAdmissionBackoff: after a bad token an address must wait before its
// next login, and is told so; another address is not held back.
func TestAdmissionBackoff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctl := admission.New("orders", admission.Limits{Failures: admission.FailurePolicy{
		BackoffAfter: 1, Backoff: time.Minute, Window: time.Hour}}, admission.Options{})
	sink, path := openSink(t)
	h := newHarness(t, withAdmission(ctl), withAudit(sink, audit.StatementPolicy{}))
	id, secret := h.user("alice", connectPolicy("app"))
	good := h.tokensAt(1, "app", id, secret)[0]
	last := byte('0')
	if good[len(good)-1] == '0' {
		last = '1'
	}
	bad := good[:len(good)-1] + string(last)
	loginFrom := func(ip, tok string) error {
		cfg := h.driverConfig("app", tok)
		cfg.Net = sourceNet(ip)
		return h.login(ctx, cfg)
	}
	if code, _ := driverCode(loginFrom("127.0.0.2", bad)); code != erAccessDenied {
		t.Fatal("bad token: want access denied")
	}
	err := loginFrom("127.0.0.2", good)
	if code, msg := driverCode(err); code != erConCount || !strings.Contains(msg, "repeated failed logins from 127.0.0.2; retry in") {
		t.Fatalf("good token while backing off: %v", err)
	}
	if err := loginFrom("127.0.0.1", good); err != nil {
		t.Fatalf("another address: %v", err)
	}
	var evs []*audit.Event
	waitUntilMy(t, "the back-off's audit event", func() bool {
		evs = throttledEvents(events(t, path, 1))
		return len(evs) == 1
	})
	if e := evs[0]; e.SourceIPAddress != "127.0.0.2" || !strings.Contains(e.ErrorMessage, "failed_logins") {
		t.Fatalf("back-off event %+v", e)
	}
}

func waitUntilMy(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
