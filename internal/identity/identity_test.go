package identity_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
)

func TestARNs(t *testing.T) {
	tests := []struct{ got, want string }{
		{identity.User{AccountID: "111122223333", Name: "alice", Path: "/"}.ARN(), "arn:aws:iam::111122223333:user/alice"},
		{identity.User{AccountID: "111122223333", Name: "alice", Path: "/eng/db/"}.ARN(), "arn:aws:iam::111122223333:user/eng/db/alice"},
		{identity.User{AccountID: "111122223333", Name: "alice", Partition: "aws-cn"}.ARN(), "arn:aws-cn:iam::111122223333:user/alice"},
		{identity.Group{AccountID: "111122223333", Name: "devs", Path: "/"}.ARN(), "arn:aws:iam::111122223333:group/devs"},
		{identity.Role{AccountID: "111122223333", Name: "app", Path: "/svc/"}.ARN(), "arn:aws:iam::111122223333:role/svc/app"},
		{identity.ManagedPolicy{AccountID: "111122223333", Name: "p", Path: "/"}.ARN(), "arn:aws:iam::111122223333:policy/p"},
		{identity.AssumedRoleARN("", "111122223333", "app", "alice"), "arn:aws:sts::111122223333:assumed-role/app/alice"},
		{identity.OIDCProvider{AccountID: "111122223333", URL: "https://idp.example.com/realms/x/"}.ARN(), "arn:aws:iam::111122223333:oidc-provider/idp.example.com/realms/x"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}

func TestParseARN(t *testing.T) {
	tests := []struct {
		in                             string
		typ, path, name, session, acct string
	}{
		{"arn:aws:iam::111122223333:user/alice", "user", "/", "alice", "", "111122223333"},
		{"arn:aws:iam::111122223333:user/eng/db/alice", "user", "/eng/db/", "alice", "", "111122223333"},
		{"arn:aws:iam::111122223333:policy/p", "policy", "/", "p", "", "111122223333"},
		{"arn:aws:sts::111122223333:assumed-role/app/alice@x", "assumed-role", "", "app", "alice@x", "111122223333"},
		{"arn:aws:iam::111122223333:oidc-provider/idp.example.com/x", "oidc-provider", "", "idp.example.com/x", "", "111122223333"},
		{"arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/alice", "", "", "", "", "111122223333"},
	}
	for _, tc := range tests {
		a, err := identity.ParseARN(tc.in)
		if err != nil {
			t.Fatalf("ParseARN(%s): %v", tc.in, err)
		}
		if a.Type != tc.typ || a.Path != tc.path || a.Name != tc.name || a.SessionName != tc.session || a.Account != tc.acct || a.String() != tc.in {
			t.Errorf("ParseARN(%s) = %+v", tc.in, a)
		}
	}
	if a, _ := identity.ParseARN("arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABC/alice"); a.Resource != "dbuser:db-ABC/alice" || a.Region != "us-east-1" {
		t.Errorf("rds-db resource split wrongly: %+v", a)
	}
	for _, bad := range []string{"", "arn:aws:iam", "urn:aws:iam::1:user/x", "arn:aws:iam::1:user/", "arn:aws:sts::1:assumed-role/app", "arn::iam::1:user/x"} {
		if _, err := identity.ParseARN(bad); !errors.Is(err, identity.ErrInvalidInput) {
			t.Errorf("ParseARN(%q) = %v, want ErrInvalidInput", bad, err)
		}
	}
}

func TestValidation(t *testing.T) {
	good := []string{"alice", "a", "A_b+c=d,e.f@g-h", strings.Repeat("x", 64)}
	for _, n := range good {
		if err := identity.ValidateName(identity.KindUser, n); err != nil {
			t.Errorf("ValidateName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "has space", "slash/no", strings.Repeat("x", 65), "ünï"} {
		err := identity.ValidateName(identity.KindRole, n)
		if !errors.Is(err, identity.ErrInvalidInput) || !strings.Contains(err.Error(), "+ = , . @ _ -") {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidInput naming the allowed characters", n, err)
		}
	}
	for _, p := range []string{"/", "/eng/", "/a/b/c/"} {
		if err := identity.ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%q): %v", p, err)
		}
	}
	for _, p := range []string{"", "eng", "/eng", "eng/", "//", "/a//b/", "/sp ace/"} {
		if err := identity.ValidatePath(p); !errors.Is(err, identity.ErrInvalidInput) {
			t.Errorf("ValidatePath(%q) = %v, want ErrInvalidInput", p, err)
		}
	}
	if err := identity.ValidateMaxSessionDuration(time.Hour); err != nil {
		t.Error(err)
	}
	if err := identity.ValidateMaxSessionDuration(12 * time.Hour); err != nil {
		t.Error(err)
	}
	for _, d := range []time.Duration{59 * time.Minute, 12*time.Hour + time.Second, 90*time.Minute + time.Millisecond} {
		if err := identity.ValidateMaxSessionDuration(d); !errors.Is(err, identity.ErrInvalidInput) {
			t.Errorf("ValidateMaxSessionDuration(%s) = %v", d, err)
		}
	}
	if err := identity.ValidateSessionName("a"); err == nil {
		t.Error("1-char session name accepted")
	}
	if err := identity.ValidateTags(map[string]string{"aws:x": "y"}); err == nil {
		t.Error("aws: tag key accepted")
	}
	if err := identity.ValidateTags(map[string]string{"team": "payments", "dbuser": ""}); err != nil {
		t.Error(err)
	}
	if err := identity.ValidateAccountID("12345678901a"); err == nil {
		t.Error("non-digit account id accepted")
	}
}

type seqReader struct{ b byte }

func (r *seqReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.b
		r.b++
	}
	return len(p), nil
}

func TestIDs(t *testing.T) {
	g := identity.NewIDs(nil)
	uid := regexp.MustCompile(`^AKIA[A-Z2-7]{16}$`)
	seen := map[string]bool{}
	for range 100 {
		id, err := g.UniqueID(identity.PrefixAccessKey)
		if err != nil || !uid.MatchString(id) || seen[id] {
			t.Fatalf("UniqueID = %q, %v (or repeated)", id, err)
		}
		seen[id] = true
		sec, _ := g.SecretAccessKey()
		if !regexp.MustCompile(`^[A-Za-z0-9/+]{40}$`).MatchString(sec) {
			t.Fatalf("secret %q", sec)
		}
		acct, _ := g.AccountID()
		if !regexp.MustCompile(`^[0-9]{12}$`).MatchString(acct) {
			t.Fatalf("account id %q", acct)
		}
		tok, _ := g.SessionToken()
		if len(tok) < 64 {
			t.Fatalf("session token has %d chars", len(tok))
		}
	}
	a, _ := identity.NewIDs(&seqReader{}).UniqueID("AIDA")
	b, _ := identity.NewIDs(&seqReader{}).UniqueID("AIDA")
	if a != b || a != "AIDAAAAQEAYEAUDAOCAJ" {
		t.Fatalf("deterministic ids differ or changed: %s %s", a, b)
	}
	if _, err := identity.NewIDs(bytes.NewReader(nil)).UniqueID("AIDA"); err == nil {
		t.Fatal("exhausted random source did not fail")
	}
}

func TestSealer(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 32)
	s, err := identity.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.SealSecret("AKIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("wJalrXUtnFEMI")) {
		t.Fatal("sealed value contains the plaintext")
	}
	again, _ := s.SealSecret("AKIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of one secret are identical: nonce not random")
	}
	if got, err := s.OpenSecret("AKIAEXAMPLE", sealed); err != nil || got != "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" {
		t.Fatalf("OpenSecret = %q, %v", got, err)
	}
	if _, err := s.OpenSecret("AKIAOTHER", sealed); !errors.Is(err, identity.ErrUnseal) {
		t.Fatalf("open with other record id: %v", err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := s.Open(tampered, []byte("AKIAEXAMPLE")); !errors.Is(err, identity.ErrUnseal) {
		t.Fatalf("tampered value opened: %v", err)
	}
	other, _ := identity.NewSealer(bytes.Repeat([]byte{2}, 32))
	_, err = other.OpenSecret("AKIAEXAMPLE", sealed)
	if !errors.Is(err, identity.ErrUnseal) || strings.Contains(err.Error(), "wJalr") {
		t.Fatalf("other key: %v", err)
	}
	if _, err := s.Open(sealed[:10], nil); !errors.Is(err, identity.ErrUnseal) {
		t.Fatalf("short value: %v", err)
	}
	if _, err := identity.NewSealer(key[:16]); err == nil {
		t.Fatal("16-byte key accepted")
	}
}

func TestMasterKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	if err := identity.CreateMasterKey(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("master key file: %v mode %v size %d", err, fi.Mode(), fi.Size())
	}
	key, err := identity.LoadMasterKey(path)
	if err != nil || len(key) != 32 {
		t.Fatalf("LoadMasterKey: %d bytes, %v", len(key), err)
	}
	if err := identity.CreateMasterKey(path); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second CreateMasterKey: %v", err)
	}
	if again, _ := identity.LoadMasterKey(path); !bytes.Equal(again, key) {
		t.Fatal("refused overwrite still changed the key")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.LoadMasterKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("LoadMasterKey on a 0644 file: %v", err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := identity.LoadMasterKey(short); err == nil {
		t.Fatal("3-byte key file accepted")
	}
	if _, err := identity.LoadMasterKey(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestSessionTokenHash(t *testing.T) {
	s := identity.Session{SessionTokenSHA256: identity.HashSessionToken("tok")}
	if !s.TokenMatches("tok") || s.TokenMatches("tok2") || (identity.Session{}).TokenMatches("") {
		t.Fatal("TokenMatches")
	}
}

func TestValidateIssuerURL(t *testing.T) {
	for _, u := range []string{"https://idp.example.com", "https://idp.example.com/realms/x", "http://localhost:8080", "http://127.0.0.1/x"} {
		if err := identity.ValidateIssuerURL(u); err != nil {
			t.Errorf("ValidateIssuerURL(%q): %v", u, err)
		}
	}
	for _, u := range []string{"", "idp.example.com", "http://idp.example.com", "http://localhost.evil.com", "https://x/?a=b", "https://u@x", "ftp://x"} {
		if err := identity.ValidateIssuerURL(u); !errors.Is(err, identity.ErrInvalidInput) {
			t.Errorf("ValidateIssuerURL(%q) = %v, want ErrInvalidInput", u, err)
		}
	}
}
