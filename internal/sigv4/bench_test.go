package sigv4

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"strings"
	"testing"
)

// BenchmarkVerify is the login hot path with a warm signing-key cache.
func BenchmarkVerify(b *testing.B) {
	token := signTest(b, nil)
	v := NewVerifier(testKeys(), Options{Now: clockAt(testNow)})
	target := testTarget()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, token, target); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCryptoFloor is the work no verifier can avoid for the
// token BenchmarkVerify checks: one SHA-256 of its canonical request and one
// HMAC-SHA256 of the string to sign with an already derived key. Compare
// BenchmarkVerify against it: the goal is at most 3× this floor.
func BenchmarkVerifyCryptoFloor(b *testing.B) {
	tok, err := Parse(signTest(b, nil))
	if err != nil {
		b.Fatal(err)
	}
	creq := []byte("GET\n/\n" + canonicalQuery(tok.params) + "\nhost:" + tok.Endpoint + "\n\n" + signedHeaders + "\n" + emptyPayloadHash)
	sts := []byte(Algorithm + "\n" + tok.rawDate + "\n" + tok.scope() + "\n" + strings.Repeat("0", 64))
	key := newHMACPads(DeriveSigningKey(testSecret, tok.rawDate[:8], tok.Region, Service))
	b.ReportAllocs()
	for b.Loop() {
		_ = sha256.Sum256(creq)
		_ = key.sum(sts)
	}
}

// BenchmarkVerifyCryptoFloorStdlib is the same floor computed the ordinary
// way, with crypto/hmac: one SHA-256 of the canonical request and one
// HMAC-SHA256 of the string to sign, as the benchmark goal states it.
// BenchmarkVerifyCryptoFloor is the stricter floor: HMAC with the pads
// precomputed, as the verifier itself does.
func BenchmarkVerifyCryptoFloorStdlib(b *testing.B) {
	tok, err := Parse(signTest(b, nil))
	if err != nil {
		b.Fatal(err)
	}
	creq := []byte("GET\n/\n" + canonicalQuery(tok.params) + "\nhost:" + tok.Endpoint + "\n\n" + signedHeaders + "\n" + emptyPayloadHash)
	sts := []byte(Algorithm + "\n" + tok.rawDate + "\n" + tok.scope() + "\n" + strings.Repeat("0", 64))
	key := DeriveSigningKey(testSecret, tok.rawDate[:8], tok.Region, Service)
	b.ReportAllocs()
	for b.Loop() {
		_ = sha256.Sum256(creq)
		mac := hmac.New(sha256.New, key)
		mac.Write(sts)
		_ = mac.Sum(nil)
	}
}

// BenchmarkVerifyPort443 pays for the second host form botocore and Go use.
func BenchmarkVerifyPort443(b *testing.B) {
	token := signTest(b, func(in *SignInput) { in.Endpoint = "db.example.internal:443" })
	v := NewVerifier(testKeys(), Options{Now: clockAt(testNow)})
	target := testTarget()
	target.Endpoints = []string{"db.example.internal:443"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, token, target); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyRefusedEarly is the cost of a flood of expired tokens.
func BenchmarkVerifyRefusedEarly(b *testing.B) {
	token := signTest(b, nil)
	v := NewVerifier(testKeys(), Options{Now: clockAt(testNow.Add(MaxExpires * 2))})
	target := testTarget()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, token, target); err == nil {
			b.Fatal("expired token accepted")
		}
	}
}

func BenchmarkDeriveSigningKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		DeriveSigningKey(testSecret, "20261122", testRegion, Service)
	}
}

func BenchmarkParse(b *testing.B) {
	token := signTest(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(token); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	in := SignInput{Endpoint: testHost, Region: testRegion, DBUser: testUser,
		AccessKeyID: testKeyID, SecretAccessKey: testSecret, Time: testNow}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Sign(in); err != nil {
			b.Fatal(err)
		}
	}
}
