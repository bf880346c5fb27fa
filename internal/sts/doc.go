// Package sts is iamdb's STS-compatible identity API: the unmodified AWS
// CLI and SDKs obtain temporary credentials from it with --endpoint-url
// (or AWS_ENDPOINT_URL_STS) and sign database tokens with them.
//
// # Protocol
//
// The AWS Query protocol, as STS speaks it: POST / with an
// application/x-www-form-urlencoded body (GET /?… also accepted),
// Action=…&Version=2011-06-15, list parameters as Tags.member.N.Key /
// Tags.member.N.Value, TransitiveTagKeys.member.N, PolicyArns.member.N.arn.
// DecodeForm bounds the work of a request (64 KiB, 200 parameters) and
// refuses a parameter given twice. Responses are XML in the
// https://sts.amazonaws.com/doc/2011-06-15/ namespace, with the Result
// wrapper and ResponseMetadata/RequestId of every STS response; errors are
// <ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>
// with AWS's codes and HTTP statuses, so SDKs raise the same typed errors.
//
//	client (aws cli / SDK)                     Service                      identity store
//	  │ POST / Action=AssumeRole&…                │                                │
//	  │ Authorization: AWS4-HMAC-SHA256 …  ──────▶│ DecodeForm (limits)            │
//	  │                                           │ sigv4.VerifyRequest ──────────▶│ GetAccessKey / GetSession
//	  │                                           │   scope sts/REGION, ±5 min,    │ (secret opened with the Sealer)
//	  │                                           │   key state, signature         │
//	  │                                           │ validate parameters            │
//	  │                                           │ identity policies (caller) ───▶│ PolicySetFor…
//	  │                                           │ trust policy (role)            │
//	  │                                           │ CreateSession ────────────────▶│ ASIA key, sealed secret,
//	  │ ◀──── <AssumeRoleResponse> credentials ───│                                │ token hash
//	  │                                           │ OnCall(CallRecord)  (audit hook)
//
// AssumeRoleWithWebIdentity is unsigned, as in AWS: the JWT is the
// credential. Its iss names an OIDC provider of the role's account; the
// signature is checked with the provider's keys (JWKS file, JWKS URL, or
// the jwks_uri of the issuer's discovery document, cached and refreshed
// once on an unknown key id), then exp/nbf/iat with the clock skew and the
// audience against the provider's audiences.
//
// # Authentication
//
// Signed actions carry a SigV4 Authorization header for service sts and
// the configured region; sigv4.Verifier.VerifyRequest rebuilds the
// canonical request. Long-term keys (AKIA) must be active; temporary ones
// (ASIA) must carry their session token (compared as SHA-256 in constant
// time) and be neither expired nor revoked. Refusals map to AWS's codes:
// InvalidClientTokenId (unknown, inactive, revoked, wrong session token),
// ExpiredToken, SignatureDoesNotMatch (signature, request time, scope),
// IncompleteSignature (a malformed header), MissingAuthenticationToken.
//
// # Actions
//
//   - GetCallerIdentity: Account, Arn, UserId of the signer.
//   - GetSessionToken: IAM users with long-term keys only; 900 s to 36 h,
//     default 12 h; the session acts as the user.
//   - AssumeRole: RoleArn, RoleSessionName, DurationSeconds (900 s to the
//     role's maximum, default 1 h), Policy, PolicyArns, Tags,
//     TransitiveTagKeys, SourceIdentity, ExternalId. The caller's identity
//     policies (with boundary and session policies, as at connect time)
//     and the role's trust policy must both allow sts:AssumeRole on the
//     role, plus sts:TagSession when tags are passed and
//     sts:SetSourceIdentity for a source identity. The trust policy sees
//     the caller as AWS principals [caller ARN, account root ARN, account
//     id, and the role ARN for a role session] and the condition keys
//     aws:PrincipalTag/*, aws:RequestTag/*, aws:TagKeys, sts:ExternalId,
//     sts:RoleSessionName, sts:SourceIdentity, sts:TransitiveTagKeys.
//     Role chaining (a role session assuming a role) carries the caller's
//     transitive tags and source identity over and caps the session at one
//     hour. An unknown role is refused like a denied one.
//   - AssumeRoleWithWebIdentity: as AssumeRole with the Federated principal
//     arn:PARTITION:iam::ACCOUNT:oidc-provider/HOST_PATH and the keys
//     HOST_PATH:sub, HOST_PATH:aud, HOST_PATH:amr. Session tags, transitive
//     keys and the source identity come from the token's
//     https://aws.amazon.com/tags claim (principal_tags,
//     transitive_tag_keys, source_identity); the session records the
//     provider and subject.
//
// Sessions are created with identity.Store.CreateSession: the response
// carries the secret and session token once; the store keeps the secret
// sealed and the token hashed. Deleting the role or the parent key, or
// `iamdb session revoke`, revokes a session: its requests here and its
// database tokens fail at once.
//
// # Secrets and audit
//
// No token, signature, secret key or web identity token is logged or put
// in an error. Each request produces exactly one CallRecord through
// Config.OnCall — caller, parameters, issued session, error code and the
// operator's reason — and one log line carrying the request id.
//
// References: https://docs.aws.amazon.com/STS/latest/APIReference/welcome.html,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/id_session-tags.html,
// https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_oidc.html.
package sts
