package mysqlproxy

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
)

// The client side of the authentication plugins iamdb logs in to an
// upstream with. Formulas from the servers' own sources:
// https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods.html
// https://mariadb.com/kb/en/connection/#authentication-plugins

// authResponse is the first answer of plugin to scramble for password.
// secure says whether the upstream leg is TLS: only then may a password
// travel in clear text.
func authResponse(plugin string, scramble []byte, password string, secure bool) ([]byte, error) {
	switch plugin {
	case pluginNative:
		return scrambleNative(scramble, password), nil
	case pluginCachingSHA2:
		return scrambleSHA2(scramble, password), nil
	case pluginEd25519:
		return signEd25519(scramble, password)
	case pluginClear, pluginSHA256:
		if !secure {
			if plugin == pluginSHA256 {
				// Ask for the server's RSA key, then encrypt (rsaPassword).
				return []byte{1}, nil
			}
			return nil, fmt.Errorf("the upstream asks for authentication plugin %s, which would send the password in clear text; configure TLS to the upstream", plugin)
		}
		return append([]byte(password), 0), nil
	}
	return nil, fmt.Errorf("the upstream asks for authentication plugin %q, which iamdb does not implement", plugin)
}

// scrambleNative: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
func scrambleNative(scramble []byte, password string) []byte {
	if password == "" {
		return nil
	}
	if len(scramble) > scrambleLen {
		scramble = scramble[:scrambleLen]
	}
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	h := sha1.New()
	h.Write(scramble)
	h.Write(h2[:])
	h3 := h.Sum(nil)
	for i := range h3 {
		h3[i] ^= h1[i]
	}
	return h3
}

// scrambleSHA2: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble).
func scrambleSHA2(scramble []byte, password string) []byte {
	if password == "" {
		return nil
	}
	if len(scramble) > scrambleLen {
		scramble = scramble[:scrambleLen]
	}
	m1 := sha256.Sum256([]byte(password))
	m2 := sha256.Sum256(m1[:])
	h := sha256.New()
	h.Write(m2[:])
	h.Write(scramble)
	m3 := h.Sum(nil)
	for i := range m3 {
		m3[i] ^= m1[i]
	}
	return m3
}

// signEd25519 is MariaDB's client_ed25519: an Ed25519 signature of the
// scramble with a key derived from SHA-512 of the password.
func signEd25519(scramble []byte, password string) ([]byte, error) {
	h := sha512.Sum512([]byte(password))
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		return nil, err
	}
	a := (&edwards25519.Point{}).ScalarBaseMult(s)
	mh := sha512.New()
	mh.Write(h[32:])
	mh.Write(scramble)
	r, err := edwards25519.NewScalar().SetUniformBytes(mh.Sum(nil))
	if err != nil {
		return nil, err
	}
	rp := (&edwards25519.Point{}).ScalarBaseMult(r)
	kh := sha512.New()
	kh.Write(rp.Bytes())
	kh.Write(a.Bytes())
	kh.Write(scramble)
	k, err := edwards25519.NewScalar().SetUniformBytes(kh.Sum(nil))
	if err != nil {
		return nil, err
	}
	sig := k.MultiplyAdd(k, s, r)
	return append(rp.Bytes(), sig.Bytes()...), nil
}

// rsaPassword encrypts the password for caching_sha2_password or
// sha256_password full authentication over a plaintext upstream leg: the
// NUL-terminated password XOR the scramble, RSA-OAEP with SHA-1, under the
// public key the server sent (PEM).
func rsaPassword(pemKey, scramble []byte, password string) ([]byte, error) {
	block, _ := pem.Decode(pemKey)
	if block == nil {
		return nil, errors.New("the upstream's RSA public key is not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the upstream's RSA public key: %w", err)
	}
	key, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the upstream's public key is a %T, not RSA", pub)
	}
	if len(scramble) > scrambleLen {
		scramble = scramble[:scrambleLen]
	}
	if len(scramble) == 0 {
		return nil, errors.New("no scramble to encrypt the password with")
	}
	plain := append([]byte(password), 0)
	for i := range plain {
		plain[i] ^= scramble[i%len(scramble)]
	}
	return rsa.EncryptOAEP(sha1.New(), rand.Reader, key, plain, nil)
}
