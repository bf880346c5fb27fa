package pgproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

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
// a token of its own, as in steady state: the burst then measures
// admission, not forty cold reads of the identity store.
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

func (b *burst) add(tok, code, msg string) {
	switch code {
	case "":
		b.ok++
		b.admitted = append(b.admitted, tok)
	case "53300":
		b.throttled++
		b.message = msg
	}
}

// pendingLogin is a client that has been asked for its password and not
// answered yet.
type pendingLogin struct {
	conn net.Conn
	fe   *pgproto3.Frontend
}

// startLogin connects over TLS, sends the startup message for user and
// waits for the password request.
func (h *harness) startLogin(user string) (*pendingLogin, error) {
	c, err := net.DialTimeout("tcp", h.addr, 20*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := c.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil {
		c.Close()
		return nil, err
	}
	var s [1]byte
	if _, err := io.ReadFull(c, s[:]); err != nil || s[0] != 'S' {
		c.Close()
		return nil, fmt.Errorf("SSLRequest answered %q: %v", s[:], err)
	}
	pem, err := os.ReadFile(h.caFile)
	if err != nil {
		c.Close()
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"postgresql"}})
	fe := pgproto3.NewFrontend(tc, tc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": user, "database": h.database}})
	if err := fe.Flush(); err != nil {
		c.Close()
		return nil, err
	}
	m, err := fe.Receive()
	if err != nil {
		c.Close()
		return nil, err
	}
	if _, ok := m.(*pgproto3.AuthenticationCleartextPassword); !ok {
		c.Close()
		return nil, fmt.Errorf("asked for the password with %T", m)
	}
	return &pendingLogin{conn: c, fe: fe}, nil
}

// finish sends the token and reads until the session is ready (code "")
// or refused (the ErrorResponse's code and message), then hangs up.
func (p *pendingLogin) finish(token string) (code, msg string, err error) {
	defer p.conn.Close()
	p.fe.Send(&pgproto3.PasswordMessage{Password: token})
	if err := p.fe.Flush(); err != nil {
		return "", "", err
	}
	for {
		m, err := p.fe.Receive()
		if err != nil {
			return "", "", err
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			p.fe.Send(&pgproto3.Terminate{})
			p.fe.Flush()
			return "", "", nil
		case *pgproto3.ErrorResponse:
			return m.Code, m.Message, nil
		}
	}
}

// loginBurst opens one client per token up to the password request, then
// lets them all answer at once: the admission decisions fall within a
// moment however slow the machine is at TLS and upstream logins. Every
// login must end in a session or in 53300.
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
			if err != nil || (code != "" && code != "53300") {
				t.Errorf("login %d neither accepted nor throttled: %s %s %v", i, code, msg, err)
				return
			}
			b.add(tokens[i], code, msg)
		}()
	}
	wg.Wait()
	b.span = time.Since(start)
	return b
}

// connectAll logs in with each token through pgx, 16 at a time.
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
				conn, err := h.connect(ctx, user, tok)
				mu.Lock()
				if err != nil && pgCode(err) != "53300" {
					t.Errorf("login neither accepted nor throttled: %v", err)
				} else {
					b.add(tok, pgCode(err), pgMessage(err))
				}
				mu.Unlock()
				if conn != nil {
					conn.Close(ctx)
				}
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

