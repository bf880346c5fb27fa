package mysqlproxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/iamdb/iamdb/internal/audit"
	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/proxy"
)

// Admission control in the login (package proxy, Admission; spec:
// proxy.md). Four points, each as early as what it needs is known:
//
//   - screen, before the greeting and so before any TLS work: a source
//     address blocked after failed logins gets an ERR packet instead of
//     the greeting, as MySQL answers when it has no room for a connection;
//   - admit, once the handshake response names the user and before the
//     token is asked for: max_connections, max_connections_per_user, and a
//     source address backing off after failed logins;
//   - loginFailed, when a token is refused: the failure counts against the
//     source address;
//   - admitLogin, once the token is verified and before any upstream
//     work: the login rates.
//
// A refusal is MySQL's ER_CON_COUNT_ERROR (1040, "Too many connections")
// with a message that names the limit, and the connection is closed;
// nothing is dialled upstream.

// ResultThrottled: refused by admission control.
const ResultThrottled = proxy.ResultThrottled

// erConCount is ER_CON_COUNT_ERROR, SQLSTATE 08004: what MySQL and MariaDB
// send when max_connections is reached, and what clients and pools treat
// as a transient refusal worth a retry.
const erConCount = 1040

// screen refuses a connection from a blocked address before greeting it.
func (l *login) screen(ctx context.Context) *failure {
	adm := l.st.admission
	if adm == nil {
		return nil
	}
	err := adm.Screen(ctx, l.host)
	if err == nil {
		return nil
	}
	l.log.Info("connection refused", "reason", ResultThrottled, "detail", err.Error())
	return &failure{result: ResultThrottled, reason: err.Error(), client: l.throttledError(err)}
}

// admit takes the connection's admission slot for its database user.
// The refusal comes before the password step, so its connect event is
// written here.
func (l *login) admit(ctx context.Context) *failure {
	adm := l.st.admission
	if adm == nil {
		return nil
	}
	release, err := adm.Admit(ctx, l.host, l.resp.user)
	if err != nil {
		f := l.throttled(err)
		if l.ac != nil {
			if e := l.st.audit.Emit(context.WithoutCancel(ctx), l.ac.ConnectEvent(f.result, f.reason)); e != nil {
				l.log.Error("audit event not recorded", "event", audit.NameConnect, "err", e)
			}
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
	if err := adm.AdmitLogin(ctx, l.host, d); err != nil {
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
	if block := l.st.admission.LoginFailed(ctx, l.host); block != "" {
		f.reason += "; source address " + block
	}
	return f
}

// throttled is the failure of a login refused by admission control.
func (l *login) throttled(err error) *failure {
	l.log.Warn("login refused", "reason", ResultThrottled, "detail", err.Error())
	return &failure{result: ResultThrottled, reason: err.Error(), client: l.throttledError(err)}
}

func (l *login) throttledError(err error) *mysqlError {
	return &mysqlError{code: erConCount, sqlState: "08004",
		message: fmt.Sprintf("iamdb: instance %s: %s; retry with back-off", l.st.instance.Name, err)}
}
