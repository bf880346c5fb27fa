package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file.
type Config struct {
	DataDir   string     `yaml:"data_dir"`
	Region    string     `yaml:"region"`
	AccountID string     `yaml:"account_id"`
	Partition string     `yaml:"partition"`
	Store     string     `yaml:"store"` // "" = SQLite in the data dir; postgres://… shared store
	Redis     string     `yaml:"redis"`
	API       API        `yaml:"api"`
	Metrics   Metrics    `yaml:"metrics"`
	Audit     Audit      `yaml:"audit"`
	Instances []Instance `yaml:"instances"`
	// DrainTimeout is how long SIGTERM waits for sessions to finish before
	// closing them.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// RedisFailure is what limits do while Redis cannot be reached:
	// local (each replica enforces them in memory) or refuse (new
	// connections are refused).
	RedisFailure string `yaml:"redis_failure"`

	// Path is the file the configuration was loaded from ("" if none).
	Path string `yaml:"-"`
	// lines maps a dotted key path to its line in the file, for messages.
	lines map[string]int
}

// API is the STS-compatible endpoint.
type API struct {
	Listen string `yaml:"listen"`
}

// Metrics is the Prometheus and health endpoint.
type Metrics struct {
	Listen string `yaml:"listen"`
}

// Audit configures the audit log.
type Audit struct {
	File       string `yaml:"file"`
	FailClosed bool   `yaml:"fail_closed"`
	// FsyncInterval bounds how long an event may stay unsynced: events
	// the listeners wait for are fsynced at once in groups, statement
	// events at the latest after this interval.
	FsyncInterval Duration `yaml:"fsync_interval"`
	// MaxSize is the size at which audit.file is rotated to audit.file.N.
	MaxSize Size `yaml:"max_size"`
}

// Instance is one database behind one listener.
type Instance struct {
	Name        string      `yaml:"name"`
	Engine      string      `yaml:"engine"`
	ResourceID  string      `yaml:"resource_id"`
	Region      string      `yaml:"region"`
	Listen      string      `yaml:"listen"`
	Endpoints   []string    `yaml:"endpoints"`
	TLS         *ServerTLS  `yaml:"tls"`
	Upstream    Upstream    `yaml:"upstream"`
	Pool        Pool        `yaml:"pool"`
	BackendAuth BackendAuth `yaml:"backend_auth"`
	IAMUsers    []string    `yaml:"iam_users"`
	Limits      Limits      `yaml:"limits"`
	// HandshakeTimeout bounds a login from accept to ready session.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	// AuditStatements selects the sessions whose statements are audited
	// one by one: none (default), all, or a list of database users (names
	// or patterns as in iam_users).
	AuditStatements StatementAudit `yaml:"audit_statements"`
	// AuditParameters adds bound parameter values to statement events.
	AuditParameters bool `yaml:"audit_parameters"`
}

// StatementAudit is audit_statements: `none`, `all`, or a list of
// database users.
type StatementAudit struct {
	All   bool
	Users []string
}

// UnmarshalYAML accepts none, all, or a sequence of user names/patterns.
func (s *StatementAudit) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.Value {
		case "", "none", "false":
			*s = StatementAudit{}
		case "all", "true":
			*s = StatementAudit{All: true}
		default:
			return fmt.Errorf("line %d: audit_statements %q: use none, all, or a list of database users like [app, \"report_*\"]", n.Line, n.Value)
		}
		return nil
	case yaml.SequenceNode:
		var users []string
		if err := n.Decode(&users); err != nil {
			return fmt.Errorf("line %d: audit_statements: a list of database user names: %w", n.Line, err)
		}
		*s = StatementAudit{Users: users}
		return nil
	}
	return fmt.Errorf("line %d: audit_statements: use none, all, or a list of database users", n.Line)
}

// Enabled reports whether dbUser's sessions get statement audit.
func (s StatementAudit) Enabled(dbUser string) bool {
	if s.All {
		return true
	}
	for _, p := range s.Users {
		if ok, _ := filepath.Match(p, dbUser); ok {
			return true
		}
	}
	return false
}

// Size is a byte count written as 104857600, "100MiB", "512KiB", "1GiB"
// or "10MB".
type Size int64

