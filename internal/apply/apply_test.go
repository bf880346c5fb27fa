package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/identity/sqlstore"
)

var update = flag.Bool("update", false, "rewrite testdata/*.plan golden files")

const acct = "123456789012"

// newStore opens a fresh SQLite store holding the account and what
// `iamdb init` creates in it: user admin with an access key and the policy
// AdministratorAccess attached.
func newStore(t *testing.T) *sqlstore.Store {
	t.Helper()
	ctx := context.Background()
	sealer, err := identity.NewSealer(bytes.Repeat([]byte{7}, identity.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.Open(ctx, filepath.Join(t.TempDir(), "iamdb.db"), sealer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.CreateAccount(ctx, identity.Account{ID: acct}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateUser(ctx, identity.User{AccountID: acct, Name: "admin"}); err != nil {
		t.Fatal(err)
	}
	pol, err := st.CreatePolicy(ctx, identity.ManagedPolicy{AccountID: acct, Name: "AdministratorAccess"},
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AttachPolicy(ctx, identity.UserRef(acct, "admin"), pol.ARN()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateAccessKey(ctx, acct, "admin"); err != nil {
		t.Fatal(err)
	}
	return st
}

func load(t *testing.T, name string) *File {
	t.Helper()
	f, err := Load(filepath.Join("testdata", name), nil)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return f
}

func parse(t *testing.T, yaml string) *File {
	t.Helper()
	f, err := Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return f
}

func plan(t *testing.T, st identity.Store, f *File, opts Options) *Plan {
	t.Helper()
	p, err := f.Plan(context.Background(), st, acct, opts)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return p
}

func applyPlan(t *testing.T, st identity.Store, p *Plan) {
	t.Helper()
	if err := p.Apply(context.Background(), st); err != nil {
		t.Fatalf("apply: %v\nplan:\n%s", err, p)
	}
}

func changeLines(p *Plan) []string {
	var out []string
	for _, c := range p.Changes {
		out = append(out, c.String())
	}
	return out
}

func assertNoChanges(t *testing.T, st identity.Store, f *File, opts Options) {
	t.Helper()
	p := plan(t, st, f, opts)
	if !p.Empty() || !strings.HasSuffix(p.String(), "No changes. Identities match the file.\n") {
		t.Fatalf("expected no changes, got:\n%s", p)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Fatalf("plan differs from %s (go test -update rewrites it)\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestApplyExampleCreatesEverything(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	p := plan(t, st, load(t, "example.yaml"), Options{})
	golden(t, "example.plan", p.String())
	applyPlan(t, st, p)

	u, err := st.GetUser(ctx, acct, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if u.Tags["team"] != "payments" || u.Tags["dbuser"] != "alice" || len(u.Tags) != 2 {
		t.Errorf("alice tags = %v", u.Tags)
	}
	if !slices.Equal(u.Groups, []string{"developers"}) {
		t.Errorf("alice groups = %v", u.Groups)
	}
	if u.PermissionsBoundary != "arn:aws:iam::"+acct+":policy/db-boundary" {
		t.Errorf("alice boundary = %q", u.PermissionsBoundary)
	}
	att, err := st.ListAttachedPolicies(ctx, identity.UserRef(acct, "alice"))
	if err != nil || len(att) != 1 || att[0].Name != "db-connect-self" {
		t.Errorf("alice attachments = %v, %v", att, err)
	}
	inl, err := st.GetInlinePolicy(ctx, identity.UserRef(acct, "alice"), "extra")
	if err != nil || !strings.Contains(inl.Document, "dbuser:db-REPORTS0000000000000000000/reports_ro") {
		t.Errorf("alice inline extra = %v, %v", inl, err)
	}
	gatt, err := st.ListAttachedPolicies(ctx, identity.GroupRef(acct, "developers"))
	if err != nil || len(gatt) != 1 || gatt[0].Name != "db-connect-self" {
		t.Errorf("developers attachments = %v, %v", gatt, err)
	}

	pol, err := st.GetPolicy(ctx, "arn:aws:iam::"+acct+":policy/db-connect-self")
	if err != nil {
		t.Fatal(err)
	}
	// ${account} is replaced, ${aws:username} kept for the authorizer.
	if want := "arn:aws:rds-db:us-east-1:" + acct + ":dbuser:db-ORDERS00000000000000000000/${aws:username}"; !strings.Contains(pol.DefaultDocument(), want) {
		t.Errorf("db-connect-self document %s does not contain %s", pol.DefaultDocument(), want)
	}

	r, err := st.GetRole(ctx, acct, "db-admin")
	if err != nil {
		t.Fatal(err)
	}
	if r.MaxSessionDuration != 2*time.Hour {
		t.Errorf("db-admin max session duration = %s", r.MaxSessionDuration)
	}
	if !strings.Contains(r.TrustPolicy, `arn:aws:iam::`+acct+`:oidc-provider/idp.example.com`) ||
		!strings.Contains(r.TrustPolicy, "AssumeRoleWithWebIdentity") {
		t.Errorf("db-admin trust policy = %s", r.TrustPolicy)
	}
	ratt, err := st.ListAttachedPolicies(ctx, identity.RoleRef(acct, "db-admin"))
	if err != nil || len(ratt) != 1 || ratt[0].Name != "db-admin-connect" {
		t.Errorf("db-admin attachments = %v, %v", ratt, err)
	}

	o, err := st.GetOIDCProvider(ctx, acct, "https://idp.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.Audiences, []string{"iamdb"}) || o.JWKSURL != "https://idp.example.com/jwks" || o.JWKSFile != "" {
		t.Errorf("oidc provider = %+v", o)
	}
}

func TestApplyTwiceIsNoOp(t *testing.T) {
	st := newStore(t)
	applyPlan(t, st, plan(t, st, load(t, "example.yaml"), Options{}))
	gen, _ := st.Generation(context.Background())
	assertNoChanges(t, st, load(t, "example.yaml"), Options{})
	// Same meaning, different spelling: reordered keys, JSON vs YAML,
	// single strings vs lists, "2h" vs 7200, a trailing slash on the issuer.
	assertNoChanges(t, st, load(t, "reformatted.yaml"), Options{})
	// Applying an empty plan writes nothing.
	p := plan(t, st, load(t, "example.yaml"), Options{})
	applyPlan(t, st, p)
	if gen2, _ := st.Generation(context.Background()); gen2 != gen {
		t.Fatalf("generation moved from %d to %d on a no-op apply", gen, gen2)
	}
}

func TestApplyChangesPlanExactlyThoseUpdates(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	applyPlan(t, st, plan(t, st, load(t, "example.yaml"), Options{}))

	p := plan(t, st, load(t, "changed.yaml"), Options{})
	want := []string{
		"~ update policy db-connect-self: new default version (document differs from v1)",
		"~ update user alice: tags team=payments→platform",
		"+ create user bob",
		"+ create membership user bob in group developers",
		"- delete membership user alice from group developers",
	}
	if got := changeLines(p); !slices.Equal(got, want) {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s := p.Summary(); s != "Plan: 2 to create, 2 to update, 1 to delete." {
		t.Errorf("summary %q", s)
	}
	applyPlan(t, st, p)

	alice, _ := st.GetUser(ctx, acct, "alice")
	if alice.Tags["team"] != "platform" || len(alice.Groups) != 0 {
		t.Errorf("alice = %+v", alice)
	}
	bob, err := st.GetUser(ctx, acct, "bob")
	if err != nil || !slices.Equal(bob.Groups, []string{"developers"}) {
		t.Errorf("bob = %+v, %v", bob, err)
	}
	pol, _ := st.GetPolicy(ctx, "arn:aws:iam::"+acct+":policy/db-connect-self")
	if pol.DefaultVersion != "v2" || len(pol.Versions) != 2 || !strings.Contains(pol.DefaultDocument(), "db-REPORTS") {
		t.Errorf("db-connect-self: default %s, %d versions, %s", pol.DefaultVersion, len(pol.Versions), pol.DefaultDocument())
	}
	assertNoChanges(t, st, load(t, "changed.yaml"), Options{})
}

const onlyBob = `
users:
  - name: bob
policies:
  - name: db-connect-self
    document: {Version: "2012-10-17", Statement: [{Effect: Allow, Action: rds-db:connect, Resource: "*"}]}
`

func TestApplyPrune(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	applyPlan(t, st, plan(t, st, load(t, "example.yaml"), Options{}))
	// A policy only the admin uses: pruning must detach it from the kept
	// admin before deleting it.
	legacy, err := st.CreatePolicy(ctx, identity.ManagedPolicy{AccountID: acct, Name: "legacy"},
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AttachPolicy(ctx, identity.UserRef(acct, "admin"), legacy.ARN()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateAccessKey(ctx, acct, "alice"); err != nil {
		t.Fatal(err)
	}

	f := parse(t, onlyBob)
	// Without --prune, what the file does not name is left alone.
	p := plan(t, st, f, Options{})
	for _, c := range p.Changes {
		if c.Action == Delete {
			t.Fatalf("delete without --prune: %s", c)
		}
	}
	applyPlan(t, st, p)
	if _, err := st.GetUser(ctx, acct, "alice"); err != nil {
		t.Fatalf("alice without --prune: %v", err)
	}

	p = plan(t, st, f, Options{Prune: true})
	out := p.String()
	for _, want := range []string{
		"- delete user alice: not in the file (--prune); also deletes its 1 access key\n",
		"- delete role db-admin: not in the file (--prune); revokes its live sessions\n",
		"- delete group developers: not in the file (--prune)\n",
		"- delete policy legacy: not in the file (--prune)\n",
		"- delete attachment policy legacy from user admin (kept)\n",
		"- delete oidc provider https://idp.example.com: not in the file (--prune)\n",
		"kept: user admin (created by iamdb init)\n",
		"kept: policy AdministratorAccess (created by iamdb init)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("prune plan lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "delete user admin") || strings.Contains(out, "delete policy AdministratorAccess") {
		t.Fatalf("prune deletes what init created:\n%s", out)
	}
	applyPlan(t, st, p)
	users, _ := st.ListUsers(ctx, acct, "")
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	if !slices.Equal(names, []string{"admin", "bob"}) {
		t.Errorf("users after prune: %v", names)
	}
	att, _ := st.ListAttachedPolicies(ctx, identity.UserRef(acct, "admin"))
	if len(att) != 1 || att[0].Name != "AdministratorAccess" {
		t.Errorf("admin attachments after prune: %v", att)
	}
	pols, _ := st.ListPolicies(ctx, acct, "")
	if len(pols) != 2 {
		t.Errorf("policies after prune: %d, want AdministratorAccess and db-connect-self", len(pols))
	}
	if provs, _ := st.ListOIDCProviders(ctx, acct); len(provs) != 0 {
		t.Errorf("oidc providers after prune: %v", provs)
	}
	assertNoChanges(t, st, f, Options{Prune: true})
}

func TestApplyUnknownKeyNamesLine(t *testing.T) {
	_, err := Load(filepath.Join("testdata", "unknown_key.yaml"), nil)
	want := `line 7: unknown key "polices" in users[1] (check spelling; see docs): did you mean "policies"?`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want it to contain %q", err, want)
	}
	_, err = Parse([]byte("users:\n  - name: a\nrole:\n  - name: b\n"))
	if err == nil || !strings.Contains(err.Error(), `line 3: unknown key "role" in the file (check spelling; see docs): did you mean "roles"?`) {
		t.Fatalf("top-level typo: %v", err)
	}
}

func TestApplyMalformedPolicyNamesStatementAndLine(t *testing.T) {
	_, err := Load(filepath.Join("testdata", "bad_policy.yaml"), nil)
	if err == nil {
		t.Fatal("bad_policy.yaml parsed")
	}
	for _, want := range []string{
		`line 9: roles[0].trust_policy: statement 1: field "Principal": a trust policy statement must name a Principal or NotPrincipal`,
		`line 21: policies[0].document: statement 1: field "Effect": must be "Allow" or "Deny", got "Permit"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%v\nlacks %q", err, want)
		}
	}
	// The JSON string form reports the line of the string.
	_, err = Parse([]byte("policies:\n  - name: p\n    document: '{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Allow\", \"Action\": 5, \"Resource\": \"*\"}]}'\n"))
	if err == nil || !strings.Contains(err.Error(), `line 3: policies[0].document: statement 0: field "Action"`) {
		t.Errorf("JSON string document: %v", err)
	}
	// A Principal in an identity policy is refused.
	_, err = Parse([]byte("policies:\n  - name: p\n    document:\n      Statement:\n        - {Effect: Allow, Principal: '*', Action: x, Resource: '*'}\n"))
	if err == nil || !strings.Contains(err.Error(), `line 5: policies[0].document: statement 0: field "Principal": not allowed in an identity-based policy`) {
		t.Errorf("identity policy with Principal: %v", err)
	}
}

func TestApplyUndefinedReferenceAtPlan(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	f := load(t, "undefined_ref.yaml")
	gen, _ := st.Generation(ctx)
	_, err := f.Plan(ctx, st, acct, Options{})
	if err == nil {
		t.Fatal("plan accepted references to nothing")
	}
	for _, want := range []string{
		`line 3: users[0].groups: group "analysts" is neither defined under groups: in this file nor present in account ` + acct,
		`line 5: users[0].policies: policy "db-connect-self" is neither defined under policies: in this file nor present in account ` + acct,
		`line 6: users[0].policies: policy "no-such-policy"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error\n%v\nlacks %q", err, want)
		}
	}
	if gen2, _ := st.Generation(ctx); gen2 != gen {
		t.Errorf("a failed plan wrote to the store")
	}
	// A policy that exists only in the store is a valid reference, by name
	// or by ARN with ${account}, unless --prune would delete it.
	f = parse(t, "users:\n  - name: dave\n    policies: [AdministratorAccess, 'arn:aws:iam::${account}:policy/AdministratorAccess']\n")
	_, err = f.Plan(ctx, st, acct, Options{})
	if err == nil || !strings.Contains(err.Error(), `line 3: users[0].policies: "arn:aws:iam::${account}:policy/AdministratorAccess" names policy AdministratorAccess a second time`) {
		t.Errorf("same policy by name and by ARN: %v", err)
	}
	f = parse(t, "users:\n  - name: dave\n    policies: ['arn:aws:iam::${account}:policy/AdministratorAccess']\n    groups: [old]\n")
	if _, err := st.CreateGroup(ctx, identity.Group{AccountID: acct, Name: "old"}); err != nil {
		t.Fatal(err)
	}
	p := plan(t, st, f, Options{})
	if got := changeLines(p); !slices.Contains(got, "+ create attachment policy AdministratorAccess to user dave") {
		t.Errorf("plan %v", got)
	}
	_, err = f.Plan(ctx, st, acct, Options{Prune: true})
	if err == nil || !strings.Contains(err.Error(), `line 4: users[0].groups: group "old" is not defined in this file, so --prune would delete it`) {
		t.Errorf("prune with a reference to an unnamed group: %v", err)
	}
}

func TestApplyDuplicateNames(t *testing.T) {
	_, err := Parse([]byte("users:\n  - name: alice\n  - name: Alice\n"))
	if err == nil || !strings.Contains(err.Error(), `line 3: users[1]: user "Alice" is defined twice (also in users[0])`) {
		t.Fatalf("duplicate users: %v", err)
	}
	_, err = Parse([]byte("users:\n  - name: alice\n    name: bob\n"))
	if err == nil || !strings.Contains(err.Error(), `line 3: key "name" appears twice in users[0]`) {
		t.Fatalf("duplicate key: %v", err)
	}
}

func TestApplyOIDCNeedsExactlyOneKeySource(t *testing.T) {
	_, err := Parse([]byte("oidc_providers:\n  - url: https://idp.example.com\n    audiences: [a]\n    jwks_url: https://idp.example.com/jwks\n    jwks_file: keys.json\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2: oidc_providers[0]: give exactly one of jwks_url and jwks_file") {
		t.Fatalf("both key sources: %v", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "ids.yaml")
	os.WriteFile(path, []byte("oidc_providers:\n  - url: https://idp.example.com\n    audiences: [a]\n    jwks_file: keys.json\n"), 0o644)
	if _, err := Load(path, nil); err == nil || !strings.Contains(err.Error(), "line 2: oidc_providers[0].jwks_file") {
		t.Fatalf("missing jwks file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "keys.json"), []byte(`{"keys":[]}`), 0o644)
	f, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.OIDCProviders[0].JWKSFile; got != filepath.Join(dir, "keys.json") {
		t.Errorf("jwks_file resolved to %q, want it next to the identities file", got)
	}
	st := newStore(t)
	applyPlan(t, st, plan(t, st, f, Options{}))
	o, err := st.GetOIDCProvider(context.Background(), acct, "https://idp.example.com")
	if err != nil || o.JWKSFile != filepath.Join(dir, "keys.json") {
		t.Fatalf("provider %+v, %v", o, err)
	}
	f.OIDCProviders[0].Audiences = []string{"a", "b"}
	p := plan(t, st, f, Options{})
	if got := changeLines(p); !slices.Equal(got, []string{"~ update oidc provider https://idp.example.com: audiences [a]→[a b]"}) {
		t.Fatalf("plan %v", got)
	}
}

func TestApplyPolicyVersionLimit(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	doc := func(db string) string {
		return `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"arn:aws:rds-db:us-east-1:` + acct + `:dbuser:db-X/` + db + `"}]}`
	}
	pol, err := st.CreatePolicy(ctx, identity.ManagedPolicy{AccountID: acct, Name: "p"}, doc("u1"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 5; i++ {
		if _, err := st.CreatePolicyVersion(ctx, pol.ARN(), doc("u"+string(rune('0'+i))), i == 3); err != nil {
			t.Fatal(err)
		}
	}
	// v3 is the default; v1 is the oldest non-default version.
	f := parse(t, "policies:\n  - name: p\n    document: '"+doc("new")+"'\n")
	p := plan(t, st, f, Options{})
	want := "~ update policy p: new default version (document differs from v3); first deletes the oldest non-default version v1 (a policy keeps at most 5)"
	if got := changeLines(p); !slices.Equal(got, []string{want}) {
		t.Fatalf("plan %v", got)
	}
	applyPlan(t, st, p)
	pol, _ = st.GetPolicy(ctx, pol.ARN())
	var ids []string
	for _, v := range pol.Versions {
		ids = append(ids, v.VersionID)
	}
	if !slices.Equal(ids, []string{"v2", "v3", "v4", "v5", "v6"}) || pol.DefaultVersion != "v6" {
		t.Fatalf("versions %v default %s", ids, pol.DefaultVersion)
	}
	assertNoChanges(t, st, f, Options{})
}

func TestApplyStopsAtFailingStepAndRerunConverges(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	f := load(t, "example.yaml")
	p := plan(t, st, f, Options{})
	// Someone creates the group between plan and apply.
	if _, err := st.CreateGroup(ctx, identity.Group{AccountID: acct, Name: "developers", Path: "/"}); err != nil {
		t.Fatal(err)
	}
	err := p.Apply(ctx, st)
	var se *StepError
	if !errors.As(err, &se) || se.Change.String() != "+ create group developers" || !errors.Is(err, identity.ErrAlreadyExists) {
		t.Fatalf("apply error %v", err)
	}
	if !strings.Contains(err.Error(), "+ create group developers") || !strings.Contains(err.Error(), "run apply again") {
		t.Errorf("error message %q", err)
	}
	// Policies were created before the failing step and stay.
	if _, err := st.GetPolicy(ctx, "arn:aws:iam::"+acct+":policy/db-connect-self"); err != nil {
		t.Errorf("steps before the failure were not kept: %v", err)
	}
	applyPlan(t, st, plan(t, st, f, Options{}))
	assertNoChanges(t, st, f, Options{})
}

func TestApplyPlanJSON(t *testing.T) {
	st := newStore(t)
	p := plan(t, st, load(t, "example.yaml"), Options{})
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Account string
		Changes []struct {
			Action, Type, Name string
			Line               int
		}
		Summary struct{ Create, Update, Delete int }
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	c, _, _ := p.Counts()
	if got.Account != acct || len(got.Changes) != len(p.Changes) || got.Summary.Create != c || c == 0 {
		t.Fatalf("json %s", b)
	}
	if got.Changes[0].Action != "create" || got.Changes[0].Type != "policy" || got.Changes[0].Line == 0 {
		t.Errorf("first change %+v", got.Changes[0])
	}
}

func TestApplyYAMLDocumentConversion(t *testing.T) {
	f := parse(t, `policies:
  - name: p
    document:
      Version: 2012-10-17
      Statement:
        - Effect: Allow
          Action: rds-db:connect
          Resource: "arn:aws:rds-db:*:*:dbuser:*/${aws:username}"
          Condition:
            NumericLessThan: {"aws:EpochTime": 2000000000}
            Bool: {"aws:SecureTransport": true}
`)
	got := f.Policies[0].Document.JSON
	want := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"arn:aws:rds-db:*:*:dbuser:*/${aws:username}","Condition":{"NumericLessThan":{"aws:EpochTime":2000000000},"Bool":{"aws:SecureTransport":true}}}]}`
	if got != want {
		t.Fatalf("JSON\n%s\nwant\n%s", got, want)
	}
}

func TestApplyRoleAndHolderUpdates(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	applyPlan(t, st, plan(t, st, load(t, "example.yaml"), Options{}))

	f := load(t, "example.yaml")
	r := &f.Roles[0]
	r.MaxSessionDuration = 3 * time.Hour
	r.Tags = map[string]string{"owner": "dba"}
	r.TrustPolicy = parse(t, `roles:
  - name: x
    trust_policy: {Statement: [{Effect: Allow, Principal: {AWS: "arn:aws:iam::${account}:root"}, Action: sts:AssumeRole}]}
`).Roles[0].TrustPolicy
	u := &f.Users[0]
	u.Policies, u.InlinePolicies, u.PermissionsBoundary = nil, nil, nil
	p := plan(t, st, f, Options{})
	want := []string{
		"~ update user alice: permissions boundary db-boundary→none",
		"~ update role db-admin: tags +owner=dba",
		"~ update role db-admin: trust policy (document changed)",
		"~ update role db-admin: max session duration 7200s→10800s",
		"- delete attachment policy db-connect-self from user alice",
		"- delete inline policy extra on user alice",
	}
	if got := changeLines(p); !slices.Equal(got, want) {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	applyPlan(t, st, p)
	role, _ := st.GetRole(ctx, acct, "db-admin")
	if role.MaxSessionDuration != 3*time.Hour || role.Tags["owner"] != "dba" || !strings.Contains(role.TrustPolicy, acct+":root") {
		t.Errorf("role %+v", role)
	}
	alice, _ := st.GetUser(ctx, acct, "alice")
	if alice.PermissionsBoundary != "" {
		t.Errorf("alice boundary %q", alice.PermissionsBoundary)
	}
	assertNoChanges(t, st, f, Options{})
}
