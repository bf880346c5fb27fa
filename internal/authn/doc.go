// Package authn turns a database login into a decision: the one place that
// glues token verification (sigv4), the identity store (identity) and the
// policy engine (policy).
//
//	listener ──Request{token, instance, db user, database, source ip, tls}──▶ Authenticator.Authenticate
//	    1. sigv4.Verifier.Verify: shape, scope, time, endpoint, user, key, signature
//	       (the key lookup goes through the cache below)
//	    2. the principal behind the key: an IAM user (AKIA…) or a role session (ASIA…)
//	    3. the request context: aws:username, aws:userid, aws:PrincipalArn,
//	       aws:PrincipalTag/*, aws:SourceIp, aws:SecureTransport, iamdb:Database …
//	    4. policy.Evaluate of rds-db:connect on
//	       arn:PARTITION:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID/DBUSER
//	◀── *Decision (principal, resource, policy result) or *Error (code + operator reason)
//
// Errors carry a short code for audit events and metrics (InvalidToken,
// ExpiredToken, SignatureDoesNotMatch, AccessDenied …) and a detail for the
// operator. Neither may reach the database client, which only ever sees the
// engine's generic authentication failure.
//
// Caching: credentials, principals and parsed policy sets are kept in memory.
// Every write to the store bumps its generation counter; the authenticator
// reads that counter at most once per RefreshInterval (default one second)
// and drops the whole cache when it moved. So a key deactivated or a policy
// changed by another process sharing the store takes effect within about a
// second, and writes made through Invalidate take effect at once.
// Concurrent logins that miss the cache for one key or principal wait for
// a single store read rather than each making their own.
//
// Verified tokens are cached too (tokencache.go), by a hash of the token
// and of what it was verified for (instance, endpoints, database user),
// until the token or its temporary credentials expire, and dropped with
// the rest of the cache. A client reusing one token for many connections
// pays for its signature once; Decision.Reused says so. The policy is
// still evaluated on every login, with that login's context (source
// address, time), so conditions keep applying to each connection.
package authn
