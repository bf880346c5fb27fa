package identity

import (
	"crypto/sha256"
	"crypto/subtle"
)

// HashSessionToken is how session tokens are stored: only their SHA-256.
// A token carries 384 random bits, so a plain hash (no salt, no stretching)
// is enough to make a leaked store useless for signing.
func HashSessionToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// TokenMatches reports, in constant time, whether token is this session's
// token.
func (s Session) TokenMatches(token string) bool {
	return len(s.SessionTokenSHA256) == sha256.Size &&
		subtle.ConstantTimeCompare(HashSessionToken(token), s.SessionTokenSHA256) == 1
}
