package identitytest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
)

// MasterKey is the fixed key stores under test must seal with.
var MasterKey = []byte("iamdb-conformance-master-key-32b")

// Sealer returns a Sealer for MasterKey.
func Sealer(t testing.TB) *identity.Sealer {
	t.Helper()
	s, err := identity.NewSealer(MasterKey)
	if err != nil {
		t.Fatalf("NewSealer: %v", err)
	}
	return s
}

// Reopener is a store that can open a second handle on its database.
type Reopener interface {
	Reopen(ctx context.Context) (identity.Store, error)
}

// RawDB is a store that exposes its database handle.
type RawDB interface {
	DB() *sql.DB
}

const (
	acct  = "111122223333"
	other = "444455556666"
	trust = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"sts:AssumeRole"}]}`
	docA  = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"rds-db:connect","Resource":"*"}]}`
	docB  = `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"rds-db:connect","Resource":"*"}]}`
)

var (
	uniqueIDRE = regexp.MustCompile(`^[A-Z]{4}[A-Z2-7]{16}$`)
	secretRE   = regexp.MustCompile(`^[A-Za-z0-9/+]{40}$`)
)

// RunConformance runs the suite; open returns a store on a fresh database.
func RunConformance(t *testing.T, open func(t *testing.T) identity.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s identity.Store)
	}{
		{"Accounts", testAccounts},
		{"Users", testUsers},
		{"Groups", testGroups},
		{"Roles", testRoles},
		{"ManagedPolicies", testManagedPolicies},
		{"AttachAndInline", testAttachAndInline},
		{"PolicySets", testPolicySets},
		{"DeleteConflictsAndForce", testDeleteConflicts},
		{"AccessKeys", testAccessKeys},
		{"SecretsSealedAtRest", testSecretsAtRest},
		{"Sessions", testSessions},
		{"OIDCProviders", testOIDC},
		{"GenerationBumpsOnEveryWrite", testGeneration},
		{"FailedWritesChangeNothing", testAtomicity},
		{"ConcurrentKeyCreationHonoursLimit", testConcurrentKeys},
		{"TwoHandlesShareState", testTwoHandles},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			mustAccount(t, s, acct)
			tc.fn(t, s)
		})
	}
}

func ctx(t *testing.T) context.Context { return t.Context() }

