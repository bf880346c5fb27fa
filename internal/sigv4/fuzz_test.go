package sigv4

import (
	"context"
	"strings"
	"testing"
)

// FuzzParse: no input may panic Parse, and whatever it accepts must be a
// coherent token. Seeds: testdata/fuzz/FuzzParse plus the vectors.
func FuzzParse(f *testing.F) {
	for _, v := range loadVectors(f).Tokens {
		f.Add(v.Token)
	}
	f.Add(signTest(f, func(in *SignInput) { in.Endpoint = "[::1]:443"; in.SessionToken = testSession }))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			if kindOf(err) == 0 {
				t.Fatalf("Parse error without a Kind: %v", err)
			}
			return
		}
		if len(s) > MaxTokenSize || tok.DBUser == "" || tok.AccessKeyID == "" || tok.Region == "" ||
			len(tok.rawDate) != len(dateLayout) || len(tok.ID()) != 12 || tok.Port == "" {
			t.Fatalf("Parse accepted an incoherent token %v from %q", tok, s)
		}
		for _, p := range tok.params {
			if p.key == paramSignature {
				t.Fatal("signature kept among the signed parameters")
			}
		}
	})
}

// FuzzVerify mutates a valid token: a mutation may still verify (another
// spelling of the same parameters) but must then say exactly what the
// original said. Any other outcome would mean the signature does not bind
// the user, the endpoint, the key or the session.
func FuzzVerify(f *testing.F) {
	temporary := func(in *SignInput) {
		in.AccessKeyID, in.SecretAccessKey, in.SessionToken = testTempID, testTempSec, testSession
	}
	good := signTest(f, temporary)
	f.Add(good)
	f.Add(strings.Replace(good, "/?", "?", 1))
	f.Add(strings.Replace(good, "Action=connect", "%41ction=connect", 1))
	f.Add(strings.Replace(good, "DBUser=jane%20doe%2Bx", "DBUser=jane+doe%2Bx", 1))
	f.Add(strings.Replace(good, "DBUser=jane%20doe%2Bx", "DBUser=jane%20doe+x", 1))
	v := NewVerifier(testKeys(), Options{Now: clockAt(testNow)})
	target := testTarget()
	f.Fuzz(func(t *testing.T, s string) {
		got, err := v.Verify(context.Background(), s, target)
		if err != nil {
			if kindOf(err) == 0 {
				t.Fatalf("refusal without a Kind: %v", err)
			}
			// Values the client wrote may be echoed (the fuzzer moves the
			// session token into other parameters); the secret keys and the
			// presented signature never.
			msg := err.Error()
			for _, secret := range []string{testSecret, testTempSec} {
				if strings.Contains(msg, secret) {
					t.Fatalf("refusal reveals a secret key: %s", msg)
				}
			}
			// Text found only in the signature parameter must not come back.
			if _, sig, ok := strings.Cut(s, "X-Amz-Signature="); ok && len(sig) >= 16 &&
				strings.Count(s, sig[:16]) == 1 && strings.Contains(msg, sig[:16]) {
				t.Fatalf("refusal echoes the signature: %s", msg)
			}
			return
		}
		tok := got.Token
		if tok.DBUser != testUser || tok.AccessKeyID != testTempID || tok.sessionToken != testSession ||
			!strings.EqualFold(tok.Host, "db.example.internal") || tok.Port != "5432" ||
			!tok.Date.Equal(testNow) || tok.Expires != MaxExpires {
			t.Fatalf("mutated token verified with other meaning: %v from %q", tok, s)
		}
	})
}