// UnmarshalYAML accepts a number of bytes or a number with a unit.
func (z *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected a size such as 100MiB", n.Line)
	}
	v := strings.TrimSpace(n.Value)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	num, err := strconv.ParseInt(v, 10, 64)
	if err != nil || num < 0 {
		return fmt.Errorf("line %d: %q is not a size: write it like 100MiB, 512KiB or a number of bytes", n.Line, n.Value)
	}
	*z = Size(num * mult)
	return nil
}

// ServerTLS names the certificate a listener presents (default: the data
// dir's server certificate).
type ServerTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Upstream is the real database server.
type Upstream struct {
	Address     string   `yaml:"address"`
	TLS         string   `yaml:"tls"` // disable | require | verify-full
	CA          string   `yaml:"ca"`
	DialTimeout Duration `yaml:"dial_timeout"`
}

// BackendAuth says how iamdb logs in to the upstream as the database user.
type BackendAuth struct {
	Mode              string `yaml:"mode"` // managed | secrets | trust
	AdminUser         string `yaml:"admin_user"`
	AdminPasswordEnv  string `yaml:"admin_password_env"`
	AdminPasswordFile string `yaml:"admin_password_file"`
	SecretsFile       string `yaml:"secrets_file"`
	// RotateEvery is how often mode managed replaces a user's password.
	RotateEvery Duration `yaml:"rotate_every"`
}

// Pool is the reuse of upstream sessions by IAM logins (both engines): a
// session whose client ended cleanly is reset and kept
// for the next login of the same principal, database user, database and
// startup parameters.
type Pool struct {
	// Enabled false makes every IAM login open its own upstream session;
	// default true.
	Enabled *bool `yaml:"enabled"`
	// MaxIdle bounds the idle upstream sessions kept by the instance,
	// MaxIdlePerKey those of one user, database and parameter set.
	MaxIdle       int `yaml:"max_idle"`
	MaxIdlePerKey int `yaml:"max_idle_per_key"`
	// IdleTimeout closes a session idle this long; MaxLifetime one this
	// old.
	IdleTimeout Duration `yaml:"idle_timeout"`
	MaxLifetime Duration `yaml:"max_lifetime"`
}

// Defaults of an instance's pool.
const (
	DefaultPoolMaxIdle       = 20
	DefaultPoolMaxIdlePerKey = 10
	DefaultPoolIdleTimeout   = Duration(60 * time.Second)
	DefaultPoolMaxLifetime   = Duration(time.Hour)
	maxPoolIdle              = 10_000
)

// On reports whether upstream sessions are reused.
func (p Pool) On() bool { return p.Enabled == nil || *p.Enabled }

func (p *Pool) applyDefaults() {
	if p.Enabled == nil {
		on := true
		p.Enabled = &on
	}
	if p.MaxIdle == 0 {
		p.MaxIdle = DefaultPoolMaxIdle
	}
	if p.MaxIdlePerKey == 0 {
		p.MaxIdlePerKey = min(DefaultPoolMaxIdlePerKey, p.MaxIdle)
	}
	if p.IdleTimeout == 0 {
		p.IdleTimeout = DefaultPoolIdleTimeout
	}
	if p.MaxLifetime == 0 {
		p.MaxLifetime = DefaultPoolMaxLifetime
	}
}

// check reports the problems of p to add, by key under pool.
func (p Pool) check(add func(key, format string, args ...any)) {
	if p.MaxIdle < 0 || p.MaxIdle > maxPoolIdle {
		add("max_idle", "%d: use 1 to %d idle upstream sessions (each is a connection the database counts against max_connections)", p.MaxIdle, maxPoolIdle)
	}
	if p.MaxIdlePerKey < 0 || (p.MaxIdle > 0 && p.MaxIdlePerKey > p.MaxIdle) {
		add("max_idle_per_key", "%d: use 1 to max_idle (%d)", p.MaxIdlePerKey, p.MaxIdle)
	}
	if p.IdleTimeout < 0 {
		add("idle_timeout", "cannot be negative")
	}
	if p.MaxLifetime < 0 {
		add("max_lifetime", "cannot be negative")
	}
}

