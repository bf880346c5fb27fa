package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// iamDir creates a data directory through 'iamdb init' and returns it with
// its account id.
func iamDir(t *testing.T) (dir, account string) {
	t.Helper()
	// Neither the machine's configuration nor its environment may choose
	// the data directory or account.
	t.Setenv("IAMDB_CONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	if err := os.WriteFile(os.Getenv("IAMDB_CONFIG"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IAMDB_DATA_DIR", "")
	dir = filepath.Join(t.TempDir(), "d")
	code, out, errOut := run(t, "init", "--data-dir", dir, "--output", "json")
	if code != 0 {
		t.Fatalf("init: code %d, stderr %s", code, errOut)
	}
	var res struct{ AccountId string }
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.AccountId) != 12 {
		t.Fatalf("init output %q: %v", out, err)
	}
	return dir, res.AccountId
}

// iam runs an iamdb command against dir.
func iam(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	return run(t, append(args, "--data-dir", dir)...)
}

// mustIAM runs a command that must succeed and returns its stdout.
func mustIAM(t *testing.T, dir string, args ...string) string {
	t.Helper()
	code, out, errOut := iam(t, dir, args...)
	if code != 0 {
		t.Fatalf("iamdb %s: code %d, stderr %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// iamMustFail runs a command that must exit with code and returns its stderr.
func iamMustFail(t *testing.T, dir string, code int, args ...string) string {
	t.Helper()
	got, out, errOut := iam(t, dir, args...)
	if got != code {
		t.Fatalf("iamdb %s: code %d, want %d; stdout %s, stderr %s", strings.Join(args, " "), got, code, out, errOut)
	}
	return errOut
}

func iamDecode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
	return v
}

func iamWriteFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func iamWant(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

const (
	iamConnectDoc = `{
  "Version": "2012-10-17",
  "Statement": [{"Sid": "Connect", "Effect": "Allow", "Action": "rds-db:connect",
    "Resource": "arn:aws:rds-db:*:*:dbuser:*/${aws:username}"}]
}`
	iamInlineDoc = `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"}}`
	iamTrustDoc  = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}`
)

type iamKeyJSON struct {
	AccessKey struct {
		UserName, AccessKeyId, Status, SecretAccessKey, CreateDate string
	}
}

func TestIAMFlow(t *testing.T) {
	dir, acct := iamDir(t)
	policyARN := "arn:aws:iam::" + acct + ":policy/db-connect"

	// Managed policy from a file.
	pol := iamDecode[struct {
		Policy struct{ PolicyName, Arn, DefaultVersionId, PolicyId string }
	}](t, mustIAM(t, dir, "policy", "create", "db-connect", "--document", iamWriteFile(t, "p.json", iamConnectDoc), "--output", "json"))
	if pol.Policy.Arn != policyARN || pol.Policy.DefaultVersionId != "v1" || !strings.HasPrefix(pol.Policy.PolicyId, "ANPA") {
		t.Fatalf("policy create: %+v", pol.Policy)
	}

	// User with tags, a managed policy by name and an inline policy.
	mustIAM(t, dir, "user", "create", "alice", "--tag", "team=payments", "--tag", "dbuser=alice")
	mustIAM(t, dir, "user", "attach-policy", "alice", "db-connect")
	mustIAM(t, dir, "user", "put-policy", "alice", "extra", "--document", iamInlineDoc)
	lp := iamDecode[struct {
		AttachedPolicies []struct{ PolicyName, PolicyArn string }
		PolicyNames      []string
	}](t, mustIAM(t, dir, "user", "list-policies", "alice", "--output", "json"))
	if len(lp.AttachedPolicies) != 1 || lp.AttachedPolicies[0].PolicyArn != policyARN ||
		!reflect.DeepEqual(lp.PolicyNames, []string{"extra"}) {
		t.Fatalf("user list-policies: %+v", lp)
	}
	inline := iamDecode[map[string]any](t, mustIAM(t, dir, "user", "get-policy", "alice", "extra", "--output", "json"))
	if inline["UserName"] != "alice" || inline["PolicyName"] != "extra" {
		t.Fatalf("user get-policy: %v", inline)
	}
	if _, ok := inline["PolicyDocument"].(map[string]any); !ok {
		t.Fatalf("PolicyDocument is not an object: %v", inline["PolicyDocument"])
	}

	// Group with a member, an inline policy (file:// form) and the managed policy by ARN.
	mustIAM(t, dir, "group", "create", "developers")
	mustIAM(t, dir, "group", "add-user", "developers", "alice")
	mustIAM(t, dir, "group", "put-policy", "developers", "team", "--document", "file://"+iamWriteFile(t, "g.json", iamInlineDoc))
	mustIAM(t, dir, "group", "attach-policy", "developers", policyARN)
	grp := iamDecode[struct {
		Group struct{ GroupName, GroupId, Arn string }
		Users []struct{ UserName string }
	}](t, mustIAM(t, dir, "group", "get", "developers", "--output", "json"))
	if grp.Group.Arn != "arn:aws:iam::"+acct+":group/developers" || len(grp.Users) != 1 || grp.Users[0].UserName != "alice" {
		t.Fatalf("group get: %+v", grp)
	}
	iamWant(t, "group list-policies", mustIAM(t, dir, "group", "list-policies", "developers"), "managed", "db-connect", "inline", "team")

	// Role with a trust policy.
	role := iamDecode[struct {
		Role struct {
			RoleName, RoleId, Arn    string
			AssumeRolePolicyDocument map[string]any
			MaxSessionDuration       int
		}
	}](t, mustIAM(t, dir, "role", "create", "db-admin", "--trust-policy", iamTrustDoc, "--max-session-duration", "2h", "--output", "json"))
	if role.Role.MaxSessionDuration != 7200 || role.Role.AssumeRolePolicyDocument["Statement"] == nil ||
		!strings.HasPrefix(role.Role.RoleId, "AROA") || role.Role.Arn != "arn:aws:iam::"+acct+":role/db-admin" {
		t.Fatalf("role create: %+v", role.Role)
	}

	// Access keys: the secret is printed by create and nowhere else.
	k1 := iamDecode[iamKeyJSON](t, mustIAM(t, dir, "access-key", "create", "--user", "alice"))
	if k1.AccessKey.UserName != "alice" || k1.AccessKey.Status != "Active" || len(k1.AccessKey.SecretAccessKey) != 40 ||
		!strings.HasPrefix(k1.AccessKey.AccessKeyId, "AKIA") || len(k1.AccessKey.AccessKeyId) != 20 {
		t.Fatalf("access-key create: %+v", k1.AccessKey)
	}
	text := mustIAM(t, dir, "access-key", "create", "--user", "alice", "--output", "text")
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "AWS_ACCESS_KEY_ID=AKIA") ||
		len(strings.TrimPrefix(lines[1], "AWS_SECRET_ACCESS_KEY=")) != 40 {
		t.Fatalf("access-key create --output text: %q", text)
	}
	secret2 := strings.TrimPrefix(lines[1], "AWS_SECRET_ACCESS_KEY=")
	errOut := iamMustFail(t, dir, 1, "access-key", "create", "--user", "alice")
	iamWant(t, "third key refusal", errOut, "user alice already has 2 access keys, the maximum", "delete one first")

	for _, format := range []string{"text", "json"} {
		list := mustIAM(t, dir, "access-key", "list", "--user", "alice", "--output", format)
		iamWant(t, "access-key list", list, k1.AccessKey.AccessKeyId)
		if strings.Contains(list, k1.AccessKey.SecretAccessKey) || strings.Contains(list, secret2) {
			t.Fatalf("access-key list --output %s prints a secret:\n%s", format, list)
		}
	}
	mustIAM(t, dir, "access-key", "update", k1.AccessKey.AccessKeyId, "--status", "Inactive")
	keys := iamDecode[struct {
		AccessKeyMetadata []struct{ UserName, AccessKeyId, Status, CreateDate string }
	}](t, mustIAM(t, dir, "access-key", "list", "--user", "alice", "--output", "json"))
	statuses := map[string]string{}
	for _, k := range keys.AccessKeyMetadata {
		statuses[k.AccessKeyId] = k.Status
	}
	if len(statuses) != 2 || statuses[k1.AccessKey.AccessKeyId] != "Inactive" {
		t.Fatalf("after deactivating %s: %+v", k1.AccessKey.AccessKeyId, keys)
	}
	iamWant(t, "access-key list text", mustIAM(t, dir, "access-key", "list", "--user", "alice"), "Inactive", "Active")

	// user get --output json has exactly the AWS shape.
	mustIAM(t, dir, "user", "set-boundary", "alice", "db-connect")
	raw := iamDecode[map[string]map[string]json.RawMessage](t, mustIAM(t, dir, "user", "get", "alice", "--output", "json"))
	var keysOf []string
	for k := range raw["User"] {
		keysOf = append(keysOf, k)
	}
	sort.Strings(keysOf)
	if want := []string{"Arn", "CreateDate", "Path", "PermissionsBoundary", "Tags", "UserId", "UserName"}; len(raw) != 1 || !reflect.DeepEqual(keysOf, want) {
		t.Fatalf("user get JSON keys %v, want {User: %v}", keysOf, want)
	}
	user := iamDecode[struct {
		User struct {
			Path, UserName, UserId, Arn, CreateDate string
			Tags                                    []struct{ Key, Value string }
			PermissionsBoundary                     struct{ PermissionsBoundaryType, PermissionsBoundaryArn string }
		}
	}](t, mustIAM(t, dir, "user", "get", "alice", "--output", "json")).User
	created, err := time.Parse(time.RFC3339, user.CreateDate)
	if err != nil || !strings.HasSuffix(user.CreateDate, "Z") || time.Since(created) > time.Hour {
		t.Errorf("CreateDate %q is not a recent RFC 3339 UTC time: %v", user.CreateDate, err)
	}
	if user.Path != "/" || user.UserName != "alice" || !strings.HasPrefix(user.UserId, "AIDA") || len(user.UserId) != 20 ||
		user.Arn != "arn:aws:iam::"+acct+":user/alice" {
		t.Errorf("user get: %+v", user)
	}
	wantTags := []struct{ Key, Value string }{{"dbuser", "alice"}, {"team", "payments"}}
	if !reflect.DeepEqual(user.Tags, wantTags) {
		t.Errorf("Tags %v, want %v", user.Tags, wantTags)
	}
	if user.PermissionsBoundary.PermissionsBoundaryType != "Policy" || user.PermissionsBoundary.PermissionsBoundaryArn != policyARN {
		t.Errorf("PermissionsBoundary %+v", user.PermissionsBoundary)
	}
	iamWant(t, "user get text", mustIAM(t, dir, "user", "get", "alice"), "developers", "team=payments", policyARN)

	// Deleting a user that still has things is refused, naming them.
	errOut = iamMustFail(t, dir, 1, "user", "delete", "alice")
	iamWant(t, "user delete refusal", errOut, "access key", "inline polic", "attached managed polic", "group membership", "--force")
	mustIAM(t, dir, "user", "get", "alice")
	mustIAM(t, dir, "user", "delete", "alice", "--force")
	errOut = iamMustFail(t, dir, 1, "user", "get", "alice")
	iamWant(t, "user get after delete", errOut, `user "alice" not found in account `+acct+": see 'iamdb user list'")
	iamWant(t, "access-key list after delete", iamMustFail(t, dir, 1, "access-key", "list", "--user", "alice"), `user "alice" not found`)

	// The policy is still attached to the group: refused until that is gone.
	iamWant(t, "policy delete refusal", iamMustFail(t, dir, 1, "policy", "delete", "db-connect"), "attached")
	iamWant(t, "group delete refusal", iamMustFail(t, dir, 1, "group", "delete", "developers"), "polic", "--force")
	mustIAM(t, dir, "group", "delete", "developers", "--force")
	mustIAM(t, dir, "policy", "delete", "db-connect")
	iamWant(t, "policy list", mustIAM(t, dir, "policy", "list"), "AdministratorAccess")
	if strings.Contains(mustIAM(t, dir, "policy", "list"), "db-connect") {
		t.Error("db-connect still listed after delete")
	}
}

func TestIAMMalformedDocumentsAreNotStored(t *testing.T) {
	dir, _ := iamDir(t)
	bad := `{"Version":"2012-10-17","Statement":[
		{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"},
		{"Sid":"Oops","Effect":"Permit","Action":"rds-db:connect","Resource":"*"}]}`
	errOut := iamMustFail(t, dir, 1, "policy", "create", "bad", "--document", bad)
	iamWant(t, "policy create", errOut, "MalformedPolicyDocument:", "statement 1", `"Effect"`)
	if strings.Contains(mustIAM(t, dir, "policy", "list"), "bad") {
		t.Error("a rejected policy was stored")
	}

	mustIAM(t, dir, "user", "create", "bob")
	withPrincipal := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"rds-db:connect","Resource":"*"}]}`
	errOut = iamMustFail(t, dir, 1, "user", "put-policy", "bob", "p", "--document", withPrincipal)
	iamWant(t, "put-policy", errOut, "MalformedPolicyDocument:", "statement 0", `"Principal"`)
	lp := iamDecode[struct{ PolicyNames []string }](t, mustIAM(t, dir, "user", "list-policies", "bob", "--output", "json"))
	if len(lp.PolicyNames) != 0 {
		t.Errorf("a rejected inline policy was stored: %v", lp.PolicyNames)
	}

	errOut = iamMustFail(t, dir, 1, "role", "create", "r", "--trust-policy", iamInlineDoc)
	iamWant(t, "role create", errOut, "MalformedPolicyDocument:", "statement 0", "Principal")
	roles := iamDecode[struct{ Roles []any }](t, mustIAM(t, dir, "role", "list", "--output", "json"))
	if len(roles.Roles) != 0 {
		t.Errorf("a role with a rejected trust policy was stored: %v", roles.Roles)
	}

	// Missing and unreadable documents.
	iamWant(t, "no --document", iamMustFail(t, dir, 2, "policy", "create", "p"), "--document is required")
	iamWant(t, "missing file", iamMustFail(t, dir, 1, "policy", "create", "p", "--document", filepath.Join(t.TempDir(), "nope.json")), "no such file")
}

func TestIAMNotFoundAndConflictMessages(t *testing.T) {
	dir, acct := iamDir(t)
	mustIAM(t, dir, "user", "create", "alice")
	mustIAM(t, dir, "group", "create", "ops")

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"user", "get", "nobody"}, `user "nobody" not found in account ` + acct + ": see 'iamdb user list'"},
		{[]string{"user", "attach-policy", "alice", "no-such-policy"}, `policy "no-such-policy" not found in account ` + acct + ": see 'iamdb policy list'"},
		{[]string{"user", "attach-policy", "nobody", "AdministratorAccess"}, `user "nobody" not found`},
		{[]string{"user", "detach-policy", "alice", "AdministratorAccess"}, "is not attached to user alice"},
		{[]string{"user", "delete-policy", "alice", "nope"}, `user alice has no inline policy "nope"`},
		{[]string{"group", "add-user", "nogroup", "alice"}, `group "nogroup" not found in account ` + acct + ": see 'iamdb group list'"},
		{[]string{"group", "add-user", "ops", "nobody"}, `user "nobody" not found`},
		{[]string{"group", "remove-user", "ops", "alice"}, "user alice is not a member of group ops"},
		{[]string{"role", "get", "norole"}, `role "norole" not found in account ` + acct},
		{[]string{"access-key", "update", "AKIAAAAAAAAAAAAAAAAA", "--status", "Inactive"}, `access key "AKIAAAAAAAAAAAAAAAAA" not found`},
		{[]string{"access-key", "create", "--user", "nobody"}, `user "nobody" not found`},
		{[]string{"policy", "get", "AdministratorAccess", "--version", "v9"}, "has no version v9"},
		{[]string{"user", "create", "ALICE"}, `user "ALICE" already exists in account ` + acct},
		{[]string{"user", "create", "bad name"}, "use 1 to 64"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, "_"), func(t *testing.T) {
			errOut := iamMustFail(t, dir, 1, c.args...)
			iamWant(t, "stderr", errOut, c.want)
			if strings.Contains(errOut, ": not found") || strings.Contains(errOut, "invalid input") {
				t.Errorf("store category words leak into the message: %s", errOut)
			}
		})
	}

	// Command-line mistakes are usage errors (exit 2).
	for _, args := range [][]string{
		{"user", "get"},
		{"user", "tag", "alice", "novalue"},
		{"access-key", "create"},
		{"access-key", "update", "AKIAAAAAAAAAAAAAAAAA", "--status", "Paused"},
		{"role", "update", "r"},
		{"user", "list", "--output", "yaml"},
	} {
		iamMustFail(t, dir, 2, args...)
	}
}

