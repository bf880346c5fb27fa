package sts

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	iamauthn "github.com/iamdb/iamdb/internal/authn"
)

// awsCLI runs the real AWS CLI with only the given credentials: the
// machine's AWS configuration and environment cannot leak in.
func (f *fixture) awsCLI(t *testing.T, c creds, args ...string) (string, error) {
	t.Helper()
	bin := requireTool(t, "aws")
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"AWS_CONFIG_FILE=" + empty, "AWS_SHARED_CREDENTIALS_FILE=" + empty,
		"AWS_DEFAULT_REGION=" + testRegion, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ACCESS_KEY_ID=" + c.id, "AWS_SECRET_ACCESS_KEY=" + c.secret,
	}
	if c.token != "" {
		env = append(env, "AWS_SESSION_TOKEN="+c.token)
	}
	for _, k := range []string{"PYENV_ROOT", "PYENV_VERSION", "PYTHONPATH", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), errors.New(strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// TestAWSCLI drives the unmodified AWS CLI: get-caller-identity,
// assume-role with a session tag, then generate-db-auth-token with the
// temporary credentials; the token is verified and authorized as the
// proxy would, for alice and not for bob.
func TestAWSCLI(t *testing.T) {
	f := newFixture(t)
	out, err := f.awsCLI(t, f.alice.creds(), "sts", "get-caller-identity", "--endpoint-url", f.srv.URL, "--output", "json")
	if err != nil {
		t.Fatalf("get-caller-identity: %v", err)
	}
	var who struct{ UserId, Account, Arn string }
	if err := json.Unmarshal([]byte(out), &who); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if who.Account != testAccount || who.Arn != "arn:aws:iam::123456789012:user/alice" || !strings.HasPrefix(who.UserId, "AIDA") {
		t.Fatalf("get-caller-identity: %+v", who)
	}

	out, err = f.awsCLI(t, f.alice.creds(), "sts", "assume-role", "--role-arn", f.roleARN("db-access"),
		"--role-session-name", "alice", "--tags", "Key=dbuser,Value=alice", "--endpoint-url", f.srv.URL, "--output", "json")
	if err != nil {
		t.Fatalf("assume-role: %v", err)
	}
	var assumed struct {
		Credentials struct {
			AccessKeyId, SecretAccessKey, SessionToken string
			Expiration                                 string
		}
		AssumedRoleUser  struct{ AssumedRoleId, Arn string }
		PackedPolicySize int
	}
	if err := json.Unmarshal([]byte(out), &assumed); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c := creds{assumed.Credentials.AccessKeyId, assumed.Credentials.SecretAccessKey, assumed.Credentials.SessionToken}
	if !strings.HasPrefix(c.id, "ASIA") || len(c.secret) != 40 || c.token == "" {
		t.Fatalf("credentials %+v", assumed.Credentials)
	}
	if assumed.AssumedRoleUser.Arn != "arn:aws:sts::123456789012:assumed-role/db-access/alice" ||
		!strings.HasPrefix(assumed.AssumedRoleUser.AssumedRoleId, "AROA") || !strings.HasSuffix(assumed.AssumedRoleUser.AssumedRoleId, ":alice") {
		t.Fatalf("assumed role user %+v", assumed.AssumedRoleUser)
	}
	if assumed.PackedPolicySize < 1 || assumed.PackedPolicySize > 100 {
		t.Fatalf("PackedPolicySize %d", assumed.PackedPolicySize)
	}
	exp, err := time.Parse(time.RFC3339, assumed.Credentials.Expiration)
	if err != nil || exp.Sub(f.clock.now()) > time.Hour+time.Minute || exp.Sub(f.clock.now()) < 59*time.Minute {
		t.Fatalf("expiration %q: want about one hour from now (%v)", assumed.Credentials.Expiration, err)
	}

	// The temporary credentials work against the API too.
	out, err = f.awsCLI(t, c, "sts", "get-caller-identity", "--endpoint-url", f.srv.URL, "--output", "json")
	if err != nil || !strings.Contains(out, "assumed-role/db-access/alice") {
		t.Fatalf("get-caller-identity with temporary credentials: %v %s", err, out)
	}

	for _, tc := range []struct {
		dbUser string
		ok     bool
	}{{"alice", true}, {"bob", false}} {
		out, err = f.awsCLI(t, c, "rds", "generate-db-auth-token", "--hostname", "localhost", "--port", "5432",
			"--username", tc.dbUser, "--region", testRegion)
		if err != nil {
			t.Fatalf("generate-db-auth-token: %v", err)
		}
		d, err := f.authn.Authenticate(context.Background(), iamauthn.Request{
			Token: strings.TrimSpace(out), Instance: f.instance, DBUser: tc.dbUser, SecureTransport: true})
		if !tc.ok {
			wantAuthnCode(t, err, iamauthn.CodeAccessDenied)
			continue
		}
		if err != nil {
			t.Fatalf("connect as %s: %v", tc.dbUser, err)
		}
		p := d.Principal
		if p.ARN != "arn:aws:sts::123456789012:assumed-role/db-access/alice" || p.Tags["dbuser"] != "alice" || p.AccessKeyID != c.id {
			t.Fatalf("principal %+v", p)
		}
	}

	// A refusal reaches the CLI as AWS's error code.
	_, err = f.awsCLI(t, f.nobody.creds(), "sts", "assume-role", "--role-arn", f.roleARN("db-access"),
		"--role-session-name", "x1", "--endpoint-url", f.srv.URL)
	if err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("assume-role by a user without permission: %v", err)
	}
}

