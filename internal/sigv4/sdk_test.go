package sigv4

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
)

// sdkUsers are database user names that exercise URI encoding.
var sdkUsers = []string{"app", "jane doe+x", "Ünïcode", "o'brien*(x)!", "a/b=c&d~e.f_g-h%20"}

// sdkCase is one token request made to a real SDK.
type sdkCase struct {
	name, endpoint, user, session string
}

func sdkCases() []sdkCase {
	var cases []sdkCase
	for _, u := range sdkUsers {
		cases = append(cases, sdkCase{"user " + u, testHost, u, ""})
	}
	return append(cases,
		sdkCase{"temporary", testHost, "app", testSession},
		sdkCase{"port 443", "db.example.internal:443", "app", ""},
		sdkCase{"port 443 temporary", "db.example.internal:443", "app", testSession},
		sdkCase{"ipv4", "127.0.0.1:6432", "app", ""},
	)
}

// verifyLive verifies a token an SDK generated just now, on the real clock.
func verifyLive(t *testing.T, token string, c sdkCase) {
	t.Helper()
	secret := testSecret
	keys := keyring{testKeyID: {SecretAccessKey: secret, SessionToken: c.session, Active: true}}
	v := NewVerifier(keys, Options{})
	target := Target{Region: testRegion, Endpoints: []string{c.endpoint}, DBUser: c.user}
	got, err := v.Verify(context.Background(), token, target)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got.Token.DBUser != c.user || got.Token.Temporary() != (c.session != "") {
		t.Errorf("verified %v", got.Token)
	}
	// The same request signed by Sign carries the same signature.
	mine, err := Sign(SignInput{
		Endpoint: c.endpoint, Region: testRegion, DBUser: c.user, AccessKeyID: testKeyID,
		SecretAccessKey: secret, SessionToken: c.session, Time: got.Token.Date,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(mine, "&X-Amz-Signature="+sigHex(got.Token)) {
		t.Errorf("Sign's signature differs from the SDK's for %s", got.Token)
	}
}

func TestGoSDKTokens(t *testing.T) {
	for _, c := range sdkCases() {
		t.Run(c.name, func(t *testing.T) {
			creds := credentials.NewStaticCredentialsProvider(testKeyID, testSecret, c.session)
			token, err := auth.BuildAuthToken(context.Background(), c.endpoint, testRegion, c.user, creds)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(token, "/?") {
				t.Fatalf("Go SDK shape changed (slash before ?): the shape table in tokens.md needs updating")
			}
			verifyLive(t, token, c)
		})
	}
}

// TestAWSCLITokens drives the real `aws rds generate-db-auth-token`.
func TestAWSCLITokens(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the AWS CLI; -short runs no external programs")
	}
	awsBin, err := exec.LookPath("aws")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the AWS CLI (aws) is not installed; scripts/deps.sh installs it")
		}
		t.Skip("the AWS CLI (aws) is not installed; install awscli to run this test")
	}
	home := t.TempDir()
	for _, c := range sdkCases() {
		t.Run(c.name, func(t *testing.T) {
			host, port, _ := strings.Cut(c.endpoint, ":")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, awsBin, "rds", "generate-db-auth-token",
				"--hostname", host, "--port", port, "--username", c.user, "--region", testRegion)
			// Only these credentials: never the machine's own profile.
			cmd.Env = []string{
				"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8",
				"AWS_CONFIG_FILE=" + filepath.Join(home, "none"),
				"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "none"),
				"AWS_EC2_METADATA_DISABLED=true",
				"AWS_ACCESS_KEY_ID=" + testKeyID, "AWS_SECRET_ACCESS_KEY=" + testSecret,
			}
			if pyenv := os.Getenv("PYENV_ROOT"); pyenv != "" {
				cmd.Env = append(cmd.Env, "PYENV_ROOT="+pyenv)
			}
			if c.session != "" {
				cmd.Env = append(cmd.Env, "AWS_SESSION_TOKEN="+c.session)
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("aws rds generate-db-auth-token: %v", err)
			}
			token := strings.TrimSpace(string(out))
			if !strings.Contains(token, "/?") {
				t.Fatalf("AWS CLI shape changed (no slash before ?)")
			}
			verifyLive(t, token, c)
		})
	}
}
