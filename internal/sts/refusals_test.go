package sts

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func (f *fixture) assume(c creds, kv ...string) (int, []byte) {
	f.t.Helper()
	return f.call(&c, form(append([]string{"Action", "AssumeRole"}, kv...)...))
}

// TestAssumeRoleRefusals pins the AWS error code and HTTP status of each
// way AssumeRole is refused.
func TestAssumeRoleRefusals(t *testing.T) {
	f := newFixture(t)
	alice := f.alice.creds()
	role := f.roleARN("db-access")
	cases := []struct {
		name   string
		c      creds
		kv     []string
		status int
		code   string
	}{
		{"no identity policy", f.nobody.creds(), []string{"RoleArn", role, "RoleSessionName", "s1"}, 403, CodeAccessDenied},
		{"trust policy deny", alice, []string{"RoleArn", f.roleARN("not-alice"), "RoleSessionName", "s1"}, 403, CodeAccessDenied},
		{"trust condition: no external id", alice, []string{"RoleArn", f.roleARN("partner"), "RoleSessionName", "s1"}, 403, CodeAccessDenied},
		{"trust condition: wrong external id", alice, []string{"RoleArn", f.roleARN("partner"), "RoleSessionName", "s1", "ExternalId", "ext-0000"}, 403, CodeAccessDenied},
		{"missing sts:TagSession in trust", alice, []string{"RoleArn", f.roleARN("no-tags"), "RoleSessionName", "s1",
			"Tags.member.1.Key", "dbuser", "Tags.member.1.Value", "alice"}, 403, CodeAccessDenied},
		{"unknown role", alice, []string{"RoleArn", f.roleARN("no-such-role"), "RoleSessionName", "s1"}, 403, CodeAccessDenied},
		{"session name too short", alice, []string{"RoleArn", role, "RoleSessionName", "a"}, 400, CodeValidationError},
		{"session name with a space", alice, []string{"RoleArn", role, "RoleSessionName", "al ice"}, 400, CodeValidationError},
		{"session name too long", alice, []string{"RoleArn", role, "RoleSessionName", strings.Repeat("a", 65)}, 400, CodeValidationError},
		{"duration above role max", alice, []string{"RoleArn", role, "RoleSessionName", "s1", "DurationSeconds", "3601"}, 400, CodeValidationError},
		{"duration below 900", alice, []string{"RoleArn", role, "RoleSessionName", "s1", "DurationSeconds", "899"}, 400, CodeValidationError},
		{"malformed session policy", alice, []string{"RoleArn", role, "RoleSessionName", "s1", "Policy", `{"Version":"2012-10-17","Statement":[{"Effect":"Allowed","Action":"*","Resource":"*"}]}`}, 400, CodeMalformedPolicyDocument},
		{"session policy with a principal", alice, []string{"RoleArn", role, "RoleSessionName", "s1", "Policy", `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}`}, 400, CodeMalformedPolicyDocument},
		{"transitive key not among tags", alice, []string{"RoleArn", role, "RoleSessionName", "s1",
			"Tags.member.1.Key", "dbuser", "Tags.member.1.Value", "alice", "TransitiveTagKeys.member.1", "team"}, 400, CodeValidationError},
		{"duplicate tag keys", alice, []string{"RoleArn", role, "RoleSessionName", "s1",
			"Tags.member.1.Key", "dbuser", "Tags.member.1.Value", "a", "Tags.member.2.Key", "DBUser", "Tags.member.2.Value", "b"}, 400, CodeValidationError},
		{"reserved tag key", alice, []string{"RoleArn", role, "RoleSessionName", "s1", "Tags.member.1.Key", "aws:x", "Tags.member.1.Value", "a"}, 400, CodeValidationError},
		{"not a role ARN", alice, []string{"RoleArn", "arn:aws:iam::123456789012:user/alice", "RoleSessionName", "s1"}, 400, CodeValidationError},
		{"unknown policy ARN", alice, []string{"RoleArn", role, "RoleSessionName", "s1", "PolicyArns.member.1.arn", "arn:aws:iam::123456789012:policy/none"}, 400, CodeValidationError},
		{"missing role", alice, []string{"RoleSessionName", "s1"}, 400, CodeMissingParameter},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := f.assume(c.c, c.kv...)
			f.wantError(status, body, c.status, c.code)
			rec := f.lastRecord()
			if rec.ErrorCode != c.code || rec.Status != c.status || rec.Issued != nil {
				t.Fatalf("call record %+v", rec)
			}
		})
	}

	// The conditions that refused above allow when met.
	status, body := f.assume(alice, "RoleArn", f.roleARN("partner"), "RoleSessionName", "s1", "ExternalId", "ext-4242")
	if status != 200 {
		t.Fatalf("with the external id: %d %s", status, body)
	}
	status, body = f.assume(alice, "RoleArn", f.roleARN("long"), "RoleSessionName", "s1", "DurationSeconds", "7200")
	if status != 200 {
		t.Fatalf("two hours on a two-hour role: %d %s", status, body)
	}
	status, body = f.assume(alice, "RoleArn", f.roleARN("long"), "RoleSessionName", "s1", "DurationSeconds", "7201")
	f.wantError(status, body, 400, CodeValidationError)

	// Too many tags, and tags too large to pack.
	kv := []string{"RoleArn", role, "RoleSessionName", "s1"}
	for i := 1; i <= 51; i++ {
		n := strings.Repeat("k", 3) + string(rune('A'+i%26)) + strings.Repeat("x", i%7) + string(rune('a'+i/26))
		kv = append(kv, "Tags.member."+strconv.Itoa(i)+".Key", n, "Tags.member."+strconv.Itoa(i)+".Value", "v")
	}
	status, body = f.assume(alice, kv...)
	f.wantError(status, body, 400, CodeValidationError)
	kv = []string{"RoleArn", role, "RoleSessionName", "s1"}
	for i := 1; i <= 20; i++ {
		kv = append(kv, "Tags.member."+strconv.Itoa(i)+".Key", "key"+strconv.Itoa(i), "Tags.member."+strconv.Itoa(i)+".Value", randomTagValue(t))
	}
	status, body = f.assume(alice, kv...)
	f.wantError(status, body, 400, CodePackedPolicyTooLarge)
}

