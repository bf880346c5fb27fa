package pgproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
)

// Audit events of a connection. A login that reached the password step
// produces exactly one connect event: the accepted one is written (and
// fsynced) before the client is told it is in, so that no session exists
// that the trail does not know; with a fail-closed audit log a failed
// write refuses the login. Every session that was announced by a connect
// event ends with exactly one disconnect event.

// ResultAuditUnavailable: the login was refused because the audit log
// could not record it (audit.fail_closed).
const ResultAuditUnavailable = "AuditUnavailable"

// auditStarted prepares the connection's audit record once the startup
// message is known.
func (l *login) auditStarted() {
	l.ac = &audit.Conn{
		Instance:  l.st.instance,
		SessionID: l.id,
		SourceIP:  l.ip,
		UserAgent: l.params["application_name"],
		DBUser:    l.user,
		Database:  l.database,
	}
	if tc, ok := l.client.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		l.ac.TLS = &cs
	}
}

// auditDecision records what authentication decided.
func (l *login) auditDecision(d *authn.Decision, err error) {
	l.ac.SetDecision(d, err)
}

// auditAccepted writes the connect event of an accepted login, before the
// client hears so. A failure that the log reports (fail closed) refuses
// the login with the generic error; the reason goes to the operator log.
func (l *login) auditAccepted(ctx context.Context, backendPID uint32) *failure {
	l.ac.BackendPID = backendPID
	if err := l.st.audit.Emit(ctx, l.ac.ConnectEvent("", "")); err != nil {
		l.log.Error("login refused: the audit log cannot record it", "reason", ResultAuditUnavailable, "err", err)
		return &failure{result: ResultAuditUnavailable, reason: "the audit log cannot record the login: " + err.Error(),
			client: fatal("28P01", fmt.Sprintf("PAM authentication failed for user %q", l.user))}
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
	ctx := context.WithoutCancel(l.srv.life.Context())
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
	if err := l.st.audit.Emit(ctx, e); err != nil {
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

// principalGUC is the custom setting that names the principal of an IAM
// session on the upstream: SELECT current_setting('iamdb.principal').
// It labels the session for the database's own logs and functions; it is
// not a security boundary (a session can SET it), the audit trail is.
const principalGUC = "iamdb.principal"

// maxIdentifier is PostgreSQL's NAMEDATALEN-1, the longest
// application_name it keeps.
const maxIdentifier = 63

// taggedApplicationName appends " [iamdb:WHO]" to the client's
// application_name so that the server log (log_line_prefix %a) names the
// principal: the full ARN when it fits in 63 bytes, else the user or role
// session name, cutting the client's own name short if need be.
func taggedApplicationName(app string, p *authn.Principal) string {
	if p == nil {
		return app
	}
	short := p.UserName
	if p.SessionName != "" {
		short = p.SessionName
		if p.RoleName != "" && len(p.RoleName)+len(p.SessionName)+1 <= 40 {
			short = p.RoleName + "/" + p.SessionName
		}
	}
	for _, who := range []string{p.ARN, short} {
		tag := " [iamdb:" + who + "]"
		if len(app)+len(tag) <= maxIdentifier {
			return strings.TrimLeft(app+tag, " ")
		}
	}
	tag := " [iamdb:" + short + "]"
	if len(tag) > maxIdentifier {
		tag = tag[:maxIdentifier-1] + "]"
	}
	keep := maxIdentifier - len(tag)
	if keep < 0 {
		keep = 0
	}
	if len(app) > keep {
		app = app[:keep]
		for !utf8.ValidString(app) {
			app = app[:len(app)-1]
		}
	}
	return strings.TrimLeft(app+tag, " ")
}
