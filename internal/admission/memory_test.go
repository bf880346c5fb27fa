package admission

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func newMemoryController(lim Limits) (*Controller, *clock, *counter) {
	clk, cnt := newClock(), &counter{}
	return New("orders", lim, Options{Now: clk.now, Throttled: cnt.throttled}), clk, cnt
}

// TestGCRA checks the rate arithmetic itself: a burst of rate, then one
// event per 1/rate, and the wait it reports.
func TestGCRA(t *testing.T) {
	for _, rate := range []int{1, 3, 50, 200} {
		t.Run(fmt.Sprint(rate), func(t *testing.T) {
			var tat int64
			now := int64(1e18)
			for i := 0; i < rate; i++ {
				next, wait := gcra(tat, now, rate)
				if wait != 0 {
					t.Fatalf("event %d of the burst refused (wait %v)", i+1, wait)
				}
				tat = next
			}
			_, wait := gcra(tat, now, rate)
			interval := time.Second / time.Duration(rate)
			if wait <= 0 || wait > interval {
				t.Fatalf("event after the burst: wait %v, want (0, %v]", wait, interval)
			}
			now += int64(wait)
			next, w := gcra(tat, now, rate)
			if w != 0 {
				t.Fatalf("refused again after the wait it was told (%v)", w)
			}
			if _, w := gcra(next, now, rate); w == 0 {
				t.Fatal("a second event within one interval was allowed")
			}
			// Idle time refills the burst, but no more than the burst.
			now += int64(time.Hour)
			allowed := 0
			for range 2 * rate {
				if n, w := gcra(next, now, rate); w == 0 {
					next = n
					allowed++
				}
			}
			if allowed != rate {
				t.Fatalf("after an idle hour %d events allowed, want the burst %d", allowed, rate)
			}
		})
	}
}

// TestBurstBound: whatever the timing of the attempts, the number admitted
// over a span never exceeds the burst plus rate × span.
func TestBurstBound(t *testing.T) {
	c, clk, cnt := newMemoryController(Limits{NewLoginsPerSecond: 50})
	start := clk.now()
	admitted := 0
	for i := range 300 {
		if i%10 == 0 {
			clk.add(37 * time.Millisecond)
		}
		if c.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprintf("tok%03d", i), clk.now())) == nil {
			admitted++
		}
	}
	span := clk.now().Sub(start).Seconds()
	if max := 50 + int(50*span) + 1; admitted > max || admitted < 50 {
		t.Fatalf("admitted %d of 300 over %.2fs, want between the burst 50 and %d", admitted, span, max)
	}
	if cnt.get(LimitNewLogins) != 300-admitted {
		t.Fatalf("throttled metric %d, want %d", cnt.get(LimitNewLogins), 300-admitted)
	}
}

