package sigv4

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// DefaultClockSkew is how far in the future X-Amz-Date may be, as in AWS.
const DefaultClockSkew = 5 * time.Minute

// ErrNoSuchKey is what a KeyLookup returns (possibly wrapped) when no access
// key has the id. Any other error is a failure of the store, not of the
// token, and verification fails closed with it.
var ErrNoSuchKey = errors.New("no such access key")

// Credentials is what verification needs to know about an access key.
// The zero value is refused (Active is false), so a lookup that forgets a
// field fails closed.
type Credentials struct {
	SecretAccessKey string
	// SessionTokenSHA256 is set for temporary credentials: the SHA-256 of
	// the session token the token must carry. Stores keep only this hash.
	SessionTokenSHA256 []byte
	// SessionToken is the plaintext alternative to SessionTokenSHA256, for
	// callers that hold it; set at most one of the two.
	SessionToken string
	// Expiration ends temporary credentials; zero for long-term keys.
	Expiration time.Time
	Active     bool
	// Revoked marks a role session that was revoked, or whose creating key
	// was; its tokens must fail at once, even within their 15 minutes.
	Revoked bool
	// Owner is not read here; Verify hands it back in Verified so the caller
	// need not look the key up a second time to find its principal.
	Owner any
}

// KeyLookup finds the credentials of an access key id. The identity store
// implements it; the call is made only for tokens that passed every cheaper
// check.
type KeyLookup interface {
	LookupAccessKey(ctx context.Context, accessKeyID string) (Credentials, error)
}

// KeyLookupFunc adapts a function to KeyLookup.
type KeyLookupFunc func(ctx context.Context, accessKeyID string) (Credentials, error)

// LookupAccessKey calls f.
func (f KeyLookupFunc) LookupAccessKey(ctx context.Context, id string) (Credentials, error) {
	return f(ctx, id)
}

// Target is what a token must match: the instance the client connected to
// and the user it asked to log in as.
type Target struct {
	Region    string   // the instance's region
	Endpoints []string // host:port a token may be signed for
	DBUser    string   // user from the client's startup message
}

// Options tune a Verifier; the zero value gives AWS's behaviour.
type Options struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ClockSkew is how far in the future X-Amz-Date may be; ≤ 0 means DefaultClockSkew.
	ClockSkew time.Duration
	// KeyCacheSize bounds the cache of derived signing keys; ≤ 0 means 4096.
	KeyCacheSize int
}

// Verifier checks tokens against instances and the access keys of a
// KeyLookup. It is safe for concurrent use; one Verifier can serve every
// instance, and sharing it shares the signing-key cache.
type Verifier struct {
	keys  KeyLookup
	now   func() time.Time
	skew  time.Duration
	cache *keyCache
}

// NewVerifier returns a Verifier that looks keys up in keys.
func NewVerifier(keys KeyLookup, opts Options) *Verifier {
	v := &Verifier{keys: keys, now: opts.Now, skew: opts.ClockSkew}
	if v.now == nil {
		v.now = time.Now
	}
	if v.skew <= 0 {
		v.skew = DefaultClockSkew
	}
	size := opts.KeyCacheSize
	if size <= 0 {
		size = 4096
	}
	v.cache = &keyCache{max: size, keys: make(map[cacheKey]cacheEntry)}
	return v
}

// Verified is an accepted token.
type Verified struct {
	Token *Token
	// Owner is Credentials.Owner of the signing key.
	Owner any
	// ValidUntil is the earlier of the token's expiry and its temporary
	// credentials' expiry: until then the same token may log in again.
	ValidUntil time.Time
}

// Verify checks token against target in the order of doc.go and returns the
// first failure. A refused token gives an *Error (test with errors.Is against
// a Kind); any other error is a failure to look the key up.
func (v *Verifier) Verify(ctx context.Context, token string, target Target) (*Verified, error) {
	tok, err := Parse(token)
	if err != nil {
		return nil, err
	}
	now := v.now()
	if err := checkRegion(tok, target.Region); err != nil {
		return nil, err
	}
	if err := v.checkTime(tok, now); err != nil {
		return nil, err
	}
	if err := checkEndpoint(tok, target.Endpoints); err != nil {
		return nil, err
	}
	if err := checkUser(tok, target.DBUser); err != nil {
		return nil, err
	}
	// The store is asked only now, after every check that costs nothing.
	creds, err := v.lookup(ctx, tok.AccessKeyID)
	if err != nil {
		return nil, err
	}
	if err := checkCredentials(tok, creds, now); err != nil {
		return nil, err
	}
	if err := v.checkSignature(tok, creds.SecretAccessKey); err != nil {
		return nil, err
	}
	until := tok.ExpiresAt()
	if !creds.Expiration.IsZero() && creds.Expiration.Before(until) {
		until = creds.Expiration
	}
	return &Verified{Token: tok, Owner: creds.Owner, ValidUntil: until}, nil
}

