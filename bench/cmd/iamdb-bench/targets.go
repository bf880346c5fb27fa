package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// target is one way of reaching the bench database as app.
type target struct {
	name string
	host string
	port int
	// sslmode and sslrootcert are what the Go clients (logins, idle
	// connections) use; pgbench always runs with PGSSLMODE=require.
	sslmode     string
	sslrootcert string
	// password is app's password, or a token for iamdb; it is asked for at
	// the start of every measurement so that a token never expires mid-run.
	password func() (string, error)
	// proc is the target's own process, whose memory is measured; nil for
	// PostgreSQL itself.
	proc *process
	// pgbench is the pgbench of PostgreSQL's own version.
	pgbench string
	note    string // for the report: how the target was set up
	// reusedLogins, for iamdb, reads how many logins so far took an idle
	// upstream session (iamdb_upstream_pool_reused_total).
	reusedLogins func(context.Context) (int64, error)
	// poolOff, for iamdb, turns its upstream session pool off (config
	// file and SIGHUP), for a second login measurement.
	poolOff func(context.Context) error
}

// connString is a pgconn connection string for app on the bench database.
func (t *target) connString(password string) string {
	q := url.Values{"sslmode": {t.sslmode}}
	if t.sslrootcert != "" {
		q.Set("sslrootcert", t.sslrootcert)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(benchUser, password),
		Host:     t.host + ":" + strconv.Itoa(t.port),
		Path:     "/" + benchDB,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// probeLogin logs in once and runs SELECT 1: the readiness check of a
// started target, and a check that the benchmark's credentials work.
func probeLogin(t *target) func(context.Context) error {
	return func(ctx context.Context) error {
		pw, err := t.password()
		if err != nil {
			return err
		}
		conn, err := pgconn.Connect(ctx, t.connString(pw))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
		return err
	}
}

// startPgBouncer runs PgBouncer in session mode in front of PostgreSQL:
// TLS and SCRAM with clients (app's verifier in the auth file), TLS and
// SCRAM to the server (PgBouncer replays the client's SCRAM keys, which is
// why the verifier must be PostgreSQL's own).
func startPgBouncer(ctx context.Context, pg *postgres, opt options, cl *cleanups, log *slog.Logger) (*target, error) {
	bin := opt.PgBouncer
	if !isExecutable(bin) {
		p, err := exec.LookPath("pgbouncer")
		if err != nil {
			return nil, fmt.Errorf("PgBouncer not found at %s nor on PATH: install the Debian package pgbouncer (apt-get install pgbouncer, or scripts/deps.sh)", bin)
		}
		bin = p
	}
	// PgBouncer refuses to run as root; like PostgreSQL it runs as postgres,
	// which must be able to read its directory.
	cred, err := serviceUser("postgres")
	if err != nil {
		return nil, err
	}
	parent := os.TempDir()
	if cred != nil {
		parent = "/tmp"
	}
	dir, err := os.MkdirTemp(parent, "iamdb-bench-pgbouncer-")
	if err != nil {
		return nil, fmt.Errorf("create PgBouncer directory: %w", err)
	}
	cl.add(func() error { return os.RemoveAll(dir) })

	cert, key, err := writeSelfSigned(dir)
	if err != nil {
		return nil, fmt.Errorf("PgBouncer certificate: %w", err)
	}
	authFile := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(authFile, fmt.Appendf(nil, "%q %q\n", benchUser, pg.appVerifier), 0o600); err != nil {
		return nil, fmt.Errorf("write PgBouncer auth file: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// Pool size above every client count used here, so session mode never
	// makes a client wait for a server connection.
	ini := fmt.Sprintf(`[databases]
%[1]s = host=%[2]s port=%[3]d dbname=%[1]s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %[4]d
unix_socket_dir =
pool_mode = session
max_client_conn = 1000
default_pool_size = %[5]d
auth_type = scram-sha-256
auth_file = %[6]s
client_tls_sslmode = require
client_tls_cert_file = %[7]s
client_tls_key_file = %[8]s
server_tls_sslmode = require
log_connections = 0
log_disconnections = 0
`, benchDB, pg.Host, pg.Port, port, maxClients+10, authFile, cert, key)
	iniPath := filepath.Join(dir, "pgbouncer.ini")
	if err := os.WriteFile(iniPath, []byte(ini), 0o600); err != nil {
		return nil, fmt.Errorf("write pgbouncer.ini: %w", err)
	}
	if err := chown(cred, dir, cert, key, authFile, iniPath); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "pgbouncer.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		return nil, err
	}
	if err := chown(cred, logPath); err != nil {
		return nil, err
	}

	log.Info("starting PgBouncer", "bin", bin, "port", port)
	proc, err := startProcess("PgBouncer", logPath, cred, cleanEnv(), bin, iniPath)
	if err != nil {
		return nil, err
	}
	// SIGINT would wait for clients to leave; SIGTERM shuts down at once.
	cl.add(func() error { return proc.stop(syscall.SIGTERM, 10*time.Second) })
	t := &target{
		name:     "PgBouncer",
		host:     "127.0.0.1",
		port:     port,
		sslmode:  "require",
		password: func() (string, error) { return pg.appPassword, nil },
		proc:     proc,
		pgbench:  pg.pgbench,
	}
	if err := waitReady(ctx, proc, 15*time.Second, probeLogin(t)); err != nil {
		return nil, err
	}
	return t, nil
}

// iamdbInstance is the name and resource id of the benchmark's instance.
const (
	iamdbInstance   = "bench"
	iamdbResourceID = "db-IAMDBBENCH0000000000000000"
	iamdbRegion     = "us-east-1"
)

// startIAMDB sets up a data dir, config, identities and an access key with
// the iamdb CLI, as an operator would, and runs `iamdb serve`.
func startIAMDB(ctx context.Context, pg *postgres, opt options, cl *cleanups, log *slog.Logger) (*target, error) {
	bin, err := filepath.Abs(opt.IAMDB)
	if err != nil || !isExecutable(bin) {
		return nil, fmt.Errorf("iamdb binary %s not found: run make build", opt.IAMDB)
	}
	if !hasCommand(ctx, bin, "serve") {
		return nil, &notAvailableError{reason: "iamdb serve not available"}
	}
	mode, note := opt.BackendAuth, "backend_auth "+opt.BackendAuth
	if mode == "managed" && !hasCommand(ctx, bin, "db", "setup") {
		log.Warn("iamdb db setup not available; using backend_auth mode secrets with app's password")
		mode, note = "secrets", "backend_auth secrets (iamdb db setup not available for managed)"
	}

	dir, err := os.MkdirTemp("", "iamdb-bench-iamdb-")
	if err != nil {
		return nil, fmt.Errorf("create iamdb directory: %w", err)
	}
	cl.add(func() error { return os.RemoveAll(dir) })
	var ports [3]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	listenPort, metricsPort, apiPort := ports[0], ports[1], ports[2]

	// The admin connection also answers whether app is in rds_iam, so the
	// secrets mode has one too.
	backendAuth := `mode: ` + mode + `
      admin_user: ` + pg.Superuser + `
      admin_password_env: IAMDB_PG_ADMIN_PASSWORD`
	if mode == "secrets" {
		secrets := filepath.Join(dir, "secrets.yaml")
		if err := os.WriteFile(secrets, fmt.Appendf(nil, "%s: %q\n", benchUser, pg.appPassword), 0o600); err != nil {
			return nil, fmt.Errorf("write secrets file: %w", err)
		}
		backendAuth += "\n      secrets_file: " + secrets
	}
	// Admission limits far above what two cores can reach, so that the
	// benchmark measures the login path, not the throttle.
	cfg := fmt.Sprintf(`data_dir: %[1]s/data
region: %[2]s
drain_timeout: 2s
api:
  listen: 127.0.0.1:%[3]d
metrics:
  listen: 127.0.0.1:%[4]d
instances:
  - name: %[5]s
    engine: postgres
    resource_id: %[6]s
    listen: 127.0.0.1:%[7]d
    endpoints: [localhost:%[7]d, 127.0.0.1:%[7]d]
    upstream:
      address: %[8]s
      tls: require
    backend_auth:
      %[9]s
    limits:
      new_logins_per_second: 100000
      principals_per_second: 100000
      max_connections: 100000
`, dir, iamdbRegion, apiPort, metricsPort, iamdbInstance, iamdbResourceID, listenPort, pg.Addr(), backendAuth)
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write iamdb config: %w", err)
	}
	env := append(cleanEnv(), "IAMDB_PG_ADMIN_PASSWORD="+pg.Password)
	iamdb := func(args ...string) (string, error) {
		return runCommand(ctx, env, bin, append(args, "--config", cfgPath)...)
	}

	log.Info("setting up iamdb", "dir", dir, "backend_auth", mode)
	out, err := iamdb("init", "--output", "json")
	if err != nil {
		return nil, err
	}
	var initOut struct{ CABundle string }
	if err := json.Unmarshal([]byte(out), &initOut); err != nil || initOut.CABundle == "" {
		return nil, fmt.Errorf("iamdb init --output json: no CABundle in its output (%v)", err)
	}
	if mode == "managed" {
		if _, err := iamdb("db", "setup", "--instance", iamdbInstance); err != nil {
			return nil, err
		}
	} else if err := pgExec(ctx, pg, `DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN CREATE ROLE rds_iam NOLOGIN; END IF;
END $$`); err != nil {
		return nil, err
	}
	if err := pgExec(ctx, pg, "GRANT rds_iam TO "+benchUser); err != nil {
		return nil, err
	}

	identities := fmt.Sprintf(`users:
  - name: %[1]s
    policies: [bench-connect]
policies:
  - name: bench-connect
    document:
      Version: "2012-10-17"
      Statement:
        - Sid: ConnectAsApp
          Effect: Allow
          Action: rds-db:connect
          Resource: arn:aws:rds-db:%[2]s:${account}:dbuser:%[3]s/%[1]s
`, benchUser, iamdbRegion, iamdbResourceID)
	idPath := filepath.Join(dir, "identities.yaml")
	if err := os.WriteFile(idPath, []byte(identities), 0o600); err != nil {
		return nil, fmt.Errorf("write identities file: %w", err)
	}
	if _, err := iamdb("apply", "-f", idPath); err != nil {
		return nil, err
	}
	out, err = iamdb("access-key", "create", "--user", benchUser, "--output", "json")
	if err != nil {
		return nil, err
	}
	var keyOut struct {
		AccessKey struct{ AccessKeyId, SecretAccessKey string }
	}
	if err := json.Unmarshal([]byte(out), &keyOut); err != nil || keyOut.AccessKey.SecretAccessKey == "" {
		return nil, fmt.Errorf("iamdb access-key create --output json: no key in its output (%v)", err)
	}

	log.Info("starting iamdb serve", "listen", listenPort, "metrics", metricsPort)
	proc, err := startProcess("iamdb serve", filepath.Join(dir, "serve.log"), nil, env, bin, "serve", "--config", cfgPath)
	if err != nil {
		return nil, err
	}
	cl.add(func() error { return proc.stop(syscall.SIGTERM, 15*time.Second) })
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort)
	if err := waitReady(ctx, proc, 30*time.Second, func(ctx context.Context) error { return httpOK(ctx, readyz) }); err != nil {
		return nil, err
	}

	// The token is what `aws rds generate-db-auth-token` would print: valid
	// for 15 minutes and, as with RDS, reusable by every login in that time.
	tokens := &tokenSource{
		bin: bin,
		env: append(cleanEnv(),
			"AWS_ACCESS_KEY_ID="+keyOut.AccessKey.AccessKeyId,
			"AWS_SECRET_ACCESS_KEY="+keyOut.AccessKey.SecretAccessKey,
			// Only the key above signs: no profile or credentials file of
			// the caller's.
			"AWS_CONFIG_FILE="+filepath.Join(dir, "aws-config"),
			"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "aws-credentials"),
			"AWS_EC2_METADATA_DISABLED=true"),
		args: []string{"token", "--hostname", "localhost", "--port", strconv.Itoa(listenPort),
			"--username", benchUser, "--region", iamdbRegion, "--config", cfgPath},
	}
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	t := &target{
		name:        "iamdb",
		host:        "localhost",
		port:        listenPort,
		sslmode:     "verify-full",
		sslrootcert: initOut.CABundle,
		password:    func() (string, error) { return tokens.get(ctx) },
		proc:        proc,
		pgbench:     pg.pgbench,
		note:        note + ", upstream.tls require, pool: default (on)",
		reusedLogins: func(ctx context.Context) (int64, error) {
			return scrapeCounter(ctx, metrics, `iamdb_upstream_pool_reused_total{instance="`+iamdbInstance+`"}`)
		},
		poolOff: func(ctx context.Context) error {
			off := strings.Replace(cfg, "    limits:\n", "    pool:\n      enabled: false\n    limits:\n", 1)
			if off == cfg {
				return fmt.Errorf("cannot add pool.enabled false to the iamdb config")
			}
			if err := os.WriteFile(cfgPath, []byte(off), 0o600); err != nil {
				return fmt.Errorf("write iamdb config: %w", err)
			}
			return reload(ctx, proc)
		},
	}
	// The first login also makes managed mode set app's backend password.
	if err := waitReady(ctx, proc, 15*time.Second, probeLogin(t)); err != nil {
		return nil, fmt.Errorf("log in through iamdb: %w", err)
	}
	return t, nil
}

// reload sends iamdb serve SIGHUP and waits until its log says the
// reload is done.
func reload(ctx context.Context, proc *process) error {
	st, err := os.Stat(proc.logPath)
	if err != nil {
		return fmt.Errorf("iamdb serve log: %w", err)
	}
	if err := proc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("SIGHUP iamdb serve: %w", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		f, err := os.Open(proc.logPath)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.NewSectionReader(f, st.Size(), 1<<30))
		f.Close()
		if err != nil {
			return err
		}
		switch {
		case strings.Contains(string(b), "reload done"):
			return nil
		case strings.Contains(string(b), "configuration not reloaded"):
			return fmt.Errorf("iamdb serve refused the configuration:\n%s", tail(string(b), 10))
		case proc.exited():
			return fmt.Errorf("iamdb serve exited during a reload:\n%s", proc.log())
		case time.Now().After(deadline) || ctx.Err() != nil:
			return fmt.Errorf("iamdb serve did not finish its reload within 15s:\n%s", proc.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrapeCounter reads one series from a Prometheus text endpoint.
func scrapeCounter(ctx context.Context, url, series string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q is not a number", series, v)
			}
			return int64(f), nil
		}
	}
	return 0, nil // a counter not yet incremented is not exposed
}

// hasCommand reports whether this iamdb build has the subcommand args;
// cobra prints the root help for an unknown one.
func hasCommand(ctx context.Context, bin string, args ...string) bool {
	out, err := runCommand(ctx, cleanEnv(), bin, append(args, "--help")...)
	return err == nil && strings.Contains(out, "iamdb "+strings.Join(args, " "))
}

// tokenSource runs `iamdb token` and reuses the token for five minutes,
// well inside its fifteen.
type tokenSource struct {
	bin  string
	env  []string
	args []string

	mu    sync.Mutex
	token string
	at    time.Time
}

func (s *tokenSource) get(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && time.Since(s.at) < 5*time.Minute {
		return s.token, nil
	}
	out, err := runCommand(ctx, s.env, s.bin, s.args...)
	if err != nil {
		return "", err
	}
	s.token, s.at = strings.TrimSpace(out), time.Now()
	return s.token, nil
}

func pgExec(ctx context.Context, pg *postgres, sql string) error {
	conn, err := pgx.Connect(ctx, pg.DSN(pg.Superuser, pg.Password, benchDB))
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL as superuser: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}
