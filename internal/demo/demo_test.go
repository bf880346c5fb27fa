package demo

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",`, `"SecretAccessKey": "…hidden…",`},
		{`"SessionToken":"abc+/="`, `"SessionToken":"…hidden…"`},
		{"  export AWS_SECRET_ACCESS_KEY=abc/def+ghi\n  export AWS_ACCESS_KEY_ID=AKIAEXAMPLE", "  export AWS_SECRET_ACCESS_KEY=…hidden…\n  export AWS_ACCESS_KEY_ID=AKIAEXAMPLE"},
		{"AWS_SESSION_TOKEN=xyz", "AWS_SESSION_TOKEN=…hidden…"},
		{"h:5432/?Action=connect&X-Amz-Security-Token=tok%2F&X-Amz-Signature=0123abcd", "h:5432/?Action=connect&X-Amz-Security-Token=…hidden…&X-Amz-Signature=…hidden…"},
		// Key ids are not secret and stay readable.
		{`"AccessKeyId": "AKIAEXAMPLE"`, `"AccessKeyId": "AKIAEXAMPLE"`},
	} {
		if got := redact(tc.in); got != tc.want {
			t.Errorf("redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

// TestShellQuote runs each quoted word through a real shell: what the demo
// shows must paste back as the very argument it ran.
func TestShellQuote(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, w := range []string{
		"plain", "host=127.0.0.1 port=5432 user=alice", "select current_user, current_database()",
		"CREATE USER alice@'%'; GRANT ALL ON shop.* TO alice@'%';", `it's "quoted" $HOME`, "a!b'c", "", "file://carol.jwt",
	} {
		q := shellQuote(w)
		out, err := exec.Command(sh, "-c", `printf '%s' `+q).Output()
		if err != nil || string(out) != w {
			t.Errorf("shellQuote(%q) = %s: the shell reads %q (%v)", w, q, out, err)
		}
	}
	if got := shellQuote("--port=5432"); got != "--port=5432" {
		t.Errorf("a plain word was quoted: %s", got)
	}
}

// TestExampleIsTheDemoFile: examples/identities.yaml is what the demo applies.
func TestExampleIsTheDemoFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "identities.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, Identities) {
		t.Fatal("examples/identities.yaml differs from internal/demo/identities.yaml: copy one over the other")
	}
}

// TestIdPToken: the demo's ID token verifies with the JWKS it writes and
// carries what AssumeRoleWithWebIdentity reads.
func TestIdPToken(t *testing.T) {
	idp, err := newDemoIdP()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := idp.jwks()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil || len(set.Keys) != 1 || !set.Keys[0].IsPublic() {
		t.Fatalf("JWKS: %v %s", err, raw)
	}
	now := time.Now()
	tok, err := idp.idToken(idClaims{Subject: carol, Email: carol, DBUser: "app"}, now)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var std jwt.Claims
	var extra struct {
		Tags struct {
			PrincipalTags     map[string][]string `json:"principal_tags"`
			TransitiveTagKeys []string            `json:"transitive_tag_keys"`
		} `json:"https://aws.amazon.com/tags"`
	}
	if err := parsed.Claims(set.Keys[0].Key, &std, &extra); err != nil {
		t.Fatalf("the ID token does not verify with the JWKS: %v", err)
	}
	if err := std.Validate(jwt.Expected{Issuer: idpIssuer, Subject: carol, AnyAudience: jwt.Audience{idpAudience}, Time: now}); err != nil {
		t.Fatal(err)
	}
	if got := extra.Tags.PrincipalTags["dbuser"]; len(got) != 1 || got[0] != "app" {
		t.Fatalf("dbuser tag %v", got)
	}
	other, _ := newDemoIdP()
	otherJWKS, _ := other.jwks()
	var otherSet jose.JSONWebKeySet
	json.Unmarshal(otherJWKS, &otherSet)
	if err := parsed.Claims(otherSet.Keys[0].Key, &std); err == nil {
		t.Fatal("the ID token verifies with another provider's key")
	}

	claims, err := jwtClaims(tok)
	if err != nil || !strings.Contains(claims, `"sub": "carol@example.com"`) || !strings.Contains(claims, `"dbuser": [`) {
		t.Fatalf("jwtClaims: %v\n%s", err, claims)
	}
	if _, err := jwtClaims("not.a-jwt"); err == nil {
		t.Fatal("jwtClaims accepted a non-JWT")
	}
}

func TestSweepStale(t *testing.T) {
	parent := t.TempDir()
	dead := filepath.Join(parent, dirPrefix+"dead")
	alive := filepath.Join(parent, dirPrefix+"alive")
	unowned := filepath.Join(parent, dirPrefix+"unowned")
	for _, d := range []string{dead, alive, unowned} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A pid that cannot exist (above the kernel's pid_max limit).
	os.WriteFile(filepath.Join(dead, ownerFile), []byte("99999999"), 0o600)
	os.WriteFile(filepath.Join(alive, ownerFile), []byte("1"), 0o600)
	sweepStale(parent)
	for d, want := range map[string]bool{dead: false, alive: true, unowned: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", filepath.Base(d), err == nil, want)
		}
	}
}

func TestBaseEnvDropsRedirections(t *testing.T) {
	t.Setenv("AWS_PROFILE", "production")
	t.Setenv("PGHOST", "db.example.com")
	t.Setenv("MYSQL_PWD", "x")
	t.Setenv("IAMDB_CONFIG", "/etc/iamdb.yaml")
	t.Setenv("DEMO_TEST_KEEP", "kept")
	env := strings.Join(baseEnv(), "\n")
	for _, gone := range []string{"AWS_PROFILE=", "PGHOST=", "MYSQL_PWD=", "IAMDB_CONFIG="} {
		if strings.Contains(env, gone) {
			t.Errorf("%s reaches the demo's commands", gone)
		}
	}
	if !strings.Contains(env, "DEMO_TEST_KEEP=kept") {
		t.Error("baseEnv dropped an unrelated variable")
	}
}