// randomTagValue is 256 characters that do not compress.
func randomTagValue(t *testing.T) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var b strings.Builder
	seed := uint64(time.Now().UnixNano()) | 1
	for range 256 {
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		b.WriteByte(alphabet[seed%uint64(len(alphabet))])
	}
	return b.String()
}

// TestSignatureRefusals pins the codes of requests whose signature or
// credentials are refused, and the same credentials at connect time.
func TestSignatureRefusals(t *testing.T) {
	f := newFixture(t)
	gci := func() url.Values { return form("Action", "GetCallerIdentity") }
	alice := f.alice.creds()

	bad := alice
	bad.secret = strings.Repeat("x", 40)
	status, body := f.call(&bad, gci())
	f.wantError(status, body, 403, CodeSignatureDoesNotMatch)

	unknown := creds{id: "AKIAAAAAAAAAAAAAAAAA", secret: alice.secret}
	status, body = f.call(&unknown, gci())
	f.wantError(status, body, 403, CodeInvalidClientTokenID)

	status, body = f.callAt(&alice, gci(), f.clock.now().Add(-6*time.Minute))
	f.wantError(status, body, 403, CodeSignatureDoesNotMatch)

	status, body = f.call(nil, gci())
	f.wantError(status, body, 403, CodeMissingAuthentication)

	// Temporary credentials: valid, then revoked, then (another session)
	// expired — refused by STS and at connect time.
	status, body = f.assume(alice, "RoleArn", f.roleARN("db-access"), "RoleSessionName", "alice",
		"Tags.member.1.Key", "dbuser", "Tags.member.1.Value", "alice", "DurationSeconds", "900")
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	sess, _ := assumeCreds(t, body)
	if status, body = f.call(&sess, gci()); status != 200 {
		t.Fatalf("fresh session: %d %s", status, body)
	}
	if _, err := f.connect(sess, "alice"); err != nil {
		t.Fatal(err)
	}
	noToken := sess
	noToken.token = ""
	status, body = f.call(&noToken, gci())
	f.wantError(status, body, 403, CodeInvalidClientTokenID)
	wrongToken := sess
	wrongToken.token = sess.token[:len(sess.token)-4] + "AAAA"
	status, body = f.call(&wrongToken, gci())
	f.wantError(status, body, 403, CodeInvalidClientTokenID)

	status, body = f.assume(alice, "RoleArn", f.roleARN("db-access"), "RoleSessionName", "alice2",
		"Tags.member.1.Key", "dbuser", "Tags.member.1.Value", "alice", "DurationSeconds", "900")
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	later, _ := assumeCreds(t, body)

	if err := f.store.RevokeSession(context.Background(), sess.id); err != nil {
		t.Fatal(err)
	}
	status, body = f.call(&sess, gci())
	f.wantError(status, body, 403, CodeInvalidClientTokenID)
	_, err := f.connect(sess, "alice")
	wantAuthnCode(t, err, "RevokedCredentials")

	f.clock.advance(16 * time.Minute)
	status, body = f.call(&later, gci())
	f.wantError(status, body, 403, CodeExpiredToken)
	_, err = f.connect(later, "alice")
	wantAuthnCode(t, err, "ExpiredCredentials")

	// Nothing secret reaches the log.
	logs := f.logs.String()
	for _, secret := range []string{alice.secret, sess.secret, sess.token, later.secret, later.token} {
		if strings.Contains(logs, secret) {
			t.Fatalf("log contains a secret")
		}
	}
	if !strings.Contains(logs, "request_id=") || !strings.Contains(logs, "ExpiredCredentials") {
		t.Fatalf("log lacks request ids or reasons:\n%s", logs)
	}
}

