package dbauth

import (
	"fmt"
	"testing"
	"time"
)

func TestPasswordCacheEntries(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	const every = 24 * time.Hour
	var c passwordCache
	if _, ok := c.get("app", t0, every); ok {
		t.Fatal("hit in an empty cache")
	}
	c.fill(c.generation(), "app", "pw1", t0, t0)
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{t0, true},
		{t0.Add(storedPasswordTTL - 1), true},
		{t0.Add(-time.Nanosecond), false}, // the clock went back
	} {
		if pw, ok := c.get("app", tc.at, every); ok != tc.want || ok && pw != "pw1" {
			t.Fatalf("get at %v = %q, %v; want %v", tc.at.Sub(t0), pw, ok, tc.want)
		}
		c.fill(c.generation(), "app", "pw1", t0, t0)
	}
	if _, ok := c.get("app", t0.Add(storedPasswordTTL), every); ok {
		t.Fatal("hit once the TTL has passed")
	}
	// rotate_every counts from rotatedAt, not from the read.
	c.fill(c.generation(), "app", "pw1", t0.Add(-every), t0)
	if _, ok := c.get("app", t0, every); ok {
		t.Fatal("hit for a password as old as rotate_every")
	}
	c.fill(c.generation(), "app", "pw1", t0.Add(-every), t0)
	if _, ok := c.get("app", t0, 0); !ok {
		t.Fatal("miss with rotate_every off")
	}
}

func TestPasswordCacheStaleFillLoses(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var c passwordCache
	// A store read starts, a password change finishes, then the read
	// finishes with the old password: the new one must stay.
	gen := c.generation()
	c.set("app", "new", t0, t0)
	c.fill(gen, "app", "old", t0, t0)
	if pw, ok := c.get("app", t0, 0); !ok || pw != "new" {
		t.Fatalf("get = %q, %v; want the new password", pw, ok)
	}
	for name, drop := range map[string]func(){
		"forget": func() { c.forget("app") },
		"clear":  c.clear,
	} {
		gen := c.generation()
		drop()
		c.fill(gen, "app", "old", t0, t0)
		if _, ok := c.get("app", t0, 0); ok {
			t.Fatalf("a read from before %s filled the cache", name)
		}
		c.fill(c.generation(), "app", "fresh", t0, t0)
		if pw, ok := c.get("app", t0, 0); !ok || pw != "fresh" {
			t.Fatalf("a read after %s did not fill the cache: %q, %v", name, pw, ok)
		}
	}
}

func TestPasswordCacheBounded(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var c passwordCache
	for i := range maxCachedPasswords + 10 {
		c.fill(c.generation(), fmt.Sprint("u", i), "pw", t0, t0)
	}
	if n := len(c.m); n > maxCachedPasswords {
		t.Fatalf("%d entries, bound %d", n, maxCachedPasswords)
	}
	// Expired entries go at the next sweep.
	later := t0.Add(passwordSweepEvery)
	c.fill(c.generation(), "last", "pw", later, later)
	if n := len(c.m); n != 1 {
		t.Fatalf("%d entries after a sweep, want 1", n)
	}
}
