package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/iamdb/iamdb/internal/authn"
)

// Authenticator decides IAM logins. *authn.Authenticator implements it.
type Authenticator interface {
	Authenticate(ctx context.Context, req authn.Request) (*authn.Decision, error)
}

// Backend knows how iamdb logs in to the upstream as a database user.
// *dbauth.Postgres and *dbauth.MySQL implement it.
type Backend interface {
	// IsIAMUser reports whether dbUser must log in with an IAM token.
	IsIAMUser(ctx context.Context, dbUser string) (bool, error)
	// Password is the password iamdb logs in to the upstream with as the
	// IAM user dbUser ("" when the upstream trusts iamdb).
	Password(ctx context.Context, dbUser string) (string, error)
	// Refused is called when the upstream refused password, which
	// Password gave for dbUser. It returns the password to log in with
	// once more and true when there is a different one by now (mode
	// managed: another replica or 'iamdb db rotate' changed it), else
	// false: the refusal stands.
	Refused(ctx context.Context, dbUser, password string) (string, bool, error)
}

// Admission is admission control for one instance (spec: proxy.md,
// "Admission control"); *admission.Controller implements it. A listener
// without one (nil) admits everything. Every error it returns is a
// refusal: its message names the limit, is fit for the client, and goes
// into the engine's "too many connections" error (PostgreSQL 53300, MySQL
// 1040) and the audit event (errorCode Throttled).
type Admission interface {
	// Screen refuses a source address blocked after failed logins.
	// Called first, before any TLS work.
	Screen(ctx context.Context, ip string) error
	// Admit takes a connection slot for dbUser (max_connections,
	// max_connections_per_user; refused while ip backs off after failed
	// logins) once the user is known, before the token is asked for.
	// release gives it back when the connection ends.
	Admit(ctx context.Context, ip, dbUser string) (release func(), err error)
	// AdmitLogin applies the login rates to a verified token, before
	// any upstream work; a token admitted before is free.
	AdmitLogin(ctx context.Context, ip string, d *authn.Decision) error
	// LoginFailed counts a refused token against its source address; a
	// non-empty result describes the block this failure started.
	LoginFailed(ctx context.Context, ip string) (block string)
}

// Upstream is the real database server behind a listener.
type Upstream struct {
	Address     string      // host:port
	TLS         *tls.Config // nil: plain TCP to the upstream
	DialTimeout time.Duration
}

// Observer receives metrics events. Implementations must be safe for
// concurrent use and must not block.
type Observer interface {
	// LoginFinished is called once per client connection that got as far
	// as a login, with one of the Result* values or an authn.Error code.
	LoginFinished(instance, result string, d time.Duration)
	SessionStarted(instance string)
	SessionEnded(instance string, clientToUpstream, upstreamToClient int64, d time.Duration)
	UpstreamDialFailed(instance string)
}

// NopObserver is an Observer that does nothing.
type NopObserver struct{}

func (NopObserver) LoginFinished(string, string, time.Duration)      {}
func (NopObserver) SessionStarted(string)                            {}
func (NopObserver) SessionEnded(string, int64, int64, time.Duration) {}
func (NopObserver) UpstreamDialFailed(string)                        {}

// Login results reported to Observer.LoginFinished besides the codes of
// *authn.Error (ExpiredToken, AccessDenied, …).
const (
	ResultOK                  = "ok"                  // IAM login accepted, session relayed
	ResultPasswordRelayed     = "PasswordRelayed"     // non-IAM user, upstream accepted the password
	ResultTLSRequired         = "TLSRequired"         // IAM user without TLS
	ResultUpstreamUnavailable = "UpstreamUnavailable" // dial or TLS to the upstream failed
	ResultUpstreamRejected    = "UpstreamRejected"    // the upstream refused the login (its error relayed)
	ResultHandshakeTimeout    = "HandshakeTimeout"    // the login did not finish within the handshake timeout
	ResultCancel              = "Cancel"              // a cancel request, forwarded or not
	ResultClientClosed        = "ClientClosed"        // the client went away during the login
	ResultProtocolError       = "ProtocolError"       // malformed or unexpected client or upstream messages
	ResultInternalError       = "InternalError"       // Backend failure or a bug; details in the log
	ResultThrottled           = "Throttled"           // refused by admission control (limits, failed-login block)
)

// Defaults for zero durations in listener configurations.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDialTimeout      = 5 * time.Second
)

// Refusal describes a refused IAM login for the log and the audit event:
// the result (the *authn.Error code), the operator's reason, and log
// attributes. ok is false when err is not an *authn.Error but a failure of
// iamdb itself (result ResultInternalError).
func Refusal(err error) (result, reason string, attrs []any, ok bool) {
	var ae *authn.Error
	if !errors.As(err, &ae) {
		return ResultInternalError, err.Error(), []any{"reason", ResultInternalError, "err", err}, false
	}
	attrs = []any{"reason", ae.Code, "detail", ae.Detail}
	if ae.TokenID != "" {
		attrs = append(attrs, "token_id", ae.TokenID)
	}
	if ae.Principal != nil {
		attrs = append(attrs, "principal", ae.Principal.ARN)
	}
	return ae.Code, ae.Detail, attrs, true
}

// NewerPassword is, after the upstream refused password, the backend
// password to log in with once more as dbUser: the user's current one when
// it changed since password was read (another replica or 'iamdb db rotate'
// set a new one). false: the refusal stands. Neither password is logged.
func NewerPassword(ctx context.Context, b Backend, log *slog.Logger, dbUser, password string) (string, bool) {
	pw, changed, err := b.Refused(ctx, dbUser, password)
	if err != nil {
		log.Error("cannot read the upstream password again after a refusal", "err", err)
		return "", false
	}
	if changed {
		log.Info("upstream refused the backend password; logging in again with the one set since")
	}
	return pw, changed
}