// Limits is admission control for one instance.
type Limits struct {
	// Enabled false switches admission control off for the instance
	// (benchmarks compare on and off); default true.
	Enabled             *bool `yaml:"enabled"`
	NewLoginsPerSecond  int   `yaml:"new_logins_per_second"`
	PrincipalsPerSecond int   `yaml:"principals_per_second"`
	// NewLoginsPerPrincipalPerSecond limits the distinct tokens one
	// principal logs in with per second; 0 (default) is no limit.
	NewLoginsPerPrincipalPerSecond int `yaml:"new_logins_per_principal_per_second"`
	MaxConnections                 int `yaml:"max_connections"`
	// MaxConnectionsPerUser caps the client connections as one database
	// user; 0 (default) is no cap.
	MaxConnectionsPerUser int          `yaml:"max_connections_per_user"`
	FailedLogins          FailedLogins `yaml:"failed_logins"`
}

// On reports whether admission control is enabled.
func (l Limits) On() bool { return l.Enabled == nil || *l.Enabled }

// FailedLogins is the protection against repeated failed logins from one
// source address: back-off, then a temporary block.
type FailedLogins struct {
	// BlockAfter failures block the address for BlockFor; 0 never blocks.
	BlockAfter *int     `yaml:"block_after"`
	BlockFor   Duration `yaml:"block_for"`
	// Window: failures are forgotten after this long without one.
	Window Duration `yaml:"window"`
	// BackoffAfter failures make the address wait Backoff before its next
	// attempt, doubling with each further failure; 0 is no back-off.
	BackoffAfter *int     `yaml:"backoff_after"`
	Backoff      Duration `yaml:"backoff"`
}

// Defaults for keys left out of the file.
const (
	DefaultDataDir             = "./iamdb-data"
	DefaultRegion              = "us-east-1"
	DefaultPartition           = "aws"
	DefaultAPIListen           = "127.0.0.1:8787"
	DefaultMetricsListen       = "127.0.0.1:9187"
	DefaultNewLoginsPerSecond  = 200
	DefaultPrincipalsPerSecond = 20
	DefaultMaxConnections      = 1000
	DefaultRedisFailure        = "local"
	DefaultFailedLoginsBlock   = 10
	DefaultFailedLoginsBackoff = 3
	DefaultBlockFor            = Duration(5 * time.Minute)
	DefaultFailureWindow       = Duration(10 * time.Minute)
	DefaultBackoff             = Duration(time.Second)
	DefaultDrainTimeout        = Duration(30 * time.Second)
	DefaultHandshakeTimeout    = Duration(10 * time.Second)
	DefaultDialTimeout         = Duration(5 * time.Second)
	DefaultRotateEvery         = Duration(24 * time.Hour)
	DefaultAuditFsyncInterval  = Duration(100 * time.Millisecond)
	DefaultAuditMaxSize        = Size(100 << 20)
)

// Duration is a time.Duration written in YAML as "30s", "5m", "24h" or a
// number of seconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML accepts Go duration strings and plain seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected a duration such as 30s, 5m or 24h", n.Line)
	}
	if secs, err := strconv.ParseFloat(n.Value, 64); err == nil {
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration: write it like 30s, 5m or 24h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Error lists every problem found in a configuration file.
type Error struct {
	Path     string
	Problems []string
}

func (e *Error) Error() string {
	name := e.Path
	if name == "" {
		name = "configuration"
	}
	if len(e.Problems) == 1 {
		return name + ": " + e.Problems[0]
	}
	return name + ":\n  " + strings.Join(e.Problems, "\n  ")
}

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("configuration file %s does not exist: create it (see docs/configuration.md) or pass --config", path)
		}
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.Path = path
		}
		return nil, err
	}
	cfg.Path = path
	// Relative paths in the file are relative to the file, not to wherever
	// the command happens to run.
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("resolving the configuration's directory: %w", err)
	}
	cfg.resolvePaths(base)
	return cfg, nil
}

