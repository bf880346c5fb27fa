package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	exampleKeyID  = "AKIDEXAMPLE"
	exampleSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	exampleToken  = "FQoGZXIvYXdzE+/abc="
)

var amzDate = regexp.MustCompile(`X-Amz-Date=(\d{8}T\d{6}Z)`)

func dateOf(t *testing.T, tok string) string {
	t.Helper()
	m := amzDate.FindStringSubmatch(tok)
	if m == nil {
		t.Fatalf("no X-Amz-Date in %q", tok)
	}
	return m[1]
}

// TestTokenMatchesAWSCLI runs the real AWS CLI and `iamdb token` with the same
// credentials and flags and requires byte-identical output for the same
// signing second. iamdb tokens are generated continuously while the CLI runs,
// so one of them is signed in the same second as the CLI's.
func TestTokenMatchesAWSCLI(t *testing.T) {
	aws := requireTool(t, "aws")
	for _, tc := range []struct {
		name, sessionToken, host, user string
		port                           string
	}{
		{name: "long-term", host: "db.example.com", port: "5432", user: "app"},
		{name: "temporary", sessionToken: exampleToken, host: "db.example.com", port: "5432", user: "app"},
		{name: "encoded user", host: "mydb.abc123.us-east-1.rds.amazonaws.com", port: "3306", user: "jane doe+x"},
		{name: "port 443", host: "db.example.com", port: "443", user: "app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolateAWSEnv(t)
			t.Setenv("AWS_ACCESS_KEY_ID", exampleKeyID)
			t.Setenv("AWS_SECRET_ACCESS_KEY", exampleSecret)
			if tc.sessionToken != "" {
				t.Setenv("AWS_SESSION_TOKEN", tc.sessionToken)
			}
			args := []string{"--hostname", tc.host, "--port", tc.port, "--username", tc.user, "--region", "us-east-1"}

			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cliCmd := exec.CommandContext(ctx, aws, append([]string{"rds", "generate-db-auth-token"}, args...)...)
			var cliOut strings.Builder
			cliCmd.Stdout = &cliOut
			cliCmd.Stderr = os.Stderr
			if err := cliCmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cliCmd.Wait() }()

			ours := map[string]string{} // X-Amz-Date -> token
			generate := func() {
				code, out, errOut := run(t, append([]string{"token"}, args...)...)
				if code != 0 {
					t.Fatalf("iamdb token: code %d, stderr %q", code, errOut)
				}
				tok := strings.TrimSpace(out)
				ours[dateOf(t, tok)] = tok
			}
			var cliErr error
		loop:
			for {
				generate()
				select {
				case cliErr = <-done:
					break loop
				case <-time.After(20 * time.Millisecond):
				}
			}
			generate()
			if cliErr != nil {
				t.Fatalf("aws rds generate-db-auth-token: %v", cliErr)
			}
			want := strings.TrimSpace(cliOut.String())
			got, ok := ours[dateOf(t, want)]
			if !ok {
				t.Fatalf("no iamdb token was signed in the CLI's second %s (have %d others)", dateOf(t, want), len(ours))
			}
			if got != want {
				t.Fatalf("iamdb token differs from the AWS CLI's\n iamdb: %s\n   aws: %s", got, want)
			}
		})
	}
}

func TestTokenFromProfile(t *testing.T) {
	dir := isolateAWSEnv(t)
	creds := filepath.Join(dir, "credentials")
	if err := os.WriteFile(creds, []byte("[dev]\naws_access_key_id = AKIAPROFILEKEY000001\naws_secret_access_key = c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "config")
	if err := os.WriteFile(cfg, []byte("[profile dev]\nregion = eu-west-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	t.Setenv("AWS_CONFIG_FILE", cfg)
	code, out, errOut := run(t, "generate-db-auth-token", "--hostname", "h", "--port", "5432", "--username", "u", "--profile", "dev")
	if code != 0 {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "X-Amz-Credential=AKIAPROFILEKEY000001%2F") || !strings.Contains(out, "%2Feu-west-1%2Frds-db%2Faws4_request") {
		t.Fatalf("token does not use the profile's key and region: %s", out)
	}
	if strings.Contains(out, "X-Amz-Security-Token") {
		t.Fatalf("long-term profile credentials produced a session token parameter: %s", out)
	}
}

func TestTokenErrors(t *testing.T) {
	isolateAWSEnv(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing flags", []string{"token", "--port", "5432"}, 2, "missing required flags: --hostname, --username"},
		{"bad port", []string{"token", "--hostname", "h", "--port", "70000", "--username", "u"}, 2, "--port 70000 is out of range"},
		{"stray argument", []string{"token", "extra"}, 2, "takes no arguments"},
		{"no region", []string{"token", "--hostname", "h", "--port", "1", "--username", "u"}, 1, "no region: pass --region"},
		{"no credentials", []string{"token", "--hostname", "h", "--port", "1", "--username", "u", "--region", "us-east-1"}, 1, "no usable AWS credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Fatalf("code %d (want %d), stderr %q (want %q)", code, tc.code, errOut, tc.want)
			}
			if out != "" {
				t.Fatalf("nothing may be printed on stdout on error, got %q", out)
			}
		})
	}
}

// TestCLIShape checks the reordering on the published Go SDK vectors: the
// result must have exactly the AWS CLI's parameter order with values intact.
func TestCLIShape(t *testing.T) {
	goTok := "mydb.abc123.us-east-1.rds.amazonaws.com:5432?Action=connect&DBUser=jane%20doe%2Bx&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261122%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261122T010223Z&X-Amz-Expires=900&X-Amz-Security-Token=FQoGZXIvYXdzE%2B%2Fabc%3D&X-Amz-SignedHeaders=host&X-Amz-Signature=60630bcf76bf5e2d4b899e3d74677435e65ebd8feea85114bdd82374c5cceb05"
	want := "mydb.abc123.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=jane%20doe%2Bx&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261122%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261122T010223Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FQoGZXIvYXdzE%2B%2Fabc%3D&X-Amz-Signature=60630bcf76bf5e2d4b899e3d74677435e65ebd8feea85114bdd82374c5cceb05"
	if got := cliShape(goTok); got != want {
		t.Fatalf("cliShape:\n got %s\nwant %s", got, want)
	}
	if got := cliShape(want); got != want {
		t.Fatalf("cliShape is not idempotent: %s", got)
	}
}