// throttledEvents returns the connect events refused with Throttled.
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
// plus 50 a second), the rest refused with 53300 before any upstream
// work and audited; 300 logins that reuse one admitted token all pass.
func TestAdmissionNewLogins(t *testing.T) {
	ctl := admission.New("orders", admission.Limits{NewLoginsPerSecond: 50}, admission.Options{})
	sink, path := openSink(t)
	dials := countUpstreamDials(t, testdb.Postgres(t).Addr())
	h := newHarness(t, withAdmission(ctl), withAudit(sink, audit.StatementPolicy{}), dials.option(),
		func(c *Config) { c.HandshakeTimeout = time.Minute })
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
	if n := dials.n.Load(); n > int64(b.ok) {
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
	h.logs.find(t, "login refused", "reason", ResultThrottled)

	reused := make([]string, 300)
	for i := range reused {
		reused[i] = b.admitted[0]
	}
	b = h.connectAll(t, "app", reused)
	if b.ok != 300 {
		t.Fatalf("300 logins reusing one token: %d accepted, %d throttled", b.ok, b.throttled)
	}
}

// TestAdmissionPrincipals: distinct principals per second and the
// per-principal rate.
func TestAdmissionPrincipals(t *testing.T) {
	t.Run("principals_per_second", func(t *testing.T) {
		ctl := admission.New("orders", admission.Limits{PrincipalsPerSecond: 5}, admission.Options{})
		h := newHarness(t, withAdmission(ctl), func(c *Config) { c.HandshakeTimeout = time.Minute })
		var tokens, warmup []string
		for i := range 40 {
			id, secret := h.user(fmt.Sprint("user", i), connectPolicy("app"))
			toks := h.tokensAt(2, "app", id, secret)
			tokens, warmup = append(tokens, toks[0]), append(warmup, toks[1])
		}
		// After the last store write, so no generation change drops what
		// the warm-up loads.
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
		h := newHarness(t, withAdmission(ctl), func(c *Config) { c.HandshakeTimeout = time.Minute })
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
		// Another principal is not held back by alice's limit.
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

	var open []*pgx.Conn
	defer func() {
		for _, c := range open {
			c.Close(ctx)
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
	if pgCode(err) != "53300" || !strings.Contains(pgMessage(err), `max_connections_per_user 3 reached for user "app"`) {
		t.Fatalf("4th app session: %v", err)
	}
	c, err := h.connect(ctx, "report", reportTok)
	if err != nil {
		t.Fatalf("report beside 3 app sessions: %v", err)
	}
	open = append(open, c)
	_, err = h.connect(ctx, "report", reportTok)
	if pgCode(err) != "53300" || !strings.Contains(pgMessage(err), "max_connections 4 reached") {
		t.Fatalf("5th session: %v", err)
	}
	// A non-IAM user counts and is refused alike.
	_, err = h.connect(ctx, relayUser, relayPassword)
	if pgCode(err) != "53300" {
		t.Fatalf("password user over max_connections: %v", err)
	}

	open[0].Close(ctx)
	open = open[1:]
	waitUntilPG(t, "the closed session's slot to be free", func() bool {
		c, err := h.connect(ctx, "app", appTok)
		if err != nil {
			if pgCode(err) != "53300" {
				t.Fatalf("after closing a session: %v", err)
			}
			return false
		}
		open = append(open, c)
		return true
	})

	evs := throttledEvents(events(t, path, 1))
	waitUntilPG(t, "the refusals' audit events", func() bool {
		evs = throttledEvents(events(t, path, 1))
		return len(evs) >= 3
	})
	if !strings.Contains(evs[0].ErrorMessage, "max_connections_per_user 3 reached") || evs[0].RequestParameters["dbUser"] != "app" {
		t.Fatalf("first throttled event %+v", evs[0])
	}
	if h.obs.count(ResultThrottled) < 3 {
		t.Fatalf("observer saw %d throttled logins", h.obs.count(ResultThrottled))
	}
}

// TestAdmissionFailedLogins: bad tokens from 127.0.0.2 block it — a good
// token from there is refused too, before TLS — while 127.0.0.1 logs in;
// the block expires by itself.
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

	from := func(ip string) func(*pgx.ConnConfig) {
		return func(c *pgx.ConnConfig) {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 20 * time.Second}
			c.DialFunc = d.DialContext
		}
	}
	connectFrom := func(ip, tok string) error {
		cfg := h.pgxConfig("app", tok, "")
		from(ip)(cfg)
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			c.Close(ctx)
		}
		return err
	}
	for i := range 3 {
		if err := connectFrom("127.0.0.2", bad); pgCode(err) != "28P01" {
			t.Fatalf("bad token %d: %v", i+1, err)
		}
	}
	if err := connectFrom("127.0.0.2", good); err == nil {
		t.Fatal("a good token from the blocked address logged in")
	}
	if code, msg := rawSSLRequest(t, "127.0.0.2", h.addr); code != "53300" || !strings.Contains(msg, "failed_logins: too many failed logins from 127.0.0.2") {
		t.Fatalf("blocked address's SSLRequest answered %s %q, want 53300 naming the block", code, msg)
	}
	if err := connectFrom("127.0.0.1", good); err != nil {
		t.Fatalf("another address: %v", err)
	}
	if ctl.BlockedAddresses() != 1 {
		t.Fatalf("blocked addresses: %d", ctl.BlockedAddresses())
	}
	waitUntilPG(t, "the block to expire", func() bool { return connectFrom("127.0.0.2", good) == nil })

	// The audit trail shows the failure that started the block.
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
// next login, and is told so in a PostgreSQL error it can read (the
// refusal comes after TLS, unlike a block's); another address is not
// held back.
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
	connectFrom := func(ip, tok string) error {
		cfg := h.pgxConfig("app", tok, "")
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 20 * time.Second}
		cfg.DialFunc = d.DialContext
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			c.Close(ctx)
		}
		return err
	}
	if err := connectFrom("127.0.0.2", bad); pgCode(err) != "28P01" {
		t.Fatalf("bad token: %v", err)
	}
	err := connectFrom("127.0.0.2", good)
	if pgCode(err) != "53300" || !strings.Contains(pgMessage(err), "repeated failed logins from 127.0.0.2; retry in") {
		t.Fatalf("good token while backing off: %v", err)
	}
	if err := connectFrom("127.0.0.1", good); err != nil {
		t.Fatalf("another address: %v", err)
	}
	var evs []*audit.Event
	waitUntilPG(t, "the back-off's audit event", func() bool {
		evs = throttledEvents(events(t, path, 1))
		return len(evs) == 1
	})
	if e := evs[0]; e.SourceIPAddress != "127.0.0.2" || !strings.Contains(e.ErrorMessage, "failed_logins") {
		t.Fatalf("back-off event %+v", e)
	}
}

