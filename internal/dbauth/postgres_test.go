package dbauth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/dbauth"
)

// TestSetupAndMembership runs first in this file's order on purpose: it
// drops rds_iam to prove what happens without it, then creates it again.
func TestSetupAndMembership(t *testing.T) {
	pg := upstream(t)
	ctx := t.Context()
	p := newPostgres(t, dbauth.PostgresOptions{Instance: instance(pg, "trust"), LookupEnv: env(pg)})

	adminExec(t, pg, "DROP ROLE IF EXISTS rds_iam")
	_, err := p.IsIAMUser(ctx, "anyone")
	if !errors.Is(err, dbauth.ErrNoIAMRole) || !strings.Contains(err.Error(), "role rds_iam does not exist on instance orders: run 'iamdb db setup --instance orders'") {
		t.Fatalf("IsIAMUser without rds_iam: %v", err)
	}

	created, err := p.EnsureIAMRole(ctx)
	if err != nil || !created {
		t.Fatalf("first EnsureIAMRole = %v, %v; want created", created, err)
	}
	created, err = p.EnsureIAMRole(ctx)
	if err != nil || created {
		t.Fatalf("second EnsureIAMRole = %v, %v; want a no-op", created, err)
	}
	if err := p.Setup(ctx); err != nil {
		t.Fatalf("Setup again: %v", err)
	}
	conn, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	var canLogin bool
	if err := conn.QueryRow(ctx, `SELECT count(*), bool_or(rolcanlogin) FROM pg_roles WHERE rolname = 'rds_iam'`).Scan(&n, &canLogin); err != nil {
		t.Fatal(err)
	}
	if n != 1 || canLogin {
		t.Fatalf("rds_iam: %d roles, canlogin=%v; want one NOLOGIN role", n, canLogin)
	}

	member := newRole(t, pg, "member")
	adminExec(t, pg, "GRANT rds_iam TO "+member)
	nonMember := newRole(t, pg, "plain")
	group := newRole(t, pg, "group")
	adminExec(t, pg, "GRANT rds_iam TO "+group)
	indirect := newRole(t, pg, "indirect")
	adminExec(t, pg, "GRANT "+group+" TO "+indirect)
	for _, tc := range []struct {
		user string
		want bool
	}{
		{member, true},
		{indirect, true},
		{nonMember, false},
		{"no_such_user_anywhere", false},
		{`we"ird'; DROP ROLE x; --`, false},
		// Superusers pass pg_has_role for every role; they must not become
		// IAM-only (the admin user would lock itself out).
		{pg.Superuser, false},
	} {
		got, err := p.IsIAMUser(ctx, tc.user)
		if err != nil || got != tc.want {
			t.Errorf("IsIAMUser(%q) = %v, %v; want %v", tc.user, got, err, tc.want)
		}
	}
}

func TestMembershipCacheExpires(t *testing.T) {
	pg := upstream(t)
	ctx := t.Context()
	clk := newClock()
	p := newPostgres(t, dbauth.PostgresOptions{Instance: instance(pg, "trust"), LookupEnv: env(pg), Now: clk.Now, MembershipTTL: 5 * time.Second})
	if err := p.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	user := newRole(t, pg, "cached")
	check := func(want bool, when string) {
		t.Helper()
		got, err := p.IsIAMUser(ctx, user)
		if err != nil || got != want {
			t.Fatalf("%s: IsIAMUser = %v, %v; want %v", when, got, err, want)
		}
	}
	check(false, "before the grant")
	adminExec(t, pg, "GRANT rds_iam TO "+user)
	check(false, "right after the grant (negative answer cached)")
	clk.Advance(4 * time.Second)
	check(false, "4s after the grant")
	clk.Advance(time.Second)
	check(true, "after the TTL")
	adminExec(t, pg, "REVOKE rds_iam FROM "+user)
	check(true, "right after the revoke (positive answer cached)")
	clk.Advance(5 * time.Second)
	check(false, "after the TTL")
}

func TestIAMUsersOverrideMembership(t *testing.T) {
	pg := upstream(t)
	ctx := t.Context()
	in := instance(pg, "trust")
	in.IAMUsers = []string{"app", "report_*"}
	// No admin user at all: with iam_users and mode trust none is needed.
	in.BackendAuth.AdminUser, in.BackendAuth.AdminPasswordEnv = "", ""
	p := newPostgres(t, dbauth.PostgresOptions{Instance: in})
	for user, want := range map[string]bool{"app": true, "report_eu": true, "report": false, "apps": false, "postgres": false} {
		if got, err := p.IsIAMUser(ctx, user); err != nil || got != want {
			t.Errorf("IsIAMUser(%q) = %v, %v; want %v", user, got, err, want)
		}
	}
	if err := p.Setup(ctx); err == nil || !strings.Contains(err.Error(), "backend_auth.admin_user is not set") {
		t.Errorf("Setup without an admin user: %v", err)
	}

	// And the list wins over membership when both could answer.
	in = instance(pg, "trust")
	in.IAMUsers = []string{"app"}
	p = newPostgres(t, dbauth.PostgresOptions{Instance: in, LookupEnv: env(pg)})
	if err := p.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	member := newRole(t, pg, "listed_not")
	adminExec(t, pg, "GRANT rds_iam TO "+member)
	if got, err := p.IsIAMUser(ctx, member); err != nil || got {
		t.Errorf("rds_iam member not in iam_users: IsIAMUser = %v, %v; want false", got, err)
	}
}

