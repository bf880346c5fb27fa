package sigv4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	reqKeyID   = "AKIAREQUESTTEST00001"
	reqSecret  = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	tmpKeyID   = "ASIAREQUESTTEST00001"
	tmpSecret  = "c2VjcmV0IHRlbXBvcmFyeSBrZXkgZm9yIHRlc3Rz"
	tmpSession = "FQoGZXIvYXdzE+/abc="
)

var reqTime = time.Date(2026, 11, 22, 1, 2, 18, 0, time.UTC)

func reqKeys() keyring {
	sum := sha256.Sum256([]byte(tmpSession))
	return keyring{
		reqKeyID: {SecretAccessKey: reqSecret, Active: true, Owner: "alice"},
		tmpKeyID: {SecretAccessKey: tmpSecret, SessionTokenSHA256: sum[:], Expiration: reqTime.Add(time.Hour), Active: true, Owner: "session"},
	}
}

// sdkSigned returns a request signed by aws-sdk-go-v2's own SigV4 signer,
// the reference every SDK agrees with, as it arrives at a server.
func sdkSigned(t *testing.T, body, keyID, secret, session, region string, at time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:8787/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	creds := aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret, SessionToken: session}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hex.EncodeToString(sum[:]), "sts", region, at); err != nil {
		t.Fatal(err)
	}
	// What the server sees: Host promoted out of the header map.
	in := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8787/", strings.NewReader(body))
	in.Header = req.Header.Clone()
	in.Host = req.Host
	return in
}

func verifyReq(t *testing.T, r *http.Request, body string, now time.Time) (*VerifiedRequest, error) {
	t.Helper()
	v := NewVerifier(reqKeys(), Options{Now: clockAt(now)})
	return v.VerifyRequest(context.Background(), r, []byte(body), RequestScope{Region: "us-east-1", Service: "sts"})
}

func TestVerifyRequestAcceptsSDKSignatures(t *testing.T) {
	body := "Action=GetCallerIdentity&Version=2011-06-15"
	got, err := verifyReq(t, sdkSigned(t, body, reqKeyID, reqSecret, "", "us-east-1", reqTime), body, reqTime.Add(time.Minute))
	if err != nil {
		t.Fatalf("long-term key: %v", err)
	}
	if got.AccessKeyID != reqKeyID || got.Owner != "alice" || got.Temporary || !got.Date.Equal(reqTime) {
		t.Fatalf("verified %+v", got)
	}
	got, err = verifyReq(t, sdkSigned(t, body, tmpKeyID, tmpSecret, tmpSession, "us-east-1", reqTime), body, reqTime)
	if err != nil {
		t.Fatalf("temporary key: %v", err)
	}
	if !got.Temporary || got.Owner != "session" {
		t.Fatalf("verified %+v", got)
	}
}

func TestVerifyRequestWithQueryAndGET(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:8787/?Version=2011-06-15&Action=GetCallerIdentity&X=a%20b%2Bc", nil)
	sum := sha256.Sum256(nil)
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: reqKeyID, SecretAccessKey: reqSecret},
		req, hex.EncodeToString(sum[:]), "sts", "us-east-1", reqTime); err != nil {
		t.Fatal(err)
	}
	in := httptest.NewRequest(http.MethodGet, req.URL.String(), nil)
	in.Header, in.Host = req.Header.Clone(), req.Host
	if _, err := verifyReq(t, in, "", reqTime); err != nil {
		t.Fatal(err)
	}
	in.URL.RawQuery = strings.Replace(in.URL.RawQuery, "GetCallerIdentity", "AssumeRole", 1)
	if _, err := verifyReq(t, in, "", reqTime); !errors.Is(err, SignatureMismatch) {
		t.Fatalf("altered query: got %v, want SignatureMismatch", err)
	}
}

