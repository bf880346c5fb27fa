package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditManagementEvents: identity commands leave one iam.iamdb event
// per change, attributed to the operator, never with a secret; query,
// tail and verify read them back; an edited log fails verify naming the
// line.
func TestAuditManagementEvents(t *testing.T) {
	dir, account := iamDir(t)
	mustIAM(t, dir, "user", "create", "alice", "--tag", "team=payments")
	key := iamDecode[struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}](t, mustIAM(t, dir, "access-key", "create", "--user", "alice", "--output", "json"))
	iamMustFail(t, dir, 1, "user", "create", "alice") // already exists: a failed call is recorded too
	mustIAM(t, dir, "user", "delete", "alice", "--force")

	logPath := filepath.Join(dir, "audit.jsonl")
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(key.AccessKey.SecretAccessKey)) {
		t.Fatal("the audit log holds the secret access key")
	}

	out := mustIAM(t, dir, "audit", "query", "--output", "json")
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("query --output json line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	var got []string
	for _, e := range evs {
		n := e["eventName"].(string)
		if c, ok := e["errorCode"].(string); ok {
			n += "(" + c + ")"
		}
		got = append(got, n)
		if e["eventSource"] != "iam.iamdb" || e["userIdentity"].(map[string]any)["type"] != "Unknown" || e["hash"] == "" {
			t.Errorf("event %v", e)
		}
	}
	want := "[CreateUser CreateAccessKey CreateUser(EntityAlreadyExists) DeleteUser]"
	if s := strings.Join(strings.Fields(strings.Trim(strings.Join(got, " "), " ")), " "); "["+s+"]" != want {
		t.Fatalf("management events %v, want %s", got, want)
	}
	ck := evs[1]
	if ck["requestParameters"].(map[string]any)["userName"] != "alice" || ck["requestParameters"].(map[string]any)["accountId"] != account ||
		ck["responseElements"].(map[string]any)["accessKey"].(map[string]any)["accessKeyId"] != key.AccessKey.AccessKeyId {
		t.Errorf("CreateAccessKey event %v", ck)
	}

	// Filters and the table.
	out = mustIAM(t, dir, "audit", "query", "--event", "createuser", "--failed")
	iamWant(t, "query --failed", out, "TIME", "CreateUser", "EntityAlreadyExists")
	if strings.Contains(out, "DeleteUser") || strings.Count(out, "\n") != 2 {
		t.Errorf("query --event createuser --failed:\n%s", out)
	}
	out = mustIAM(t, dir, "audit", "tail", "-n", "1")
	if !strings.Contains(out, "DeleteUser") || strings.Contains(out, "CreateAccessKey") {
		t.Errorf("tail -n 1:\n%s", out)
	}
	if out := mustIAM(t, dir, "audit", "query", "--since", "1h", "--until", "2999-01-01"); strings.Count(out, "\n") != 5 {
		t.Errorf("query --since 1h:\n%s", out)
	}
	iamMustFail(t, dir, 2, "audit", "query", "--since", "yesterday")

	if out := mustIAM(t, dir, "audit", "verify"); strings.TrimSpace(out) != "OK: 4 events in 1 file" {
		t.Fatalf("verify: %q", out)
	}
	edited := bytes.Replace(raw, []byte(`"team":"payments"`), []byte(`"team":"paymentz"`), 1)
	if bytes.Equal(edited, raw) {
		t.Fatal("test did not edit the log")
	}
	if err := os.WriteFile(logPath, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	errOut := iamMustFail(t, dir, 1, "audit", "verify")
	iamWant(t, "verify of an edited log", errOut, "audit.jsonl line 1", "altered")
}
