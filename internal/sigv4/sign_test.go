package sigv4

import (
	"strings"
	"testing"
	"time"
)

func TestSignRejects(t *testing.T) {
	cases := map[string]func(*SignInput){
		"no port":         func(in *SignInput) { in.Endpoint = "db.example.internal" },
		"scheme":          func(in *SignInput) { in.Endpoint = "https://db.example.internal:5432" },
		"bad port":        func(in *SignInput) { in.Endpoint = "db.example.internal:99999" },
		"empty host":      func(in *SignInput) { in.Endpoint = ":5432" },
		"no region":       func(in *SignInput) { in.Region = "" },
		"slash in region": func(in *SignInput) { in.Region = "us/east" },
		"no user":         func(in *SignInput) { in.DBUser = "" },
		"no key id":       func(in *SignInput) { in.AccessKeyID = "" },
		"no secret":       func(in *SignInput) { in.SecretAccessKey = "" },
		"no time":         func(in *SignInput) { in.Time = time.Time{} },
		"expires > 900s":  func(in *SignInput) { in.Expires = MaxExpires + time.Second },
		"expires not s":   func(in *SignInput) { in.Expires = 1500 * time.Millisecond },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			in := SignInput{Endpoint: testHost, Region: testRegion, DBUser: testUser,
				AccessKeyID: testKeyID, SecretAccessKey: testSecret, Time: testNow}
			mod(&in)
			tok, err := Sign(in)
			if err == nil {
				t.Fatalf("Sign accepted %+v: %s", in, tok)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error reveals the secret: %v", err)
			}
		})
	}
}

func TestSignExpiresAndZone(t *testing.T) {
	// A non-UTC signing time must give the same token as its UTC instant.
	local := signTest(t, func(in *SignInput) {
		in.Time = testNow.In(time.FixedZone("X", -7*3600))
		in.Expires = 60 * time.Second
	})
	utc := signTest(t, func(in *SignInput) { in.Expires = 60 * time.Second })
	if local != utc {
		t.Errorf("signing time zone changes the token:\n%s\n%s", local, utc)
	}
	if !strings.Contains(utc, "&X-Amz-Date=20261122T010218Z&X-Amz-Expires=60&") {
		t.Errorf("unexpected date or expiry in %s", utc)
	}
}