// Check is the outcome of one verification step; Err is nil when it passed.
type Check struct {
	Step string // format, scope, time, endpoint, user, key, signature
	Err  error
}

// Explain runs every step it can, rather than stopping at the first failure,
// so an operator sees all that is wrong with a token at once. It stops after
// format when the token cannot be parsed (tok is then nil), and before
// signature when the key cannot be found. The token is accepted when every
// Check has a nil Err and the last Step is signature.
func (v *Verifier) Explain(ctx context.Context, token string, target Target) (*Token, []Check) {
	tok, err := Parse(token)
	checks := []Check{{"format", err}}
	if err != nil {
		return nil, checks
	}
	now := v.now()
	checks = append(checks,
		Check{"scope", checkRegion(tok, target.Region)},
		Check{"time", v.checkTime(tok, now)},
		Check{"endpoint", checkEndpoint(tok, target.Endpoints)},
		Check{"user", checkUser(tok, target.DBUser)},
	)
	creds, err := v.lookup(ctx, tok.AccessKeyID)
	if err != nil {
		return tok, append(checks, Check{"key", err})
	}
	return tok, append(checks,
		Check{"key", checkCredentials(tok, creds, now)},
		Check{"signature", v.checkSignature(tok, creds.SecretAccessKey)},
	)
}

func checkRegion(tok *Token, region string) error {
	if tok.Region != region {
		return refuse(WrongRegion, "token is signed for region %s; this instance is in %s", quote(tok.Region), quote(region))
	}
	return nil
}

func (v *Verifier) checkTime(tok *Token, now time.Time) error {
	if tok.Expires <= 0 || tok.Expires > MaxExpires {
		return refuse(InvalidExpires, "X-Amz-Expires is %d seconds; it must be between 1 and %d",
			tok.Expires/time.Second, MaxExpires/time.Second)
	}
	if ahead := tok.Date.Sub(now); ahead > v.skew {
		return refuse(NotYetValid, "token is signed at %s, %s ahead of this server's clock (allowed skew %s); check the client's clock",
			tok.Date.Format(time.RFC3339), ahead.Round(time.Second), v.skew)
	}
	if now.Sub(tok.Date) > tok.Expires {
		return refuse(Expired, "token expired at %s (signed at %s, valid %s); generate a new one",
			tok.ExpiresAt().Format(time.RFC3339), tok.Date.Format(time.RFC3339), tok.Expires)
	}
	return nil
}

func checkEndpoint(tok *Token, endpoints []string) error {
	for _, e := range endpoints {
		host, port, err := net.SplitHostPort(e)
		// Host names are case-insensitive; the signature still covers the
		// exact text, so this only spares a needless refusal.
		if err == nil && port == tok.Port && strings.EqualFold(host, tok.Host) {
			return nil
		}
	}
	return refuse(EndpointMismatch, "token is for %s, which is not an endpoint of this instance (%s); sign for one of them or add an endpoint alias",
		quote(tok.Endpoint), strings.Join(endpoints, ", "))
}

func checkUser(tok *Token, user string) error {
	if tok.DBUser != user {
		return refuse(UserMismatch, "token is for database user %s but the connection asks for %s; user names are case-sensitive",
			quote(tok.DBUser), quote(user))
	}
	return nil
}

func (v *Verifier) lookup(ctx context.Context, id string) (Credentials, error) {
	creds, err := v.keys.LookupAccessKey(ctx, id)
	if errors.Is(err, ErrNoSuchKey) {
		return Credentials{}, refuse(UnknownKey, "no access key has id %s", quote(id))
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("look up access key %s: %w", quote(id), err)
	}
	if creds.SecretAccessKey == "" {
		// A store bug, not a bad token: an empty secret would let anyone sign.
		return Credentials{}, fmt.Errorf("access key %s has an empty secret", quote(id))
	}
	return creds, nil
}

