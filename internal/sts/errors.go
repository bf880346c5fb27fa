package sts

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes, as AWS STS names them, so that SDKs raise the same typed
// exceptions against iamdb as against AWS.
const (
	CodeAccessDenied            = "AccessDenied"
	CodeSignatureDoesNotMatch   = "SignatureDoesNotMatch"
	CodeInvalidClientTokenID    = "InvalidClientTokenId"
	CodeExpiredToken            = "ExpiredToken"
	CodeIncompleteSignature     = "IncompleteSignature"
	CodeMissingAuthentication   = "MissingAuthenticationToken"
	CodeValidationError         = "ValidationError"
	CodeMalformedPolicyDocument = "MalformedPolicyDocument"
	CodePackedPolicyTooLarge    = "PackedPolicyTooLarge"
	CodeInvalidIdentityToken    = "InvalidIdentityToken"
	CodeExpiredTokenException   = "ExpiredTokenException"
	CodeIDPRejectedClaim        = "IDPRejectedClaim"
	CodeIDPCommunicationError   = "IDPCommunicationError"
	CodeInvalidAction           = "InvalidAction"
	CodeMissingParameter        = "MissingParameter"
	CodeMissingAction           = "MissingAction"
	CodeInvalidParameterValue   = "InvalidParameterValue"
	CodeMethodNotAllowed        = "MethodNotAllowed"
	CodeInternalFailure         = "InternalFailure"
)

// apiError is a refusal as the client sees it (Code, Message, Status) plus
// the operator's reason (Detail), which goes to the log and the call record
// only. Message never contains a token, signature or secret.
type apiError struct {
	Code    string
	Status  int
	Message string
	Detail  string
	err     error
}

func (e *apiError) Error() string {
	if e.Detail != "" && e.Detail != e.Message {
		return e.Code + ": " + e.Message + " (" + e.Detail + ")"
	}
	return e.Code + ": " + e.Message
}

func (e *apiError) Unwrap() error { return e.err }

// sender reports whether the client is to blame (Type Sender) rather than
// the server (Type Receiver).
func (e *apiError) sender() bool { return e.Status < 500 }

func newError(code string, status int, format string, args ...any) *apiError {
	return &apiError{Code: code, Status: status, Message: fmt.Sprintf(format, args...)}
}

// withDetail adds the operator's reason.
func (e *apiError) withDetail(detail string) *apiError {
	e.Detail = detail
	return e
}

func validation(format string, args ...any) *apiError {
	return newError(CodeValidationError, http.StatusBadRequest, format, args...)
}

func accessDenied(format string, args ...any) *apiError {
	return newError(CodeAccessDenied, http.StatusForbidden, format, args...)
}

// internal hides a server-side failure from the client; the cause is for
// the operator.
func internal(err error) *apiError {
	return &apiError{Code: CodeInternalFailure, Status: http.StatusInternalServerError,
		Message: "The request processing has failed because of an unknown error, exception or failure.",
		Detail:  err.Error(), err: err}
}

// asAPIError turns any error into the one the client receives.
func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return internal(err)
}
