package mysqlproxy

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/iamdb/iamdb/internal/audit"
)

// Audit events of a connection, as in the PostgreSQL listener. A login
// that reached the password step produces exactly one connect event: the
// accepted one is written (and fsynced) before the client gets its OK, so
// that no session exists that the trail does not know; with a fail-closed
// audit log a failed write refuses the login. Every session announced by
// a connect event ends with exactly one disconnect event.

// ResultAuditUnavailable: the login was refused because the audit log
// could not record it (audit.fail_closed).
const ResultAuditUnavailable = "AuditUnavailable"

// auditStarted prepares the connection's audit record once the handshake
// response is known.
func (l *login) auditStarted() {
	l.ac = &audit.Conn{
		Instance:  l.st.instance,
		SessionID: l.id,
		SourceIP:  l.host,
		UserAgent: userAgent(l.resp.attrs),
		DBUser:    l.resp.user,
		Database:  l.resp.database,
	}
	if tc, ok := l.client.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		l.ac.TLS = &cs
	}
}

// auditAccepted writes the connect event of an accepted login, before the
// client hears so. A failure that the log reports (fail closed) refuses
// the login with the generic access denied error; the reason goes to the
// operator log.
func (l *login) auditAccepted(ctx context.Context, upstreamID uint32) *failure {
	l.ac.BackendPID = upstreamID
	if err := l.st.audit.Emit(ctx, l.ac.ConnectEvent("", "")); err != nil {
		l.log.Error("login refused: the audit log cannot record it", "reason", ResultAuditUnavailable, "err", err)
		return &failure{result: ResultAuditUnavailable, reason: "the audit log cannot record the login: " + err.Error(),
			client: accessDenied(l.resp.user, l.host)}
	}
	l.connected = true
	l.connectedAt = time.Now()
	return nil
}

// auditEnded writes the last event of a login attempt that did not become
// a session: the refused connect event, or — when the accepted event was
// already written and the client vanished before its session began — the
// disconnect that closes it.
func (l *login) auditEnded(f failure) {
	if l.ac == nil {
		return
	}
	var e *audit.Event
	switch {
	case l.connected:
		e = l.ac.DisconnectEvent(time.Since(l.connectedAt), 0, 0, audit.ClosedByClient)
	case l.passwordStep:
		reason := f.reason
		if reason == "" {
			reason = f.result
		}
		e = l.ac.ConnectEvent(f.result, reason)
	default:
		return
	}
	if err := l.st.audit.Emit(context.WithoutCancel(l.srv.life.Context()), e); err != nil {
		l.log.Error("audit event not recorded", "event", e.EventName, "err", err)
	}
}

// auditDisconnect writes the end of a session.
func (l *login) auditDisconnect(d time.Duration, c2u, u2c int64, closedBy string) {
	if !l.connected {
		return
	}
	e := l.ac.DisconnectEvent(d, c2u, u2c, closedBy)
	if err := l.st.audit.Emit(context.WithoutCancel(l.srv.life.Context()), e); err != nil {
		l.log.Error("audit event not recorded", "event", e.EventName, "err", err)
	}
}

// principalAttr is the connection attribute that names the principal of
// an IAM session to the upstream: performance_schema.session_connect_attrs
// shows it (MySQL; MariaDB with performance_schema on), next to the
// upstream's own connection id, which the connect event records as
// backendPid. It comes first, so that an upstream that keeps only the
// first bytes of long attribute lists
// (performance_schema_session_connect_attrs_size) keeps it. It labels the
// session for the database's own tools; it is not a security boundary,
// the audit trail is. Attribute names with a leading underscore are
// reserved for client libraries.
const principalAttr = "iamdb_principal"

// userAgent names the client program from its connection attributes:
// program_name (the mariadb and mysql command-line clients) or the
// library's _client_name and _client_version.
func userAgent(attrs []byte) string {
	var program, client, version string
	forEachAttr(attrs, func(k, v string) {
		switch k {
		case "program_name":
			program = v
		case "_client_name":
			client = v
		case "_client_version":
			version = v
		}
	})
	switch {
	case program != "":
		return program
	case client != "" && version != "":
		return client + "/" + version
	}
	return client
}

// forEachAttr calls fn for every key and value of encoded connection
// attributes; a malformed tail is ignored.
func forEachAttr(attrs []byte, fn func(k, v string)) {
	r := &reader{b: attrs}
	for len(r.b) > 0 {
		k := r.lenencBytes("attribute name")
		v := r.lenencBytes("attribute value")
		if r.err != nil {
			return
		}
		fn(string(k), string(v))
	}
}

// withAttr appends key=value to encoded connection attributes.
func withAttr(attrs []byte, key, value string) []byte {
	attrs = appendLenenc(attrs, uint64(len(key)))
	attrs = append(attrs, key...)
	attrs = appendLenenc(attrs, uint64(len(value)))
	return append(attrs, value...)
}
