package identity

import "errors"

// Sentinel errors returned (wrapped, with context) by every Store
// implementation. Check them with errors.Is; the wrapping message says which
// record was involved and, for conflicts, what to do about it.
var (
	// ErrNotFound: the named account, principal, policy, key, session or
	// provider does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a record with the same name (case-insensitive, as
	// AWS IAM) or id already exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrLimitExceeded: an AWS quota would be exceeded (two access keys per
	// user, five versions per managed policy).
	ErrLimitExceeded = errors.New("limit exceeded")
	// ErrConflict: the change is refused because of the record's
	// relationships (deleting a user that still has keys, a policy that is
	// still attached, the default version of a policy …).
	ErrConflict = errors.New("conflict")
	// ErrInvalidInput: a name, path, ARN, duration or document is malformed.
	// The wrapping message says what is allowed.
	ErrInvalidInput = errors.New("invalid input")
)
