package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run executes the CLI in-process and returns exit code, stdout and stderr.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// requireTool returns the path of an external program a test needs. Outside
// CI a missing program skips the test; in CI it fails it, so a broken
// dependency install can never pass silently.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required but not installed (run scripts/deps.sh): %v", name, err)
	}
	t.Skipf("%s not installed (run scripts/deps.sh)", name)
	return ""
}

// isolateAWSEnv points the AWS configuration at empty files and clears every
// credential variable, so the machine's own AWS setup cannot leak into a test.
func isolateAWSEnv(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ENDPOINT_URL",
	} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", empty)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return dir
}

func TestVersion(t *testing.T) {
	code, out, _ := run(t, "version")
	if code != 0 || !strings.HasPrefix(out, "iamdb ") {
		t.Fatalf("version: code %d, output %q", code, out)
	}
}

func TestUnknownCommandIsUsageError(t *testing.T) {
	code, _, errOut := run(t, "no-such-command")
	if code != 2 || !strings.Contains(errOut, `unknown command "no-such-command"`) {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	code, _, errOut = run(t, "version", "--no-such-flag")
	if code != 2 || !strings.Contains(errOut, "unknown flag") {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
}
