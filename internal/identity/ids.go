package identity

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"fmt"
	"io"
)

// Unique-id prefixes, as AWS.
const (
	PrefixUser          = "AIDA"
	PrefixGroup         = "AGPA"
	PrefixRole          = "AROA"
	PrefixPolicy        = "ANPA"
	PrefixAccessKey     = "AKIA"
	PrefixTemporaryKey  = "ASIA"
	idRandomBytes       = 10 // 16 base32 characters
	secretRandomBytes   = 30 // 40 base64 characters
	sessionTokenBytes   = 48 // 384 bits, 64 base64 characters
	accountIDDigitCount = 12
)

// IDs generates identifiers and secrets from a random source; production
// code uses crypto/rand (NewIDs(nil)), tests inject a deterministic reader.
type IDs struct {
	rand io.Reader
}

// NewIDs returns a generator reading from r, or crypto/rand when r is nil.
func NewIDs(r io.Reader) *IDs {
	if r == nil {
		r = rand.Reader
	}
	return &IDs{rand: r}
}

func (g *IDs) read(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(g.rand, b); err != nil {
		return nil, fmt.Errorf("read random bytes: %w", err)
	}
	return b, nil
}

// UniqueID returns prefix + 16 characters of upper-case base32 (A–Z, 2–7),
// the 20-character shape of AWS unique ids and access key ids.
func (g *IDs) UniqueID(prefix string) (string, error) {
	b, err := g.read(idRandomBytes)
	if err != nil {
		return "", err
	}
	return prefix + base32.StdEncoding.EncodeToString(b), nil
}

// AccountID returns 12 random digits.
func (g *IDs) AccountID() (string, error) {
	b, err := g.read(accountIDDigitCount)
	if err != nil {
		return "", err
	}
	out := make([]byte, accountIDDigitCount)
	for i, c := range b {
		// 250 is a multiple of 10; the bias of c%10 over 0..255 is
		// irrelevant for an identifier but cheap to avoid.
		for c >= 250 {
			r, err := g.read(1)
			if err != nil {
				return "", err
			}
			c = r[0]
		}
		out[i] = '0' + c%10
	}
	return string(out), nil
}

// SecretAccessKey returns 40 characters of A–Z a–z 0–9 / +, the shape of an
// AWS secret access key (240 random bits).
func (g *IDs) SecretAccessKey() (string, error) {
	b, err := g.read(secretRandomBytes)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// SessionToken returns an opaque session token of 384 random bits.
func (g *IDs) SessionToken() (string, error) {
	b, err := g.read(sessionTokenBytes)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}