// TestLoginRates covers each rate and how they combine.
func TestLoginRates(t *testing.T) {
	t.Run("reused token is free", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{NewLoginsPerSecond: 2, PrincipalsPerSecond: 1, NewLoginsPerPrincipalPerSecond: 1})
		d := decision("alice", "tok-a", clk.now())
		for i := range 300 {
			if err := c.AdmitLogin(bg, "10.0.0.1", d); err != nil {
				t.Fatalf("reuse %d: %v", i, err)
			}
		}
	})
	t.Run("refused token counts again when retried", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{NewLoginsPerSecond: 1})
		if err := c.AdmitLogin(bg, "10.0.0.1", decision("alice", "t1", clk.now())); err != nil {
			t.Fatal(err)
		}
		d := decision("alice", "t2", clk.now())
		for i := range 3 {
			if got := limitOf(t, c.AdmitLogin(bg, "10.0.0.1", d)); got != LimitNewLogins {
				t.Fatalf("attempt %d of a refused token: %q, want refused again", i, got)
			}
		}
		clk.add(time.Second)
		if err := c.AdmitLogin(bg, "10.0.0.1", d); err != nil {
			t.Fatalf("after a second: %v", err)
		}
	})
	t.Run("expired token counts again", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{NewLoginsPerSecond: 1})
		d := decision("alice", "t1", clk.now())
		d.ValidUntil = clk.now().Add(time.Minute)
		if err := c.AdmitLogin(bg, "10.0.0.1", d); err != nil {
			t.Fatal(err)
		}
		if err := c.AdmitLogin(bg, "10.0.0.1", decision("alice", "t2", clk.now())); limitOf(t, err) != LimitNewLogins {
			t.Fatal("the burst of 1 is spent")
		}
		clk.add(time.Minute)
		if err := c.AdmitLogin(bg, "10.0.0.1", decision("alice", "t3", clk.now())); err != nil {
			t.Fatal(err)
		}
		// t1 is past its validity: as a new token it needs a slot, and
		// the one that came back was taken by t3.
		if limitOf(t, c.AdmitLogin(bg, "10.0.0.1", d)) != LimitNewLogins {
			t.Fatal("an expired token was admitted as a reuse")
		}
	})
	t.Run("distinct principals", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{PrincipalsPerSecond: 2})
		for i, p := range []string{"alice", "bob"} {
			if err := c.AdmitLogin(bg, "10.0.0.1", decision(p, fmt.Sprint("t", i), clk.now())); err != nil {
				t.Fatal(err)
			}
		}
		if limitOf(t, c.AdmitLogin(bg, "10.0.0.1", decision("carol", "t3", clk.now()))) != LimitPrincipals {
			t.Fatal("a third principal within the second was admitted")
		}
		// A principal counted this second logs in with new tokens freely.
		for i := range 10 {
			if err := c.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprint("a", i), clk.now())); err != nil {
				t.Fatalf("alice's token %d: %v", i, err)
			}
		}
		clk.add(time.Second)
		if err := c.AdmitLogin(bg, "10.0.0.1", decision("carol", "t3", clk.now())); err != nil {
			t.Fatalf("next second: %v", err)
		}
	})
	t.Run("per principal, without eating the instance budget", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{NewLoginsPerPrincipalPerSecond: 2, NewLoginsPerSecond: 5})
		for i := range 2 {
			if err := c.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprint("a", i), clk.now())); err != nil {
				t.Fatal(err)
			}
		}
		for i := 2; i < 20; i++ {
			if limitOf(t, c.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprint("a", i), clk.now()))) != LimitPerPrincipal {
				t.Fatalf("alice's token %d admitted over her limit", i)
			}
		}
		// alice's refusals cost the instance nothing: 3 of its 5 are left.
		for i := range 3 {
			p := fmt.Sprint("user", i)
			if err := c.AdmitLogin(bg, "10.0.0.1", decision(p, p, clk.now())); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
		}
		if limitOf(t, c.AdmitLogin(bg, "10.0.0.1", decision("dave", "d", clk.now()))) != LimitNewLogins {
			t.Fatal("the instance admitted more than its burst")
		}
	})
	t.Run("limits off", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{})
		for i := range 1000 {
			if err := c.AdmitLogin(bg, "10.0.0.1", decision(fmt.Sprint("p", i), fmt.Sprint("t", i), clk.now())); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("SetLimits applies to what comes next", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{NewLoginsPerSecond: 1})
		c.AdmitLogin(bg, "10.0.0.1", decision("alice", "t1", clk.now()))
		if limitOf(t, c.AdmitLogin(bg, "10.0.0.1", decision("alice", "t2", clk.now()))) != LimitNewLogins {
			t.Fatal("limit 1 admitted two")
		}
		c.SetLimits(Limits{})
		if err := c.AdmitLogin(bg, "10.0.0.1", decision("alice", "t2", clk.now())); err != nil {
			t.Fatal(err)
		}
	})
}

// TestConnectionCaps: N slots, the N+1th refused, a released slot reused;
// per user likewise without touching other users.
func TestConnectionCaps(t *testing.T) {
	c, _, cnt := newMemoryController(Limits{MaxConnections: 3, MaxConnectionsPerUser: 2})
	var rel []func()
	for _, u := range []string{"app", "app", "report"} {
		r, err := c.Admit(bg, "10.0.0.1", u)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		rel = append(rel, r)
	}
	if _, err := c.Admit(bg, "10.0.0.1", "other"); limitOf(t, err) != LimitConnections {
		t.Fatalf("4th connection: %v", err)
	}
	rel[2]() // report leaves
	rel[2]() // a second release is a no-op
	if _, err := c.Admit(bg, "10.0.0.1", "app"); limitOf(t, err) != LimitConnectionsPerUser || !strings.Contains(err.Error(), `"app"`) {
		t.Fatalf("3rd app connection: %v", err)
	}
	r, err := c.Admit(bg, "10.0.0.1", "report")
	if err != nil {
		t.Fatalf("report after a slot was freed: %v", err)
	}
	r()
	rel[0]()
	if _, err := c.Admit(bg, "10.0.0.1", "app"); err != nil {
		t.Fatalf("app after one of its connections ended: %v", err)
	}
	if cnt.get(LimitConnections) != 1 || cnt.get(LimitConnectionsPerUser) != 1 {
		t.Fatalf("metrics %v", cnt.n)
	}
}