// rawSSLRequest sends an SSLRequest from ip and returns the SQLSTATE and
// message of the ErrorResponse that answers it ("" if none).
func rawSSLRequest(t *testing.T, ip, addr string) (code, msg string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte{0, 0, 0, 8, 4, 210, 22, 47}); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(c, c)
	m, err := fe.Receive()
	if err != nil {
		return "", err.Error()
	}
	e, ok := m.(*pgproto3.ErrorResponse)
	if !ok {
		return "", fmt.Sprintf("%T", m)
	}
	return e.Code, e.Message
}

func waitUntilPG(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkLoginAdmission measures whole logins (TLS, token, SELECT 1,
// close) with one reused token, as pools log in, side by side: admission
// control off, in memory, and shared through a real Redis.
func BenchmarkLoginAdmission(b *testing.B) {
	h := newHarness(b)
	id, secret := h.user("alice", connectPolicy("app"))
	tok := h.sdkToken(h.endpoint, testRegion, "app", id, secret, "")
	rd := testdb.Redis(b)
	shared, err := admission.Connect("redis://"+rd.Addr+"/0", admission.SharedOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer shared.Close()
	lim := admission.Limits{NewLoginsPerSecond: 200, PrincipalsPerSecond: 20, MaxConnections: 1000,
		Failures: admission.FailurePolicy{BlockAfter: 10, BlockFor: 5 * time.Minute, Window: 10 * time.Minute, BackoffAfter: 3, Backoff: time.Second}}
	for _, bc := range []struct {
		name string
		adm  proxy.Admission
	}{
		{"off", nil},
		{"memory", admission.New("orders", lim, admission.Options{})},
		{"redis", admission.New(fmt.Sprintf("orders-%d", time.Now().UnixNano()), lim, admission.Options{Shared: shared})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := h.cfg
			cfg.Admission = bc.adm
			h.srv.Update(cfg)
			ctx := context.Background()
			for b.Loop() {
				conn, err := pgx.ConnectConfig(ctx, h.pgxConfig("app", tok, ""))
				if err != nil {
					b.Fatal(err)
				}
				var one int
				if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
					b.Fatal(err)
				}
				conn.Close(ctx)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "logins/s")
		})
	}
}
