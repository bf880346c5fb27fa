package demo

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The identity provider the demo plays; identities.yaml registers it.
const (
	idpIssuer   = "https://idp.example.com"
	idpAudience = "iamdb-demo"
	idpKeyID    = "iamdb-demo-1"
)

// demoIdP stands in for an OIDC identity provider (Okta, Entra ID,
// Keycloak…): it signs ID tokens with a key whose public half iamdb reads
// from a JWKS file.
type demoIdP struct {
	key *ecdsa.PrivateKey
}

func newDemoIdP() (*demoIdP, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate the identity provider's key: %w", err)
	}
	return &demoIdP{key: key}, nil
}

// jwks is the provider's public key set, as its jwks_uri would serve it.
func (p *demoIdP) jwks() ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &p.key.PublicKey, KeyID: idpKeyID, Algorithm: string(jose.ES256), Use: "sig",
	}}}
	b, err := json.MarshalIndent(set, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode the identity provider's JWKS: %w", err)
	}
	return b, nil
}

// idClaims are the claims of the ID token shown to the reader.
type idClaims struct {
	Subject string
	Email   string
	DBUser  string // session tag dbuser, as AWS's tags claim carries it
}

// idToken signs an ID token for a person, with the session tag dbuser in
// AWS's https://aws.amazon.com/tags claim, as an identity provider
// configured for AWS session tags sends it.
func (p *demoIdP) idToken(c idClaims, now time.Time) (string, error) {
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: p.key, KeyID: idpKeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("identity provider signer: %w", err)
	}
	std := jwt.Claims{
		Issuer:   idpIssuer,
		Subject:  c.Subject,
		Audience: jwt.Audience{idpAudience},
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(10 * time.Minute)),
	}
	extra := map[string]any{
		"email": c.Email,
		"https://aws.amazon.com/tags": map[string]any{
			"principal_tags":      map[string][]string{"dbuser": {c.DBUser}},
			"transitive_tag_keys": []string{"dbuser"},
		},
	}
	tok, err := jwt.Signed(signer).Claims(std).Claims(extra).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign the ID token: %w", err)
	}
	return tok, nil
}

// jwtClaims returns the claims of a JWT, indented, for the reader: the
// payload is only decoded, not verified (iamdb does that).
func jwtClaims(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("the ID token is not a JWS in compact form")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("decode the ID token's claims: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, payload, "", "  "); err != nil {
		return "", fmt.Errorf("decode the ID token's claims: %w", err)
	}
	return out.String(), nil
}
