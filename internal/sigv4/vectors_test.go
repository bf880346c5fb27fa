package sigv4

import (
	"context"
	"encoding/hex"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestSignatureVectors(t *testing.T) {
	for _, v := range loadVectors(t).Signatures {
		t.Run(v.Source, func(t *testing.T) {
			date, err := time.Parse(dateLayout, v.Date)
			if err != nil {
				t.Fatal(err)
			}
			text, err := Sign(SignInput{
				Endpoint: v.Endpoint, Region: v.Region, DBUser: v.DBUser,
				AccessKeyID: v.AccessKeyID, SecretAccessKey: v.SecretAccessKey, Time: date,
			})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := Parse(text)
			if err != nil {
				t.Fatalf("Parse(Sign(...)): %v", err)
			}
			if got := sigHex(tok); got != v.Signature {
				t.Errorf("signature = %s, want %s", got, v.Signature)
			}
			keys := keyring{v.AccessKeyID: {SecretAccessKey: v.SecretAccessKey, Active: true}}
			ver := NewVerifier(keys, Options{Now: clockAt(date)})
			target := Target{Region: v.Region, Endpoints: []string{v.Endpoint}, DBUser: v.DBUser}
			if _, err := ver.Verify(context.Background(), text, target); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestTokenVectors(t *testing.T) {
	for _, v := range loadVectors(t).Tokens {
		t.Run(v.Source, func(t *testing.T) {
			tok, err := Parse(v.Token)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tok.DBUser != v.DBUser || tok.Endpoint != v.Endpoint || tok.Region != v.Region ||
				tok.AccessKeyID != v.AccessKeyID || tok.sessionToken != v.SessionToken || tok.Expires != MaxExpires {
				t.Fatalf("parsed %+v; want user %q endpoint %q region %q key %q", tok, v.DBUser, v.Endpoint, v.Region, v.AccessKeyID)
			}
			keys := keyring{v.AccessKeyID: {SecretAccessKey: v.SecretAccessKey, SessionToken: v.SessionToken, Active: true, Owner: "owner"}}
			ver := NewVerifier(keys, Options{Now: clockAt(tok.Date)})
			target := Target{Region: v.Region, Endpoints: []string{v.Endpoint}, DBUser: v.DBUser}
			got, err := ver.Verify(context.Background(), v.Token, target)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Owner != "owner" || !got.ValidUntil.Equal(tok.Date.Add(MaxExpires)) {
				t.Errorf("Verified = %+v", got)
			}

			signed, err := Sign(SignInput{
				Endpoint: v.Endpoint, Region: v.Region, DBUser: v.DBUser, AccessKeyID: v.AccessKeyID,
				SecretAccessKey: v.SecretAccessKey, SessionToken: v.SessionToken, Time: tok.Date,
			})
			if err != nil {
				t.Fatal(err)
			}
			if v.Shape == "botocore" && signed != v.Token {
				t.Errorf("Sign differs from the AWS CLI:\n got %s\nwant %s", signed, v.Token)
			}
			if !strings.HasSuffix(signed, "&X-Amz-Signature="+sigHex(tok)) {
				t.Errorf("Sign gives another signature than %s", v.Source)
			}
		})
	}
}

// reorder rewrites a token's query in the order of keys (each key once,
// by name), with prefix between endpoint and query ("/?" or "?").
func reorder(t *testing.T, token, prefix string, keys []string) string {
	t.Helper()
	endpoint, query, _ := strings.Cut(token, "?")
	endpoint = strings.TrimSuffix(endpoint, "/")
	byKey := map[string]string{}
	for _, seg := range strings.Split(query, "&") {
		k, _, _ := strings.Cut(seg, "=")
		byKey[k] = seg
	}
	var out []string
	for _, k := range keys {
		if seg, ok := byKey[k]; ok {
			out = append(out, seg)
			delete(byKey, k)
		}
	}
	if len(byKey) != 0 {
		t.Fatalf("reorder: keys %v not placed", byKey)
	}
	return endpoint + prefix + strings.Join(out, "&")
}

// signWithHost signs like Sign but with an explicit host header, as the
// JavaScript signer does for port 443, and writes the keys sorted.
func signWithHost(in SignInput, host string) string {
	rawDate := in.Time.UTC().Format(dateLayout)
	scope := rawDate[:8] + "/" + in.Region + "/" + Service + "/" + scopeTerm
	params := []param{
		{key: paramAction, value: Action}, {key: paramDBUser, value: in.DBUser}, {key: paramAlgorithm, value: Algorithm},
		{key: paramCredential, value: in.AccessKeyID + "/" + scope}, {key: paramDate, value: rawDate},
		{key: paramExpires, value: "900"}, {key: paramSignedHeaders, value: signedHeaders},
	}
	if in.SessionToken != "" {
		params = append(params, param{key: paramSecurityToken, value: in.SessionToken})
	}
	key := DeriveSigningKey(in.SecretAccessKey, rawDate[:8], in.Region, Service)
	sig := hex.EncodeToString(signature(key, rawDate, in.Region, canonicalQuery(params), host))
	params = append(params, param{key: paramSignature, value: sig})
	sort.Slice(params, func(i, j int) bool { return params[i].key < params[j].key })
	var parts []string
	for _, p := range params {
		parts = append(parts, URIEncode(p.key)+"="+URIEncode(p.value))
	}
	return in.Endpoint + "/?" + strings.Join(parts, "&")
}

// TestSDKShapes checks the token shapes of the table in tokens.md.
func TestSDKShapes(t *testing.T) {
	javaOrder := []string{paramDBUser, paramAction, paramSecurityToken, paramAlgorithm, paramDate,
		paramSignedHeaders, paramExpires, paramCredential, paramSignature}
	sorted := []string{paramAction, paramDBUser, paramAlgorithm, paramCredential, paramDate,
		paramExpires, paramSecurityToken, paramSignature, paramSignedHeaders}

	temp := func(in *SignInput) {
		in.AccessKeyID, in.SecretAccessKey, in.SessionToken = testTempID, testTempSec, testSession
	}
	at443 := func(in *SignInput) { in.Endpoint = "db.example.internal:443" }
	v6at443 := func(in *SignInput) { in.Endpoint = "[::1]:443" }
	jsIn := SignInput{
		Endpoint: "db.example.internal:443", Region: testRegion, DBUser: testUser,
		AccessKeyID: testTempID, SecretAccessKey: testTempSec, SessionToken: testSession, Time: testNow,
	}

	cases := []struct {
		name, token, endpoint string
	}{
		{"botocore", signTest(t, nil), testHost},
		{"botocore temporary", signTest(t, temp), testHost},
		{"go no slash", reorder(t, signTest(t, nil), "?", sorted), testHost},
		{"java order", reorder(t, signTest(t, temp), "/?", javaOrder), testHost},
		{"js sorted signature not last", reorder(t, signTest(t, temp), "/?", sorted), testHost},
		{"botocore port 443 unsigned port", signTest(t, at443), "db.example.internal:443"},
		{"js port 443 signed port", signWithHost(jsIn, "db.example.internal:443"), "db.example.internal:443"},
		{"go ipv6 port 443 signed without brackets", func() string {
			in := jsIn
			in.Endpoint = "[::1]:443"
			return signWithHost(in, "::1")
		}(), "[::1]:443"},
		{"ipv6 port 443", signTest(t, v6at443), "[::1]:443"},
	}
	ver := NewVerifier(testKeys(), Options{Now: clockAt(testNow)})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := testTarget()
			target.Endpoints = []string{c.endpoint}
			got, err := ver.Verify(context.Background(), c.token, target)
			if err != nil {
				t.Fatalf("Verify(%s): %v", c.token, err)
			}
			if got.Token.Endpoint != c.endpoint {
				t.Errorf("endpoint = %q, want %q", got.Token.Endpoint, c.endpoint)
			}
		})
	}

	// Port 443 leniency must not extend to other ports.
	t.Run("port 5432 signed without port is refused", func(t *testing.T) {
		in := jsIn
		in.Endpoint = testHost
		_, err := ver.Verify(context.Background(), signWithHost(in, "db.example.internal"), testTarget())
		if kindOf(err) != SignatureMismatch {
			t.Fatalf("err = %v, want SignatureMismatch", err)
		}
	})
}
