// Package admission is iamdb's admission control: the limits an instance
// listener applies before it lets a login through (spec: proxy.md,
// "Admission control").
//
// One Controller per instance, shared by whichever listener serves it:
//
//	accept
//	  │  Screen(ip)            source address blocked after failed logins?
//	  │                        (checked before any TLS work)
//	  ▼
//	startup / handshake response: the database user is known
//	  │  Admit(ip, dbUser)     source address backing off after failed logins?
//	  │                        max_connections, max_connections_per_user;
//	  │                        a slot held until the connection ends (release)
//	  ▼
//	token read and verified (authn)
//	  │  LoginFailed(ip)       a refused token counts against its source address
//	  │  AdmitLogin(ip, d)     new_logins_per_second (distinct tokens),
//	  │                        principals_per_second (distinct principals),
//	  │                        new_logins_per_principal_per_second;
//	  │                        a success resets the address's failure count
//	  ▼
//	upstream login, session
//
// A token that was admitted before and is still valid is not counted again
// by any rate: reusing one token for many connections is free, as with RDS.
// The record of admitted tokens is admission's own, not the authenticator's
// verification cache (authn.Decision.Reused): a token refused by a rate limit
// has been verified but not admitted, and a retry with it must count again,
// or every limit would let the second attempt through.
//
// Rates use GCRA (generic cell rate algorithm, as github.com/go-redis/redis_rate):
// N per second with a burst of N. A login is checked against every rate
// before any is charged, so a refusal by one limit costs nothing in the
// others: a principal over its own limit does not eat the instance's budget.
//
// Failed logins: each refused token from a source address counts; after
// FailurePolicy.BackoffAfter of them the address must wait Backoff, doubling
// with each further failure, and after BlockAfter it is blocked for BlockFor.
// A block is enforced by Screen, before TLS: the address is presumed
// hostile. A back-off, which a person mistyping a token meets too, is
// enforced by Admit, where the client can be told how long to wait.
// The count is forgotten after Window without a failure, and by a successful
// login. Blocks and back-off expire by themselves and never touch another
// address.
//
// Every refusal is a *Refusal naming the limit; listeners turn it into the
// engine's "too many connections" error (PostgreSQL 53300, MySQL 1040).
//
// # Shared mode
//
// With a Shared (top-level redis: in the configuration) every limit holds
// across all replicas: rates and failure counts live in Redis and are
// updated by Lua scripts that check and charge atomically (the same GCRA
// as in memory, timed by Redis's clock); admitted tokens and recently seen
// principals are keys with a TTL; connection counts are hash fields per
// replica, summed over the replicas whose heartbeat is fresh, so the
// connections of a replica that died stop counting within a few seconds.
// Each replica keeps its own counts in memory as the truth and rewrites
// them to Redis with every heartbeat, so a restarted Redis or a lost
// release heals by itself.
//
// When Redis cannot be reached, a Shared falls back to each replica's
// in-memory limits (or, with redis_failure: refuse, refuses logins), logs
// the transition once, sets a metric, and probes Redis in the background
// until it answers again.
package admission