// Parse decodes and validates a configuration document.
func Parse(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Error{Problems: []string{"the file is empty: it needs at least one setting (see docs/configuration.md)"}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		return nil, &Error{Problems: yamlProblems(err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{Problems: []string{"the file holds more than one YAML document: keep one"}}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err == nil {
		cfg.lines = map[string]int{}
		indexLines(&root, "", cfg.lines)
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// yamlProblems turns the decoder's messages ("line 3: field foo not found in
// type config.Config") into ones that speak of keys, not Go types.
func yamlProblems(err error) []string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []string{"not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	typeName := regexp.MustCompile(` in type config\.\w+`)
	out := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		msg := typeName.ReplaceAllString(e, "")
		msg = strings.Replace(msg, ": field ", ": unknown key ", 1)
		msg = strings.Replace(msg, " not found", " (check its spelling and indentation; see docs/configuration.md)", 1)
		msg = strings.Replace(msg, "cannot unmarshal !!", "wrong type: got ", 1)
		out = append(out, msg)
	}
	return out
}

// indexLines records the line of every mapping key as a dotted path, with
// sequence items as [i].
func indexLines(n *yaml.Node, prefix string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			out[p] = k.Line
			indexLines(n.Content[i+1], p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := prefix + "[" + strconv.Itoa(i) + "]"
			out[p] = c.Line
			indexLines(c, p, out)
		}
	}
}

func (c *Config) applyDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.Partition == "" {
		c.Partition = DefaultPartition
	}
	if c.API.Listen == "" {
		c.API.Listen = DefaultAPIListen
	}
	if c.Metrics.Listen == "" {
		c.Metrics.Listen = DefaultMetricsListen
	}
	if c.Audit.File == "" {
		c.Audit.File = filepath.Join(c.DataDir, "audit.jsonl")
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Audit.FsyncInterval == 0 {
		c.Audit.FsyncInterval = DefaultAuditFsyncInterval
	}
	if c.Audit.MaxSize == 0 {
		c.Audit.MaxSize = DefaultAuditMaxSize
	}
	if c.RedisFailure == "" {
		c.RedisFailure = DefaultRedisFailure
	}
	for i := range c.Instances {
		in := &c.Instances[i]
		if in.Region == "" {
			in.Region = c.Region
		}
		if len(in.Endpoints) == 0 && in.Listen != "" {
			in.Endpoints = []string{in.Listen}
		}
		if in.Upstream.TLS == "" {
			in.Upstream.TLS = "disable"
		}
		if in.BackendAuth.Mode == "" {
			in.BackendAuth.Mode = "managed"
		}
		if in.Limits.NewLoginsPerSecond == 0 {
			in.Limits.NewLoginsPerSecond = DefaultNewLoginsPerSecond
		}
		if in.Limits.PrincipalsPerSecond == 0 {
			in.Limits.PrincipalsPerSecond = DefaultPrincipalsPerSecond
		}
		if in.Limits.MaxConnections == 0 {
			in.Limits.MaxConnections = DefaultMaxConnections
		}
		in.Limits.FailedLogins.applyDefaults()
		if in.HandshakeTimeout == 0 {
			in.HandshakeTimeout = DefaultHandshakeTimeout
		}
		if in.Upstream.DialTimeout == 0 {
			in.Upstream.DialTimeout = DefaultDialTimeout
		}
		if in.BackendAuth.RotateEvery == 0 {
			in.BackendAuth.RotateEvery = DefaultRotateEvery
		}
		in.Pool.applyDefaults()
	}
}

func (c *Config) resolvePaths(base string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	dataDirWasDefault := c.Audit.File == filepath.Join(c.DataDir, "audit.jsonl")
	abs(&c.DataDir)
	if dataDirWasDefault {
		c.Audit.File = filepath.Join(c.DataDir, "audit.jsonl")
	} else {
		abs(&c.Audit.File)
	}
	for i := range c.Instances {
		in := &c.Instances[i]
		if in.TLS != nil {
			abs(&in.TLS.Cert)
			abs(&in.TLS.Key)
		}
		abs(&in.Upstream.CA)
		abs(&in.BackendAuth.AdminPasswordFile)
		abs(&in.BackendAuth.SecretsFile)
	}
}

var (
	accountRE  = regexp.MustCompile(`^[0-9]{12}$`)
	regionRE   = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$|^[a-z][a-z0-9-]{1,30}$`)
	resourceRE = regexp.MustCompile(`^(db|cluster|prx)-[A-Za-z0-9]{1,63}$`)
	nameRE     = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]{0,62}$`)
)

// Validate checks every setting and reports all problems together, each with
// the line it is on when known.
func (c *Config) Validate() error {
	var probs []string
	add := func(key, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if line, ok := c.lines[key]; ok {
			probs = append(probs, fmt.Sprintf("line %d: %s: %s", line, key, msg))
		} else {
			probs = append(probs, key+": "+msg)
		}
	}
	if c.AccountID != "" && !accountRE.MatchString(c.AccountID) {
		add("account_id", "%q is not a 12-digit account id (quote it in YAML so leading zeros survive)", c.AccountID)
	}
	if !regionRE.MatchString(c.Region) {
		add("region", "%q is not a region name such as us-east-1", c.Region)
	}
	if c.Store != "" && !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") && !strings.HasPrefix(c.Store, "sqlite://") {
		add("store", "must be a postgres:// URL (or sqlite:///path); leave it out to use SQLite in the data dir")
	}
	if c.Redis != "" && !strings.HasPrefix(c.Redis, "redis://") && !strings.HasPrefix(c.Redis, "rediss://") {
		add("redis", "must be a redis:// or rediss:// URL")
	}
	switch c.RedisFailure {
	case "", "local", "refuse":
	default:
		add("redis_failure", "%q: use local (enforce limits per replica while Redis is unreachable) or refuse (refuse new connections)", c.RedisFailure)
	}
	checkHostPort := func(key, v string) {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			add(key, "%q is not host:port", v)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(key, "%q has an invalid port", v)
		}
	}
	if c.DrainTimeout < 0 {
		add("drain_timeout", "cannot be negative")
	}
	if c.Audit.FsyncInterval < 0 {
		add("audit.fsync_interval", "cannot be negative")
	}
	if c.Audit.MaxSize != 0 && c.Audit.MaxSize < 4096 {
		add("audit.max_size", "%d bytes is too small to hold audit events: use at least 4KiB (default 100MiB)", c.Audit.MaxSize)
	}
	checkHostPort("api.listen", c.API.Listen)
	checkHostPort("metrics.listen", c.Metrics.Listen)

	names := map[string]bool{}
	listens := map[string]string{}
	for i, in := range c.Instances {
		k := func(s string) string { return fmt.Sprintf("instances[%d].%s", i, s) }
		if !nameRE.MatchString(in.Name) {
			add(k("name"), "%q: give each instance a name of letters, digits, - and _ starting with a letter", in.Name)
		} else if names[in.Name] {
			add(k("name"), "%q is used by another instance", in.Name)
		}
		names[in.Name] = true
		switch in.Engine {
		case "postgres", "mysql":
		default:
			add(k("engine"), "%q: use postgres, or mysql (also for MariaDB)", in.Engine)
		}
		if !resourceRE.MatchString(in.ResourceID) {
			add(k("resource_id"), "%q: use an id like db-ORDERS00000000000000000000 (prefix db-, cluster- or prx-); policies name it in arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID/USER", in.ResourceID)
		}
		if !regionRE.MatchString(in.Region) {
			add(k("region"), "%q is not a region name", in.Region)
		}
		if in.Listen == "" {
			add(k("listen"), "required: the host:port this instance's clients connect to")
		} else {
			checkHostPort(k("listen"), in.Listen)
			if other, dup := listens[in.Listen]; dup {
				add(k("listen"), "%s is already the listen address of instance %q", in.Listen, other)
			}
			listens[in.Listen] = in.Name
		}
		for j, e := range in.Endpoints {
			checkHostPort(fmt.Sprintf("instances[%d].endpoints[%d]", i, j), e)
		}
		if in.TLS != nil && (in.TLS.Cert == "" || in.TLS.Key == "") {
			add(k("tls"), "set both cert and key, or leave tls out to use the data dir's certificate")
		}
		if in.Upstream.Address == "" {
			add(k("upstream.address"), "required: host:port of the real database server")
		} else {
			checkHostPort(k("upstream.address"), in.Upstream.Address)
		}
		switch in.Upstream.TLS {
		case "disable", "require":
		case "verify-full":
			if in.Upstream.CA == "" {
				add(k("upstream.ca"), "upstream.tls verify-full needs ca: the CA file that signed the upstream's certificate")
			}
		default:
			add(k("upstream.tls"), "%q: use disable, require or verify-full", in.Upstream.TLS)
		}
		ba := in.BackendAuth
		switch ba.Mode {
		case "managed":
			if ba.AdminUser == "" {
				add(k("backend_auth.admin_user"), "mode managed needs an admin user that may change database users' passwords")
			}
			if ba.AdminPasswordEnv != "" && ba.AdminPasswordFile != "" {
				add(k("backend_auth"), "set admin_password_env or admin_password_file, not both")
			}
		case "secrets":
			if ba.SecretsFile == "" {
				add(k("backend_auth.secrets_file"), "mode secrets needs secrets_file: a YAML map of database user to password")
			}
		case "trust":
		default:
			add(k("backend_auth.mode"), "%q: use managed, secrets or trust", ba.Mode)
		}
		if in.Engine == "mysql" && len(in.IAMUsers) == 0 {
			add(k("iam_users"), "required for mysql: list the database users (names or patterns like report_*) that log in with IAM tokens")
		}
		for j, p := range in.IAMUsers {
			if _, err := filepath.Match(p, ""); err != nil || p == "" {
				add(fmt.Sprintf("instances[%d].iam_users[%d]", i, j), "%q is not a valid name or pattern", p)
			}
		}
		for j, p := range in.AuditStatements.Users {
			if _, err := filepath.Match(p, ""); err != nil || p == "" {
				add(fmt.Sprintf("instances[%d].audit_statements[%d]", i, j), "%q is not a valid name or pattern", p)
			}
		}
		in.Pool.check(func(key, format string, args ...any) { add(k("pool."+key), format, args...) })
		if in.HandshakeTimeout < 0 || in.Upstream.DialTimeout < 0 || in.BackendAuth.RotateEvery < 0 {
			add(k("handshake_timeout"), "timeouts and intervals cannot be negative")
		}
		l := in.Limits
		if l.NewLoginsPerSecond < 0 || l.PrincipalsPerSecond < 0 || l.MaxConnections < 0 ||
			l.NewLoginsPerPrincipalPerSecond < 0 || l.MaxConnectionsPerUser < 0 {
			add(k("limits"), "limits cannot be negative")
		}
		if fl := l.FailedLogins; (fl.BlockAfter != nil && *fl.BlockAfter < 0) || (fl.BackoffAfter != nil && *fl.BackoffAfter < 0) ||
			fl.BlockFor < 0 || fl.Window < 0 || fl.Backoff < 0 {
			add(k("limits.failed_logins"), "counts and durations cannot be negative (0 switches block_after or backoff_after off)")
		}
	}
	if len(probs) > 0 {
		return &Error{Path: c.Path, Problems: probs}
	}
	return nil
}

