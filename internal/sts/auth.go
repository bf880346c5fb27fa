package sts

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/sigv4"
)

// caller is the authenticated signer of a request.
type caller struct {
	principal   *authn.Principal
	accessKeyID string
	// session is set for temporary credentials (role sessions and
	// GetSessionToken sessions); nil for long-term keys.
	session *identity.Session
}

// roleSession reports whether the caller acts as an assumed role, which
// makes AssumeRole role chaining.
func (c *caller) roleSession() bool { return c.session != nil && c.session.RoleID != "" }

// authenticate verifies the SigV4 Authorization header of r.
func (s *Service) authenticate(ctx context.Context, r *http.Request, body []byte) (*caller, error) {
	if r.Header.Get("Authorization") == "" {
		return nil, newError(CodeMissingAuthentication, http.StatusForbidden, "Request is missing Authentication Token")
	}
	v, err := s.verifier.VerifyRequest(ctx, r, body, sigv4.RequestScope{Region: s.region, Service: ServiceName})
	if err != nil {
		return nil, signatureError(err)
	}
	cl, ok := v.Owner.(*caller)
	if !ok || cl == nil {
		return nil, internal(errors.New("verified key has no principal"))
	}
	return cl, nil
}

// signatureError maps a refused signature to the code AWS STS returns for
// the same fault, keeping the precise reason for the operator.
func signatureError(err error) error {
	var se *sigv4.Error
	if !errors.As(err, &se) {
		return internal(fmt.Errorf("looking up the signing key: %w", err))
	}
	detail := se.Error()
	switch se.Kind {
	case sigv4.UnknownKey, sigv4.InactiveKey, sigv4.SessionTokenMismatch, sigv4.CredentialsRevoked:
		return newError(CodeInvalidClientTokenID, http.StatusForbidden, "The security token included in the request is invalid.").withDetail(detail)
	case sigv4.CredentialsExpired:
		return newError(CodeExpiredToken, http.StatusForbidden, "The security token included in the request is expired").withDetail(detail)
	case sigv4.Expired, sigv4.NotYetValid:
		return newError(CodeSignatureDoesNotMatch, http.StatusForbidden, "Signature expired or not yet current: the request time is more than 5 minutes from the server time.").withDetail(detail)
	case sigv4.WrongRegion:
		return newError(CodeSignatureDoesNotMatch, http.StatusForbidden, "Credential should be scoped to a valid region.").withDetail(detail)
	case sigv4.WrongService:
		return newError(CodeSignatureDoesNotMatch, http.StatusForbidden, "Credential should be scoped to correct service: 'sts'.").withDetail(detail)
	case sigv4.SignatureMismatch:
		return newError(CodeSignatureDoesNotMatch, http.StatusForbidden,
			"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.").withDetail(detail)
	}
	// Malformed header, algorithm, scope shape, unsigned host or date.
	return newError(CodeIncompleteSignature, http.StatusBadRequest, "%s", publicSignatureMessage(se)).withDetail(detail)
}

// publicSignatureMessage says which part of the header is wrong. It is a
// fixed text per kind: the operator's detail may quote header parts.
func publicSignatureMessage(se *sigv4.Error) string {
	switch se.Kind {
	case sigv4.WrongAlgorithm:
		return "Unsupported signing algorithm: only AWS4-HMAC-SHA256 is accepted."
	case sigv4.InvalidScope:
		return "Credential must be ACCESS_KEY_ID/YYYYMMDD/REGION/sts/aws4_request, dated the day of X-Amz-Date."
	case sigv4.Unsupported:
		return "SignedHeaders must include host and the X-Amz-Date (or Date) header."
	}
	return "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters and an X-Amz-Date header."
}

// lookupKey is the signature verifier's key lookup: the secret of a
// long-term key (AKIA) or of temporary credentials (ASIA), and the caller
// that owns it, found exactly as the database listeners find it.
func (s *Service) lookupKey(ctx context.Context, id string) (sigv4.Credentials, error) {
	creds, p, sess, err := authn.LookupKey(ctx, s.store, s.opener, id)
	if err != nil {
		return sigv4.Credentials{}, err
	}
	creds.Owner = &caller{principal: p, accessKeyID: id, session: sess}
	return creds, nil
}

func noSuchKey(err error, id string) error {
	if errors.Is(err, identity.ErrNotFound) {
		return fmt.Errorf("%w: %s", sigv4.ErrNoSuchKey, id)
	}
	return err
}