func mustAccount(t *testing.T, s identity.Store, id string) {
	t.Helper()
	if _, err := s.CreateAccount(ctx(t), identity.Account{ID: id, Alias: "acct-" + id}); err != nil {
		t.Fatalf("CreateAccount(%s): %v", id, err)
	}
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func ok(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func mkUser(t *testing.T, s identity.Store, name string) identity.User {
	t.Helper()
	return must[identity.User](t, "CreateUser "+name)(s.CreateUser(ctx(t), identity.User{AccountID: acct, Name: name}))
}

func mkRole(t *testing.T, s identity.Store, name string) identity.Role {
	t.Helper()
	return must[identity.Role](t, "CreateRole "+name)(s.CreateRole(ctx(t), identity.Role{AccountID: acct, Name: name, TrustPolicy: trust}))
}

func mkPolicy(t *testing.T, s identity.Store, name, doc string) identity.ManagedPolicy {
	t.Helper()
	return must[identity.ManagedPolicy](t, "CreatePolicy "+name)(s.CreatePolicy(ctx(t), identity.ManagedPolicy{AccountID: acct, Name: name}, doc))
}

func testAccounts(t *testing.T, s identity.Store) {
	c := ctx(t)
	_, err := s.CreateAccount(c, identity.Account{ID: acct})
	wantErr(t, "duplicate account", err, identity.ErrAlreadyExists)
	_, err = s.CreateAccount(c, identity.Account{ID: "12345"})
	wantErr(t, "short account id", err, identity.ErrInvalidInput)

	gen := must[identity.Account](t, "CreateAccount random")(s.CreateAccount(c, identity.Account{Alias: "random"}))
	if !regexp.MustCompile(`^[0-9]{12}$`).MatchString(gen.ID) {
		t.Fatalf("generated account id %q is not 12 digits", gen.ID)
	}
	got := must[identity.Account](t, "GetAccount")(s.GetAccount(c, acct))
	if got.ID != acct || got.Alias != "acct-"+acct || got.CreatedAt.IsZero() {
		t.Fatalf("GetAccount = %+v", got)
	}
	_, err = s.GetAccount(c, "999999999999")
	wantErr(t, "GetAccount missing", err, identity.ErrNotFound)
	list := must[[]identity.Account](t, "ListAccounts")(s.ListAccounts(c))
	if len(list) != 2 || !slices.ContainsFunc(list, func(a identity.Account) bool { return a.ID == gen.ID }) {
		t.Fatalf("ListAccounts = %+v", list)
	}
}

func testUsers(t *testing.T, s identity.Store) {
	c := ctx(t)
	u := must[identity.User](t, "CreateUser")(s.CreateUser(c, identity.User{
		AccountID: acct, Name: "Alice", Path: "/eng/", Tags: map[string]string{"team": "payments"}}))
	if !strings.HasPrefix(u.ID, identity.PrefixUser) || !uniqueIDRE.MatchString(u.ID) {
		t.Fatalf("user id %q: want AIDA + 16 base32", u.ID)
	}
	if got, want := u.ARN(), "arn:aws:iam::111122223333:user/eng/Alice"; got != want {
		t.Fatalf("ARN = %q, want %q", got, want)
	}
	_, err := s.CreateUser(c, identity.User{AccountID: acct, Name: "alice"})
	wantErr(t, "duplicate name differing in case", err, identity.ErrAlreadyExists)
	_, err = s.CreateUser(c, identity.User{AccountID: acct, Name: "bad name!"})
	wantErr(t, "invalid name", err, identity.ErrInvalidInput)
	if !strings.Contains(err.Error(), "1 to 64") {
		t.Fatalf("invalid-name error does not say what is allowed: %v", err)
	}
	_, err = s.CreateUser(c, identity.User{AccountID: acct, Name: "bob", Path: "eng"})
	wantErr(t, "invalid path", err, identity.ErrInvalidInput)
	_, err = s.CreateUser(c, identity.User{AccountID: "999999999999", Name: "bob"})
	wantErr(t, "unknown account", err, identity.ErrNotFound)

	got := must[identity.User](t, "GetUser")(s.GetUser(c, acct, "ALICE"))
	if got.ID != u.ID || got.Name != "Alice" || got.Tags["team"] != "payments" || got.Path != "/eng/" ||
		!got.CreatedAt.Equal(u.CreatedAt) || len(got.Groups) != 0 {
		t.Fatalf("GetUser = %+v, created %+v", got, u)
	}
	byID := must[identity.User](t, "GetUserByID")(s.GetUserByID(c, u.ID))
	if byID.Name != "Alice" {
		t.Fatalf("GetUserByID = %+v", byID)
	}
	_, err = s.GetUser(c, acct, "nobody")
	wantErr(t, "GetUser missing", err, identity.ErrNotFound)
	_, err = s.GetUserByID(c, "AIDAAAAAAAAAAAAAAAAA")
	wantErr(t, "GetUserByID missing", err, identity.ErrNotFound)

	mkUser(t, s, "bob")
	mustAccount(t, s, other)
	must[identity.User](t, "CreateUser same name other account")(s.CreateUser(c, identity.User{AccountID: other, Name: "alice"}))
	all := must[[]identity.User](t, "ListUsers")(s.ListUsers(c, acct, ""))
	if names := userNames(all); !slices.Equal(names, []string{"Alice", "bob"}) {
		t.Fatalf("ListUsers = %v", names)
	}
	eng := must[[]identity.User](t, "ListUsers /eng/")(s.ListUsers(c, acct, "/eng/"))
	if names := userNames(eng); !slices.Equal(names, []string{"Alice"}) {
		t.Fatalf("ListUsers(/eng/) = %v", names)
	}

	bound := mkPolicy(t, s, "boundary", docA)
	newTags := map[string]string{"team": "risk", "dbuser": "alice"}
	newPath := "/ops/"
	upd := must[identity.User](t, "UpdateUser")(s.UpdateUser(c, acct, "alice", identity.UserUpdate{
		Path: &newPath, Tags: &newTags, PermissionsBoundary: ptr(bound.ARN())}))
	if upd.Path != "/ops/" || upd.Tags["team"] != "risk" || len(upd.Tags) != 2 || upd.PermissionsBoundary != bound.ARN() {
		t.Fatalf("UpdateUser = %+v", upd)
	}
	again := must[identity.User](t, "GetUser after update")(s.GetUser(c, acct, "alice"))
	if again.Path != "/ops/" || again.PermissionsBoundary != bound.ARN() || again.Tags["dbuser"] != "alice" {
		t.Fatalf("update not persisted: %+v", again)
	}
	_, err = s.UpdateUser(c, acct, "alice", identity.UserUpdate{PermissionsBoundary: ptr("arn:aws:iam::111122223333:policy/nope")})
	wantErr(t, "boundary that does not exist", err, identity.ErrNotFound)
	cleared := must[identity.User](t, "UpdateUser clear boundary")(s.UpdateUser(c, acct, "alice", identity.UserUpdate{PermissionsBoundary: ptr("")}))
	if cleared.PermissionsBoundary != "" {
		t.Fatalf("boundary not removed: %+v", cleared)
	}
	renamed := must[identity.User](t, "rename")(s.UpdateUser(c, acct, "alice", identity.UserUpdate{NewName: ptr("alice2")}))
	if renamed.ID != u.ID || renamed.Name != "alice2" {
		t.Fatalf("rename = %+v", renamed)
	}
	_, err = s.UpdateUser(c, acct, "alice2", identity.UserUpdate{NewName: ptr("BOB")})
	wantErr(t, "rename onto existing name", err, identity.ErrAlreadyExists)
	_, err = s.UpdateUser(c, acct, "ghost", identity.UserUpdate{})
	wantErr(t, "update missing user", err, identity.ErrNotFound)

	ok(t, "DeleteUser", s.DeleteUser(c, acct, "bob", identity.DeleteOptions{}))
	_, err = s.GetUser(c, acct, "bob")
	wantErr(t, "deleted user", err, identity.ErrNotFound)
	wantErr(t, "delete twice", s.DeleteUser(c, acct, "bob", identity.DeleteOptions{}), identity.ErrNotFound)
}

func testGroups(t *testing.T, s identity.Store) {
	c := ctx(t)
	g := must[identity.Group](t, "CreateGroup")(s.CreateGroup(c, identity.Group{AccountID: acct, Name: "developers", Path: "/teams/"}))
	if !strings.HasPrefix(g.ID, identity.PrefixGroup) || g.ARN() != "arn:aws:iam::111122223333:group/teams/developers" {
		t.Fatalf("group = %+v arn %s", g, g.ARN())
	}
	_, err := s.CreateGroup(c, identity.Group{AccountID: acct, Name: "Developers"})
	wantErr(t, "duplicate group", err, identity.ErrAlreadyExists)
	must[identity.Group](t, "CreateGroup ops")(s.CreateGroup(c, identity.Group{AccountID: acct, Name: "ops"}))
	got := must[identity.Group](t, "GetGroup")(s.GetGroup(c, acct, "DEVELOPERS"))
	if got.ID != g.ID || got.Path != "/teams/" {
		t.Fatalf("GetGroup = %+v", got)
	}
	_, err = s.GetGroup(c, acct, "nobody")
	wantErr(t, "GetGroup missing", err, identity.ErrNotFound)
	if names := groupNames(must[[]identity.Group](t, "ListGroups")(s.ListGroups(c, acct, "/"))); !slices.Equal(names, []string{"developers", "ops"}) {
		t.Fatalf("ListGroups = %v", names)
	}
	if names := groupNames(must[[]identity.Group](t, "ListGroups /teams/")(s.ListGroups(c, acct, "/teams/"))); !slices.Equal(names, []string{"developers"}) {
		t.Fatalf("ListGroups(/teams/) = %v", names)
	}

	mkUser(t, s, "alice")
	mkUser(t, s, "bob")
	ok(t, "AddUserToGroup", s.AddUserToGroup(c, acct, "developers", "alice"))
	ok(t, "AddUserToGroup again is a no-op", s.AddUserToGroup(c, acct, "developers", "alice"))
	ok(t, "AddUserToGroup ops", s.AddUserToGroup(c, acct, "ops", "alice"))
	ok(t, "AddUserToGroup bob", s.AddUserToGroup(c, acct, "developers", "bob"))
	wantErr(t, "add missing user", s.AddUserToGroup(c, acct, "developers", "ghost"), identity.ErrNotFound)
	wantErr(t, "add to missing group", s.AddUserToGroup(c, acct, "ghosts", "alice"), identity.ErrNotFound)

	if names := groupNames(must[[]identity.Group](t, "ListGroupsForUser")(s.ListGroupsForUser(c, acct, "alice"))); !slices.Equal(names, []string{"developers", "ops"}) {
		t.Fatalf("ListGroupsForUser = %v", names)
	}
	if u := must[identity.User](t, "GetUser")(s.GetUser(c, acct, "alice")); !slices.Equal(u.Groups, []string{"developers", "ops"}) {
		t.Fatalf("User.Groups = %v", u.Groups)
	}
	if us := must[[]identity.User](t, "ListUsers")(s.ListUsers(c, acct, "")); !slices.Equal(us[0].Groups, []string{"developers", "ops"}) || !slices.Equal(us[1].Groups, []string{"developers"}) {
		t.Fatalf("ListUsers groups = %v / %v", us[0].Groups, us[1].Groups)
	}
	if names := userNames(must[[]identity.User](t, "ListUsersInGroup")(s.ListUsersInGroup(c, acct, "developers"))); !slices.Equal(names, []string{"alice", "bob"}) {
		t.Fatalf("ListUsersInGroup = %v", names)
	}
	ok(t, "RemoveUserFromGroup", s.RemoveUserFromGroup(c, acct, "ops", "alice"))
	wantErr(t, "remove non-member", s.RemoveUserFromGroup(c, acct, "ops", "alice"), identity.ErrNotFound)
	if names := groupNames(must[[]identity.Group](t, "ListGroupsForUser")(s.ListGroupsForUser(c, acct, "alice"))); !slices.Equal(names, []string{"developers"}) {
		t.Fatalf("after remove ListGroupsForUser = %v", names)
	}

	for i := 0; i < 9; i++ {
		name := fmt.Sprintf("g%d", i)
		must[identity.Group](t, "CreateGroup")(s.CreateGroup(c, identity.Group{AccountID: acct, Name: name}))
		ok(t, "AddUserToGroup", s.AddUserToGroup(c, acct, name, "alice"))
	}
	must[identity.Group](t, "CreateGroup")(s.CreateGroup(c, identity.Group{AccountID: acct, Name: "eleventh"}))
	wantErr(t, "eleventh group membership", s.AddUserToGroup(c, acct, "eleventh", "alice"), identity.ErrLimitExceeded)

	ok(t, "DeleteGroup empty", s.DeleteGroup(c, acct, "ops", identity.DeleteOptions{}))
	_, err = s.GetGroup(c, acct, "ops")
	wantErr(t, "deleted group", err, identity.ErrNotFound)
}

func testRoles(t *testing.T, s identity.Store) {
	c := ctx(t)
	r := must[identity.Role](t, "CreateRole")(s.CreateRole(c, identity.Role{AccountID: acct, Name: "db-admin", Path: "/svc/",
		TrustPolicy: trust, Tags: map[string]string{"env": "prod"}, Description: "admins"}))
	if !strings.HasPrefix(r.ID, identity.PrefixRole) || !uniqueIDRE.MatchString(r.ID) {
		t.Fatalf("role id %q", r.ID)
	}
	if r.MaxSessionDuration != time.Hour {
		t.Fatalf("default MaxSessionDuration = %s, want 1h", r.MaxSessionDuration)
	}
	if r.ARN() != "arn:aws:iam::111122223333:role/svc/db-admin" {
		t.Fatalf("role ARN %s", r.ARN())
	}
	_, err := s.CreateRole(c, identity.Role{AccountID: acct, Name: "DB-ADMIN", TrustPolicy: trust})
	wantErr(t, "duplicate role", err, identity.ErrAlreadyExists)
	_, err = s.CreateRole(c, identity.Role{AccountID: acct, Name: "long", TrustPolicy: trust, MaxSessionDuration: 13 * time.Hour})
	wantErr(t, "13h max session", err, identity.ErrInvalidInput)
	_, err = s.CreateRole(c, identity.Role{AccountID: acct, Name: "short", TrustPolicy: trust, MaxSessionDuration: 30 * time.Minute})
	wantErr(t, "30m max session", err, identity.ErrInvalidInput)
	_, err = s.CreateRole(c, identity.Role{AccountID: acct, Name: "notjson", TrustPolicy: "{nope"})
	wantErr(t, "trust policy not JSON", err, identity.ErrInvalidInput)
	_, err = s.CreateRole(c, identity.Role{AccountID: acct, Name: strings.Repeat("r", 65), TrustPolicy: trust})
	wantErr(t, "65-char role name", err, identity.ErrInvalidInput)
	must[identity.Role](t, "CreateRole 12h")(s.CreateRole(c, identity.Role{AccountID: acct, Name: "reader", TrustPolicy: trust, MaxSessionDuration: 12 * time.Hour}))

	got := must[identity.Role](t, "GetRole")(s.GetRole(c, acct, "db-admin"))
	if got.TrustPolicy != trust || got.Tags["env"] != "prod" || got.Description != "admins" || got.ID != r.ID {
		t.Fatalf("GetRole = %+v", got)
	}
	if byID := must[identity.Role](t, "GetRoleByID")(s.GetRoleByID(c, r.ID)); byID.Name != "db-admin" {
		t.Fatalf("GetRoleByID = %+v", byID)
	}
	_, err = s.GetRole(c, acct, "ghost")
	wantErr(t, "GetRole missing", err, identity.ErrNotFound)
	_, err = s.GetRoleByID(c, "AROAAAAAAAAAAAAAAAAA")
	wantErr(t, "GetRoleByID missing", err, identity.ErrNotFound)
	if names := roleNames(must[[]identity.Role](t, "ListRoles")(s.ListRoles(c, acct, ""))); !slices.Equal(names, []string{"db-admin", "reader"}) {
		t.Fatalf("ListRoles = %v", names)
	}
	if names := roleNames(must[[]identity.Role](t, "ListRoles /svc/")(s.ListRoles(c, acct, "/svc/"))); !slices.Equal(names, []string{"db-admin"}) {
		t.Fatalf("ListRoles(/svc/) = %v", names)
	}

	d := 4 * time.Hour
	bound := mkPolicy(t, s, "rb", docA)
	upd := must[identity.Role](t, "UpdateRole")(s.UpdateRole(c, acct, "db-admin", identity.RoleUpdate{
		TrustPolicy: ptr(docB), MaxSessionDuration: &d, Tags: &map[string]string{"env": "dev"}, PermissionsBoundary: ptr(bound.ARN())}))
	if upd.TrustPolicy != docB || upd.MaxSessionDuration != d || upd.Tags["env"] != "dev" || upd.PermissionsBoundary != bound.ARN() {
		t.Fatalf("UpdateRole = %+v", upd)
	}
	again := must[identity.Role](t, "GetRole after update")(s.GetRole(c, acct, "db-admin"))
	if again.TrustPolicy != docB || again.MaxSessionDuration != d || again.PermissionsBoundary != bound.ARN() {
		t.Fatalf("role update not persisted: %+v", again)
	}
	bad := 20 * time.Hour
	_, err = s.UpdateRole(c, acct, "db-admin", identity.RoleUpdate{MaxSessionDuration: &bad})
	wantErr(t, "update to 20h", err, identity.ErrInvalidInput)
	_, err = s.UpdateRole(c, acct, "ghost", identity.RoleUpdate{})
	wantErr(t, "update missing role", err, identity.ErrNotFound)

	ok(t, "DeleteRole", s.DeleteRole(c, acct, "reader", identity.DeleteOptions{}))
	_, err = s.GetRole(c, acct, "reader")
	wantErr(t, "deleted role", err, identity.ErrNotFound)
}

func testManagedPolicies(t *testing.T, s identity.Store) {
	c := ctx(t)
	p := must[identity.ManagedPolicy](t, "CreatePolicy")(s.CreatePolicy(c, identity.ManagedPolicy{
		AccountID: acct, Name: "db-connect", Path: "/db/", Description: "connect"}, docA))
	if !strings.HasPrefix(p.ID, identity.PrefixPolicy) || p.ARN() != "arn:aws:iam::111122223333:policy/db/db-connect" ||
		p.DefaultVersion != "v1" || len(p.Versions) != 1 || p.DefaultDocument() != docA {
		t.Fatalf("CreatePolicy = %+v", p)
	}
	_, err := s.CreatePolicy(c, identity.ManagedPolicy{AccountID: acct, Name: "DB-CONNECT"}, docA)
	wantErr(t, "duplicate policy", err, identity.ErrAlreadyExists)
	_, err = s.CreatePolicy(c, identity.ManagedPolicy{AccountID: acct, Name: "broken"}, "not json")
	wantErr(t, "policy not JSON", err, identity.ErrInvalidInput)
	got := must[identity.ManagedPolicy](t, "GetPolicy")(s.GetPolicy(c, p.ARN()))
	if got.ID != p.ID || got.Description != "connect" || got.DefaultDocument() != docA || !got.Versions[0].IsDefault {
		t.Fatalf("GetPolicy = %+v", got)
	}
	_, err = s.GetPolicy(c, "arn:aws:iam::111122223333:policy/other/db-connect")
	wantErr(t, "GetPolicy with wrong path", err, identity.ErrNotFound)
	_, err = s.GetPolicy(c, "arn:aws:iam::111122223333:policy/ghost")
	wantErr(t, "GetPolicy missing", err, identity.ErrNotFound)
	_, err = s.GetPolicy(c, "not-an-arn")
	wantErr(t, "GetPolicy bad ARN", err, identity.ErrInvalidInput)

	v2 := must[identity.PolicyVersion](t, "CreatePolicyVersion")(s.CreatePolicyVersion(c, p.ARN(), docB, true))
	if v2.VersionID != "v2" || !v2.IsDefault {
		t.Fatalf("v2 = %+v", v2)
	}
	if got := must[identity.ManagedPolicy](t, "GetPolicy")(s.GetPolicy(c, p.ARN())); got.DefaultVersion != "v2" || got.DefaultDocument() != docB {
		t.Fatalf("default after v2 = %s %s", got.DefaultVersion, got.DefaultDocument())
	}
	for i := 3; i <= 5; i++ {
		v := must[identity.PolicyVersion](t, "CreatePolicyVersion")(s.CreatePolicyVersion(c, p.ARN(), docA, false))
		if v.VersionID != fmt.Sprintf("v%d", i) || v.IsDefault {
			t.Fatalf("version %d = %+v", i, v)
		}
	}
	_, err = s.CreatePolicyVersion(c, p.ARN(), docA, false)
	wantErr(t, "sixth version", err, identity.ErrLimitExceeded)
	wantErr(t, "delete default version", s.DeletePolicyVersion(c, p.ARN(), "v2"), identity.ErrConflict)
	wantErr(t, "delete missing version", s.DeletePolicyVersion(c, p.ARN(), "v9"), identity.ErrNotFound)
	ok(t, "DeletePolicyVersion v1", s.DeletePolicyVersion(c, p.ARN(), "v1"))
	v6 := must[identity.PolicyVersion](t, "CreatePolicyVersion after delete")(s.CreatePolicyVersion(c, p.ARN(), docA, false))
	if v6.VersionID != "v6" {
		t.Fatalf("version ids must not be reused: got %s, want v6", v6.VersionID)
	}
	ok(t, "SetDefaultPolicyVersion", s.SetDefaultPolicyVersion(c, p.ARN(), "v3"))
	wantErr(t, "SetDefault missing", s.SetDefaultPolicyVersion(c, p.ARN(), "v1"), identity.ErrNotFound)
	got = must[identity.ManagedPolicy](t, "GetPolicy")(s.GetPolicy(c, p.ARN()))
	var ids []string
	for _, v := range got.Versions {
		ids = append(ids, v.VersionID)
	}
	if got.DefaultVersion != "v3" || !slices.Equal(ids, []string{"v2", "v3", "v4", "v5", "v6"}) {
		t.Fatalf("versions = %v default %s", ids, got.DefaultVersion)
	}

	mkPolicy(t, s, "another", docB)
	if n := len(must[[]identity.ManagedPolicy](t, "ListPolicies")(s.ListPolicies(c, acct, ""))); n != 2 {
		t.Fatalf("ListPolicies returned %d, want 2", n)
	}
	if l := must[[]identity.ManagedPolicy](t, "ListPolicies /db/")(s.ListPolicies(c, acct, "/db/")); len(l) != 1 || l[0].Name != "db-connect" {
		t.Fatalf("ListPolicies(/db/) = %+v", l)
	}
	ok(t, "DeletePolicy", s.DeletePolicy(c, p.ARN()))
	_, err = s.GetPolicy(c, p.ARN())
	wantErr(t, "deleted policy", err, identity.ErrNotFound)
}

func testAttachAndInline(t *testing.T, s identity.Store) {
	c := ctx(t)
	mkUser(t, s, "alice")
	must[identity.Group](t, "CreateGroup")(s.CreateGroup(c, identity.Group{AccountID: acct, Name: "devs"}))
	mkRole(t, s, "app")
	p := mkPolicy(t, s, "connect", docA)
	mustAccount(t, s, other)
	foreign := must[identity.ManagedPolicy](t, "CreatePolicy other")(s.CreatePolicy(c, identity.ManagedPolicy{AccountID: other, Name: "foreign"}, docA))

	for _, h := range []identity.PolicyHolder{identity.UserRef(acct, "alice"), identity.GroupRef(acct, "devs"), identity.RoleRef(acct, "app")} {
		ok(t, "AttachPolicy "+h.String(), s.AttachPolicy(c, h, p.ARN()))
		ok(t, "AttachPolicy twice", s.AttachPolicy(c, h, p.ARN()))
		att := must[[]identity.AttachedPolicy](t, "ListAttachedPolicies")(s.ListAttachedPolicies(c, h))
		if len(att) != 1 || att[0].ARN != p.ARN() || att[0].Name != "connect" {
			t.Fatalf("ListAttachedPolicies(%s) = %+v", h, att)
		}
		wantErr(t, "attach foreign policy", s.AttachPolicy(c, h, foreign.ARN()), identity.ErrInvalidInput)
		wantErr(t, "attach missing policy", s.AttachPolicy(c, h, "arn:aws:iam::111122223333:policy/ghost"), identity.ErrNotFound)

		ok(t, "PutInlinePolicy", s.PutInlinePolicy(c, h, "extra", docA))
		ok(t, "PutInlinePolicy replace", s.PutInlinePolicy(c, h, "extra", docB))
		ok(t, "PutInlinePolicy second", s.PutInlinePolicy(c, h, "another", docA))
		ip := must[identity.InlinePolicy](t, "GetInlinePolicy")(s.GetInlinePolicy(c, h, "extra"))
		if ip.Document != docB {
			t.Fatalf("inline policy not replaced: %s", ip.Document)
		}
		list := must[[]identity.InlinePolicy](t, "ListInlinePolicies")(s.ListInlinePolicies(c, h))
		if len(list) != 2 || list[0].Name != "another" || list[1].Name != "extra" {
			t.Fatalf("ListInlinePolicies = %+v", list)
		}
		wantErr(t, "inline not JSON", s.PutInlinePolicy(c, h, "bad", "[1"), identity.ErrInvalidInput)
		ok(t, "DeleteInlinePolicy", s.DeleteInlinePolicy(c, h, "another"))
		wantErr(t, "DeleteInlinePolicy twice", s.DeleteInlinePolicy(c, h, "another"), identity.ErrNotFound)
		_, err := s.GetInlinePolicy(c, h, "another")
		wantErr(t, "GetInlinePolicy deleted", err, identity.ErrNotFound)
	}
	wantErr(t, "DeletePolicy while attached", s.DeletePolicy(c, p.ARN()), identity.ErrConflict)
	if got := must[identity.ManagedPolicy](t, "GetPolicy")(s.GetPolicy(c, p.ARN())); got.AttachmentCount != 3 {
		t.Fatalf("AttachmentCount = %d, want 3", got.AttachmentCount)
	}
	for _, h := range []identity.PolicyHolder{identity.UserRef(acct, "alice"), identity.GroupRef(acct, "devs"), identity.RoleRef(acct, "app")} {
		ok(t, "DetachPolicy", s.DetachPolicy(c, h, p.ARN()))
		wantErr(t, "DetachPolicy twice", s.DetachPolicy(c, h, p.ARN()), identity.ErrNotFound)
	}
	ghost := identity.UserRef(acct, "ghost")
	wantErr(t, "attach to missing user", s.AttachPolicy(c, ghost, p.ARN()), identity.ErrNotFound)
	wantErr(t, "inline on missing user", s.PutInlinePolicy(c, ghost, "x", docA), identity.ErrNotFound)
	wantErr(t, "bad holder kind", s.PutInlinePolicy(c, identity.PolicyHolder{Kind: "bucket", AccountID: acct, Name: "x"}, "x", docA), identity.ErrInvalidInput)

	// A policy used as a permissions boundary cannot be deleted either.
	_, err := s.UpdateUser(c, acct, "alice", identity.UserUpdate{PermissionsBoundary: ptr(p.ARN())})
	ok(t, "set boundary", err)
	wantErr(t, "DeletePolicy while boundary", s.DeletePolicy(c, p.ARN()), identity.ErrConflict)
	_, err = s.UpdateUser(c, acct, "alice", identity.UserUpdate{PermissionsBoundary: ptr("")})
	ok(t, "clear boundary", err)
	ok(t, "DeletePolicy when free", s.DeletePolicy(c, p.ARN()))
}

func testPolicySets(t *testing.T, s identity.Store) {
	c := ctx(t)
	mkUser(t, s, "alice")
	for _, g := range []string{"zeta", "alpha"} {
		must[identity.Group](t, "CreateGroup")(s.CreateGroup(c, identity.Group{AccountID: acct, Name: g}))
		ok(t, "AddUserToGroup", s.AddUserToGroup(c, acct, g, "alice"))
	}
	shared := mkPolicy(t, s, "shared", docA)
	own := mkPolicy(t, s, "own", docB)
	bound := mkPolicy(t, s, "bound", docA)
	_ = must[identity.PolicyVersion](t, "v2 of bound")(s.CreatePolicyVersion(c, bound.ARN(), docB, true))
	ok(t, "attach own", s.AttachPolicy(c, identity.UserRef(acct, "alice"), own.ARN()))
	ok(t, "attach shared user", s.AttachPolicy(c, identity.UserRef(acct, "alice"), shared.ARN()))
	ok(t, "attach shared zeta", s.AttachPolicy(c, identity.GroupRef(acct, "zeta"), shared.ARN()))
	ok(t, "inline user", s.PutInlinePolicy(c, identity.UserRef(acct, "alice"), "mine", docA))
	ok(t, "inline alpha", s.PutInlinePolicy(c, identity.GroupRef(acct, "alpha"), "team", docB))
	_, err := s.UpdateUser(c, acct, "alice", identity.UserUpdate{PermissionsBoundary: ptr(bound.ARN())})
	ok(t, "set boundary", err)

	set := must[identity.PolicySet](t, "PolicySetForUser")(s.PolicySetForUser(c, acct, "Alice"))
	var ids []string
	for _, p := range set.Policies {
		ids = append(ids, p.ID)
	}
	want := []string{"user/alice/inline/mine", own.ARN(), shared.ARN(), "group/alpha/inline/team"}
	if !slices.Equal(ids, want) {
		t.Fatalf("PolicySetForUser ids = %v, want %v", ids, want)
	}
	if set.Policies[0].Document != docA || set.Policies[1].Document != docB || set.Policies[3].Document != docB {
		t.Fatalf("PolicySetForUser documents wrong: %+v", set.Policies)
	}
	if set.Boundary == nil || set.Boundary.ID != bound.ARN() || set.Boundary.Document != docB {
		t.Fatalf("boundary = %+v, want default version v2 of %s", set.Boundary, bound.ARN())
	}
	if set.PrincipalARN != "arn:aws:iam::111122223333:user/alice" {
		t.Fatalf("PrincipalARN = %s", set.PrincipalARN)
	}

	mkRole(t, s, "app")
	ok(t, "role inline", s.PutInlinePolicy(c, identity.RoleRef(acct, "app"), "r", docB))
	ok(t, "role attach", s.AttachPolicy(c, identity.RoleRef(acct, "app"), shared.ARN()))
	rs := must[identity.PolicySet](t, "PolicySetForRole")(s.PolicySetForRole(c, acct, "app"))
	if len(rs.Policies) != 2 || rs.Policies[0].ID != "role/app/inline/r" || rs.Policies[1].ID != shared.ARN() || rs.Boundary != nil {
		t.Fatalf("PolicySetForRole = %+v", rs)
	}
	_, err = s.PolicySetForUser(c, acct, "ghost")
	wantErr(t, "PolicySetForUser missing", err, identity.ErrNotFound)
	_, err = s.PolicySetForRole(c, acct, "ghost")
	wantErr(t, "PolicySetForRole missing", err, identity.ErrNotFound)
}

func testDeleteConflicts(t *testing.T, s identity.Store) {
	c := ctx(t)
	u := mkUser(t, s, "alice")
	must[identity.Group](t, "CreateGroup")(s.CreateGroup(c, identity.Group{AccountID: acct, Name: "devs"}))
	ok(t, "AddUserToGroup", s.AddUserToGroup(c, acct, "devs", "alice"))
	p := mkPolicy(t, s, "p", docA)
	ok(t, "attach", s.AttachPolicy(c, identity.UserRef(acct, "alice"), p.ARN()))
	ok(t, "inline", s.PutInlinePolicy(c, identity.UserRef(acct, "alice"), "i", docA))
	key, _ := must2(t, "CreateAccessKey")(s.CreateAccessKey(c, acct, "alice"))
	sess, _ := mustSession(t, s, identity.Session{AccountID: acct, UserID: u.ID, ParentAccessKeyID: key.ID, Expiration: time.Now().Add(time.Hour)})

	err := s.DeleteUser(c, acct, "alice", identity.DeleteOptions{})
	wantErr(t, "DeleteUser with dependents", err, identity.ErrConflict)
	for _, word := range []string{"access key", "inline polic", "attached managed polic", "group membership", "force"} {
		if !strings.Contains(err.Error(), word) {
			t.Fatalf("conflict message %q does not mention %q", err, word)
		}
	}
	if _, err := s.GetAccessKey(c, key.ID); err != nil {
		t.Fatalf("refused delete removed the key: %v", err)
	}
	err = s.DeleteGroup(c, acct, "devs", identity.DeleteOptions{})
	wantErr(t, "DeleteGroup with member", err, identity.ErrConflict)
	ok(t, "DeleteUser force", s.DeleteUser(c, acct, "alice", identity.DeleteOptions{Force: true}))
	_, err = s.GetUser(c, acct, "alice")
	wantErr(t, "force-deleted user", err, identity.ErrNotFound)
	_, err = s.GetAccessKey(c, key.ID)
	wantErr(t, "key of force-deleted user", err, identity.ErrNotFound)
	if got := must[identity.Session](t, "GetSession")(s.GetSession(c, sess.AccessKeyID)); !got.Revoked {
		t.Fatal("session of force-deleted user is not revoked")
	}
	if got := must[identity.ManagedPolicy](t, "GetPolicy")(s.GetPolicy(c, p.ARN())); got.AttachmentCount != 0 {
		t.Fatalf("attachment survived force delete: %d", got.AttachmentCount)
	}
	if m := must[[]identity.User](t, "ListUsersInGroup")(s.ListUsersInGroup(c, acct, "devs")); len(m) != 0 {
		t.Fatalf("membership survived force delete: %v", userNames(m))
	}
	ok(t, "DeleteGroup now empty", s.DeleteGroup(c, acct, "devs", identity.DeleteOptions{}))

	must[identity.Group](t, "CreateGroup")(s.CreateGroup(c, identity.Group{AccountID: acct, Name: "ops"}))
	ok(t, "group inline", s.PutInlinePolicy(c, identity.GroupRef(acct, "ops"), "i", docA))
	wantErr(t, "DeleteGroup with policy", s.DeleteGroup(c, acct, "ops", identity.DeleteOptions{}), identity.ErrConflict)
	ok(t, "DeleteGroup force", s.DeleteGroup(c, acct, "ops", identity.DeleteOptions{Force: true}))

	r := mkRole(t, s, "app")
	ok(t, "role attach", s.AttachPolicy(c, identity.RoleRef(acct, "app"), p.ARN()))
	rs, _ := mustSession(t, s, identity.Session{AccountID: acct, RoleID: r.ID, RoleARN: r.ARN(), SessionName: "s", Expiration: time.Now().Add(time.Hour)})
	wantErr(t, "DeleteRole with policy", s.DeleteRole(c, acct, "app", identity.DeleteOptions{}), identity.ErrConflict)
	if got := must[identity.Session](t, "GetSession")(s.GetSession(c, rs.AccessKeyID)); got.Revoked {
		t.Fatal("refused DeleteRole revoked the session")
	}
	ok(t, "DeleteRole force", s.DeleteRole(c, acct, "app", identity.DeleteOptions{Force: true}))
	if got := must[identity.Session](t, "GetSession")(s.GetSession(c, rs.AccessKeyID)); !got.Revoked {
		t.Fatal("session of deleted role is not revoked")
	}
	ok(t, "DeletePolicy after force deletes", s.DeletePolicy(c, p.ARN()))
}

func testAccessKeys(t *testing.T, s identity.Store) {
	c := ctx(t)
	u := mkUser(t, s, "alice")
	sealer := Sealer(t)
	k1, secret1 := must2(t, "CreateAccessKey")(s.CreateAccessKey(c, acct, "ALICE"))
	if !strings.HasPrefix(k1.ID, identity.PrefixAccessKey) || !uniqueIDRE.MatchString(k1.ID) {
		t.Fatalf("key id %q", k1.ID)
	}
	if !secretRE.MatchString(secret1) {
		t.Fatalf("secret %q is not 40 base64-ish characters", secret1)
	}
	if k1.Status != identity.KeyActive || k1.UserID != u.ID || k1.UserName != "alice" || k1.AccountID != acct {
		t.Fatalf("CreateAccessKey = %+v", k1)
	}
	k2, secret2 := must2(t, "CreateAccessKey 2")(s.CreateAccessKey(c, acct, "alice"))
	if secret1 == secret2 || k1.ID == k2.ID {
		t.Fatal("two keys share an id or a secret")
	}
	_, _, err := s.CreateAccessKey(c, acct, "alice")
	wantErr(t, "third key", err, identity.ErrLimitExceeded)
	_, _, err = s.CreateAccessKey(c, acct, "ghost")
	wantErr(t, "key for missing user", err, identity.ErrNotFound)

	got := must[identity.AccessKey](t, "GetAccessKey")(s.GetAccessKey(c, k1.ID))
	if got.UserName != "alice" || got.Status != identity.KeyActive || !got.LastUsedAt.IsZero() {
		t.Fatalf("GetAccessKey = %+v", got)
	}
	if plain, err := sealer.OpenSecret(k1.ID, got.SealedSecret); err != nil || plain != secret1 {
		t.Fatalf("sealed secret does not open to the returned secret: %v", err)
	}
	if _, err := sealer.OpenSecret(k2.ID, got.SealedSecret); err == nil {
		t.Fatal("sealed secret opens under another key id: additional data is not bound")
	}
	if strings.Contains(string(got.SealedSecret), secret1) {
		t.Fatal("sealed secret contains the plaintext")
	}
	_, err = s.GetAccessKey(c, "AKIAAAAAAAAAAAAAAAAA")
	wantErr(t, "GetAccessKey missing", err, identity.ErrNotFound)

	list := must[[]identity.AccessKey](t, "ListAccessKeys")(s.ListAccessKeys(c, acct, "alice"))
	if len(list) != 2 {
		t.Fatalf("ListAccessKeys = %+v", list)
	}
	for _, k := range list {
		if len(k.SealedSecret) != 0 {
			t.Fatal("ListAccessKeys returns sealed secrets")
		}
	}

	ok(t, "deactivate", s.UpdateAccessKeyStatus(c, k1.ID, identity.KeyInactive))
	if got := must[identity.AccessKey](t, "GetAccessKey")(s.GetAccessKey(c, k1.ID)); got.Status != identity.KeyInactive {
		t.Fatalf("status = %s", got.Status)
	}
	wantErr(t, "bad status", s.UpdateAccessKeyStatus(c, k1.ID, "Disabled"), identity.ErrInvalidInput)
	wantErr(t, "status of missing key", s.UpdateAccessKeyStatus(c, "AKIAAAAAAAAAAAAAAAAA", identity.KeyActive), identity.ErrNotFound)

	gen := must[int64](t, "Generation")(s.Generation(c))
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	ok(t, "Touch", s.TouchAccessKeyLastUsed(c, k2.ID, at))
	if got := must[identity.AccessKey](t, "GetAccessKey")(s.GetAccessKey(c, k2.ID)); !got.LastUsedAt.Equal(at) {
		t.Fatalf("LastUsedAt = %s, want %s", got.LastUsedAt, at)
	}
	ok(t, "Touch 10s later", s.TouchAccessKeyLastUsed(c, k2.ID, at.Add(10*time.Second)))
	if got := must[identity.AccessKey](t, "GetAccessKey")(s.GetAccessKey(c, k2.ID)); !got.LastUsedAt.Equal(at) {
		t.Fatalf("touch within a minute wrote: LastUsedAt = %s", got.LastUsedAt)
	}
	ok(t, "Touch 2m later", s.TouchAccessKeyLastUsed(c, k2.ID, at.Add(2*time.Minute)))
	if got := must[identity.AccessKey](t, "GetAccessKey")(s.GetAccessKey(c, k2.ID)); !got.LastUsedAt.Equal(at.Add(2 * time.Minute)) {
		t.Fatalf("LastUsedAt = %s, want +2m", got.LastUsedAt)
	}
	if g := must[int64](t, "Generation")(s.Generation(c)); g != gen {
		t.Fatalf("TouchAccessKeyLastUsed bumped the generation %d → %d", gen, g)
	}

	child, _ := mustSession(t, s, identity.Session{AccountID: acct, UserID: u.ID, ParentAccessKeyID: k1.ID, Expiration: time.Now().Add(time.Hour)})
	ok(t, "DeleteAccessKey", s.DeleteAccessKey(c, k1.ID))
	wantErr(t, "DeleteAccessKey twice", s.DeleteAccessKey(c, k1.ID), identity.ErrNotFound)
	if got := must[identity.Session](t, "GetSession")(s.GetSession(c, child.AccessKeyID)); !got.Revoked {
		t.Fatal("session obtained with a deleted key is not revoked")
	}
	k3, _ := must2(t, "CreateAccessKey after delete")(s.CreateAccessKey(c, acct, "alice"))
	if k3.ID == k1.ID {
		t.Fatal("key id reused")
	}
}

func testSecretsAtRest(t *testing.T, s identity.Store) {
	raw, isRaw := s.(RawDB)
	if !isRaw {
		t.Fatalf("%T does not expose DB() *sql.DB; the suite cannot check what reaches the database", s)
	}
	c := ctx(t)
	u := mkUser(t, s, "alice")
	k, secret := must2(t, "CreateAccessKey")(s.CreateAccessKey(c, acct, "alice"))
	r := mkRole(t, s, "app")
	sess, creds := mustSession(t, s, identity.Session{AccountID: acct, RoleID: r.ID, RoleARN: r.ARN(), SessionName: "x",
		ParentAccessKeyID: k.ID, Expiration: time.Now().Add(time.Hour)})
	_ = u

	var sealed []byte
	ok(t, "read raw key row", raw.DB().QueryRowContext(c, `SELECT sealed_secret FROM access_keys WHERE id = $1`, k.ID).Scan(&sealed))
	if len(sealed) == 0 || bytes.Contains(sealed, []byte(secret)) {
		t.Fatal("access_keys.sealed_secret is empty or holds the plaintext secret")
	}
	if plain, err := Sealer(t).Open(sealed, []byte(k.ID)); err != nil || string(plain) != secret {
		t.Fatalf("raw column is not the secret sealed under the master key: %v", err)
	}
	wrong, _ := identity.NewSealer(bytes.Repeat([]byte{7}, 32))
	if _, err := wrong.Open(sealed, []byte(k.ID)); err == nil {
		t.Fatal("sealed secret opens with another master key")
	}
	assertNoPlaintext(t, raw.DB(), "access_keys", secret)
	assertNoPlaintext(t, raw.DB(), "sessions", creds.SecretAccessKey, creds.SessionToken)

	var tokHash []byte
	ok(t, "read raw session row", raw.DB().QueryRowContext(c, `SELECT token_sha256 FROM sessions WHERE access_key_id = $1`,
		sess.AccessKeyID).Scan(&tokHash))
	if !bytes.Equal(tokHash, identity.HashSessionToken(creds.SessionToken)) {
		t.Fatal("sessions.token_sha256 is not SHA-256 of the session token")
	}
}

// assertNoPlaintext dumps every column of every row of table as text and
// bytes and fails if any secret appears.
func assertNoPlaintext(t *testing.T, db *sql.DB, table string, secrets ...string) {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), `SELECT * FROM `+table)
	if err != nil {
		t.Fatalf("dump %s: %v", table, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	n := 0
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		for i, v := range vals {
			var text string
			switch x := v.(type) {
			case []byte:
				text = string(x)
			default:
				text = fmt.Sprint(x)
			}
			for _, sec := range secrets {
				if strings.Contains(text, sec) {
					t.Fatalf("%s.%s holds a plaintext secret", table, cols[i])
				}
			}
		}
		n++
	}
	if n == 0 {
		t.Fatalf("dump %s: no rows; the check proves nothing", table)
	}
}

func must2(t *testing.T, what string) func(identity.AccessKey, string, error) (identity.AccessKey, string) {
	return func(k identity.AccessKey, s string, err error) (identity.AccessKey, string) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return k, s
	}
}