// Instance returns the instance named name.
func (c *Config) Instance(name string) (*Instance, error) {
	for i := range c.Instances {
		if c.Instances[i].Name == name {
			return &c.Instances[i], nil
		}
	}
	known := make([]string, 0, len(c.Instances))
	for _, in := range c.Instances {
		known = append(known, in.Name)
	}
	return nil, fmt.Errorf("no instance named %q in %s (configured: %s)", name, c.Path, strings.Join(known, ", "))
}

// IsIAMUser reports whether dbUser matches the instance's iam_users list.
func (in *Instance) IsIAMUser(dbUser string) bool {
	for _, p := range in.IAMUsers {
		if ok, _ := filepath.Match(p, dbUser); ok {
			return true
		}
	}
	return false
}

func (f *FailedLogins) applyDefaults() {
	if f.BlockAfter == nil {
		n := DefaultFailedLoginsBlock
		f.BlockAfter = &n
	}
	if f.BackoffAfter == nil {
		n := DefaultFailedLoginsBackoff
		f.BackoffAfter = &n
	}
	if f.BlockFor == 0 {
		f.BlockFor = DefaultBlockFor
	}
	if f.Window == 0 {
		f.Window = DefaultFailureWindow
	}
	if f.Backoff == 0 {
		f.Backoff = DefaultBackoff
	}
}