func TestTrustReturnsNoPassword(t *testing.T) {
	pg := upstream(t)
	in := instance(pg, "trust")
	in.IAMUsers = []string{"app"}
	p := newPostgres(t, dbauth.PostgresOptions{Instance: in, LookupEnv: env(pg)})
	pw, err := p.Password(t.Context(), "app")
	if err != nil || pw != "" {
		t.Fatalf("Password in mode trust = %q, %v; want \"\"", pw, err)
	}
	if err := p.Rotate(t.Context(), "app"); err == nil || !strings.Contains(err.Error(), "only mode managed") {
		t.Fatalf("Rotate in mode trust: %v", err)
	}
}

func TestAdminLoginErrors(t *testing.T) {
	pg := upstream(t)
	const wrong = "definitely-Not-The-Password-42"
	opt := dbauth.PostgresOptions{
		Instance:  instance(pg, "trust"),
		LookupEnv: func(string) (string, bool) { return wrong, true },
	}
	_, err := dbauth.NewPostgres(t.Context(), opt)
	if err == nil {
		t.Fatal("NewPostgres with a wrong admin password succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"instance orders: admin login as postgres", "check backend_auth.admin_user and " + adminEnv} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, wrong) {
		t.Errorf("error reveals the admin password: %q", msg)
	}

	opt.LookupEnv = func(string) (string, bool) { return "", false }
	if _, err := dbauth.NewPostgres(t.Context(), opt); err == nil || !strings.Contains(err.Error(), "environment variable "+adminEnv+" is not set") {
		t.Errorf("NewPostgres with the variable unset: %v", err)
	}

	// An upstream that is down is not a configuration error: NewPostgres
	// succeeds and the first lookup explains.
	opt = dbauth.PostgresOptions{Instance: instance(pg, "trust"), LookupEnv: env(pg)}
	opt.Instance.Upstream.Address = "127.0.0.1:1"
	opt.Instance.Upstream.TLS = "disable"
	p := newPostgres(t, opt)
	if _, err := p.IsIAMUser(t.Context(), "app"); err == nil || !strings.Contains(err.Error(), "admin login as postgres to 127.0.0.1:1 failed") {
		t.Errorf("IsIAMUser with the upstream down: %v", err)
	}
}

func TestNotPostgres(t *testing.T) {
	in := instance(upstreamNoServer(), "trust")
	in.Engine = "mysql"
	if _, err := dbauth.NewPostgres(t.Context(), dbauth.PostgresOptions{Instance: in}); err == nil {
		t.Fatal("NewPostgres accepted a mysql instance")
	}
	in.Engine = "postgres"
	in.BackendAuth.Mode = "managed"
	if _, err := dbauth.NewPostgres(t.Context(), dbauth.PostgresOptions{Instance: in}); err == nil || !strings.Contains(err.Error(), "store and master key") {
		t.Fatalf("managed without a store: %v", err)
	}
}

func TestReloadIAMUsers(t *testing.T) {
	in := instance(upstreamNoServer(), "trust")
	in.IAMUsers = []string{"alice"}
	in.Upstream.TLS = "disable"
	p := newPostgres(t, dbauth.PostgresOptions{Instance: in, LookupEnv: func(string) (string, bool) { return "", false }})
	ctx := t.Context()
	if ok, _ := p.IsIAMUser(ctx, "alice"); !ok {
		t.Fatal("alice not an IAM user before reload")
	}
	in.IAMUsers = []string{"bob"}
	if err := p.Reload(ctx, in); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.IsIAMUser(ctx, "alice"); ok {
		t.Fatal("alice still an IAM user after reload")
	}
	if ok, _ := p.IsIAMUser(ctx, "bob"); !ok {
		t.Fatal("bob not an IAM user after reload")
	}
	in.Name = "billing"
	if err := p.Reload(ctx, in); err == nil {
		t.Fatal("Reload accepted another instance")
	}
	// Dropping iam_users needs the admin connection, whose password is
	// missing here: the reload is refused and the old list stays.
	in.Name, in.IAMUsers = "orders", nil
	if err := p.Reload(ctx, in); err == nil || !strings.Contains(err.Error(), adminEnv) {
		t.Fatalf("Reload that needs an unreadable admin password: %v", err)
	}
	if ok, _ := p.IsIAMUser(ctx, "bob"); !ok {
		t.Fatal("a failed Reload changed the IAM users")
	}
}
