package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadExample(t *testing.T) {
	cfg, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AccountID != "123456789012" || cfg.Region != "us-east-1" || len(cfg.Instances) != 2 {
		t.Fatalf("unexpected config: %+v", cfg)
	}
	dir, _ := filepath.Abs("testdata")
	if cfg.DataDir != filepath.Join(dir, "iamdb-data") {
		t.Errorf("data_dir not resolved against the file's directory: %s", cfg.DataDir)
	}
	if cfg.Audit.File != filepath.Join(dir, "iamdb-data", "audit.jsonl") {
		t.Errorf("audit.file = %s", cfg.Audit.File)
	}
	orders, err := cfg.Instance("orders")
	if err != nil {
		t.Fatal(err)
	}
	if orders.Region != "us-east-1" || orders.BackendAuth.AdminPasswordEnv != "IAMDB_PG_ADMIN_PASSWORD" || len(orders.Endpoints) != 2 {
		t.Errorf("orders: %+v", orders)
	}
	shop, _ := cfg.Instance("shop")
	if shop.Upstream.TLS != "disable" || shop.Limits.NewLoginsPerSecond != DefaultNewLoginsPerSecond ||
		shop.Limits.MaxConnections != DefaultMaxConnections || shop.Endpoints[0] != "127.0.0.1:6033" {
		t.Errorf("defaults not applied to shop: %+v", shop)
	}
	if shop.BackendAuth.SecretsFile != filepath.Join(dir, "secrets.yaml") {
		t.Errorf("secrets_file not resolved: %s", shop.BackendAuth.SecretsFile)
	}
	if cfg.DrainTimeout.D() != 30*time.Second || shop.HandshakeTimeout.D() != 10*time.Second ||
		shop.Upstream.DialTimeout.D() != 5*time.Second || shop.BackendAuth.RotateEvery.D() != 24*time.Hour {
		t.Errorf("duration defaults: drain %v handshake %v dial %v rotate %v", cfg.DrainTimeout.D(), shop.HandshakeTimeout.D(), shop.Upstream.DialTimeout.D(), shop.BackendAuth.RotateEvery.D())
	}
	if !shop.IsIAMUser("app") || !shop.IsIAMUser("report_daily") || shop.IsIAMUser("admin") || shop.IsIAMUser("App") {
		t.Error("IsIAMUser does not follow iam_users")
	}
	if _, err := cfg.Instance("nope"); err == nil || !strings.Contains(err.Error(), "configured: orders, shop") {
		t.Errorf("unknown instance error: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	const pgInstance = `instances:
  - name: a
    engine: postgres
    resource_id: db-AAAA
    listen: 127.0.0.1:1
    upstream: {address: 127.0.0.1:2}
    backend_auth: {mode: trust}
`
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"empty", "  \n", []string{"the file is empty"}},
		{"unknown top key", "region: us-east-1\nregoin: x\n", []string{"line 2: unknown key regoin"}},
		{"unknown nested key", "api:\n  listen: 127.0.0.1:1\n  lisen: x\n", []string{"line 3: unknown key lisen"}},
		{"wrong type", "instances: 5\n", []string{"line 1:", "wrong type"}},
		{"bad yaml", "a: [\n", []string{"not valid YAML"}},
		{"two documents", "region: us-east-1\n---\nregion: eu-west-1\n", []string{"more than one YAML document"}},
		{"bad account", "account_id: 1234\n", []string{"line 1: account_id", "12-digit"}},
		{"bad region", "region: Mars\n", []string{"region", "not a region name"}},
		{"bad store", "store: mysql://x\n", []string{"store: must be a postgres://"}},
		{"bad listen", "api: {listen: nope}\n", []string{"api.listen", "not host:port"}},
		{"bad engine", strings.Replace(pgInstance, "postgres", "oracle", 1), []string{"line 3: instances[0].engine", `"oracle"`}},
		{"bad resource id", strings.Replace(pgInstance, "db-AAAA", "orders", 1), []string{"line 4: instances[0].resource_id"}},
		{"duplicate name", pgInstance + strings.Replace(strings.TrimPrefix(pgInstance, "instances:\n"), "127.0.0.1:1", "127.0.0.1:3", 1),
			[]string{"instances[1].name", "used by another instance"}},
		{"duplicate listen", pgInstance + strings.Replace(strings.TrimPrefix(pgInstance, "instances:\n"), "name: a", "name: b", 1),
			[]string{"instances[1].listen", "already the listen address"}},
		{"mysql without iam_users", strings.Replace(pgInstance, "postgres", "mysql", 1), []string{"instances[0].iam_users", "required for mysql"}},
		{"verify-full without ca", strings.Replace(pgInstance, "{address: 127.0.0.1:2}", "{address: 127.0.0.1:2, tls: verify-full}", 1), []string{"upstream.ca"}},
		{"bad tls mode", strings.Replace(pgInstance, "{address: 127.0.0.1:2}", "{address: 127.0.0.1:2, tls: prefer}", 1), []string{"upstream.tls", `"prefer"`}},
		{"managed without admin", strings.Replace(pgInstance, "{mode: trust}", "{mode: managed}", 1), []string{"backend_auth.admin_user"}},
		{"secrets without file", strings.Replace(pgInstance, "{mode: trust}", "{mode: secrets}", 1), []string{"backend_auth.secrets_file"}},
		{"negative limit", pgInstance + "    limits: {max_connections: -1}\n", []string{"limits cannot be negative"}},
		{"bad duration", "drain_timeout: soon\n", []string{"line 1:", `"soon" is not a duration`}},
		{"bad audit_statements", pgInstance + "    audit_statements: some\n", []string{"line 8:", `audit_statements "some"`}},
		{"bad audit_statements pattern", pgInstance + "    audit_statements: [\"[\"]\n", []string{"instances[0].audit_statements[0]"}},
		{"bad audit size", "audit: {max_size: lots}\n", []string{"line 1:", `"lots" is not a size`}},
		{"tiny audit size", "audit: {max_size: 10}\n", []string{"audit.max_size", "too small"}},
		{"negative fsync interval", "audit: {fsync_interval: -1s}\n", []string{"audit.fsync_interval", "negative"}},
		{"several problems at once", "region: Mars\naccount_id: x\n", []string{"region", "account_id"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDurations(t *testing.T) {
	cfg, err := Parse([]byte("drain_timeout: 90\ninstances:\n  - {name: a, engine: postgres, resource_id: db-A, listen: 127.0.0.1:1, upstream: {address: 127.0.0.1:2, dial_timeout: 250ms}, backend_auth: {mode: trust, rotate_every: 12h}, handshake_timeout: 2s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	in := cfg.Instances[0]
	if cfg.DrainTimeout.D() != 90*time.Second || in.Upstream.DialTimeout.D() != 250*time.Millisecond ||
		in.BackendAuth.RotateEvery.D() != 12*time.Hour || in.HandshakeTimeout.D() != 2*time.Second {
		t.Fatalf("durations: %+v", cfg)
	}
}

func TestAuditSettings(t *testing.T) {
	const inst = "instances:\n  - {name: %s, engine: postgres, resource_id: db-A, listen: 127.0.0.1:%d, upstream: {address: 127.0.0.1:2}, backend_auth: {mode: trust}%s}\n"
	doc := "audit: {fail_closed: true, fsync_interval: 20ms, max_size: 8MiB}\n" +
		fmt.Sprintf(inst, "a", 1, "") +
		strings.TrimPrefix(fmt.Sprintf(inst, "b", 3, ", audit_statements: all, audit_parameters: true"), "instances:\n") +
		strings.TrimPrefix(fmt.Sprintf(inst, "c", 5, `, audit_statements: [app, "report_*"]`), "instances:\n") +
		strings.TrimPrefix(fmt.Sprintf(inst, "d", 7, ", audit_statements: none"), "instances:\n")
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Audit.FailClosed || cfg.Audit.FsyncInterval.D() != 20*time.Millisecond || cfg.Audit.MaxSize != 8<<20 {
		t.Fatalf("audit: %+v", cfg.Audit)
	}
	a, b, c, d := cfg.Instances[0], cfg.Instances[1], cfg.Instances[2], cfg.Instances[3]
	if a.AuditStatements.Enabled("app") || d.AuditStatements.Enabled("app") || a.AuditParameters {
		t.Error("statement audit on by default or with none")
	}
	if !b.AuditStatements.Enabled("anyone") || !b.AuditParameters {
		t.Errorf("all: %+v", b.AuditStatements)
	}
	if !c.AuditStatements.Enabled("app") || !c.AuditStatements.Enabled("report_x") || c.AuditStatements.Enabled("admin") {
		t.Errorf("list: %+v", c.AuditStatements)
	}
	def, _ := Parse([]byte("region: us-east-1\n"))
	if def.Audit.FsyncInterval != DefaultAuditFsyncInterval || def.Audit.MaxSize != DefaultAuditMaxSize || def.Audit.FailClosed {
		t.Errorf("audit defaults: %+v", def.Audit)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "iamdb.yaml"))
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("got %v", err)
	}
}

func TestLoadErrorNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "iamdb.yaml")
	if err := os.WriteFile(p, []byte("bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+": line 1: unknown key bogus") {
		t.Fatalf("got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte("region: us-east-1\n"))
	f.Add([]byte("instances: [{name: a}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		// Whatever parses must satisfy Validate again and carry defaults.
		if cfg.Region == "" || cfg.DataDir == "" || cfg.API.Listen == "" {
			t.Fatalf("defaults missing: %+v", cfg)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
	})
}

func TestPoolSettings(t *testing.T) {
	const inst = "instances:\n  - {name: a, engine: postgres, resource_id: db-A, listen: 127.0.0.1:1, upstream: {address: 127.0.0.1:2}, backend_auth: {mode: trust}%s}\n"
	def, err := Parse([]byte(fmt.Sprintf(inst, "")))
	if err != nil {
		t.Fatal(err)
	}
	if p := def.Instances[0].Pool; !p.On() || p.MaxIdle != DefaultPoolMaxIdle || p.MaxIdlePerKey != DefaultPoolMaxIdlePerKey ||
		p.IdleTimeout != DefaultPoolIdleTimeout || p.MaxLifetime != DefaultPoolMaxLifetime {
		t.Errorf("pool defaults: %+v", p)
	}
	set, err := Parse([]byte(fmt.Sprintf(inst, ", pool: {enabled: false, max_idle: 4, idle_timeout: 5s, max_lifetime: 10m}")))
	if err != nil {
		t.Fatal(err)
	}
	if p := set.Instances[0].Pool; p.On() || p.MaxIdle != 4 || p.MaxIdlePerKey != 4 || p.IdleTimeout.D() != 5*time.Second || p.MaxLifetime.D() != 10*time.Minute {
		t.Errorf("pool settings: %+v", p)
	}

	for _, tc := range []struct {
		name, pool string
		want       []string
	}{
		{"unknown key", "{max_idel: 3}", []string{"unknown key max_idel"}},
		{"wrong type", "{enabled: sometimes}", []string{"wrong type"}},
		{"negative max_idle", "{max_idle: -1}", []string{"instances[0].pool.max_idle", "use 1 to"}},
		{"per key above max_idle", "{max_idle: 5, max_idle_per_key: 6}", []string{"instances[0].pool.max_idle_per_key", "max_idle (5)"}},
		{"negative idle_timeout", "{idle_timeout: -1s}", []string{"instances[0].pool.idle_timeout", "negative"}},
		{"negative max_lifetime", "{max_lifetime: -1s}", []string{"instances[0].pool.max_lifetime", "negative"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(fmt.Sprintf(inst, ", pool: "+tc.pool)))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	mysql := "instances:\n  - {name: m, engine: mysql, iam_users: [app], resource_id: db-A, listen: 127.0.0.1:1, upstream: {address: 127.0.0.1:2}, backend_auth: {mode: trust}, pool: {max_idle: 3}}\n"
	c, err := Parse([]byte(mysql))
	if err != nil {
		t.Fatalf("pool on a mysql instance: %v", err)
	}
	if p := c.Instances[0].Pool; p.MaxIdle != 3 || !p.On() {
		t.Errorf("mysql pool = %+v, want max_idle 3 and on", p)
	}
}
