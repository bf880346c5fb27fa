package sigv4

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"
)

// keyring is an in-memory KeyLookup.
type keyring map[string]Credentials

func (k keyring) LookupAccessKey(_ context.Context, id string) (Credentials, error) {
	c, ok := k[id]
	if !ok {
		return Credentials{}, ErrNoSuchKey
	}
	return c, nil
}

func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

type signatureVector struct {
	Source          string `json:"source"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	Date            string `json:"date"`
	Region          string `json:"region"`
	Endpoint        string `json:"endpoint"`
	DBUser          string `json:"db_user"`
	Signature       string `json:"signature"`
}

type tokenVector struct {
	Source          string `json:"source"`
	Shape           string `json:"shape"`
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
	SessionToken    string `json:"session_token"`
	Region          string `json:"region"`
	Endpoint        string `json:"endpoint"`
	DBUser          string `json:"db_user"`
	Token           string `json:"token"`
}

type vectors struct {
	Signatures []signatureVector `json:"signatures"`
	Tokens     []tokenVector     `json:"tokens"`
}

func loadVectors(t testing.TB) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("testdata/vectors.json: %v", err)
	}
	if len(v.Signatures) == 0 || len(v.Tokens) == 0 {
		t.Fatal("testdata/vectors.json has no vectors")
	}
	return v
}

// testKey is the key most tests sign with.
const (
	testKeyID   = "AKIDEXAMPLE"
	testSecret  = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	testTempID  = "ASIATEMPORARY"
	testTempSec = "temporary/secret+key"
	testSession = "FQoGZXIvYXdzE+/abc="
	testRegion  = "us-east-1"
	testHost    = "db.example.internal:5432"
	testUser    = "jane doe+x"
)

var testNow = time.Date(2026, 11, 22, 1, 2, 18, 0, time.UTC)

func testKeys() keyring {
	return keyring{
		testKeyID:  {SecretAccessKey: testSecret, Active: true, Owner: "alice"},
		testTempID: {SecretAccessKey: testTempSec, SessionToken: testSession, Active: true, Expiration: testNow.Add(time.Hour), Owner: "role-session"},
	}
}

func testTarget() Target {
	return Target{Region: testRegion, Endpoints: []string{"localhost:5432", testHost}, DBUser: testUser}
}

// signTest signs a token with the long-term test key at testNow, after mod
// has adjusted the input.
func signTest(t testing.TB, mod func(*SignInput)) string {
	t.Helper()
	in := SignInput{
		Endpoint: testHost, Region: testRegion, DBUser: testUser,
		AccessKeyID: testKeyID, SecretAccessKey: testSecret, Time: testNow,
	}
	if mod != nil {
		mod(&in)
	}
	tok, err := Sign(in)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return tok
}

func kindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

func sigHex(t *Token) string { return hex.EncodeToString(t.signature[:]) }
