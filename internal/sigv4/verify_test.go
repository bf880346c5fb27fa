package sigv4

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestVerifyRefusals(t *testing.T) {
	temp := func(in *SignInput) {
		in.AccessKeyID, in.SecretAccessKey, in.SessionToken = testTempID, testTempSec, testSession
	}
	good := signTest(t, nil)
	cases := []struct {
		name   string
		token  string
		now    time.Time
		target func(*Target)
		keys   func(keyring)
		want   Kind
	}{
		{name: "other region", token: signTest(t, func(in *SignInput) { in.Region = "eu-west-1" }), want: WrongRegion},
		{name: "expires 0", token: replaceParam(good, paramExpires, "X-Amz-Expires=0"), want: InvalidExpires},
		// A signer may send any X-Amz-Expires; 901 is refused even when signed.
		{name: "expires 901", token: signRawExpires(t, "901"), want: InvalidExpires},
		{name: "signed in the future", token: good, now: testNow.Add(-DefaultClockSkew - time.Second), want: NotYetValid},
		{name: "expired", token: good, now: testNow.Add(MaxExpires + time.Second), want: Expired},
		{name: "short expiry passed", token: signTest(t, func(in *SignInput) { in.Expires = time.Minute }), now: testNow.Add(61 * time.Second), want: Expired},
		{name: "other endpoint", token: signTest(t, func(in *SignInput) { in.Endpoint = "evil.example:5432" }), want: EndpointMismatch},
		{name: "other port", token: signTest(t, func(in *SignInput) { in.Endpoint = "localhost:5433" }), want: EndpointMismatch},
		{name: "no endpoints configured", token: good, target: func(tg *Target) { tg.Endpoints = nil }, want: EndpointMismatch},
		{name: "user case differs", token: good, target: func(tg *Target) { tg.DBUser = "Jane doe+x" }, want: UserMismatch},
		{name: "user with space decoded as plus", token: good, target: func(tg *Target) { tg.DBUser = "jane+doe+x" }, want: UserMismatch},
		{name: "unknown key", token: signTest(t, func(in *SignInput) { in.AccessKeyID = "AKIDUNKNOWN" }), want: UnknownKey},
		{name: "inactive key", token: good, keys: func(k keyring) { c := k[testKeyID]; c.Active = false; k[testKeyID] = c }, want: InactiveKey},
		{name: "session token on long-term key", token: signTest(t, func(in *SignInput) { in.SessionToken = testSession }), want: SessionTokenMismatch},
		{name: "temporary key without session token", token: signTest(t, func(in *SignInput) {
			in.AccessKeyID, in.SecretAccessKey = testTempID, testTempSec
		}), want: SessionTokenMismatch},
		{name: "wrong session token", token: signTest(t, func(in *SignInput) {
			temp(in)
			in.SessionToken = testSession + "x"
		}), want: SessionTokenMismatch},
		{name: "temporary credentials expired", token: signTest(t, temp), keys: func(k keyring) {
			c := k[testTempID]
			c.Expiration = testNow.Add(time.Minute)
			k[testTempID] = c
		}, now: testNow.Add(time.Minute), want: CredentialsExpired},
		{name: "temporary credentials revoked", token: signTest(t, temp), keys: func(k keyring) {
			c := k[testTempID]
			c.Revoked = true
			k[testTempID] = c
		}, want: CredentialsRevoked},
		{name: "wrong secret", token: signTest(t, func(in *SignInput) { in.SecretAccessKey = "not-the-secret" }), want: SignatureMismatch},
		{name: "signature altered", token: good[:len(good)-1] + flipHex(good[len(good)-1]), want: SignatureMismatch},
		{name: "user altered", token: strings.Replace(good, "DBUser=jane%20doe%2Bx", "DBUser=postgres", 1),
			target: func(tg *Target) { tg.DBUser = "postgres" }, want: SignatureMismatch},
		{name: "parameter added", token: good + "&Extra=1", want: SignatureMismatch},
		{name: "expires lowered after signing", token: replaceParam(good, paramExpires, "X-Amz-Expires=899"), want: SignatureMismatch},
		{name: "host case altered", token: strings.Replace(good, "db.example", "DB.example", 1), want: SignatureMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := testNow
			if !c.now.IsZero() {
				now = c.now
			}
			keys := testKeys()
			if c.keys != nil {
				c.keys(keys)
			}
			target := testTarget()
			if c.target != nil {
				c.target(&target)
			}
			v := NewVerifier(keys, Options{Now: clockAt(now)})
			got, err := v.Verify(context.Background(), c.token, target)
			if err == nil {
				t.Fatalf("Verify accepted %v", got.Token)
			}
			if kindOf(err) != c.want || !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want kind %v", err, c.want)
			}
			assertNoSecrets(t, err.Error(), c.token)
		})
	}
}