func (f *fixture) sdkClient(c creds) *sts.Client {
	cfg := aws.Config{Region: testRegion, RetryMaxAttempts: 1}
	if c.id != "" {
		cfg.Credentials = credentials.NewStaticCredentialsProvider(c.id, c.secret, c.token)
	}
	return sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(f.srv.URL) })
}

func sdkErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestGoSDK drives aws-sdk-go-v2's STS client through every action.
func TestGoSDK(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cl := f.sdkClient(f.alice.creds())

	id, err := cl.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(id.Account) != testAccount || aws.ToString(id.Arn) != "arn:aws:iam::123456789012:user/alice" {
		t.Fatalf("GetCallerIdentity %+v", id)
	}

	// GetSessionToken: the session acts as alice herself.
	st, err := cl.GetSessionToken(ctx, &sts.GetSessionTokenInput{DurationSeconds: aws.Int32(3600)})
	if err != nil {
		t.Fatal(err)
	}
	userSess := creds{aws.ToString(st.Credentials.AccessKeyId), aws.ToString(st.Credentials.SecretAccessKey), aws.ToString(st.Credentials.SessionToken)}
	if d := st.Credentials.Expiration.Sub(f.clock.now()); d < 59*time.Minute || d > time.Hour+time.Minute {
		t.Fatalf("GetSessionToken expiration in %s", d)
	}
	id, err = f.sdkClient(userSess).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil || aws.ToString(id.Arn) != "arn:aws:iam::123456789012:user/alice" {
		t.Fatalf("GetCallerIdentity with session token credentials: %v %+v", err, id)
	}
	if _, err := f.sdkClient(userSess).GetSessionToken(ctx, &sts.GetSessionTokenInput{}); sdkErrorCode(err) != CodeAccessDenied {
		t.Fatalf("GetSessionToken with session credentials: %v", err)
	}
	if rec := f.lastRecord(); rec.ErrorCode != CodeAccessDenied || rec.Caller == nil || rec.AccessKeyID != userSess.id {
		t.Fatalf("call record of the refusal: %+v", rec)
	}

	// AssumeRole with tags, transitive keys, a source identity and a
	// session policy.
	ar, err := cl.AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(f.roleARN("db-access")), RoleSessionName: aws.String("alice-sdk"),
		Tags:              []types.Tag{{Key: aws.String("dbuser"), Value: aws.String("alice")}, {Key: aws.String("project"), Value: aws.String("x")}},
		TransitiveTagKeys: []string{"dbuser"},
		SourceIdentity:    aws.String("alice@example.com"),
		Policy:            aws.String(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["rds-db:connect","sts:AssumeRole"],"Resource":"*"}]}`),
		DurationSeconds:   aws.Int32(900),
	})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(ar.SourceIdentity) != "alice@example.com" || aws.ToInt32(ar.PackedPolicySize) <= 0 {
		t.Fatalf("AssumeRole %+v", ar)
	}
	roleSess := creds{aws.ToString(ar.Credentials.AccessKeyId), aws.ToString(ar.Credentials.SecretAccessKey), aws.ToString(ar.Credentials.SessionToken)}
	d, err := f.connect(roleSess, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d.Principal.SourceIdentity != "alice@example.com" || d.Principal.Tags["project"] != "x" || d.Principal.SessionPolicy == "" {
		t.Fatalf("principal %+v", d.Principal)
	}
	rec := f.lastRecord()
	if rec.Action != "AssumeRole" || rec.Issued == nil || rec.Issued.AccessKeyID != roleSess.id || rec.Issued.SessionTags["dbuser"] != "alice" {
		t.Fatalf("call record %+v", rec)
	}

	// Role chaining: the transitive tag and the source identity carry
	// over; the non-transitive tag does not.
	chained, err := f.sdkClient(roleSess).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(f.roleARN("long")), RoleSessionName: aws.String("chained")})
	if err != nil {
		t.Fatal(err)
	}
	chainedCreds := creds{aws.ToString(chained.Credentials.AccessKeyId), aws.ToString(chained.Credentials.SecretAccessKey), aws.ToString(chained.Credentials.SessionToken)}
	d, err = f.connect(chainedCreds, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if d.Principal.Tags["dbuser"] != "alice" || d.Principal.Tags["project"] != "" || d.Principal.SourceIdentity != "alice@example.com" {
		t.Fatalf("chained principal %+v", d.Principal)
	}
	_, err = f.sdkClient(roleSess).AssumeRole(ctx, &sts.AssumeRoleInput{
		RoleArn: aws.String(f.roleARN("long")), RoleSessionName: aws.String("chained"), DurationSeconds: aws.Int32(7200)})
	if sdkErrorCode(err) != CodeValidationError {
		t.Fatalf("chained above one hour: %v", err)
	}

	// AssumeRoleWithWebIdentity: unsigned; the SDK sends no credentials.
	web, err := f.sdkClient(creds{}).AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
		RoleArn: aws.String(f.roleARN("web-db")), RoleSessionName: aws.String("web-alice"),
		WebIdentityToken: aws.String(f.idp.token(t, "alice", "alice", f.clock.now(), time.Hour)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(web.SubjectFromWebIdentityToken) != "alice" || aws.ToString(web.Audience) != audience ||
		aws.ToString(web.Provider) != f.idp.srv.URL || aws.ToString(web.AssumedRoleUser.Arn) != "arn:aws:sts::123456789012:assumed-role/web-db/web-alice" {
		t.Fatalf("AssumeRoleWithWebIdentity %+v %+v", web, web.AssumedRoleUser)
	}
	if rec := f.lastRecord(); rec.Caller != nil || rec.Issued.FederatedSubject != "alice" || rec.Issued.FederatedProvider != f.provider.ARN() {
		t.Fatalf("web identity call record %+v", rec)
	}
}

// TestABACWebIdentity is the seed blog's ABAC flow: two people federate
// into the same role; the IdP's dbuser tag decides which database user
// each may log in as.
func TestABACWebIdentity(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	people := map[string]creds{}
	for _, who := range []string{"alice", "bob"} {
		out, err := f.sdkClient(creds{}).AssumeRoleWithWebIdentity(ctx, &sts.AssumeRoleWithWebIdentityInput{
			RoleArn: aws.String(f.roleARN("web-db")), RoleSessionName: aws.String(who),
			WebIdentityToken: aws.String(f.idp.token(t, who, who, f.clock.now(), time.Hour)),
		})
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		people[who] = creds{aws.ToString(out.Credentials.AccessKeyId), aws.ToString(out.Credentials.SecretAccessKey), aws.ToString(out.Credentials.SessionToken)}
	}
	for who, c := range people {
		// The token is generated by the real SDK signer.
		sdkCreds := credentials.NewStaticCredentialsProvider(c.id, c.secret, c.token)
		for _, dbUser := range []string{"alice", "bob"} {
			tok, err := auth.BuildAuthToken(ctx, testEndpoint, testRegion, dbUser, sdkCreds)
			if err != nil {
				t.Fatal(err)
			}
			d, err := f.authn.Authenticate(ctx, iamauthn.Request{Token: tok, Instance: f.instance, DBUser: dbUser, SecureTransport: true})
			if dbUser != who {
				wantAuthnCode(t, err, iamauthn.CodeAccessDenied)
				continue
			}
			if err != nil {
				t.Fatalf("%s as %s: %v", who, dbUser, err)
			}
			if d.Principal.FederatedSubject != who || d.Principal.FederatedProvider != f.provider.ARN() ||
				d.Principal.ARN != "arn:aws:sts::123456789012:assumed-role/web-db/"+who {
				t.Fatalf("principal %+v", d.Principal)
			}
		}
	}
}
