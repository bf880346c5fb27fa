// Package mysqlproxy is iamdb's MySQL and MariaDB listener: it speaks the
// MySQL client/server protocol to clients, lets IAM-enabled database users
// log in with an RDS IAM authentication token as their password (the
// mysql_clear_password plugin over TLS, as on RDS), logs in to the real
// server (the upstream) as that same user and relays the session byte for
// byte.
//
// # Login of an IAM-enabled user
//
//	client                          mysqlproxy                            upstream
//	  │◀── greeting ─────────────────│  upstream's version, charset and      │
//	  │    (CLIENT_SSL, own scramble)│  capabilities, as last seen           │
//	  │── SSL request ──────────────▶│                                       │
//	  │══ TLS handshake (≥1.2) ═════▶│                                       │
//	  │── handshake response ───────▶│── Backend.IsIAMUser(user) = true      │
//	  │   user, db, any plugin       │                                       │
//	  │◀── auth switch ──────────────│                                       │
//	  │    mysql_clear_password      │                                       │
//	  │── token ────────────────────▶│── Authenticator.Authenticate          │
//	  │                              │   (token, rds-db:connect policy)      │
//	  │                              │── connect, TLS, handshake response ──▶│
//	  │                              │   as user with Backend.Password,      │
//	  │                              │   the client's own capabilities,      │
//	  │                              │   database, charset and attributes    │
//	  │                              │   (+ iamdb_principal), or an idle     │
//	  │                              │   session of the same kind (pool.go)  │
//	  │                              │◀── auth switch / more data … OK ──────│
//	  │                              │── audit: connect event (fsynced) ──   │
//	  │◀── the upstream's OK ────────│                                       │
//	  │◀═══════ relay until either side closes (client→upstream watched) ══▶│
//	  │                              │── audit: disconnect event ──          │
//
// A client that sends its handshake response without the SSL request is
// refused before any password is asked for (ERROR 1045, "connection
// requires TLS …"): the greeting names mysql_native_password (or
// caching_sha2_password), never mysql_clear_password, so even the first
// answer of a plaintext client holds only a hash. Clients starting with
// any plugin are switched to mysql_clear_password; the token's trailing
// NUL is stripped. A refused token gets MySQL's generic `Access denied for
// user 'u'@'host' (using password: YES)` (1045, 28000), as on RDS; the
// precise reason (the authn.Error code and detail, the principal when
// known) goes only to the log. An unreachable upstream yields error 2003
// naming the instance; an upstream that refuses the login (unknown
// database 1049 …) has its ERR packet relayed. The client receives OK only
// after the upstream login succeeded.
//
// iamdb's upstream leg speaks the client side of mysql_native_password,
// caching_sha2_password (fast path, full authentication in clear text
// over TLS or RSA-encrypted without), sha256_password, MariaDB's
// client_ed25519 and mysql_clear_password (TLS only).
//
// # One framing on both legs
//
// After the login the session is a byte relay, so both legs must agree on
// every capability flag that shapes commands and results
// (CLIENT_DEPRECATE_EOF, CLIENT_SESSION_TRACK, CLIENT_QUERY_ATTRIBUTES,
// MariaDB's extended metadata and bulk flags …). Clients are greeted
// before iamdb connects to the upstream (it does so only for a verified
// login), so the greeting offers the upstream's flags as last seen (a
// probe connection reads the greeting of an upstream never seen before;
// every login refreshes it) and iamdb sends the upstream exactly the
// flags the client chose. Only the flags that shape the handshake itself
// (TLS, database, attributes, plugin encoding) are chosen per leg.
// Compression is never offered. Should the upstream have lost a flag the
// client chose (a downgrade between greeting and login), the login fails
// and the next client is greeted as the upstream now is.
//
// The greeting's connection id cannot be the upstream's, which does not
// exist yet. It is a random number at or above 2^31, where it cannot name
// another session; CONNECTION_ID() and KILL [QUERY] use the upstream's real
// ids. Clients that kill a query by the greeting's id (the mariadb
// client's Ctrl-C) get "Unknown thread id"; KILL QUERY with the id from
// CONNECTION_ID(), from a second connection, works.
//
// # Users that are not IAM-enabled
//
// Their ordinary password login is relayed, with or without TLS on either
// leg: the client answered iamdb's scramble, which the upstream never saw,
// so iamdb connects to the upstream and sends the client an auth switch
// to the same plugin carrying the upstream's scramble. From then on the
// client and the upstream authenticate each other directly; iamdb only
// renumbers packets for each leg. Unlike PostgreSQL's SCRAM, MySQL's
// plugins bind nothing to the TLS session, so no password has to be
// captured. Two exceptions: a plugin that sends the password in clear text
// is refused unless both legs are TLS; and caching_sha2_password full
// authentication from a TLS client to a plaintext upstream is completed by
// iamdb with the upstream's RSA key, so the password never crosses the
// upstream's network in clear text (the reverse, plaintext client to TLS
// upstream, is refused with a message to use TLS).
//
// # During the session
//
// Client→upstream is copied chunk by chunk as it arrives while a walker
// follows the packets in it, so that a command can be recognised:
// COM_CHANGE_USER would let a session become another database user
// without a token for that user, so it is answered with ERROR 1235 and
// the session is closed. COM_RESET_CONNECTION, prepared statements,
// multi-statements, KILL and LOAD DATA LOCAL INFILE (whose file packets
// the walker follows through sequence-number wrap-around, as the server
// does) pass through. Upstream→client is a raw copy, followed by a
// response tracker (responses.go) only when statement audit or session
// reuse needs to know where each answer ends.
//
// # Audit
//
// As in the PostgreSQL listener (audit.go): every login that reaches the
// password step yields one connect event (accepted, or refused with the
// precise reason and, when known, the principal and token id), written
// before the client gets its OK; with audit.fail_closed a failed write
// refuses the login with the generic access denied error. Every accepted
// session ends with one disconnect event (duration, bytes each way, who
// closed: client, upstream or shutdown). backendPid is the upstream's
// connection id, the one CONNECTION_ID(), the processlist and KILL use.
// An IAM session's upstream login carries the connection attribute
// iamdb_principal (the ARN), which performance_schema.session_connect_attrs
// shows, so the database's own tools can attribute the session.
//
// Statement audit (audit_statements, audit_parameters; statements.go)
// records COM_QUERY texts and each COM_STMT_EXECUTE with its prepared
// text, found by the statement id of the upstream's COM_STMT_PREPARE
// answer, and with audit_parameters the bound values. It reads the
// stream the relay forwards and never holds it back.
//
// # Upstream session reuse
//
// With Config.Pool on, an IAM client that ends with COM_QUIT leaves its
// upstream session, reset, to the next IAM login of the same principal,
// user, database and client settings, which then costs no upstream
// login at all; see pool.go for what is reset, checked and never reused.
//
// # Implementation notes
//
// go-mysql's server package was not used: its capability set is fixed, it
// has no way to refuse plaintext before the auth switch, and connecting to
// the upstream only after the client's handshake response needs the
// packets in hand. Every read during the login is an exact,
// length-prefixed read on the connection, so no plaintext read ahead
// survives the switch to TLS and nothing is stranded in a buffer when the
// session turns into a relay.
//
// One goroutine serves each connection under one deadline for the whole
// login (Config.HandshakeTimeout), then two named copy functions relay the
// session. Every log line of a connection carries its session id. Update
// swaps the configuration for new connections only; Shutdown stops
// accepting and drains.
//
// Spec: https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html
// and https://mariadb.com/kb/en/connection/.
package mysqlproxy