func flipHex(c byte) string {
	if c == '0' {
		return "1"
	}
	return "0"
}

// signRawExpires signs a token with an X-Amz-Expires no SDK would send.
func signRawExpires(t *testing.T, expires string) string {
	t.Helper()
	good := signTest(t, nil)
	tok, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	params := append([]param(nil), tok.params...)
	for i := range params {
		if params[i].key == paramExpires {
			params[i].value = expires
		}
	}
	key := DeriveSigningKey(testSecret, tok.rawDate[:8], tok.Region, Service)
	sig := signature(key, tok.rawDate, tok.Region, canonicalQuery(params), tok.Endpoint)
	return replaceParam(replaceParam(good, paramExpires, "X-Amz-Expires="+expires),
		paramSignature, fmt.Sprintf("X-Amz-Signature=%x", sig))
}

func assertNoSecrets(t *testing.T, msg, token string) {
	t.Helper()
	sig := token[strings.LastIndex(token, "=")+1:]
	for _, s := range []string{token, sig, testSecret, testTempSec, testSession, URIEncode(testSession)} {
		if strings.Contains(msg, s) {
			t.Errorf("message reveals a secret: %s", msg)
		}
	}
}

func TestVerifyTimeBoundaries(t *testing.T) {
	good := signTest(t, nil)
	cases := []struct {
		name string
		now  time.Time
		ok   bool
	}{
		{"at signing", testNow, true},
		{"exactly at expiry", testNow.Add(MaxExpires), true},
		{"a nanosecond after expiry", testNow.Add(MaxExpires + time.Nanosecond), false},
		{"exactly the allowed skew ahead", testNow.Add(-DefaultClockSkew), true},
		{"beyond the allowed skew", testNow.Add(-DefaultClockSkew - time.Nanosecond), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := NewVerifier(testKeys(), Options{Now: clockAt(c.now)})
			_, err := v.Verify(context.Background(), good, testTarget())
			if (err == nil) != c.ok {
				t.Fatalf("Verify at %v: err = %v, want ok=%t", c.now, err, c.ok)
			}
		})
	}
	t.Run("custom skew", func(t *testing.T) {
		v := NewVerifier(testKeys(), Options{Now: clockAt(testNow.Add(-2 * time.Second)), ClockSkew: time.Second})
		if _, err := v.Verify(context.Background(), good, testTarget()); !errors.Is(err, NotYetValid) {
			t.Fatalf("err = %v, want NotYetValid", err)
		}
	})
}

func TestVerifyTemporaryCredentials(t *testing.T) {
	text := signTest(t, func(in *SignInput) {
		in.AccessKeyID, in.SecretAccessKey, in.SessionToken = testTempID, testTempSec, testSession
	})
	keys := testKeys()
	c := keys[testTempID]
	c.Expiration = testNow.Add(5 * time.Minute)
	keys[testTempID] = c

	v := NewVerifier(keys, Options{Now: clockAt(testNow)})
	got, err := v.Verify(context.Background(), text, testTarget())
	if err != nil {
		t.Fatal(err)
	}
	if !got.ValidUntil.Equal(c.Expiration) {
		t.Errorf("ValidUntil = %v, want the credentials' expiry %v", got.ValidUntil, c.Expiration)
	}
	if got.Owner != "role-session" || !got.Token.Temporary() {
		t.Errorf("Verified = %+v", got)
	}

	// Stores keep only the SHA-256 of the session token; that must suffice.
	hashed := c
	sum := sha256.Sum256([]byte(testSession))
	hashed.SessionToken, hashed.SessionTokenSHA256 = "", sum[:]
	keys[testTempID] = hashed
	if _, err := v.Verify(context.Background(), text, testTarget()); err != nil {
		t.Fatalf("with the session token's hash: %v", err)
	}
	other := sha256.Sum256([]byte(testSession + "x"))
	hashed.SessionTokenSHA256 = other[:]
	keys[testTempID] = hashed
	if _, err := v.Verify(context.Background(), text, testTarget()); !errors.Is(err, SessionTokenMismatch) {
		t.Fatalf("with another token's hash: err = %v, want SessionTokenMismatch", err)
	}

	// Revocation takes effect on the next login with the same token.
	c.Revoked = true
	keys[testTempID] = c
	if _, err := v.Verify(context.Background(), text, testTarget()); !errors.Is(err, CredentialsRevoked) {
		t.Fatalf("after revocation err = %v, want CredentialsRevoked", err)
	}
}

