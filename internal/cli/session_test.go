package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/datadir"
	"github.com/iamdb/iamdb/internal/identity"
)

// sessionFixture creates, in an initialised data dir, two roles with a
// session each, a user session, and a revoked session that must not be
// listed. It returns the plaintext credentials of the live role
// sessions so the test can check they are never printed.
func sessionFixture(t *testing.T, dir, account string) (web, db identity.Credentials, user identity.Credentials) {
	t.Helper()
	ctx := context.Background()
	d, err := datadir.Open(ctx, dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"` + account + `"},"Action":"sts:AssumeRole"}]}`
	roles := map[string]identity.Role{}
	for _, name := range []string{"web", "db"} {
		r, err := d.Store.CreateRole(ctx, identity.Role{AccountID: account, Name: name, TrustPolicy: trust})
		if err != nil {
			t.Fatal(err)
		}
		roles[name] = r
	}
	mk := func(s identity.Session) (identity.Session, identity.Credentials) {
		t.Helper()
		s.AccountID = account
		if s.Expiration.IsZero() {
			s.Expiration = time.Now().Add(time.Hour)
		}
		out, c, err := d.Store.CreateSession(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		return out, c
	}
	_, web = mk(identity.Session{RoleID: roles["web"].ID, RoleARN: roles["web"].ARN(), SessionName: "alice",
		SessionTags: map[string]string{"dbuser": "alice"}, FederatedSubject: "alice", SourceIdentity: "alice@example.com"})
	_, db = mk(identity.Session{RoleID: roles["db"].ID, RoleARN: roles["db"].ARN(), SessionName: "ops"})
	admin, err := d.Store.GetUser(ctx, account, "admin")
	if err != nil {
		t.Fatal(err)
	}
	_, user = mk(identity.Session{UserID: admin.ID})
	_, revoked := mk(identity.Session{RoleID: roles["db"].ID, RoleARN: roles["db"].ARN(), SessionName: "gone"})
	if err := d.Store.RevokeSession(ctx, revoked.AccessKeyID); err != nil {
		t.Fatal(err)
	}
	return web, db, user
}

func TestSessionListAndRevoke(t *testing.T) {
	dir, account := iamDir(t)
	web, db, user := sessionFixture(t, dir, account)

	type listed struct {
		Sessions []struct {
			AccessKeyId, Arn, RoleArn, RoleSessionName, UserName, SourceIdentity, FederatedSubject, Expiration string
			SessionTags                                                                                        map[string]string
		}
	}
	out := mustIAM(t, dir, "session", "list", "--output", "json")
	for _, c := range []identity.Credentials{web, db, user} {
		if strings.Contains(out, c.SecretAccessKey) || strings.Contains(out, c.SessionToken) {
			t.Fatal("session list printed a secret")
		}
	}
	all := iamDecode[listed](t, out)
	if len(all.Sessions) != 3 {
		t.Fatalf("want the 3 live sessions, got %+v", all.Sessions)
	}
	byID := map[string]int{}
	for i, s := range all.Sessions {
		byID[s.AccessKeyId] = i
	}
	w := all.Sessions[byID[web.AccessKeyID]]
	if w.Arn != "arn:aws:sts::"+account+":assumed-role/web/alice" || w.SessionTags["dbuser"] != "alice" ||
		w.FederatedSubject != "alice" || w.SourceIdentity != "alice@example.com" || w.Expiration == "" {
		t.Fatalf("web session %+v", w)
	}
	if u := all.Sessions[byID[user.AccessKeyID]]; u.UserName != "admin" || u.Arn != "arn:aws:iam::"+account+":user/admin" {
		t.Fatalf("user session %+v", u)
	}

	only := iamDecode[listed](t, mustIAM(t, dir, "session", "list", "--role", "web", "--output", "json"))
	if len(only.Sessions) != 1 || only.Sessions[0].AccessKeyId != web.AccessKeyID {
		t.Fatalf("--role web: %+v", only.Sessions)
	}
	text := mustIAM(t, dir, "session", "list")
	if !strings.Contains(text, web.AccessKeyID) || !strings.Contains(text, "dbuser=alice") || !strings.Contains(text, "ACCESS KEY ID") {
		t.Fatalf("text listing:\n%s", text)
	}

	msg := mustIAM(t, dir, "session", "revoke", web.AccessKeyID)
	if !strings.Contains(msg, "Revoked session "+web.AccessKeyID) {
		t.Fatalf("revoke said %q", msg)
	}
	after := iamDecode[listed](t, mustIAM(t, dir, "session", "list", "--output", "json"))
	if len(after.Sessions) != 2 {
		t.Fatalf("after revoke: %+v", after.Sessions)
	}
	for _, s := range after.Sessions {
		if s.AccessKeyId == web.AccessKeyID {
			t.Fatal("revoked session still listed")
		}
	}
	if msg := mustIAM(t, dir, "session", "revoke", web.AccessKeyID); !strings.Contains(msg, "already revoked") {
		t.Fatalf("second revoke said %q", msg)
	}

	if errOut := iamMustFail(t, dir, 1, "session", "revoke", "ASIAAAAAAAAAAAAAAAAA"); !strings.Contains(errOut, "not found") {
		t.Fatalf("unknown session: %s", errOut)
	}
	if errOut := iamMustFail(t, dir, 2, "session", "revoke", "AKIAAAAAAAAAAAAAAAAA"); !strings.Contains(errOut, "access-key update") {
		t.Fatalf("long-term key: %s", errOut)
	}
	if errOut := iamMustFail(t, dir, 1, "session", "list", "--role", "nope"); !strings.Contains(errOut, "not found") {
		t.Fatalf("unknown role: %s", errOut)
	}
	if empty := mustIAM(t, dir, "session", "list", "--role", "web"); !strings.Contains(empty, "no live sessions") {
		t.Fatalf("empty listing: %q", empty)
	}
}
