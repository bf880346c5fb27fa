package pgproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/proxy"
)

// Admission control in the login (package proxy, Admission; spec:
// proxy.md). Four points, each as early as what it needs is known:
//
//   - screen, before any TLS work: a source address blocked after failed
//     logins is refused;
//   - admit, once the startup message names the user and before the token
//     is asked for: max_connections, max_connections_per_user, and a
//     source address backing off after failed logins;
//   - loginFailed, when a token is refused: the failure counts against the
//     source address;
//   - admitLogin, once the token is verified and before any upstream
//     work: the login rates.
//
// A refusal is PostgreSQL's too_many_connections (53300) with a message
// that names the limit, and the connection is closed; nothing is dialled
// upstream.

// ResultThrottled: refused by admission control.
const ResultThrottled = proxy.ResultThrottled

// screenReadTimeout bounds the wait for the first packet of a connection
// from a blocked address: it is read only to answer it, and a flood of
// such connections should not hold goroutines for the whole handshake
// timeout.
const screenReadTimeout = time.Second

// screen refuses a connection from a blocked address before TLS. The
// client's first packet is read only to answer in kind: an SSLRequest or a
// plaintext StartupMessage gets the ErrorResponse in plaintext, as the
// protocol allows in place of 'S' (the client cannot authenticate it, and
// libpq and pgx report a refused TLS connection rather than its text); a
// direct-TLS ClientHello is simply closed.
func (l *login) screen(ctx context.Context) *failure {
	adm := l.st.admission
	if adm == nil {
		return nil
	}
	err := adm.Screen(ctx, l.ip)
	if err == nil {
		return nil
	}
	l.log.Info("connection refused", "reason", ResultThrottled, "detail", err.Error())
	f := &failure{result: ResultThrottled, reason: err.Error()}
	l.client.SetReadDeadline(time.Now().Add(screenReadTimeout))
	var hdr [4]byte
	if _, rerr := io.ReadFull(l.client, hdr[:]); rerr != nil || hdr[0] == tlsRecordType {
		return f
	}
	if pkt, rerr := readStartupPacket(l.client, hdr[:]); rerr != nil || pkt.code == codeCancelRequest {
		return f
	}
	f.client = l.throttledMessage(err)
	return f
}

// admit takes the connection's admission slot for its database user.
// The refusal comes before the password step, so its connect event is
// written here.
func (l *login) admit(ctx context.Context) *failure {
	adm := l.st.admission
	if adm == nil {
		return nil
	}
	release, err := adm.Admit(ctx, l.ip, l.user)
	if err != nil {
		f := l.throttled(err)
		if e := l.st.audit.Emit(context.WithoutCancel(ctx), l.ac.ConnectEvent(f.result, f.reason)); e != nil {
			l.log.Error("audit event not recorded", "event", audit.NameConnect, "err", e)
		}
		return f
	}
	l.slot = release
	return nil
}

func (l *login) releaseSlot() {
	if l.slot != nil {
		l.slot()
		l.slot = nil
	}
}

// admitLogin applies the login rates to a verified token.
func (l *login) admitLogin(ctx context.Context, d *authn.Decision) *failure {
	adm := l.st.admission
	if adm == nil {
		return nil
	}
	if err := adm.AdmitLogin(ctx, l.ip, d); err != nil {
		return l.throttled(err)
	}
	return nil
}

// loginFailed counts a refused token against the source address and, when
// that blocks the address, says so in the refusal's audit reason. Failures
// of iamdb itself (store down, timeouts) are not the client's and do not
// count.
func (l *login) loginFailed(ctx context.Context, err error, f *failure) *failure {
	var ae *authn.Error
	if l.st.admission == nil || !errors.As(err, &ae) || ae.Code == authn.CodeInternal || f == nil || f.result != ae.Code {
		return f
	}
	if block := l.st.admission.LoginFailed(ctx, l.ip); block != "" {
		f.reason += "; source address " + block
	}
	return f
}

// throttled is the failure of a login refused by admission control.
func (l *login) throttled(err error) *failure {
	l.log.Warn("login refused", "reason", ResultThrottled, "detail", err.Error())
	return &failure{result: ResultThrottled, reason: err.Error(), client: l.throttledMessage(err)}
}

// throttledMessage is what the client is told: PostgreSQL's own "too many
// connections" code, so that drivers and pools treat it as a transient
// refusal worth a retry.
func (l *login) throttledMessage(err error) *pgproto3.ErrorResponse {
	return fatal("53300", fmt.Sprintf("iamdb: instance %s: %s; retry with back-off", l.st.instance.Name, err))
}
