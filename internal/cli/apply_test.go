package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// applyDataDir makes a data dir with 'iamdb init', isolated from the
// machine's configuration and environment.
func applyDataDir(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "iamdb.yaml")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("IAMDB_CONFIG", cfg)
	t.Setenv("IAMDB_DATA_DIR", "")
	dir := filepath.Join(t.TempDir(), "data")
	if code, _, errOut := run(t, "init", "--data-dir", dir); code != 0 {
		t.Fatalf("init: code %d, stderr %s", code, errOut)
	}
	return dir
}

var exampleFile = filepath.Join("..", "apply", "testdata", "example.yaml")

func TestApplyCommand(t *testing.T) {
	dir := applyDataDir(t)

	code, out, errOut := run(t, "apply", "-f", exampleFile, "--data-dir", dir)
	if code != 0 {
		t.Fatalf("apply: code %d, stderr %s", code, errOut)
	}
	for _, want := range []string{
		"+ create policy db-connect-self\n",
		"+ create user alice: tags dbuser=alice, team=payments; permissions boundary db-boundary\n",
		"+ create role db-admin: max session duration 7200s\n",
		"+ create oidc provider https://idp.example.com\n",
		"Plan: 12 to create, 0 to update, 0 to delete.\n",
		"Applied: 12 created, 0 updated, 0 deleted in account ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first apply output lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = run(t, "apply", "-f", exampleFile, "--data-dir", dir)
	if code != 0 || out != "No changes. Identities match the file.\n" {
		t.Fatalf("second apply: code %d, stdout %q, stderr %s", code, out, errOut)
	}

	// --dry-run prints the plan and changes nothing: the same plan twice.
	changed := filepath.Join("..", "apply", "testdata", "changed.yaml")
	var plans []string
	for range 2 {
		code, out, errOut = run(t, "apply", "-f", changed, "--dry-run", "--data-dir", dir)
		if code != 0 {
			t.Fatalf("dry run: code %d, stderr %s", code, errOut)
		}
		plans = append(plans, out)
	}
	if plans[0] != plans[1] || !strings.Contains(plans[0], "~ update user alice: tags team=payments→platform\n") ||
		!strings.Contains(plans[0], "Dry run: nothing was changed.") || strings.Contains(plans[0], "Applied:") {
		t.Fatalf("dry runs:\n%s\n---\n%s", plans[0], plans[1])
	}
	if code, out, _ = run(t, "apply", "-f", exampleFile, "--data-dir", dir); code != 0 || !strings.Contains(out, "No changes.") {
		t.Fatalf("after dry runs the example still matches: code %d, %s", code, out)
	}
}

func TestApplyCommandPruneJSON(t *testing.T) {
	dir := applyDataDir(t)
	if code, _, errOut := run(t, "apply", "-f", exampleFile, "--data-dir", dir); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	only := filepath.Join(t.TempDir(), "only.yaml")
	if err := os.WriteFile(only, []byte("users:\n  - name: bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "apply", "-f", only, "--prune", "--output", "json", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("prune: code %d, stderr %s", code, errOut)
	}
	var res struct {
		Applied bool
		Plan    struct {
			Changes []struct{ Action, Type, Name string }
			Kept    []struct{ Type, Name, Reason string }
		}
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	deleted := map[string]bool{}
	for _, c := range res.Plan.Changes {
		if c.Action == "delete" {
			deleted[c.Type+" "+c.Name] = true
		}
	}
	if !res.Applied || !deleted["user alice"] || !deleted["role db-admin"] || deleted["user admin"] {
		t.Fatalf("prune result %+v", res)
	}
	if len(res.Plan.Kept) != 2 || res.Plan.Kept[0].Name != "admin" || res.Plan.Kept[0].Reason != "created by iamdb init" {
		t.Fatalf("kept %+v", res.Plan.Kept)
	}
	// The admin survived: pruning again plans nothing and still keeps it.
	code, out, _ = run(t, "apply", "-f", only, "--prune", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "kept: user admin (created by iamdb init)\n") || !strings.Contains(out, "No changes.") {
		t.Fatalf("second prune: code %d\n%s", code, out)
	}
}

func TestApplyCommandErrors(t *testing.T) {
	dir := applyDataDir(t)
	bad := filepath.Join("..", "apply", "testdata", "unknown_key.yaml")
	code, out, errOut := run(t, "apply", "-f", bad, "--data-dir", dir)
	if code != 1 || out != "" || !strings.Contains(errOut, `line 7: unknown key "polices" in users[1] (check spelling; see docs)`) {
		t.Fatalf("bad file: code %d, stdout %q, stderr %s", code, out, errOut)
	}
	undefined := filepath.Join("..", "apply", "testdata", "undefined_ref.yaml")
	code, _, errOut = run(t, "apply", "-f", undefined, "--data-dir", dir)
	if code != 1 || !strings.Contains(errOut, "nothing was changed") || !strings.Contains(errOut, `line 6: users[0].policies: policy "no-such-policy"`) {
		t.Fatalf("undefined reference: code %d, stderr %s", code, errOut)
	}
	// Nothing of the failed file was created.
	code, out, _ = run(t, "apply", "-f", undefined, "--dry-run", "--data-dir", dir)
	if code != 1 || strings.Contains(out, "carol") {
		t.Fatalf("dry run of the failed file: code %d, %s", code, out)
	}
	if code, _, errOut = run(t, "apply", "--data-dir", dir); code != 2 || !strings.Contains(errOut, "-f FILE is required") {
		t.Fatalf("missing -f: code %d, stderr %s", code, errOut)
	}
	if code, _, errOut = run(t, "apply", "-f", exampleFile, "--prune", "--keep", "bogus", "--data-dir", dir); code != 2 || !strings.Contains(errOut, "use TYPE/NAME") {
		t.Fatalf("bad --keep: code %d, stderr %s", code, errOut)
	}
}
