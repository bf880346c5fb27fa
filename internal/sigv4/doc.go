// Package sigv4 parses, verifies and signs Amazon RDS IAM authentication
// tokens: the strings that `aws rds generate-db-auth-token`, boto3,
// aws-sdk-go-v2's auth.BuildAuthToken, @aws-sdk/rds-signer and Java's
// RdsUtilities produce, and that clients send to iamdb as a password.
//
// # What a token is
//
// A token is a SigV4 presigned URL with its https:// scheme removed:
//
//	host:port/?Action=connect&DBUser=jane%20doe&X-Amz-Algorithm=AWS4-HMAC-SHA256
//	  &X-Amz-Credential=AKID%2F20261122%2Fus-east-1%2Frds-db%2Faws4_request
//	  &X-Amz-Date=20261122T010218Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host
//	  [&X-Amz-Security-Token=…]&X-Amz-Signature=<64 hex>
//
// It signs GET / with only the host header (host:port), an empty payload,
// service rds-db, and lives at most 900 seconds. SDKs differ in the text but
// not in what they sign: Go omits the slash before "?", JavaScript and Go
// sort every key, Java uses its own order, and for port 443 botocore and Go
// sign the host without ":443" while JavaScript signs "host:443". Parse
// accepts every shape; verification rebuilds the canonical query (decode,
// re-encode with URIEncode, sort) and tries both host forms for port 443.
//
// # Where it sits
//
//	client ── token as password ──▶ proxy ──▶ authn ──▶ sigv4.Verifier.Verify
//	                                                       │  parse, region, time,
//	                                                       │  endpoint, user
//	                                                       ├─▶ KeyLookup (identity store)
//	                                                       │  key state, session token
//	                                                       └─ signature ─▶ Verified{Token, Owner}
//	                                          authn ──▶ policy (rds-db:connect) ──▶ admission
//
// The package knows nothing of principals or policies: the identity store
// answers KeyLookup with Credentials, whose opaque Owner comes back in
// Verified for the caller to authorise.
//
// # Verification order
//
// Verify stops at the first failure, in this order; Explain runs them all
// for `iamdb token verify`. Each failure is an *Error whose Kind is the
// stable code recorded as the audit event's errorCode.
//
//	step       checks                                                  kinds
//	format     ≤ 16 KiB, host:port[/]?query, key=value pairs,          Malformed
//	           no duplicates, required parameters present
//	           Action=connect, AWS4-HMAC-SHA256, SignedHeaders=host    Unsupported
//	           scope AKID/date/region/rds-db/aws4_request,             InvalidScope
//	           scope date = date of X-Amz-Date
//	scope      scope region = the instance's region                    InvalidScope
//	time       0 < X-Amz-Expires ≤ 900                                 InvalidExpires
//	           X-Amz-Date ≤ now + clock skew (default 5 min)           NotYetValid
//	           now − X-Amz-Date ≤ X-Amz-Expires                        Expired
//	endpoint   host:port is one of the instance's endpoints            EndpointMismatch
//	user       DBUser = startup user, byte for byte                    UserMismatch
//	key        the key exists                                          UnknownKey
//	           and is active                                           InactiveKey
//	           session token present iff temporary, and equal          SessionTokenMismatch
//	           temporary credentials not expired                       CredentialsExpired
//	           nor revoked                                             CredentialsRevoked
//	signature  HMAC over the canonical request matches                 SignatureMismatch
//
// The cheap checks come first so that the identity store is only asked
// about tokens that could still be valid. A store failure is returned as a
// plain wrapped error, never as an *Error: the caller must fail closed and
// must not blame the client.
//
// # Secrets
//
// A token is a password for up to 15 minutes. Nothing here logs, and no
// error message contains a token, a signature, a session token or a secret.
// Token prints itself (fmt, slog) with ID — the first 12 hex digits of
// SHA-256 of the signature — in their place, which is what audit events
// record to correlate reuse of one token. Signatures and session tokens are
// compared in constant time. Derived signing keys are cached per secret,
// day and region, indexed by a hash of the secret.
//
// # Signing
//
// Sign produces the token the AWS CLI would print for the same inputs,
// byte for byte, so `iamdb token` can stand in for
// `aws rds generate-db-auth-token`. Tests check it against the SDKs' own
// vectors in testdata/vectors.json and against live output of the AWS CLI
// and aws-sdk-go-v2.
//
// See https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
// and https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.Connecting.html.
package sigv4