func mustSession(t *testing.T, s identity.Store, in identity.Session) (identity.Session, identity.Credentials) {
	t.Helper()
	sess, creds, err := s.CreateSession(t.Context(), in)
	if err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return sess, creds
}

func testSessions(t *testing.T, s identity.Store) {
	c := ctx(t)
	u := mkUser(t, s, "alice")
	key, _ := must2(t, "CreateAccessKey")(s.CreateAccessKey(c, acct, "alice"))
	r := mkRole(t, s, "app")
	exp := time.Now().Add(time.Hour).Truncate(time.Second).UTC()
	in := identity.Session{
		AccountID: acct, RoleID: r.ID, RoleARN: r.ARN(), Expiration: exp,
		SessionName: "alice-session", SourceIdentity: "alice@example.com",
		SessionTags: map[string]string{"dbuser": "alice"}, TransitiveTagKeys: []string{"dbuser"},
		SessionPolicy: docA, PolicyARNs: []string{"arn:aws:iam::111122223333:policy/x"},
		ParentAccessKeyID: key.ID, FederatedProvider: "arn:aws:iam::111122223333:oidc-provider/idp.example.com",
		FederatedSubject: "sub-1",
	}
	sess, creds := mustSession(t, s, in)
	if !strings.HasPrefix(creds.AccessKeyID, identity.PrefixTemporaryKey) || !uniqueIDRE.MatchString(creds.AccessKeyID) ||
		creds.AccessKeyID != sess.AccessKeyID {
		t.Fatalf("session key id %q", creds.AccessKeyID)
	}
	if !secretRE.MatchString(creds.SecretAccessKey) || len(creds.SessionToken) < 43 || !creds.Expiration.Equal(exp) {
		t.Fatalf("credentials = secret %d chars, token %d chars, exp %s", len(creds.SecretAccessKey), len(creds.SessionToken), creds.Expiration)
	}
	got := must[identity.Session](t, "GetSession")(s.GetSession(c, creds.AccessKeyID))
	if got.RoleID != r.ID || got.RoleARN != r.ARN() || got.SessionName != "alice-session" || got.SourceIdentity != "alice@example.com" ||
		got.SessionTags["dbuser"] != "alice" || !slices.Equal(got.TransitiveTagKeys, []string{"dbuser"}) || got.SessionPolicy != docA ||
		!slices.Equal(got.PolicyARNs, in.PolicyARNs) || got.ParentAccessKeyID != key.ID || got.FederatedProvider != in.FederatedProvider ||
		got.FederatedSubject != "sub-1" || got.Revoked || !got.Expiration.Equal(exp) || got.AccountID != acct || got.CreatedAt.IsZero() {
		t.Fatalf("GetSession = %+v", got)
	}
	if !got.TokenMatches(creds.SessionToken) || got.TokenMatches(creds.SessionToken+"x") {
		t.Fatal("TokenMatches does not recognise exactly the issued token")
	}
	if plain, err := Sealer(t).OpenSecret(got.AccessKeyID, got.SealedSecret); err != nil || plain != creds.SecretAccessKey {
		t.Fatalf("session secret does not open: %v", err)
	}
	if !got.Valid(time.Now()) || got.Valid(exp.Add(time.Second)) {
		t.Fatal("Valid does not follow the expiration")
	}

	_, _, err := s.CreateSession(c, identity.Session{AccountID: acct, RoleID: "AROAAAAAAAAAAAAAAAAA", Expiration: exp})
	wantErr(t, "session for missing role", err, identity.ErrNotFound)
	_, _, err = s.CreateSession(c, identity.Session{AccountID: acct, RoleID: r.ID, UserID: u.ID, Expiration: exp})
	wantErr(t, "session for role and user", err, identity.ErrInvalidInput)
	_, _, err = s.CreateSession(c, identity.Session{AccountID: acct, RoleID: r.ID, Expiration: time.Now().Add(-time.Minute)})
	wantErr(t, "session already expired", err, identity.ErrInvalidInput)
	_, err = s.GetSession(c, "ASIAAAAAAAAAAAAAAAAA")
	wantErr(t, "GetSession missing", err, identity.ErrNotFound)

	ok(t, "RevokeSession", s.RevokeSession(c, sess.AccessKeyID))
	if g := must[identity.Session](t, "GetSession")(s.GetSession(c, sess.AccessKeyID)); !g.Revoked || g.Valid(time.Now()) {
		t.Fatal("revoked session still valid")
	}
	wantErr(t, "RevokeSession missing", s.RevokeSession(c, "ASIAAAAAAAAAAAAAAAAA"), identity.ErrNotFound)

	var byRole []string
	for i := 0; i < 3; i++ {
		x, _ := mustSession(t, s, identity.Session{AccountID: acct, RoleID: r.ID, RoleARN: r.ARN(), SessionName: "s", Expiration: exp})
		byRole = append(byRole, x.AccessKeyID)
	}
	userSess, _ := mustSession(t, s, identity.Session{AccountID: acct, UserID: u.ID, ParentAccessKeyID: key.ID, Expiration: exp})
	// Live sessions: the three role sessions and the user's, oldest first,
	// not the revoked one; none once the clock passes their expiry.
	live := must[[]identity.Session](t, "ListSessions")(s.ListSessions(c, acct, time.Now()))
	var liveIDs []string
	for _, x := range live {
		liveIDs = append(liveIDs, x.AccessKeyID)
	}
	if want := append(slices.Clone(byRole), userSess.AccessKeyID); !slices.Equal(liveIDs, want) {
		t.Fatalf("ListSessions = %v, want %v", liveIDs, want)
	}
	if later := must[[]identity.Session](t, "ListSessions")(s.ListSessions(c, acct, exp.Add(time.Second))); len(later) != 0 {
		t.Fatalf("ListSessions after expiry = %d sessions, want 0", len(later))
	}
	if other := must[[]identity.Session](t, "ListSessions")(s.ListSessions(c, "999999999999", time.Now())); len(other) != 0 {
		t.Fatalf("ListSessions of another account = %d sessions", len(other))
	}
	if n := must[int64](t, "RevokeSessionsByRole")(s.RevokeSessionsByRole(c, r.ID)); n != 3 {
		t.Fatalf("RevokeSessionsByRole revoked %d, want 3 (the already revoked one not counted)", n)
	}
	for _, id := range byRole {
		if !must[identity.Session](t, "GetSession")(s.GetSession(c, id)).Revoked {
			t.Fatalf("role session %s not revoked", id)
		}
	}
	if must[identity.Session](t, "GetSession")(s.GetSession(c, userSess.AccessKeyID)).Revoked {
		t.Fatal("revoking a role's sessions revoked a user session")
	}
	if n := must[int64](t, "RevokeSessionsByParentKey")(s.RevokeSessionsByParentKey(c, key.ID)); n != 1 {
		t.Fatalf("RevokeSessionsByParentKey revoked %d, want 1", n)
	}
	if !must[identity.Session](t, "GetSession")(s.GetSession(c, userSess.AccessKeyID)).Revoked {
		t.Fatal("session of parent key not revoked")
	}

	late := exp.Add(2 * time.Hour)
	keep, _ := mustSession(t, s, identity.Session{AccountID: acct, RoleID: r.ID, Expiration: late})
	if n := must[int64](t, "DeleteExpiredSessions")(s.DeleteExpiredSessions(c, exp.Add(time.Minute))); n != 5 {
		t.Fatalf("DeleteExpiredSessions removed %d, want 5", n)
	}
	_, err = s.GetSession(c, sess.AccessKeyID)
	wantErr(t, "expired session after cleanup", err, identity.ErrNotFound)
	if _, err := s.GetSession(c, keep.AccessKeyID); err != nil {
		t.Fatalf("unexpired session removed: %v", err)
	}
}