func TestVerifyCaseInsensitiveHost(t *testing.T) {
	text := signTest(t, func(in *SignInput) { in.Endpoint = "DB.Example.Internal:5432" })
	v := NewVerifier(testKeys(), Options{Now: clockAt(testNow)})
	if _, err := v.Verify(context.Background(), text, testTarget()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
}

func TestVerifyStoreFailure(t *testing.T) {
	boom := errors.New("store unavailable")
	lookups := 0
	keys := KeyLookupFunc(func(context.Context, string) (Credentials, error) {
		lookups++
		return Credentials{}, boom
	})
	v := NewVerifier(keys, Options{Now: clockAt(testNow)})
	_, err := v.Verify(context.Background(), signTest(t, nil), testTarget())
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the store's error", err)
	}
	var refused *Error
	if errors.As(err, &refused) {
		t.Fatalf("a store failure was reported as a refused token: %v", err)
	}
	if lookups != 1 {
		t.Errorf("lookups = %d", lookups)
	}

	// A token that fails a cheap check never reaches the store.
	target := testTarget()
	target.DBUser = "someone-else"
	if _, err := v.Verify(context.Background(), signTest(t, nil), target); !errors.Is(err, UserMismatch) {
		t.Fatalf("err = %v", err)
	}
	if lookups != 1 {
		t.Errorf("store was asked about a token that had already failed")
	}

	// An empty secret from the store must never validate a token signed with "".
	empty := NewVerifier(KeyLookupFunc(func(context.Context, string) (Credentials, error) {
		return Credentials{Active: true}, nil
	}), Options{Now: clockAt(testNow)})
	if _, err := empty.Verify(context.Background(), signTest(t, nil), testTarget()); err == nil || kindOf(err) != 0 {
		t.Fatalf("empty secret: err = %v, want a store error", err)
	}
}

func TestExplain(t *testing.T) {
	v := NewVerifier(testKeys(), Options{Now: clockAt(testNow.Add(time.Hour))})
	target := testTarget()
	target.DBUser = "bob"
	tok, checks := v.Explain(context.Background(), signTest(t, nil), target)
	if tok == nil {
		t.Fatal("no token")
	}
	want := map[string]Kind{"format": 0, "scope": 0, "time": Expired, "endpoint": 0, "user": UserMismatch, "key": 0, "signature": 0}
	if len(checks) != len(want) {
		t.Fatalf("checks = %v", checks)
	}
	for _, c := range checks {
		if k, ok := want[c.Step]; !ok || kindOf(c.Err) != k {
			t.Errorf("step %s: err = %v, want kind %v", c.Step, c.Err, k)
		}
	}

	_, checks = v.Explain(context.Background(), "garbage", target)
	if len(checks) != 1 || checks[0].Step != "format" || !errors.Is(checks[0].Err, Malformed) {
		t.Errorf("unparsable token: %v", checks)
	}

	_, checks = v.Explain(context.Background(), signTest(t, func(in *SignInput) { in.AccessKeyID = "AKIDNONE" }), target)
	if last := checks[len(checks)-1]; last.Step != "key" || !errors.Is(last.Err, UnknownKey) {
		t.Errorf("unknown key: %v", checks)
	}
}

func TestKeyCache(t *testing.T) {
	c := &keyCache{max: 2, keys: map[cacheKey]cacheEntry{}}
	a := c.get("AKIDA", "secret-a", "20261122", "us-east-1")
	if want := newHMACPads(DeriveSigningKey("secret-a", "20261122", "us-east-1", Service)); *a != *want {
		t.Fatal("cached key differs from the derived key")
	}
	b := c.get("AKIDB", "secret-b", "20261122", "us-east-1")
	if *a == *b {
		t.Fatal("two secrets share a key")
	}
	if d := c.get("AKIDA", "secret-a", "20261123", "us-east-1"); *d == *a {
		t.Fatal("two dates share a key")
	}
	if len(c.keys) > 2 {
		t.Fatalf("cache holds %d keys, limit 2", len(c.keys))
	}
	if again := c.get("AKIDA", "secret-a", "20261122", "us-east-1"); *again != *a {
		t.Fatal("key changed after eviction")
	}
	// The same key id with another secret must not get the cached key.
	if other := c.get("AKIDA", "secret-c", "20261122", "us-east-1"); *other == *a {
		t.Fatal("a changed secret was served the old derived key")
	}
}

// TestVerifyConcurrent is for the race detector: one Verifier serves every
// connection.
func TestVerifyConcurrent(t *testing.T) {
	v := NewVerifier(testKeys(), Options{Now: clockAt(testNow), KeyCacheSize: 3})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		// Tokens of several days, so the small cache evicts while in use;
		// all but the first have expired.
		text := signTest(t, func(in *SignInput) { in.Time = testNow.Add(-time.Duration(i) * 12 * time.Hour) })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if _, err := v.Verify(context.Background(), text, testTarget()); err != nil && !errors.Is(err, Expired) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
