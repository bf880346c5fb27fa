package sigv4

import "fmt"

// Kind says why a token was refused. Each step of the verification order in
// doc.go has its own kinds so that the audit trail and `iamdb token verify`
// can name the reason precisely while the database client only ever sees a
// generic authentication failure.
//
// A Kind is itself an error, so callers can branch with
// errors.Is(err, sigv4.Expired) without unpacking an *Error.
type Kind uint8

// The kinds, in the order verification meets them.
const (
	// TooLarge: the token is longer than MaxTokenSize.
	TooLarge Kind = iota + 1
	// Malformed: not host:port[/]?query, a duplicate or missing parameter,
	// bad percent-encoding, an unparsable date or signature.
	Malformed
	// WrongAction: Action is not connect.
	WrongAction
	// WrongAlgorithm: X-Amz-Algorithm is not AWS4-HMAC-SHA256.
	WrongAlgorithm
	// Unsupported: X-Amz-SignedHeaders is not host, the one header RDS tokens sign.
	Unsupported
	// InvalidScope: the credential scope is not AKID/DATE/REGION/SERVICE/aws4_request
	// or its date is not the date of X-Amz-Date.
	InvalidScope
	// WrongService: the scope's service is not rds-db.
	WrongService
	// WrongRegion: the scope's region is not the instance's.
	WrongRegion
	// InvalidExpires: X-Amz-Expires is not between 1 and 900 seconds.
	InvalidExpires
	// NotYetValid: X-Amz-Date lies further in the future than the allowed clock skew.
	NotYetValid
	// Expired: more than X-Amz-Expires has passed since X-Amz-Date.
	Expired
	// EndpointMismatch: the token's host:port is not an endpoint of the instance.
	EndpointMismatch
	// UserMismatch: DBUser differs from the user the client asked to log in as.
	UserMismatch
	// UnknownKey: no access key has the token's key id.
	UnknownKey
	// InactiveKey: the access key exists but has been deactivated.
	InactiveKey
	// SessionTokenMismatch: temporary credentials without their session token,
	// a wrong session token, or a session token on a long-term key.
	SessionTokenMismatch
	// CredentialsExpired: the temporary credentials expired before this login.
	CredentialsExpired
	// CredentialsRevoked: the role session, or the key that created it, was revoked.
	CredentialsRevoked
	// SignatureMismatch: the signature is not the one the key's secret gives.
	SignatureMismatch
)

// codes are stable: they appear as errorCode in audit events, where queries
// and alerts match on them. They follow AWS's names where AWS has one.
var codes = [...]string{
	TooLarge:             "TokenTooLarge",
	Malformed:            "MalformedToken",
	WrongAction:          "WrongAction",
	WrongAlgorithm:       "UnsupportedAlgorithm",
	Unsupported:          "UnsupportedToken",
	InvalidScope:         "InvalidCredentialScope",
	WrongService:         "WrongService",
	WrongRegion:          "WrongRegion",
	InvalidExpires:       "InvalidExpires",
	NotYetValid:          "TokenNotYetValid",
	Expired:              "ExpiredToken",
	EndpointMismatch:     "EndpointMismatch",
	UserMismatch:         "UserMismatch",
	UnknownKey:           "InvalidAccessKeyId",
	InactiveKey:          "InactiveAccessKey",
	SessionTokenMismatch: "InvalidSessionToken",
	CredentialsExpired:   "ExpiredCredentials",
	CredentialsRevoked:   "RevokedCredentials",
	SignatureMismatch:    "InvalidSignature",
}

// String returns the stable error code of k, e.g. "ExpiredToken".
func (k Kind) String() string {
	if int(k) < len(codes) && codes[k] != "" {
		return codes[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Error makes a Kind usable as a target of errors.Is.
func (k Kind) Error() string { return k.String() }

// Error is a refused token: a Kind for decisions and a Detail for the
// operator. Detail never contains the token, its signature, its session
// token or any secret; it may name the access key id, the database user,
// the endpoint and times, as AWS's own messages do.
type Error struct {
	Kind   Kind
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Kind.String()
	}
	return e.Kind.String() + ": " + e.Detail
}

// Is reports whether target is e's Kind.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

func refuse(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Detail: fmt.Sprintf(format, args...)}
}

// quote shows attacker-controlled text in a Detail without letting a 16 KiB
// token flood the log: long values are cut.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		return fmt.Sprintf("%q…", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