func TestVerifyRequestRefusals(t *testing.T) {
	body := "Action=GetCallerIdentity&Version=2011-06-15"
	signed := func() *http.Request { return sdkSigned(t, body, reqKeyID, reqSecret, "", "us-east-1", reqTime) }
	cases := []struct {
		name string
		req  func() *http.Request
		body string
		now  time.Time
		want Kind
	}{
		{"altered body", signed, "Action=AssumeRole&Version=2011-06-15", reqTime, SignatureMismatch},
		{"altered header", func() *http.Request { r := signed(); r.Header.Set("Content-Type", "text/plain"); return r }, body, reqTime, SignatureMismatch},
		{"other host", func() *http.Request { r := signed(); r.Host = "evil:8787"; return r }, body, reqTime, SignatureMismatch},
		{"wrong secret", func() *http.Request { return sdkSigned(t, body, reqKeyID, "not-the-secret", "", "us-east-1", reqTime) }, body, reqTime, SignatureMismatch},
		{"unsigned payload", func() *http.Request {
			r := signed()
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
			return r
		}, body, reqTime, SignatureMismatch},
		{"other region", func() *http.Request { return sdkSigned(t, body, reqKeyID, reqSecret, "", "eu-west-1", reqTime) }, body, reqTime, WrongRegion},
		{"too old", signed, body, reqTime.Add(6 * time.Minute), Expired},
		{"from the future", signed, body, reqTime.Add(-6 * time.Minute), NotYetValid},
		{"unknown key", func() *http.Request {
			return sdkSigned(t, body, "AKIAUNKNOWN000000000", reqSecret, "", "us-east-1", reqTime)
		}, body, reqTime, UnknownKey},
		{"temporary key without its session token", func() *http.Request { return sdkSigned(t, body, tmpKeyID, tmpSecret, "", "us-east-1", reqTime) }, body, reqTime, SessionTokenMismatch},
		{"wrong session token", func() *http.Request { return sdkSigned(t, body, tmpKeyID, tmpSecret, "other", "us-east-1", reqTime) }, body, reqTime, SessionTokenMismatch},
		{"expired temporary key", func() *http.Request {
			return sdkSigned(t, body, tmpKeyID, tmpSecret, tmpSession, "us-east-1", reqTime.Add(time.Hour))
		}, body, reqTime.Add(time.Hour), CredentialsExpired},
		{"no authorization", func() *http.Request { r := signed(); r.Header.Del("Authorization"); return r }, body, reqTime, Malformed},
		{"other algorithm", func() *http.Request {
			r := signed()
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1))
			return r
		}, body, reqTime, WrongAlgorithm},
		{"other service", func() *http.Request {
			r := signed()
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/sts/", "/iam/", 1))
			return r
		}, body, reqTime, WrongService},
		{"date not signed", func() *http.Request {
			r := signed()
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), ";x-amz-date", "", 1))
			return r
		}, body, reqTime, Unsupported},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := verifyReq(t, c.req(), c.body, c.now)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if err != nil && (strings.Contains(err.Error(), reqSecret) || strings.Contains(err.Error(), tmpSession)) {
				t.Fatalf("error reveals a secret: %v", err)
			}
		})
	}
}

func TestVerifyRequestRevoked(t *testing.T) {
	keys := reqKeys()
	c := keys[tmpKeyID]
	c.Revoked = true
	keys[tmpKeyID] = c
	body := "Action=GetCallerIdentity&Version=2011-06-15"
	v := NewVerifier(keys, Options{Now: clockAt(reqTime)})
	_, err := v.VerifyRequest(context.Background(), sdkSigned(t, body, tmpKeyID, tmpSecret, tmpSession, "us-east-1", reqTime),
		[]byte(body), RequestScope{Region: "us-east-1", Service: "sts"})
	if !errors.Is(err, CredentialsRevoked) {
		t.Fatalf("got %v, want CredentialsRevoked", err)
	}
}

func TestParseAuthorizationShapes(t *testing.T) {
	sig := strings.Repeat("ab", 32)
	good := "AWS4-HMAC-SHA256 Credential=AKID/20261122/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig
	a, err := parseAuthorization(good)
	if err != nil {
		t.Fatal(err)
	}
	if a.accessKeyID != "AKID" || a.region != "us-east-1" || a.service != "sts" || a.rawSigned != "host;x-amz-date" {
		t.Fatalf("parsed %+v", a)
	}
	// Without spaces after the commas, as some signers write it.
	if _, err := parseAuthorization(strings.ReplaceAll(good, ", ", ",")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"",
		"AWS4-HMAC-SHA256",
		strings.Replace(good, "aws4_request", "aws5_request", 1),
		strings.Replace(good, "20261122", "2026112", 1),
		strings.Replace(good, "host;", "Host;", 1),
		strings.Replace(good, "host;", "", 1),
		strings.Replace(good, sig, strings.ToUpper(sig), 1),
		good + ", Signature=" + sig,
		good + ", Extra=1",
		"AWS4-HMAC-SHA256 " + strings.Repeat("x", MaxAuthorizationSize),
	} {
		if _, err := parseAuthorization(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKID/20261122/us-east-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=" + strings.Repeat("0f", 32))
	f.Add("AWS4-HMAC-SHA256 Credential=a/b/c/d/e,SignedHeaders=,Signature=")
	f.Add("AWS4-HMAC-SHA256 ,,,=")
	f.Fuzz(func(t *testing.T, h string) {
		a, err := parseAuthorization(h)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error is not *Error: %v", err)
			}
			return
		}
		if a.accessKeyID == "" || len(a.signedHeaders) == 0 || !strings.HasPrefix(h, Algorithm+" ") {
			t.Fatalf("accepted an incomplete header %q: %+v", h, a)
		}
	})
}

func BenchmarkVerifyRequest(b *testing.B) {
	body := "Action=GetCallerIdentity&Version=2011-06-15"
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:8787/", bytes.NewReader([]byte(body)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	_ = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: reqKeyID, SecretAccessKey: reqSecret},
		req, hex.EncodeToString(sum[:]), "sts", "us-east-1", reqTime)
	in := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8787/", nil)
	in.Header, in.Host = req.Header, req.Host
	v := NewVerifier(reqKeys(), Options{Now: clockAt(reqTime)})
	scope := RequestScope{Region: "us-east-1", Service: "sts"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyRequest(context.Background(), in, []byte(body), scope); err != nil {
			b.Fatal(err)
		}
	}
}