func testOIDC(t *testing.T, s identity.Store) {
	c := ctx(t)
	p := must[identity.OIDCProvider](t, "CreateOIDCProvider")(s.CreateOIDCProvider(c, identity.OIDCProvider{
		AccountID: acct, URL: "https://idp.example.com/realms/main", Audiences: []string{"iamdb", "cli"},
		JWKSURL: "https://idp.example.com/realms/main/jwks", Thumbprints: []string{"abc"}}))
	if p.ARN() != "arn:aws:iam::111122223333:oidc-provider/idp.example.com/realms/main" {
		t.Fatalf("provider ARN %s", p.ARN())
	}
	_, err := s.CreateOIDCProvider(c, identity.OIDCProvider{AccountID: acct, URL: "https://idp.example.com/realms/main/", Audiences: []string{"x"}, JWKSFile: "/k"})
	wantErr(t, "duplicate provider (trailing slash)", err, identity.ErrAlreadyExists)
	_, err = s.CreateOIDCProvider(c, identity.OIDCProvider{AccountID: acct, URL: "ftp://x", Audiences: []string{"x"}, JWKSFile: "/k"})
	wantErr(t, "bad issuer URL", err, identity.ErrInvalidInput)
	_, err = s.CreateOIDCProvider(c, identity.OIDCProvider{AccountID: acct, URL: "https://b.example.com", Audiences: []string{"x"}})
	wantErr(t, "no key source", err, identity.ErrInvalidInput)
	_, err = s.CreateOIDCProvider(c, identity.OIDCProvider{AccountID: acct, URL: "https://b.example.com", JWKSFile: "/k"})
	wantErr(t, "no audience", err, identity.ErrInvalidInput)

	got := must[identity.OIDCProvider](t, "GetOIDCProvider")(s.GetOIDCProvider(c, acct, "idp.example.com/realms/main/"))
	if got.URL != p.URL || !slices.Equal(got.Audiences, []string{"iamdb", "cli"}) || got.JWKSURL != p.JWKSURL || !slices.Equal(got.Thumbprints, []string{"abc"}) {
		t.Fatalf("GetOIDCProvider = %+v", got)
	}
	must[identity.OIDCProvider](t, "Create second")(s.CreateOIDCProvider(c, identity.OIDCProvider{AccountID: acct, URL: "https://a.example.com", Audiences: []string{"x"}, JWKSFile: "/etc/jwks.json"}))
	if l := must[[]identity.OIDCProvider](t, "ListOIDCProviders")(s.ListOIDCProviders(c, acct)); len(l) != 2 || l[0].URL != "https://a.example.com" {
		t.Fatalf("ListOIDCProviders = %+v", l)
	}
	upd := must[identity.OIDCProvider](t, "UpdateOIDCProvider")(s.UpdateOIDCProvider(c, identity.OIDCProvider{
		AccountID: acct, URL: p.URL, Audiences: []string{"new"}, JWKSFile: "/etc/k.json"}))
	if !slices.Equal(upd.Audiences, []string{"new"}) || upd.JWKSURL != "" || upd.JWKSFile != "/etc/k.json" || len(upd.Thumbprints) != 0 {
		t.Fatalf("UpdateOIDCProvider = %+v", upd)
	}
	_, err = s.UpdateOIDCProvider(c, identity.OIDCProvider{AccountID: acct, URL: "https://ghost.example.com", Audiences: []string{"x"}, JWKSFile: "/k"})
	wantErr(t, "update missing provider", err, identity.ErrNotFound)
	ok(t, "DeleteOIDCProvider", s.DeleteOIDCProvider(c, acct, p.URL))
	_, err = s.GetOIDCProvider(c, acct, p.URL)
	wantErr(t, "deleted provider", err, identity.ErrNotFound)
	wantErr(t, "delete twice", s.DeleteOIDCProvider(c, acct, p.URL), identity.ErrNotFound)
}