func checkCredentials(tok *Token, c Credentials, now time.Time) error {
	id := lazyQuote(tok.AccessKeyID)
	if !c.Active {
		return refuse(InactiveKey, "access key %s is inactive", id)
	}
	want := c.SessionTokenSHA256
	if len(want) == 0 && c.SessionToken != "" {
		sum := sha256.Sum256([]byte(c.SessionToken))
		want = sum[:]
	}
	temporary := len(want) > 0
	switch {
	case !temporary && tok.sessionToken != "":
		return refuse(SessionTokenMismatch, "token carries a session token but access key %s is a long-term key", id)
	case temporary && tok.sessionToken == "":
		return refuse(SessionTokenMismatch, "access key %s is temporary; the token must carry its session token (X-Amz-Security-Token)", id)
	case temporary && !matchesHash(tok.sessionToken, want):
		return refuse(SessionTokenMismatch, "token's session token is not that of access key %s", id)
	}
	if !c.Expiration.IsZero() && !now.Before(c.Expiration) {
		return refuse(CredentialsExpired, "temporary credentials of access key %s expired at %s", id, c.Expiration.UTC().Format(time.RFC3339))
	}
	if c.Revoked {
		return refuse(CredentialsRevoked, "credentials of access key %s have been revoked", id)
	}
	return nil
}

// lazyQuote defers quote to formatting time, so the accepted path pays
// nothing for the messages of refusals it does not make.
type lazyQuote string

func (q lazyQuote) String() string { return quote(string(q)) }

// matchesHash reports whether SHA-256(secret) is want, in constant time;
// comparing hashes also hides the secret's length.
func matchesHash(secret string, want []byte) bool {
	got := sha256.Sum256([]byte(secret))
	return hmac.Equal(got[:], want)
}

func (v *Verifier) checkSignature(tok *Token, secret string) error {
	key := v.cache.get(tok.AccessKeyID, secret, tok.rawDate[:8], tok.Region)
	bufs := bufPool.Get().(*sigBuffers)
	defer bufPool.Put(bufs)
	bufs.query = appendCanonicalQuery(bufs.query[:0], tok.params)
	for _, host := range tok.signedHostForms() {
		var sig [sha256.Size]byte
		sig, bufs.creq = computeSignature(key, tok.rawDate, tok.Region, bufs.query, host, bufs.creq)
		if hmac.Equal(sig[:], tok.signature[:]) {
			return nil
		}
	}
	return refuse(SignatureMismatch, "signature does not match: the token was altered, or not signed with the secret of access key %s", quote(tok.AccessKeyID))
}

// sigBuffers are the scratch space of one signature check, pooled so a
// login allocates no canonical request.
type sigBuffers struct{ query, creq []byte }

var bufPool = sync.Pool{New: func() any { return &sigBuffers{query: make([]byte, 0, 512), creq: make([]byte, 0, 1024)} }}

// keyCache keeps derived signing keys: one per access key, day and region,
// so a burst of logins derives each key once instead of four HMACs per login.
type keyCache struct {
	mu   sync.Mutex
	max  int
	keys map[cacheKey]cacheEntry
}

type cacheKey struct{ accessKeyID, date, region string }

// cacheEntry remembers the secret the key was derived from: a key id whose
// secret differs from the cached one (a store that reuses ids) re-derives
// instead of serving a stale key.
type cacheEntry struct {
	secret string
	key    *hmacPads
}

func (c *keyCache) get(accessKeyID, secret, date, region string) *hmacPads {
	k := cacheKey{accessKeyID, date, region}
	c.mu.Lock()
	e, ok := c.keys[k]
	c.mu.Unlock()
	if ok && subtle.ConstantTimeCompare([]byte(e.secret), []byte(secret)) == 1 {
		return e.key
	}
	key := newHMACPads(DeriveSigningKey(secret, date, region, Service))
	c.mu.Lock()
	// Keys roll over daily, so dropping everything when full is as good as
	// LRU here and far simpler; a re-derivation costs microseconds.
	if len(c.keys) >= c.max {
		clear(c.keys)
	}
	c.keys[k] = cacheEntry{secret: secret, key: key}
	c.mu.Unlock()
	return key
}