// TestFailedLogins: back-off, then a block; another address unaffected;
// the block expires; a success resets the count; the window forgets.
func TestFailedLogins(t *testing.T) {
	pol := FailurePolicy{BlockAfter: 5, BlockFor: 5 * time.Minute, Window: 10 * time.Minute, BackoffAfter: 2, Backoff: time.Second}
	c, clk, cnt := newMemoryController(Limits{Failures: pol})
	const bad, other = "192.0.2.7", "192.0.2.8"

	wantBackoff := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second}
	for i, want := range wantBackoff {
		if block := c.LoginFailed(bg, bad); block != "" {
			t.Fatalf("failure %d blocked: %s", i+1, block)
		}
		// Backing off is not a block: the connection gets as far as
		// Admit, where the client can be told to wait.
		if err := c.Screen(bg, bad); err != nil {
			t.Fatalf("after failure %d, Screen: %v", i+1, err)
		}
		release, err := c.Admit(bg, bad, "app")
		if want == 0 {
			if err != nil {
				t.Fatalf("after failure %d: %v", i+1, err)
			}
			release()
			continue
		}
		var r *Refusal
		if limitOf(t, err) != LimitFailedLogins || !errors.As(err, &r) || r.RetryAfter != want || !strings.Contains(err.Error(), "retry in") {
			t.Fatalf("after failure %d: %v, want a back-off of %v", i+1, err, want)
		}
		if release, err := c.Admit(bg, other, "app"); err != nil {
			t.Fatal("another address is backing off too")
		} else {
			release()
		}
		clk.add(want)
	}
	block := c.LoginFailed(bg, bad)
	if !strings.Contains(block, "blocked for 5m0s after 5 failed logins") {
		t.Fatalf("5th failure: %q", block)
	}
	if c.BlockedAddresses() != 1 {
		t.Fatalf("blocked addresses %d", c.BlockedAddresses())
	}
	err := c.Screen(bg, bad)
	if limitOf(t, err) != LimitFailedLogins || !strings.Contains(err.Error(), "blocked for 5m0s") {
		t.Fatalf("blocked address: %v", err)
	}
	if c.Screen(bg, other) != nil {
		t.Fatal("a block touched another address")
	}
	clk.add(5*time.Minute - time.Millisecond)
	if c.Screen(bg, bad) == nil {
		t.Fatal("the block ended early")
	}
	clk.add(time.Millisecond)
	if err := c.Screen(bg, bad); err != nil {
		t.Fatalf("the block did not expire: %v", err)
	}
	if c.BlockedAddresses() != 0 {
		t.Fatalf("blocked addresses %d after expiry", c.BlockedAddresses())
	}
	// Three back-offs (Admit) and two screens of the blocked address refused.
	if n := cnt.get(LimitFailedLogins); n != 5 {
		t.Fatalf("failed_logins refusals counted %d, want 5", n)
	}

	t.Run("success resets", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{Failures: pol})
		c.LoginFailed(bg, bad)
		c.LoginFailed(bg, bad)
		if _, err := c.Admit(bg, bad, "app"); err == nil {
			t.Fatal("no back-off after 2 failures")
		}
		if err := c.AdmitLogin(bg, bad, decision("alice", "t", clk.now())); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Admit(bg, bad, "app"); err != nil {
			t.Fatalf("a success did not end the back-off: %v", err)
		}
		c.LoginFailed(bg, bad)
		if _, err := c.Admit(bg, bad, "app"); err != nil {
			t.Fatalf("the count was not reset by the success: %v", err)
		}
	})
	t.Run("window forgets", func(t *testing.T) {
		c, clk, _ := newMemoryController(Limits{Failures: FailurePolicy{BlockAfter: 2, BlockFor: time.Minute, Window: time.Minute}})
		c.LoginFailed(bg, bad)
		clk.add(time.Minute + time.Second)
		if block := c.LoginFailed(bg, bad); block != "" {
			t.Fatalf("a failure outside the window counted: %s", block)
		}
		if block := c.LoginFailed(bg, bad); block == "" {
			t.Fatal("two failures within the window did not block")
		}
	})
}

// TestTablesStayBounded: a flood of distinct tokens and addresses does not
// grow memory without bound, and a full table never refuses a login.
func TestTablesStayBounded(t *testing.T) {
	c, clk, _ := newMemoryController(Limits{Failures: FailurePolicy{BlockAfter: 1000, Window: time.Hour}})
	for i := range maxAddresses + 100 {
		c.LoginFailed(bg, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	if n := len(c.mem.addrs); n > maxAddresses {
		t.Fatalf("%d addresses tracked, bound %d", n, maxAddresses)
	}
	for i := range maxTokens + 100 {
		if err := c.AdmitLogin(bg, "10.0.0.1", decision("alice", fmt.Sprint(i), clk.now())); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.mem.tokens); n > maxTokens {
		t.Fatalf("%d tokens remembered, bound %d", n, maxTokens)
	}
}