func testGeneration(t *testing.T, s identity.Store) {
	c := ctx(t)
	last := must[int64](t, "Generation")(s.Generation(c))
	step := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		g := must[int64](t, "Generation")(s.Generation(c))
		if g <= last {
			t.Fatalf("%s did not bump the generation (%d → %d)", what, last, g)
		}
		last = g
	}
	e := func(_ any, err error) error { return err }
	var (
		u    identity.User
		r    identity.Role
		p    identity.ManagedPolicy
		k    identity.AccessKey
		sess identity.Session
		err  error
	)
	step("CreateAccount", e(s.CreateAccount(c, identity.Account{ID: other})))
	u, err = s.CreateUser(c, identity.User{AccountID: acct, Name: "alice"})
	step("CreateUser", err)
	step("UpdateUser", e(s.UpdateUser(c, acct, "alice", identity.UserUpdate{Tags: &map[string]string{"a": "b"}})))
	step("CreateGroup", e(s.CreateGroup(c, identity.Group{AccountID: acct, Name: "g"})))
	step("AddUserToGroup", s.AddUserToGroup(c, acct, "g", "alice"))
	step("RemoveUserFromGroup", s.RemoveUserFromGroup(c, acct, "g", "alice"))
	r, err = s.CreateRole(c, identity.Role{AccountID: acct, Name: "r", TrustPolicy: trust})
	step("CreateRole", err)
	step("UpdateRole", e(s.UpdateRole(c, acct, "r", identity.RoleUpdate{TrustPolicy: ptr(docA)})))
	p, err = s.CreatePolicy(c, identity.ManagedPolicy{AccountID: acct, Name: "p"}, docA)
	step("CreatePolicy", err)
	step("CreatePolicyVersion", e(s.CreatePolicyVersion(c, p.ARN(), docB, false)))
	step("SetDefaultPolicyVersion", s.SetDefaultPolicyVersion(c, p.ARN(), "v2"))
	step("DeletePolicyVersion", s.DeletePolicyVersion(c, p.ARN(), "v1"))
	step("AttachPolicy", s.AttachPolicy(c, identity.RoleRef(acct, "r"), p.ARN()))
	step("DetachPolicy", s.DetachPolicy(c, identity.RoleRef(acct, "r"), p.ARN()))
	step("PutInlinePolicy", s.PutInlinePolicy(c, identity.GroupRef(acct, "g"), "i", docA))
	step("DeleteInlinePolicy", s.DeleteInlinePolicy(c, identity.GroupRef(acct, "g"), "i"))
	k, _, err = s.CreateAccessKey(c, acct, "alice")
	step("CreateAccessKey", err)
	step("UpdateAccessKeyStatus", s.UpdateAccessKeyStatus(c, k.ID, identity.KeyInactive))
	sess, _, err = s.CreateSession(c, identity.Session{AccountID: acct, RoleID: r.ID, Expiration: time.Now().Add(time.Hour)})
	step("CreateSession", err)
	step("RevokeSession", s.RevokeSession(c, sess.AccessKeyID))
	step("RevokeSessionsByRole", e(s.RevokeSessionsByRole(c, r.ID)))
	step("RevokeSessionsByParentKey", e(s.RevokeSessionsByParentKey(c, k.ID)))
	step("DeleteExpiredSessions", e(s.DeleteExpiredSessions(c, time.Now())))
	step("CreateOIDCProvider", e(s.CreateOIDCProvider(c, identity.OIDCProvider{AccountID: acct, URL: "https://i.example.com", Audiences: []string{"a"}, JWKSFile: "/k"})))
	step("UpdateOIDCProvider", e(s.UpdateOIDCProvider(c, identity.OIDCProvider{AccountID: acct, URL: "https://i.example.com", Audiences: []string{"b"}, JWKSFile: "/k"})))
	step("DeleteOIDCProvider", s.DeleteOIDCProvider(c, acct, "https://i.example.com"))
	step("DeleteAccessKey", s.DeleteAccessKey(c, k.ID))
	step("DeleteGroup", s.DeleteGroup(c, acct, "g", identity.DeleteOptions{}))
	step("DeleteRole", s.DeleteRole(c, acct, "r", identity.DeleteOptions{}))
	step("DeletePolicy", s.DeletePolicy(c, p.ARN()))
	step("DeleteUser", s.DeleteUser(c, acct, u.Name, identity.DeleteOptions{}))

	// Reads and failed writes leave it alone.
	_, _ = s.ListUsers(c, acct, "")
	_, _ = s.GetUser(c, acct, "ghost")
	_, err = s.CreateUser(c, identity.User{AccountID: acct, Name: "bad name"})
	if err == nil {
		t.Fatal("invalid user created")
	}
	_ = s.DeleteRole(c, acct, "ghost", identity.DeleteOptions{})
	if g := must[int64](t, "Generation")(s.Generation(c)); g != last {
		t.Fatalf("reads or failed writes changed the generation %d → %d", last, g)
	}
}

