package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// bin is the iamdb binary built once for these tests: they exercise the
// product as a user runs it, process boundary and exit codes included.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "iamdb-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "iamdb")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building iamdb:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// iamdb runs the binary with env added to a clean AWS environment.
func iamdb(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(t), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running iamdb %v: %v", args, err)
	}
	return result{code, out.String(), errOut.String()}
}

func cleanEnv(t *testing.T) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "IAMDB_") {
			continue
		}
		env = append(env, kv)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	return append(env, "AWS_CONFIG_FILE="+empty, "AWS_SHARED_CREDENTIALS_FILE="+empty, "AWS_EC2_METADATA_DISABLED=true")
}

// tamper changes the last hex digit of a token's signature, always to
// another digit.
func tamper(tok string) string {
	last := byte('0')
	if tok[len(tok)-1] == '0' {
		last = '1'
	}
	return tok[:len(tok)-1] + string(last)
}

func must(t *testing.T, r result, args ...string) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("iamdb %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

const identities = `users:
  - name: alice
    tags: {team: payments}
    groups: [developers]
  - name: bob
groups:
  - name: developers
    policies: [db-connect-self]
policies:
  - name: db-connect-self
    document:
      Version: "2012-10-17"
      Statement:
        - Sid: ConnectAsSelf
          Effect: Allow
          Action: rds-db:connect
          Resource: arn:aws:rds-db:us-east-1:${account}:dbuser:db-ORDERS00000000000000000000/${aws:username}
        - Sid: NoProduction
          Effect: Deny
          Action: rds-db:connect
          Resource: "*"
          Condition:
            StringEquals: {"iamdb:Database": production}
`

const configYAML = `data_dir: ./data
region: us-east-1
instances:
  - name: orders
    engine: postgres
    resource_id: db-ORDERS00000000000000000000
    listen: 127.0.0.1:6432
    endpoints: [localhost:6432, 127.0.0.1:6432]
    upstream: {address: 127.0.0.1:5432}
    backend_auth: {mode: trust}
`

// TestIdentityLifecycle is the operator's path with the real binary:
// init, apply, access-key create, token (iamdb and the AWS CLI), token
// verify and policy simulate, accepted and refused.
func TestIdentityLifecycle(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	os.WriteFile(cfgPath, []byte(configYAML), 0o600)
	os.WriteFile(filepath.Join(dir, "identities.yaml"), []byte(identities), 0o600)
	cfg := []string{"IAMDB_CONFIG=" + cfgPath}

	var initOut struct {
		AccountId string
		CABundle  string
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	if err := json.Unmarshal([]byte(must(t, iamdb(t, cfg, "", "init", "--output", "json"))), &initOut); err != nil {
		t.Fatal(err)
	}
	acct := initOut.AccountId
	if len(acct) != 12 || initOut.CABundle != filepath.Join(dir, "data", "ca-bundle.pem") {
		t.Fatalf("init: %+v", initOut)
	}

	plan := must(t, iamdb(t, cfg, "", "apply", "-f", filepath.Join(dir, "identities.yaml")))
	if !strings.Contains(plan, "+ create user alice") || !strings.Contains(plan, "Applied:") {
		t.Fatalf("apply output:\n%s", plan)
	}
	if again := must(t, iamdb(t, cfg, "", "apply", "-f", filepath.Join(dir, "identities.yaml"))); !strings.Contains(again, "No changes") {
		t.Fatalf("second apply:\n%s", again)
	}

	var key struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey, UserName string }
	}
	if err := json.Unmarshal([]byte(must(t, iamdb(t, cfg, "", "access-key", "create", "--user", "alice"))), &key); err != nil {
		t.Fatal(err)
	}
	alice := []string{"AWS_ACCESS_KEY_ID=" + key.AccessKey.AccessKeyId, "AWS_SECRET_ACCESS_KEY=" + key.AccessKey.SecretAccessKey, "AWS_REGION=us-east-1", "AWS_DEFAULT_REGION=us-east-1"}
	tokenArgs := func(user string) []string {
		return []string{"token", "--hostname", "localhost", "--port", "6432", "--username", user}
	}
	tok := strings.TrimSpace(must(t, iamdb(t, append(cfg, alice...), "", tokenArgs("alice")...)))

	verify := func(token, user string, extra ...string) result {
		args := append([]string{"token", "verify", "--token", "-", "--hostname", "localhost", "--port", "6432", "--username", user}, extra...)
		return iamdb(t, cfg, token+"\n", args...)
	}
	r := verify(tok, "alice")
	out := must(t, r)
	for _, want := range []string{"ok    signature", "ConnectAsSelf", "Principal: arn:aws:iam::" + acct + ":user/alice", "Result: ACCEPTED"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	secretFields := []string{tok, tok[strings.Index(tok, "X-Amz-Signature=")+16:], key.AccessKey.SecretAccessKey}
	for _, s := range secretFields {
		if strings.Contains(r.stdout+r.stderr, s) {
			t.Fatal("token verify printed the token, its signature or the secret key")
		}
	}

	// The real AWS CLI's token for the same user verifies too.
	if aws, err := exec.LookPath("aws"); err == nil {
		cli := exec.Command(aws, append([]string{"rds", "generate-db-auth-token"}, tokenArgs("alice")[1:]...)...)
		cli.Env = append(cleanEnv(t), alice...)
		var cliErr bytes.Buffer
		cli.Stderr = &cliErr
		cliTok, err := cli.Output()
		if err != nil {
			t.Fatalf("aws rds generate-db-auth-token: %v: %s", err, cliErr.String())
		}
		must(t, verify(strings.TrimSpace(string(cliTok)), "alice"))
	} else if os.Getenv("CI") == "true" {
		t.Fatal("the AWS CLI is required in CI (scripts/deps.sh installs it)")
	}

	for _, tc := range []struct {
		name, token, user string
		extra             []string
		reason            string
	}{
		{"user mismatch", tok, "bob", nil, "UserMismatch"},
		{"policy denies bob", strings.TrimSpace(must(t, iamdb(t, append(cfg, alice...), "", tokenArgs("bob")...))), "bob", nil, "AccessDenied (implicitDeny)"},
		{"explicit deny", tok, "alice", []string{"--database", "production"}, "AccessDenied (explicitDeny)"},
		{"other endpoint", tok, "alice", []string{"--hostname", "db.example.com", "--resource-id", "db-ORDERS00000000000000000000"}, "EndpointMismatch"},
		{"tampered", tamper(tok), "alice", nil, "InvalidSignature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := verify(tc.token, tc.user, tc.extra...)
			if r.code != 1 || !strings.Contains(r.stdout, "Result: REFUSED ("+tc.reason+")") {
				t.Fatalf("exit %d, want 1 and reason %s\nstdout: %s\nstderr: %s", r.code, tc.reason, r.stdout, r.stderr)
			}
		})
	}

	resource := "arn:aws:rds-db:us-east-1:" + acct + ":dbuser:db-ORDERS00000000000000000000/"
	var sim struct {
		EvalDecision      string
		MatchedStatements []struct{ SourcePolicyId, Sid string }
		ResolvedVariables map[string]string
	}
	simOut := must(t, iamdb(t, cfg, "", "policy", "simulate", "--principal", "arn:aws:iam::"+acct+":user/alice",
		"--resource", resource+"alice", "--output", "json"))
	if err := json.Unmarshal([]byte(simOut), &sim); err != nil {
		t.Fatal(err)
	}
	if sim.EvalDecision != "allowed" || len(sim.MatchedStatements) != 1 || sim.MatchedStatements[0].Sid != "ConnectAsSelf" ||
		sim.MatchedStatements[0].SourcePolicyId != "arn:aws:iam::"+acct+":policy/db-connect-self" || sim.ResolvedVariables["aws:username"] != "alice" {
		t.Fatalf("simulate alice:\n%s", simOut)
	}
	simOut = must(t, iamdb(t, cfg, "", "policy", "simulate", "--principal", "arn:aws:iam::"+acct+":user/alice",
		"--resource", resource+"alice", "--context", "iamdb:Database=production", "--output", "json"))
	if err := json.Unmarshal([]byte(simOut), &sim); err != nil || sim.EvalDecision != "explicitDeny" || sim.MatchedStatements[0].Sid != "NoProduction" {
		t.Fatalf("simulate with production database:\n%s", simOut)
	}
	text := must(t, iamdb(t, cfg, "", "policy", "simulate", "--principal", "arn:aws:iam::"+acct+":user/alice", "--resource", resource+"bob"))
	if !strings.Contains(text, "Decision:  implicitDeny") || !strings.Contains(text, "${aws:username} = alice") {
		t.Fatalf("simulate bob:\n%s", text)
	}

	// A deactivated key's tokens are refused, with the reason.
	must(t, iamdb(t, cfg, "", "access-key", "update", key.AccessKey.AccessKeyId, "--status", "Inactive"))
	if r := verify(tok, "alice"); r.code != 1 || !strings.Contains(r.stdout, "InactiveAccessKey") {
		t.Fatalf("inactive key: exit %d\n%s", r.code, r.stdout)
	}
}