// TestDeleteParentKeyRevokesSessions: deleting the access key that obtained
// a session ends it, for STS calls and database logins alike.
func TestDeleteParentKeyRevokesSessions(t *testing.T) {
	f := newFixture(t)
	status, body := f.assume(f.alice.creds(), "RoleArn", f.roleARN("db-access"), "RoleSessionName", "alice",
		"Tags.member.1.Key", "dbuser", "Tags.member.1.Value", "alice")
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	sess, _ := assumeCreds(t, body)
	if err := f.store.DeleteAccessKey(context.Background(), f.alice.id); err != nil {
		t.Fatal(err)
	}
	status, body = f.call(&sess, form("Action", "GetCallerIdentity"))
	f.wantError(status, body, 403, CodeInvalidClientTokenID)
	_, err := f.connect(sess, "alice")
	wantAuthnCode(t, err, "RevokedCredentials")
}

// TestWebIdentityRefusals pins the codes of refused web identity tokens.
func TestWebIdentityRefusals(t *testing.T) {
	f := newFixture(t)
	now := f.clock.now()
	web := func(token string, kv ...string) (int, []byte) {
		return f.call(nil, form(append([]string{"Action", "AssumeRoleWithWebIdentity", "RoleArn", f.roleARN("web-db"),
			"RoleSessionName", "web", "WebIdentityToken", token}, kv...)...))
	}
	other := newTestIdP(t) // same issuer URL shape, unknown to the store
	forged := newTestIdP(t)
	forgedTok := forged.token(t, "alice", "alice", now, time.Hour, func(c map[string]any) { c["iss"] = f.idp.srv.URL })
	cases := []struct {
		name   string
		token  string
		kv     []string
		status int
		code   string
	}{
		{"expired", f.idp.token(t, "alice", "alice", now.Add(-2*time.Hour), time.Hour), nil, 400, CodeExpiredTokenException},
		{"issued in the future", f.idp.token(t, "alice", "alice", now.Add(time.Hour), time.Hour), nil, 400, CodeInvalidIdentityToken},
		{"wrong audience", f.idp.token(t, "alice", "alice", now, time.Hour, func(c map[string]any) { c["aud"] = "someone-else" }), nil, 400, CodeInvalidIdentityToken},
		{"unknown issuer", other.token(t, "alice", "alice", now, time.Hour), nil, 400, CodeInvalidIdentityToken},
		{"bad signature", forgedTok, nil, 400, CodeInvalidIdentityToken},
		{"not a JWT", "not-a-jwt", nil, 400, CodeInvalidIdentityToken},
		{"no exp", f.idp.token(t, "alice", "alice", now, time.Hour, func(c map[string]any) { delete(c, "exp") }), nil, 400, CodeInvalidIdentityToken},
		{"bad tag in the claim", f.idp.token(t, "alice", "", now, time.Hour, func(c map[string]any) {
			c[TagsClaim] = map[string]any{"principal_tags": map[string]any{"aws:reserved": []string{"x"}}}
		}), nil, 403, CodeIDPRejectedClaim},
		{"trust refuses (role trusts no web identity)", f.idp.token(t, "alice", "alice", now, time.Hour), []string{"RoleArn", f.roleARN("db-access")}, 403, CodeAccessDenied},
		{"invalid session name", f.idp.token(t, "alice", "alice", now, time.Hour), []string{"RoleSessionName", "x"}, 400, CodeValidationError},
		{"duration above role max", f.idp.token(t, "alice", "alice", now, time.Hour), []string{"DurationSeconds", "7200"}, 400, CodeValidationError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := web(c.token, c.kv...)
			f.wantError(status, body, c.status, c.code)
			if rec := f.lastRecord(); rec.ErrorCode != c.code || rec.Parameters["WebIdentityToken"] != "" {
				t.Fatalf("call record %+v", rec)
			}
		})
	}
	// Within the clock skew, a token from slightly in the future is fine.
	status, body := web(f.idp.token(t, "alice", "alice", now.Add(2*time.Minute), time.Hour))
	if status != 200 {
		t.Fatalf("token issued within the skew: %d %s", status, body)
	}
	if strings.Contains(f.logs.String(), "eyJ") {
		t.Fatal("a JWT reached the log")
	}
}

// TestProtocolRefusals covers the Query protocol edge: action, version,
// method, content type, body size.
func TestProtocolRefusals(t *testing.T) {
	f := newFixture(t)
	alice := f.alice.creds()
	status, body := f.call(&alice, form("Action", "DeleteEverything"))
	f.wantError(status, body, 400, CodeInvalidAction)
	status, body = f.call(&alice, form("Action", "GetCallerIdentity", "Version", "2099-01-01"))
	f.wantError(status, body, 400, CodeInvalidAction)
	status, body = f.call(&alice, url.Values{"Version": {APIVersion}})
	f.wantError(status, body, 400, CodeMissingAction)

	resp, err := http.Post(f.srv.URL+"/", "application/json", strings.NewReader(`{"Action":"GetCallerIdentity"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("JSON body: %d", resp.StatusCode)
	}
	resp, err = http.Post(f.srv.URL+"/", "application/x-www-form-urlencoded", strings.NewReader(strings.Repeat("a=b&", MaxBodySize/4+1)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodDelete, f.srv.URL+"/", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
}
