package dbauth_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iamdb/iamdb/internal/dbauth"
)

func writeSecrets(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestSecretsMode(t *testing.T) {
	pg := upstream(t)
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "secrets.yaml")
	writeSecrets(t, path, "app: s3cret-app\nreport: \"with: colon\"\nnumeric: 12345\n", 0o600)
	in := instance(pg, "secrets")
	in.BackendAuth.SecretsFile = path
	p := newPostgres(t, dbauth.PostgresOptions{Instance: in, LookupEnv: env(pg)})

	for user, want := range map[string]string{"app": "s3cret-app", "report": "with: colon", "numeric": "12345"} {
		if got, err := p.Password(ctx, user); err != nil || got != want {
			t.Errorf("Password(%s) = %q, %v; want %q", user, got, err, want)
		}
	}
	_, err := p.Password(ctx, "ghost")
	if err == nil || !strings.Contains(err.Error(), `"ghost"`) || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing user: %v, want an error naming the user and the file", err)
	}

	// Reload picks up a change...
	writeSecrets(t, path, "app: rotated-by-operator\nghost: boo\n", 0o600)
	if err := p.Reload(ctx, in); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got, _ := p.Password(ctx, "app"); got != "rotated-by-operator" {
		t.Fatalf("after Reload Password(app) = %q", got)
	}
	if got, _ := p.Password(ctx, "ghost"); got != "boo" {
		t.Fatalf("after Reload Password(ghost) = %q", got)
	}
	// ...and a broken file keeps the previous secrets in force.
	writeSecrets(t, path, "app: [not, a, string]\n", 0o600)
	if err := p.Reload(ctx, in); err == nil || !strings.Contains(err.Error(), "must be a plain string") {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	if got, _ := p.Password(ctx, "app"); got != "rotated-by-operator" {
		t.Fatalf("a failed Reload changed the secrets: %q", got)
	}
}

func TestSecretsFileRefusals(t *testing.T) {
	dir := t.TempDir()
	in := instance(upstreamNoServer(), "secrets")
	in.IAMUsers = []string{"app"} // no admin connection needed
	in.BackendAuth.AdminUser, in.BackendAuth.AdminPasswordEnv = "", ""
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"group readable", "app: pw\n", 0o640, "chmod 600"},
		{"world readable", "app: pw\n", 0o604, "chmod 600"},
		{"not a map", "- app\n- pw\n", 0o600, "expected a map"},
		{"bad YAML", "app: \"unterminated-Secret-Value\n", 0o600, "not valid YAML"},
		{"duplicate", "app: a\napp: b\n", 0o600, "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			writeSecrets(t, path, tc.content, tc.mode)
			in.BackendAuth.SecretsFile = path
			_, err := dbauth.NewPostgres(t.Context(), dbauth.PostgresOptions{Instance: in})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewPostgres: %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "Secret-Value") {
				t.Fatalf("error quotes the file's content: %v", err)
			}
		})
	}
	in.BackendAuth.SecretsFile = filepath.Join(dir, "missing.yaml")
	if _, err := dbauth.NewPostgres(t.Context(), dbauth.PostgresOptions{Instance: in}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestAdminPasswordFile(t *testing.T) {
	pg := upstream(t)
	path := filepath.Join(t.TempDir(), "admin.pw")
	writeSecrets(t, path, "  "+pg.Password+"\n", 0o600)
	in := instance(pg, "trust")
	in.BackendAuth.AdminPasswordEnv, in.BackendAuth.AdminPasswordFile = "", path
	p := newPostgres(t, dbauth.PostgresOptions{Instance: in})
	if err := p.Setup(t.Context()); err != nil {
		t.Fatalf("Setup with the password from a file: %v", err)
	}

	// Reload with a wrong password: existing admin connections stay, new
	// ones use the new password; a fresh Postgres reports it with the file.
	writeSecrets(t, path, "wrong\n", 0o600)
	if _, err := dbauth.NewPostgres(t.Context(), dbauth.PostgresOptions{Instance: in}); err == nil || !strings.Contains(err.Error(), "check backend_auth.admin_user and "+path) {
		t.Fatalf("wrong password in the file: %v", err)
	}
	writeSecrets(t, path, pg.Password, 0o644)
	if _, err := dbauth.NewPostgres(t.Context(), dbauth.PostgresOptions{Instance: in}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable password file: %v", err)
	}
}
