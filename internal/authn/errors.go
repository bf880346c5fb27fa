package authn

import (
	"errors"

	"github.com/iamdb/iamdb/internal/policy"
	"github.com/iamdb/iamdb/internal/sigv4"
)

// Codes of refusals that do not come from token verification (those use
// sigv4.Kind's codes: ExpiredToken, InvalidSignature, …).
const (
	CodeAccessDenied = "AccessDenied"
	CodeInternal     = "InternalError"
)

// Error is a refused login. Code is stable (audit errorCode, metrics
// labels); Detail explains it to an operator and may name policies and
// principals, but never the token, signature or secret. Neither goes to
// the database client.
type Error struct {
	Code      string
	Kind      sigv4.Kind // set for token verification failures
	Detail    string
	Principal *Principal     // set once the signer is known
	Policy    *policy.Result // set for AccessDenied
	TokenID   string
	err       error
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }
func (e *Error) Unwrap() error { return e.err }

// tokenError wraps a verification failure.
func tokenError(err error) error {
	var se *sigv4.Error
	if errors.As(err, &se) {
		return &Error{Code: se.Kind.String(), Kind: se.Kind, Detail: se.Error(), err: err}
	}
	// Not a refusal of the token: the key lookup itself failed (store down).
	return &Error{Code: CodeInternal, Detail: "looking up the signing key: " + err.Error(), err: err}
}