func TestIAMPolicyVersionsTagsAndRoleUpdate(t *testing.T) {
	dir, _ := iamDir(t)
	mustIAM(t, dir, "policy", "create", "p", "--document", iamInlineDoc, "--path", "/team/")
	// A name resolves whatever the policy's path.
	out := iamDecode[struct {
		PolicyVersion struct{ VersionId string }
	}](t, mustIAM(t, dir, "policy", "create-version", "p", "--document", iamConnectDoc, "--set-default", "--output", "json"))
	if out.PolicyVersion.VersionId != "v2" {
		t.Fatalf("create-version: %+v", out)
	}
	got := iamDecode[struct {
		Policy        struct{ DefaultVersionId, Arn string }
		PolicyVersion struct {
			VersionId        string
			IsDefaultVersion bool
			Document         struct{ Statement []struct{ Sid string } }
		}
	}](t, mustIAM(t, dir, "policy", "get", "p", "--output", "json"))
	if got.Policy.DefaultVersionId != "v2" || !strings.HasSuffix(got.Policy.Arn, ":policy/team/p") ||
		got.PolicyVersion.VersionId != "v2" || len(got.PolicyVersion.Document.Statement) != 1 ||
		got.PolicyVersion.Document.Statement[0].Sid != "Connect" {
		t.Fatalf("policy get: %+v", got)
	}
	iamWant(t, "delete default version", iamMustFail(t, dir, 1, "policy", "delete-version", "p", "v2"), "is the default version")
	mustIAM(t, dir, "policy", "set-default-version", "p", "v1")
	mustIAM(t, dir, "policy", "delete-version", "p", "v2")
	iamWant(t, "policy get text", mustIAM(t, dir, "policy", "get", "p"), "Document (v1, the default)", `"rds-db:connect"`)

	mustIAM(t, dir, "role", "create", "r", "--trust-policy", iamTrustDoc, "--tag", "env=prod", "--tag", "owner=ops")
	mustIAM(t, dir, "role", "tag", "r", "env=dev", "tier=db")
	mustIAM(t, dir, "role", "untag", "r", "owner", "absent")
	role := iamDecode[struct {
		Role struct {
			MaxSessionDuration int
			Tags               []struct{ Key, Value string }
		}
	}](t, mustIAM(t, dir, "role", "update", "r", "--max-session-duration", "43200", "--output", "json"))
	wantTags := []struct{ Key, Value string }{{"env", "dev"}, {"tier", "db"}}
	if role.Role.MaxSessionDuration != 43200 || !reflect.DeepEqual(role.Role.Tags, wantTags) {
		t.Fatalf("role after tag/untag/update: %+v", role.Role)
	}
	iamWant(t, "too long a session", iamMustFail(t, dir, 1, "role", "update", "r", "--max-session-duration", "13h"), "3600 (1h) to 43200 (12h)")

	mustIAM(t, dir, "role", "attach-policy", "r", "p")
	iamWant(t, "role delete refusal", iamMustFail(t, dir, 1, "role", "delete", "r"), "attached managed polic", "--force")
	mustIAM(t, dir, "role", "delete", "r", "--force")
	iamMustFail(t, dir, 1, "role", "get", "r")

	mustIAM(t, dir, "user", "create", "carol", "--tag", "a=1")
	mustIAM(t, dir, "user", "tag", "carol", "b=2")
	mustIAM(t, dir, "user", "untag", "carol", "a")
	u := iamDecode[struct {
		User struct{ Tags []struct{ Key, Value string } }
	}](t, mustIAM(t, dir, "user", "get", "carol", "--output", "json"))
	if !reflect.DeepEqual(u.User.Tags, []struct{ Key, Value string }{{"b", "2"}}) {
		t.Fatalf("user tags after tag/untag: %+v", u.User.Tags)
	}
}