func testAtomicity(t *testing.T, s identity.Store) {
	c := ctx(t)
	mkUser(t, s, "alice")
	mkUser(t, s, "bob")
	gen := must[int64](t, "Generation")(s.Generation(c))

	// Rename onto an existing name fails at the last statement; the tag
	// change in the same call must not survive.
	tags := map[string]string{"changed": "yes"}
	_, err := s.UpdateUser(c, acct, "alice", identity.UserUpdate{NewName: ptr("bob"), Tags: &tags})
	wantErr(t, "rename onto bob", err, identity.ErrAlreadyExists)
	if u := must[identity.User](t, "GetUser")(s.GetUser(c, acct, "alice")); len(u.Tags) != 0 {
		t.Fatalf("failed update left tags %v", u.Tags)
	}
	// A missing boundary is found after the user row would be built.
	_, err = s.CreateUser(c, identity.User{AccountID: acct, Name: "carol", PermissionsBoundary: "arn:aws:iam::111122223333:policy/ghost"})
	wantErr(t, "create with missing boundary", err, identity.ErrNotFound)
	_, err = s.GetUser(c, acct, "carol")
	wantErr(t, "half-created user", err, identity.ErrNotFound)
	// A sixth version fails after counting; nothing is added.
	p := mkPolicy(t, s, "p", docA)
	for i := 0; i < 4; i++ {
		must[identity.PolicyVersion](t, "version")(s.CreatePolicyVersion(c, p.ARN(), docA, false))
	}
	gen = must[int64](t, "Generation")(s.Generation(c))
	_, err = s.CreatePolicyVersion(c, p.ARN(), docB, true)
	wantErr(t, "sixth version", err, identity.ErrLimitExceeded)
	if got := must[identity.ManagedPolicy](t, "GetPolicy")(s.GetPolicy(c, p.ARN())); len(got.Versions) != 5 || got.DefaultVersion != "v1" {
		t.Fatalf("failed version creation changed the policy: %d versions, default %s", len(got.Versions), got.DefaultVersion)
	}
	// A refused delete leaves every dependent in place.
	ok(t, "inline", s.PutInlinePolicy(c, identity.UserRef(acct, "alice"), "i", docA))
	ok(t, "attach", s.AttachPolicy(c, identity.UserRef(acct, "alice"), p.ARN()))
	gen = must[int64](t, "Generation")(s.Generation(c))
	wantErr(t, "refused delete", s.DeleteUser(c, acct, "alice", identity.DeleteOptions{}), identity.ErrConflict)
	set := must[identity.PolicySet](t, "PolicySetForUser")(s.PolicySetForUser(c, acct, "alice"))
	if len(set.Policies) != 2 {
		t.Fatalf("refused delete removed policies: %+v", set.Policies)
	}
	if g := must[int64](t, "Generation")(s.Generation(c)); g != gen {
		t.Fatalf("failed writes bumped the generation %d → %d", gen, g)
	}
}

