package dbauth

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestNewPasswordAlphabetAndBias(t *testing.T) {
	// Bytes 248..255 must be skipped, not folded onto the first letters.
	src := bytes.Repeat([]byte{255, 248, 0, 61, 62, 247}, 64)
	pw, err := newPassword(bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(pw) != PasswordLength {
		t.Fatalf("length %d", len(pw))
	}
	if !strings.HasPrefix(pw, "A9A9") { // 0→A, 61→9, 62→A, 247→9 (247%62=61)
		t.Fatalf("unexpected mapping: %.8s", pw)
	}
	a, _ := newPassword(rand.Reader)
	b, _ := newPassword(rand.Reader)
	if a == b {
		t.Fatal("two random passwords are equal")
	}
	if _, err := newPassword(bytes.NewReader(nil)); err == nil {
		t.Fatal("no error from an empty random source")
	}
}

func TestScramVerifierVector(t *testing.T) {
	// Expected value from an independent implementation (Python hashlib's
	// pbkdf2_hmac and hmac, RFC 5802 key derivation); the integration tests
	// prove PostgreSQL accepts our verifiers for logins.
	const want = "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20="
	v, err := scramVerifier("pencil", []byte("0123456789abcdef"))
	if err != nil || v != want {
		t.Fatalf("scramVerifier = %q, %v; want %q", v, err, want)
	}
}

func TestScrub(t *testing.T) {
	const secret = "SCRAM-SHA-256$4096:abc"
	pgErr := &pgconn.PgError{Code: "42704", Message: `role "x" does not exist`, InternalQuery: "ALTER ROLE x PASSWORD '" + secret + "'", Where: secret}
	got := scrub(pgErr, secret)
	var pe *pgconn.PgError
	if !errors.As(got, &pe) || pe.Code != "42704" || pe.InternalQuery != "" || pe.Where != "" {
		t.Fatalf("scrubbed PgError = %#v", got)
	}
	leaky := errors.New("failed: " + secret)
	if s := scrub(leaky, secret).Error(); strings.Contains(s, secret) || !strings.Contains(s, "[REDACTED]") {
		t.Fatalf("scrub left the secret: %q", s)
	}
	plain := errors.New("connection refused")
	if scrub(plain, secret) != plain {
		t.Fatal("an error without secrets was rewrapped")
	}
}
