package dbauth

import (
	"sync"
	"time"
)

// storedPasswordTTL is how long a managed password read from the store is
// used again without reading the store. It bounds how long a password
// another replica (or 'iamdb db rotate') set stays unseen.
const storedPasswordTTL = time.Second

// maxCachedPasswords bounds the password cache. Only users with a stored
// password ever get an entry, but a bound costs nothing.
const maxCachedPasswords = 4096

// passwordSweepEvery is how often filling the cache also drops the entries
// that have expired, so passwords of users who stopped logging in do not
// linger in memory.
const passwordSweepEvery = time.Minute

// passwordCache keeps the opened managed passwords of one MySQL or Postgres
// value for storedPasswordTTL after reading them from the store, so logins
// in a burst read and unseal the store once per user and second instead of
// once per login. An entry is used only while it is younger than
// storedPasswordTTL and its rotatedAt is still within rotate_every.
//
// Passwords this value sets itself (a first password, rotate_every,
// a stored one that does not open, Rotate, RotateAll) replace the entry at
// once; Reload and Close drop every entry. A password set by another
// value sharing the store (another replica, or 'iamdb db rotate') is seen
// after at most storedPasswordTTL: until then logins get the previous
// password, which the upstream then refuses. That bounded staleness is the
// price of not reading the store at every login; Refused, which the
// proxies call on such a refusal, drops the entry and reads the store
// again, so the login is tried once more with the new password at once.
//
// Store reads race with password changes: a read that started before a
// change may finish after it. Every change and every drop therefore bumps
// gen, and a read fills the cache only if gen is still what it was when
// the read started, so a stale read never overwrites a newer password.
//
// The passwords are held in process memory only and never logged. The zero
// value is ready to use; it is safe for concurrent use.
type passwordCache struct {
	mu        sync.Mutex
	gen       uint64
	m         map[string]cachedPassword
	lastSweep time.Time
}

type cachedPassword struct {
	pw        string
	rotatedAt time.Time // when the password was set, from the store
	readAt    time.Time // when it was read from the store or set here
}

// fresh reports whether e may still be used at now under rotate_every.
func (e cachedPassword) fresh(now time.Time, rotateEvery time.Duration) bool {
	if now.Before(e.readAt) || now.Sub(e.readAt) >= storedPasswordTTL {
		return false
	}
	return rotateEvery <= 0 || now.Before(e.rotatedAt.Add(rotateEvery))
}

// get returns the cached password of dbUser when it is fresh at now.
func (c *passwordCache) get(dbUser string, now time.Time, rotateEvery time.Duration) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[dbUser]
	if !ok {
		return "", false
	}
	if !e.fresh(now, rotateEvery) {
		delete(c.m, dbUser)
		return "", false
	}
	return e.pw, true
}

// generation is what a store read passes back to fill.
func (c *passwordCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// fill remembers a password read from the store by a read that started at
// generation gen; it is dropped when a change or drop came in between.
func (c *passwordCache) fill(gen uint64, dbUser, pw string, rotatedAt, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	c.putLocked(dbUser, cachedPassword{pw: pw, rotatedAt: rotatedAt, readAt: now})
}

// set remembers a password this value has just set and stored.
func (c *passwordCache) set(dbUser, pw string, rotatedAt, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.putLocked(dbUser, cachedPassword{pw: pw, rotatedAt: rotatedAt, readAt: now})
}

// forget drops the entry of dbUser, and any store read of it in flight.
func (c *passwordCache) forget(dbUser string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, dbUser)
}

// clear drops every entry, and every store read in flight.
func (c *passwordCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}

func (c *passwordCache) putLocked(dbUser string, e cachedPassword) {
	if c.m == nil {
		c.m = map[string]cachedPassword{}
	}
	now := e.readAt
	if len(c.m) >= maxCachedPasswords || now.Sub(c.lastSweep) >= passwordSweepEvery || now.Before(c.lastSweep) {
		for u, old := range c.m {
			if !old.fresh(now, 0) {
				delete(c.m, u)
			}
		}
		c.lastSweep = now
		if len(c.m) >= maxCachedPasswords {
			clear(c.m)
		}
	}
	c.m[dbUser] = e
}