func testConcurrentKeys(t *testing.T, s identity.Store) {
	c := ctx(t)
	mkUser(t, s, "alice")
	const n = 6
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		limited int
		others  []error
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.CreateAccessKey(c, acct, "alice")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, identity.ErrLimitExceeded):
				limited++
			default:
				others = append(others, err)
			}
		}()
	}
	wg.Wait()
	if len(others) > 0 || created != identity.MaxAccessKeysPerUser || limited != n-identity.MaxAccessKeysPerUser {
		t.Fatalf("concurrent CreateAccessKey: %d created, %d limited, other errors %v", created, limited, others)
	}
	if l := must[[]identity.AccessKey](t, "ListAccessKeys")(s.ListAccessKeys(c, acct, "alice")); len(l) != identity.MaxAccessKeysPerUser {
		t.Fatalf("stored %d keys", len(l))
	}
}

func testTwoHandles(t *testing.T, s identity.Store) {
	re, isRe := s.(Reopener)
	if !isRe {
		t.Fatalf("%T cannot open a second handle (Reopen); the suite cannot check shared state", s)
	}
	c := ctx(t)
	s2, err := re.Reopen(c)
	if err != nil {
		t.Fatalf("Reopen: %v", err)
	}
	defer s2.Close()
	g1 := must[int64](t, "Generation on second handle")(s2.Generation(c))
	mkUser(t, s, "alice")
	if g2 := must[int64](t, "Generation on second handle")(s2.Generation(c)); g2 <= g1 {
		t.Fatalf("second handle does not see the generation move (%d → %d)", g1, g2)
	}
	if u := must[identity.User](t, "GetUser on second handle")(s2.GetUser(c, acct, "alice")); u.Name != "alice" {
		t.Fatalf("second handle sees %+v", u)
	}
	k, secret := must2(t, "CreateAccessKey on second handle")(s2.CreateAccessKey(c, acct, "alice"))
	got := must[identity.AccessKey](t, "GetAccessKey on first handle")(s.GetAccessKey(c, k.ID))
	if plain, err := Sealer(t).OpenSecret(k.ID, got.SealedSecret); err != nil || plain != secret {
		t.Fatalf("key written by one handle does not open through the other: %v", err)
	}
	ok(t, "DeleteUser on second handle", s2.DeleteUser(c, acct, "alice", identity.DeleteOptions{Force: true}))
	_, err = s.GetUser(c, acct, "alice")
	wantErr(t, "first handle after delete on second", err, identity.ErrNotFound)
}

func ptr[T any](v T) *T { return &v }

func userNames(us []identity.User) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.Name)
	}
	return out
}

func groupNames(gs []identity.Group) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.Name)
	}
	return out
}

func roleNames(rs []identity.Role) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}
