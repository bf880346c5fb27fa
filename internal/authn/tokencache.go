package authn

import (
	"crypto/sha256"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTokenCacheSize bounds the verified-token cache: at RDS's 200 new
// logins per second and 15-minute tokens, 180,000 tokens can be live at
// once; beyond the bound the oldest-looking entries make room and their
// tokens are simply verified again.
const DefaultTokenCacheSize = 1 << 16

// tokenCache remembers tokens whose signature, key and principal were
// verified, so that a client reusing one token for many connections (as
// pools and RDS clients do) pays for the signature once. An entry lives
// until the token (or its temporary credentials) expires, and the whole
// cache goes whenever the store changes, so a deactivated key or revoked
// session refuses a cached token as soon as the change is seen. Policy is
// not cached here: it is evaluated on every login with that login's
// context.
type tokenCache struct {
	max int

	mu      sync.RWMutex
	entries map[[sha256.Size]byte]tokenEntry
	epoch   uint64 // bumped by reset; an entry verified before a reset is not stored after it

	hits, misses atomic.Uint64
}

type tokenEntry struct {
	principal *Principal
	tokenID   string
	keyID     string
	until     time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, entries: map[[sha256.Size]byte]tokenEntry{}}
}

// tokenKey names a token as verified for one request target: the same
// token presented to another instance, endpoint list or database user is
// verified on its own.
func tokenKey(req Request) [sha256.Size]byte {
	h := sha256.New()
	sep := []byte{0}
	in := req.Instance
	for _, s := range []string{in.Name, in.Region, in.AccountID, in.ResourceID, req.DBUser} {
		h.Write([]byte(s))
		h.Write(sep)
	}
	for _, e := range in.Endpoints {
		h.Write([]byte(e))
		h.Write(sep)
	}
	h.Write(sep)
	h.Write([]byte(req.Token))
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// get returns the live entry for k.
func (c *tokenCache) get(k [sha256.Size]byte, now time.Time) (tokenEntry, bool) {
	if c.max <= 0 {
		return tokenEntry{}, false
	}
	c.mu.RLock()
	e, ok := c.entries[k]
	c.mu.RUnlock()
	if ok && now.Before(e.until) {
		c.hits.Add(1)
		return e, true
	}
	c.misses.Add(1)
	return tokenEntry{}, false
}

// currentEpoch is read before a verification starts; put refuses the
// result if the cache was reset meanwhile, since the verification may have
// used credentials the reset dropped.
func (c *tokenCache) currentEpoch() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epoch
}

func (c *tokenCache) put(k [sha256.Size]byte, e tokenEntry, epoch uint64, now time.Time) {
	if c.max <= 0 || !now.Before(e.until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.max {
		c.makeRoom(now)
	}
	c.entries[k] = e
}

// makeRoom drops expired entries and, if that is not enough, an eighth of
// the cache (map order is random, so no entry is favoured).
func (c *tokenCache) makeRoom(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.until) {
			delete(c.entries, k)
		}
	}
	drop := len(c.entries) - c.max + max(c.max/8, 1)
	for k := range c.entries {
		if drop <= 0 {
			break
		}
		delete(c.entries, k)
		drop--
	}
}

// reset forgets every token.
func (c *tokenCache) reset() {
	c.mu.Lock()
	c.epoch++
	clear(c.entries)
	c.mu.Unlock()
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// TokenCacheStats counts logins whose token was found in the verified-token
// cache (hits) and those verified in full (misses), since start.
type TokenCacheStats struct {
	Hits, Misses uint64
	Entries      int
}

// TokenCacheStats reports the verified-token cache's use.
func (a *Authenticator) TokenCacheStats() TokenCacheStats {
	return TokenCacheStats{Hits: a.tokens.hits.Load(), Misses: a.tokens.misses.Load(), Entries: a.tokens.len()}
}
