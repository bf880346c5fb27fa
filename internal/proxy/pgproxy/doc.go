// Package pgproxy is iamdb's PostgreSQL listener: it speaks the PostgreSQL
// wire protocol to clients, lets IAM-enabled database users log in with an
// RDS IAM authentication token as their password, logs in to the real
// PostgreSQL (the upstream) as that same user and relays the session byte
// for byte.
//
// # Login of an IAM-enabled user
//
//	client                          pgproxy                               upstream
//	  │── SSLRequest ───────────────▶│                                       │
//	  │◀────────────────────── 'S' ──│  (GSSENCRequest → 'N'; direct TLS      │
//	  │══ TLS handshake (≥1.2) ═════▶│   with ALPN "postgresql" accepted)    │
//	  │── StartupMessage user,db,… ─▶│── Backend.IsIAMUser(user) = true      │
//	  │◀── AuthenticationCleartext ──│                                       │
//	  │── PasswordMessage(token) ───▶│── Authenticator.Authenticate          │
//	  │                              │   (token, rds-db:connect policy)      │
//	  │                              │── pgconn.Connect as user, ───────────▶│
//	  │                              │   Backend.Password(user), the        │
//	  │                              │   client's startup parameters        │
//	  │                              │◀── AuthenticationOk … ReadyForQuery ──│
//	  │                              │   Hijack: raw conn, pid, key, params  │
//	  │◀── AuthenticationOk ─────────│                                       │
//	  │◀── ParameterStatus × n ──────│   (the upstream's, so the client      │
//	  │◀── BackendKeyData(iamdb's) ──│    sees the real server)              │
//	  │◀── ReadyForQuery ────────────│                                       │
//	  │◀═════════════ raw byte relay, both ways, until either side closes ══▶│
//
// An IAM-enabled user without TLS is refused before being asked for a
// password (FATAL 28000, "connection requires TLS …"), so a token never
// crosses the network in the clear. A refused token gets PostgreSQL's
// generic `PAM authentication failed for user "u"` (28P01), as on RDS; the
// precise reason (the authn.Error code and detail, the principal when
// known) goes only to the log. An upstream that cannot be reached yields
// 08006 naming the instance; an upstream that refuses the login (unknown
// database 3D000, …) has its ErrorResponse relayed unchanged.
//
// # Users that are not IAM-enabled
//
// Their ordinary password login is relayed. When either leg is plaintext,
// the client's StartupMessage goes to the upstream verbatim and the
// authentication exchange (cleartext, md5, SCRAM-SHA-256) is passed
// through message by message; SCRAM-SHA-256-PLUS is struck from the
// upstream's mechanism list, since channel binding cannot span two TLS
// sessions.
//
// When both legs are TLS that relay cannot work: a TLS client that is not
// offered SCRAM-SHA-256-PLUS declares so inside the signed SCRAM exchange
// (gs2 flag "y"), and an upstream on TLS must then refuse the login as a
// downgrade attack. So iamdb asks the client for its password itself
// (AuthenticationCleartextPassword, inside the client's TLS session) and
// logs in to the upstream with it through pgconn, with channel binding on
// the upstream leg where the server offers it. The upstream's refusal
// (28P01 …) reaches the client unchanged either way.
//
// # Cancel requests
//
// Clients receive iamdb's own random (pid, secret) pair, with a secret as
// long as the upstream's (4 bytes under protocol 3.0, longer under 3.2). A
// CancelRequest, before or after TLS, is matched in constant time against
// live sessions and forwarded with the upstream's own key to the upstream.
//
// # Protocol versions
//
// The IAM path speaks protocol 3.0 to the upstream; a client asking for
// 3.2 (or for _pq_ protocol options) is answered with
// NegotiateProtocolVersion, as a PostgreSQL 15 server would. The relayed
// password path leaves that negotiation to the upstream.
//
// # Audit
//
// With Config.Audit set, every login that reached the password step
// yields one connect event (audit.Conn.ConnectEvent) with the principal,
// the policy decision, the token id, TLS details and, when refused, the
// precise reason; the accepted one is written and fsynced before
// AuthenticationOk reaches the client, and an Emit error (a fail-closed
// audit log) refuses the login with the generic PAM error. Every session
// ends with one disconnect event: duration, bytes each way, and who
// closed it (client, upstream, shutdown).
//
// IAM sessions carry the principal's ARN to the upstream in the custom
// setting iamdb.principal. Sessions under statement audit
// (Config.Statements) also get " [iamdb:PRINCIPAL]" appended to their
// application_name (63 bytes at most), and a tap on the client→upstream
// copy reassembles Query, Parse, Bind and Execute frames from the byte
// stream — without buffering or delaying it — into one statement event
// per simple query or execution, queued (audit.Deferred) so that no query
// waits for the disk.
//
// # Upstream session reuse
//
// With Config.Pool enabled, an IAM session whose client ends with
// Terminate while the upstream is idle does not end upstream: the relay
// follows the message boundaries of both directions (headers only, no
// copying), holds the Terminate back, resets the upstream session with
// DISCARD ALL and keeps it in a per-listener pool keyed by user, database,
// startup parameters (which name the principal) and backend password. The
// next IAM login of that key, after its own token check, authorization
// and connect event, takes it instead of logging in upstream, and gets the
// session's ParameterStatus values and a fresh BackendKeyData of its own.
// Idle sessions are watched by a pending read, so a backend that dies or
// speaks while idle is dropped, and are closed after Pool.IdleTimeout,
// Pool.MaxLifetime, a change of upstream (Update), FlushPool, Shutdown and
// Close. Password-relayed sessions are never pooled. See pool.go.
//
// # Implementation notes
//
// Every read during the login is an exact, length-prefixed read on the
// connection; nothing is buffered, so no plaintext read ahead survives the
// switch to TLS and nothing is stranded in a buffer when the session turns
// into a raw relay. The upstream leg of an IAM login is iamdb's own
// frontend (backendlogin.go: TLS, SCRAM with cached keys, md5). It offers
// post-quantum key exchange until a handshake shows that the server does
// not take it (PostgreSQL on OpenSSL before 3.5), then X25519 only, which
// saves computing an unused ML-KEM key share on every upstream login.
//
// One goroutine serves each connection under one deadline for the whole
// login (Config.HandshakeTimeout), then two named copy functions relay the
// session. Every log line of a connection carries its session id. Update
// swaps the configuration for new connections only; Shutdown stops
// accepting and drains.
//
// Spec: https://www.postgresql.org/docs/current/protocol-flow.html and
// https://www.postgresql.org/docs/current/protocol-message-formats.html.
package pgproxy
