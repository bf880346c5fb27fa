// Package identity is the data model of iamdb's identity plane: accounts,
// users, groups, roles, managed and inline policies, access keys, temporary
// credentials (sessions) and OIDC providers, shaped like AWS IAM so that
// ARNs, ids and policies written for AWS work unchanged.
//
// # What lives here
//
//   - model.go: the record types. Records returned by a store carry the
//     store's ARN partition, so ARN() is always right (arn:aws:… unless
//     configured otherwise).
//   - arn.go: ARN builders (users, groups, roles, policies with their path;
//     assumed-role session ARNs; oidc-provider ARNs) and ParseARN.
//   - validate.go: the AWS naming rules. Every error wraps ErrInvalidInput
//     and says what is allowed, because people type these names.
//   - ids.go: unique ids (AIDA/AGPA/AROA/ANPA/AKIA/ASIA + 16 base32), 12-digit
//     account ids, 40-character secret access keys and session tokens, all
//     from an injectable io.Reader (crypto/rand in production).
//   - seal.go: the Sealer (AES-256-GCM under the data dir's 32-byte master
//     key) and the master key file helpers.
//   - store.go: the Store interface. sqlstore implements it for SQLite and
//     PostgreSQL; identitytest is the conformance suite every implementation
//     must pass.
//
// # Secrets
//
// Secret access keys (long-term and temporary) are stored only sealed:
// version byte, random 96-bit nonce, AES-256-GCM ciphertext, with the
// record's access key id as additional data so a sealed value moved to
// another row does not open. The plaintext is returned once, by
// Store.CreateAccessKey or Store.CreateSession, and never again; consumers
// that must sign or verify open it with Sealer.OpenSecret(id, sealed).
// Session tokens are stored only as SHA-256 (HashSessionToken); compare with
// Session.TokenMatches, which is constant time. Errors never include secret
// material.
//
// The master key file (CreateMasterKey, LoadMasterKey) is 32 raw bytes,
// mode 0600; LoadMasterKey refuses a file others can read and says how to
// fix it, and CreateMasterKey never overwrites, because losing the key loses
// every stored secret.
//
// # Store semantics
//
// Names of users, groups, roles and managed policies are unique per account
// regardless of case and looked up the same way, as in IAM. Every write is
// one transaction that also increments a one-row generation counter, so a
// failed call leaves nothing half-done and a cache in another process can
// poll Store.Generation to notice any change. TouchAccessKeyLastUsed is the
// deliberate exception: it records bookkeeping on every login, writes at
// most once a minute per key and does not move the generation.
//
// Deleting a user, group or role that still has keys, policies, members or
// memberships fails with ErrConflict, listing what to remove (AWS's
// DeleteConflict). DeleteOptions{Force: true} removes the dependents in the
// same transaction instead, which is what `iamdb apply` and the CLI's
// --force use. Deleting a role, a forced user delete and deleting an access
// key revoke the live sessions derived from them. Deleting a managed policy
// is refused while it is attached or used as a permissions boundary.
//
// Quotas follow AWS: two access keys per user, five versions per managed
// policy, ten groups per user (ErrLimitExceeded).
//
// PolicySetForUser and PolicySetForRole hand the authorizer raw JSON
// documents with stable ids ("user/NAME/inline/POLICY" for inline
// policies, the ARN for managed ones) and the boundary; parsing and
// evaluation belong to the policy package.
package identity
