// Package audit is iamdb's audit plane: CloudTrail-shaped events for every
// database login attempt and session end, every statement of sessions
// under statement audit, every STS call and every change to identities;
// a tamper-evident file log for them; and reading, querying and verifying
// that log (`iamdb audit tail|query|verify`).
//
// # Producers
//
// Every producer writes through an Emitter:
//
//	pgproxy / mysql listener ── Conn.ConnectEvent ────┐  Emit before the client
//	                          ── Conn.StatementEvent ─┤  hears "login ok";
//	                          ── Conn.DisconnectEvent ┤  statements Deferred
//	STS API (sts.Config.OnCall) ── STSEvent ──────────┼──▶ Emitter (FileSink)
//	management commands ── Store (identity.Store) ────┘
//
// Conn carries what a database connection is known by (instance, session
// id, database user, principal, token id, TLS) so that connect, statement
// and disconnect events of one session agree; an engine-specific listener
// only fills it in. No event field ever holds a token, signature, secret
// key or password: principals carry none, STS parameters that could are
// dropped, password literals in statements are masked.
//
// # The file log
//
// One JSON object per line, appended. Each line ends with prevHash and
// hash, hash = hex(sha256(prevHash || the line without its hash member)),
// the first event chaining to GenesisHash. Verification hashes the bytes
// as stored, so any edit shows; a removed or reordered line breaks the
// prevHash link; a log cut short is caught by the head file
// (audit.jsonl.head), which records the last position made durable.
//
// Emit hands the event to one writer goroutine. The writer takes every
// event queued meanwhile, writes them with one write(2), syncs once
// (fdatasync(2): the data and the file's size, which is all an append-only
// file needs) and only then releases their callers (group commit): a
// connect event the client saw succeed is on disk. The head file is read
// only when another process may have moved it. Deferred events (statements) do not wait;
// they are fsynced within FileOptions.FsyncInterval. Beyond MaxSize the
// current file is renamed audit.jsonl.N (N counting up, so older files
// keep their names) and the chain continues into a new file.
//
// Several processes may append to one log — iamdb serve and the
// management commands do — because every write takes an flock on the head
// file and first catches up with what others appended or rotated. On open
// a torn last line, left by a crash in the middle of a write nobody was
// told succeeded, is cut off and logged.
//
// A write that fails is counted (WriteErrors → the metric
// iamdb_audit_write_errors_total) and logged; with FailClosed, Emit
// returns the error and the listener refuses the login rather than admit
// an unaudited session.
//
// Head and chain make the log tamper-evident, not tamper-proof: someone
// who can rewrite the whole log and its head can forge a consistent one.
// Ship the log elsewhere (or keep the head's hash) for that.
package audit
