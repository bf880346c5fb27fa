package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/iamdb/iamdb/internal/testdb"
)

// MariaDB targets: the same bench user app and table, reached directly and
// through iamdb.
const (
	mariaDirect = "direct MariaDB"
	mariaIAMDB  = "iamdb (MariaDB)"
	// mariaRows is the size of the point-SELECT table (sysbench's sbtest
	// layout); small enough to load in a second, large enough that the
	// selects are not all one row.
	mariaRows = 10000
	// mariaDirectUser is the direct target's user, a twin of benchUser
	// (same plugin, same grants): iamdb's managed mode gives benchUser a
	// password of its own at its first login, and the two targets are
	// measured in turns.
	mariaDirectUser = benchUser + "_direct"
	// mariaRounds is how many turns each target gets per measurement.
	mariaRounds = 4
)

// mariadb is the throwaway MariaDB server of the MariaDB rows.
type mariadb struct {
	*testdb.MariaDBServer
	appPassword    string // benchUser's, until iamdb manages it
	directPassword string // mariaDirectUser's
	version        string
}

// startMariaDB starts MariaDB with TLS, creates the bench database, a
// table sbtest of mariaRows rows and the users app@'%' and
// app_direct@'%' with mysql_native_password passwords and SELECT on it.
func startMariaDB(ctx context.Context, cl *cleanups, log *slog.Logger) (*mariadb, error) {
	log.Info("starting MariaDB")
	srv, err := testdb.StartMariaDB(ctx, testdb.MariaDBOptions{TLS: true})
	if err != nil {
		if errors.Is(err, testdb.ErrNotInstalled) {
			return nil, &notAvailableError{reason: "MariaDB not installed (scripts/deps.sh)"}
		}
		return nil, err
	}
	cl.add(srv.Stop)
	m := &mariadb{MariaDBServer: srv, appPassword: rand.Text(), directPassword: rand.Text()}
	root, err := sql.Open("mysql", srv.RootDSN())
	if err != nil {
		return nil, err
	}
	defer root.Close()
	// rand.Text is base32: no escaping needed in the literal.
	for _, stmt := range []string{
		"CREATE DATABASE " + benchDB,
		"CREATE TABLE " + benchDB + ".sbtest (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL, KEY (k))",
		fmt.Sprintf("INSERT INTO %s.sbtest SELECT seq, seq %% 1000, REPEAT(CHAR(97 + seq %% 26), 120), REPEAT('x', 60) FROM %s.seq_1_to_%d", benchDB, benchDB, mariaRows),
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", benchUser, m.appPassword),
		fmt.Sprintf("GRANT SELECT ON %s.* TO '%s'@'%%'", benchDB, benchUser),
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", mariaDirectUser, m.directPassword),
		fmt.Sprintf("GRANT SELECT ON %s.* TO '%s'@'%%'", benchDB, mariaDirectUser),
	} {
		if _, err := root.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("set up MariaDB: %s: %w", strings.SplitN(stmt, " IDENTIFIED", 2)[0], err)
		}
	}
	if err := root.QueryRowContext(ctx, "SELECT VERSION()").Scan(&m.version); err != nil {
		return nil, fmt.Errorf("read MariaDB version: %w", err)
	}
	log.Info("MariaDB started", "addr", srv.Addr(), "version", m.version)
	return m, nil
}

// mysqlTarget is one way of reaching MariaDB's bench database.
type mysqlTarget struct {
	name     string
	addr     string
	user     string
	tls      *tls.Config
	password func() (string, error)
	note     string
	// reusedLogins reads iamdb's count of logins that took an idle
	// upstream session; nil for direct MariaDB.
	reusedLogins func(context.Context) (int64, error)
}

func (m *mariadb) directTarget() (*mysqlTarget, error) {
	tlsCfg, err := m.TLSConfig()
	if err != nil {
		return nil, err
	}
	return &mysqlTarget{
		name:     mariaDirect,
		addr:     m.Addr(),
		user:     mariaDirectUser,
		tls:      tlsCfg,
		password: func() (string, error) { return m.directPassword, nil },
		note:     "MariaDB " + m.version + ", " + mariaDirectUser + " (app's twin) with mysql_native_password over TLS (CA verified)",
	}, nil
}

// connector is a go-sql-driver connector for app on the bench database.
// Go's TLS client keeps no session cache unless given one, so every
// connection is a full handshake.
func (t *mysqlTarget) connector() (driver.Connector, error) {
	pw, err := t.password()
	if err != nil {
		return nil, err
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName = t.user, pw, benchDB
	cfg.Net, cfg.Addr = "tcp", t.addr
	cfg.TLS = t.tls
	// iamdb asks for the token with mysql_clear_password, as RDS does.
	cfg.AllowCleartextPasswords = true
	cfg.Timeout = 10 * time.Second
	cfg.Logger = &mysql.NopLogger{}
	return mysql.NewConnector(cfg)
}

func (t *mysqlTarget) probe(ctx context.Context) error {
	c, err := t.connector()
	if err != nil {
		return err
	}
	db := sql.OpenDB(c)
	defer db.Close()
	var n int
	return db.QueryRowContext(ctx, "SELECT COUNT(*) FROM sbtest WHERE id <= 10").Scan(&n)
}

// qpsStats is the point-SELECT throughput of persistent connections.
type qpsStats struct {
	queries, failed int64
	clients         int
	elapsed         time.Duration
	errors          []string
}

func (s *qpsStats) perSecond() float64 { return float64(s.queries) / s.elapsed.Seconds() }

// avgLatencyMS is the mean time per query as the clients saw it.
func (s *qpsStats) avgLatencyMS() float64 {
	if s.queries == 0 {
		return 0
	}
	return float64(s.clients) * s.elapsed.Seconds() * 1000 / float64(s.queries)
}

// errorSamples keeps a few distinct error messages.
type errorSamples struct {
	mu      sync.Mutex
	samples []string
}

func (e *errorSamples) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	msg := err.Error()
	for _, s := range e.samples {
		if s == msg {
			return
		}
	}
	if len(e.samples) < 3 {
		e.samples = append(e.samples, msg)
	}
}

// measureMySQL runs the MariaDB measurements of the targets side by
// side: new TLS logins per second, then point-SELECT throughput over
// persistent connections. Each measurement is cut into mariaRounds turns
// per target, taken in alternating order (A B, B A, …), so that whatever
// else loads the machine meanwhile weighs on every target alike; each
// target's figures add up its turns.
func measureMySQL(ctx context.Context, targets []*mysqlTarget, opt options, log *slog.Logger) []result {
	res := make([]result, len(targets))
	reusedBefore := make([]int64, len(targets))
	for i, t := range targets {
		res[i] = result{target: t.name, note: t.note}
		reusedBefore[i] = reusedSoFarMySQL(ctx, t)
	}
	turn := opt.Duration / mariaRounds
	order := func(round int) []int {
		idx := make([]int, len(targets))
		for i := range idx {
			idx[i] = i
			if round%2 == 1 {
				idx[i] = len(targets) - 1 - i
			}
		}
		return idx
	}
	log.Info("measuring new TLS logins, targets in turns", "clients", opt.Clients, "duration", opt.Duration, "rounds", mariaRounds)
	for round := 0; round < mariaRounds && ctx.Err() == nil; round++ {
		for _, i := range order(round) {
			if res[i].loginsErr != nil {
				continue
			}
			s, err := measureMySQLLogins(ctx, targets[i], opt.Clients, turn)
			if err != nil {
				res[i].logins, res[i].loginsErr = nil, err
				continue
			}
			res[i].logins = addLoginStats(res[i].logins, s)
		}
	}
	for i, t := range targets {
		logDone(log, t.name, "logins", res[i].loginsErr)
		if reusedBefore[i] >= 0 && res[i].logins != nil {
			if after := reusedSoFarMySQL(ctx, t); after >= reusedBefore[i] {
				res[i].note += fmt.Sprintf("; %d of the %d logins of the logins row took an idle upstream session (iamdb_upstream_pool_reused_total), the others dialled",
					min(after-reusedBefore[i], res[i].logins.ok+res[i].logins.failed), res[i].logins.ok+res[i].logins.failed)
			}
		}
	}
	log.Info("measuring point-SELECT throughput, targets in turns", "clients", opt.Clients, "duration", opt.Duration, "rounds", mariaRounds)
	for round := 0; round < mariaRounds && ctx.Err() == nil; round++ {
		for _, i := range order(round) {
			if res[i].qpsErr != nil {
				continue
			}
			s, err := measurePointSelects(ctx, targets[i], opt.Clients, turn)
			if err != nil {
				res[i].qps, res[i].qpsErr = nil, err
				continue
			}
			res[i].qps = addQPSStats(res[i].qps, s)
		}
	}
	for i, t := range targets {
		logDone(log, t.name, "point selects", res[i].qpsErr)
	}
	return res
}

// reusedSoFarMySQL is the target's count of logins that took an idle
// upstream session, or -1 when it has none or it cannot be read.
func reusedSoFarMySQL(ctx context.Context, t *mysqlTarget) int64 {
	if t.reusedLogins == nil {
		return -1
	}
	n, err := t.reusedLogins(ctx)
	if err != nil {
		return -1
	}
	return n
}

func addLoginStats(sum, s *loginStats) *loginStats {
	if sum == nil {
		return s
	}
	out := &loginStats{ok: sum.ok + s.ok, failed: sum.failed + s.failed, elapsed: sum.elapsed + s.elapsed, errors: sum.errors}
	for _, e := range s.errors {
		if len(out.errors) < 3 && !slices.Contains(out.errors, e) {
			out.errors = append(out.errors, e)
		}
	}
	return out
}

func addQPSStats(sum, s *qpsStats) *qpsStats {
	if sum == nil {
		return s
	}
	out := &qpsStats{queries: sum.queries + s.queries, failed: sum.failed + s.failed, clients: s.clients,
		elapsed: sum.elapsed + s.elapsed, errors: sum.errors}
	for _, e := range s.errors {
		if len(out.errors) < 3 && !slices.Contains(out.errors, e) {
			out.errors = append(out.errors, e)
		}
	}
	return out
}

// measureMySQLLogins runs clients goroutines for d, each looping over a
// fresh TLS connection and login, DO 1, close.
func measureMySQLLogins(ctx context.Context, t *mysqlTarget, clients int, d time.Duration) (*loginStats, error) {
	c, err := t.connector()
	if err != nil {
		return nil, err
	}
	var (
		ok, failed atomic.Int64
		samples    errorSamples
		wg         sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				err := mysqlLoginOnce(ctx, c)
				switch {
				case err == nil:
					ok.Add(1)
				case ctx.Err() == nil:
					failed.Add(1)
					samples.add(err)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &loginStats{ok: ok.Load(), failed: failed.Load(), elapsed: time.Since(start), errors: samples.samples}, nil
}

func mysqlLoginOnce(ctx context.Context, c driver.Connector) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx)
	if err != nil {
		return err
	}
	_, err = conn.(driver.ExecerContext).ExecContext(ctx, "DO 1", nil)
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	return err
}

// measurePointSelects opens clients persistent connections, prepares
// sysbench's point select on each, and runs it with random ids for d.
func measurePointSelects(ctx context.Context, t *mysqlTarget, clients int, d time.Duration) (*qpsStats, error) {
	c, err := t.connector()
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(c)
	defer db.Close()
	db.SetMaxOpenConns(clients)
	db.SetMaxIdleConns(clients)
	type worker struct {
		conn *sql.Conn
		stmt *sql.Stmt
	}
	workers := make([]worker, clients)
	defer func() {
		for _, w := range workers {
			if w.stmt != nil {
				w.stmt.Close()
			}
			if w.conn != nil {
				w.conn.Close()
			}
		}
	}()
	for i := range workers {
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("open connection %d: %w", i+1, err)
		}
		workers[i].conn = conn
		if workers[i].stmt, err = conn.PrepareContext(ctx, "SELECT c FROM sbtest WHERE id = ?"); err != nil {
			return nil, fmt.Errorf("prepare the point select: %w", err)
		}
	}
	var (
		queries, failed atomic.Int64
		samples         errorSamples
		wg              sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for _, w := range workers {
		wg.Go(func() {
			var c string
			for time.Now().Before(deadline) && ctx.Err() == nil {
				n, _ := rand.Int(rand.Reader, big.NewInt(mariaRows))
				err := w.stmt.QueryRowContext(ctx, n.Int64()+1).Scan(&c)
				switch {
				case err == nil:
					queries.Add(1)
				case ctx.Err() == nil:
					failed.Add(1)
					samples.add(err)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &qpsStats{queries: queries.Load(), failed: failed.Load(), clients: clients, elapsed: time.Since(start), errors: samples.samples}, nil
}

// iamdb's MariaDB instance.
const (
	iamdbMySQLInstance   = "bench-mariadb"
	iamdbMySQLResourceID = "db-IAMDBBENCHMARIA00000000000"
)

// startIAMDBMySQL sets up iamdb in front of MariaDB with its CLI, as an
// operator would (init, apply, access-key create; backend_auth managed
// with root as the admin user), and runs `iamdb serve`.
func startIAMDBMySQL(ctx context.Context, m *mariadb, opt options, cl *cleanups, log *slog.Logger) (*mysqlTarget, error) {
	bin, err := filepath.Abs(opt.IAMDB)
	if err != nil || !isExecutable(bin) {
		return nil, fmt.Errorf("iamdb binary %s not found: run make build", opt.IAMDB)
	}
	if !hasCommand(ctx, bin, "serve") {
		return nil, &notAvailableError{reason: "iamdb serve not available"}
	}
	dir, err := os.MkdirTemp("", "iamdb-bench-iamdb-mariadb-")
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
	cfg := fmt.Sprintf(`data_dir: %[1]s/data
region: %[2]s
drain_timeout: 2s
api:
  listen: 127.0.0.1:%[3]d
metrics:
  listen: 127.0.0.1:%[4]d
instances:
  - name: %[5]s
    engine: mysql
    resource_id: %[6]s
    listen: 127.0.0.1:%[7]d
    endpoints: [127.0.0.1:%[7]d]
    iam_users: [%[8]s]
    upstream:
      address: %[9]s
      tls: verify-full
      ca: %[10]s
    backend_auth:
      mode: managed
      admin_user: %[11]s
      admin_password_env: IAMDB_MARIADB_ADMIN_PASSWORD
    limits:
      new_logins_per_second: 100000
      principals_per_second: 100000
      max_connections: 100000
`, dir, iamdbRegion, apiPort, metricsPort, iamdbMySQLInstance, iamdbMySQLResourceID, listenPort, benchUser,
		m.Addr(), m.CAFile, m.RootUser)
	cfgPath := filepath.Join(dir, "iamdb.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("write iamdb config: %w", err)
	}
	env := append(cleanEnv(), "IAMDB_MARIADB_ADMIN_PASSWORD="+m.RootPassword)
	iamdb := func(args ...string) (string, error) {
		return runCommand(ctx, env, bin, append(args, "--config", cfgPath)...)
	}
	log.Info("setting up iamdb for MariaDB", "dir", dir)
	out, err := iamdb("init", "--output", "json")
	if err != nil {
		return nil, err
	}
	var initOut struct{ CABundle string }
	if err := json.Unmarshal([]byte(out), &initOut); err != nil || initOut.CABundle == "" {
		return nil, fmt.Errorf("iamdb init --output json: no CABundle in its output (%v)", err)
	}
	identities := fmt.Sprintf(`users:
  - name: %[1]s
    policies: [bench-connect]
policies:
  - name: bench-connect
    document:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Action: rds-db:connect
          Resource: arn:aws:rds-db:%[2]s:${account}:dbuser:%[3]s/%[1]s
`, benchUser, iamdbRegion, iamdbMySQLResourceID)
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

	log.Info("starting iamdb serve for MariaDB", "listen", listenPort, "metrics", metricsPort)
	proc, err := startProcess("iamdb serve (MariaDB)", filepath.Join(dir, "serve.log"), nil, env, bin, "serve", "--config", cfgPath)
	if err != nil {
		return nil, err
	}
	cl.add(func() error { return proc.stop(syscall.SIGTERM, 15*time.Second) })
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", metricsPort)
	if err := waitReady(ctx, proc, 30*time.Second, func(ctx context.Context) error { return httpOK(ctx, readyz) }); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(initOut.CABundle)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tokens := &tokenSource{
		bin: bin,
		env: append(cleanEnv(),
			"AWS_ACCESS_KEY_ID="+keyOut.AccessKey.AccessKeyId,
			"AWS_SECRET_ACCESS_KEY="+keyOut.AccessKey.SecretAccessKey,
			"AWS_CONFIG_FILE="+filepath.Join(dir, "aws-config"),
			"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "aws-credentials"),
			"AWS_EC2_METADATA_DISABLED=true"),
		args: []string{"token", "--hostname", "127.0.0.1", "--port", strconv.Itoa(listenPort),
			"--username", benchUser, "--region", iamdbRegion, "--config", cfgPath},
	}
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	t := &mysqlTarget{
		name:     mariaIAMDB,
		addr:     fmt.Sprintf("127.0.0.1:%d", listenPort),
		user:     benchUser,
		tls:      &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		password: func() (string, error) { return tokens.get(ctx) },
		note:     "backend_auth managed (mysql_native_password), upstream.tls verify-full, pool: default (on), one reused IAM token via mysql_clear_password over TLS",
		reusedLogins: func(ctx context.Context) (int64, error) {
			return scrapeCounter(ctx, metrics, `iamdb_upstream_pool_reused_total{instance="`+iamdbMySQLInstance+`"}`)
		},
	}
	// The first login also makes managed mode set app's backend password.
	if err := waitReady(ctx, proc, 15*time.Second, t.probe); err != nil {
		return nil, fmt.Errorf("log in through iamdb: %w", err)
	}
	return t, nil
}

// runMariaDB measures direct MariaDB and iamdb in front of it, side by
// side; a MariaDB that is not installed yields n/a columns.
func runMariaDB(ctx context.Context, rep *report, opt options, log *slog.Logger) {
	var cl cleanups
	defer cl.run(log)
	if ctx.Err() != nil {
		return
	}
	m, err := startMariaDB(ctx, &cl, log)
	if err != nil {
		reason, failure := "failed to start", err
		var na *notAvailableError
		if errors.As(err, &na) {
			reason, failure = na.reason, nil
		}
		log.Error("MariaDB not measured", "err", err)
		rep.add(result{target: mariaDirect, unavailable: reason, err: failure})
		rep.add(result{target: mariaRelay, unavailable: reason})
		rep.add(result{target: mariaIAMDB, unavailable: reason})
		return
	}
	var targets []*mysqlTarget
	var unavailable []result
	direct, err := m.directTarget()
	if err != nil {
		unavailable = append(unavailable, result{target: mariaDirect, unavailable: "failed to start", err: err})
	} else {
		targets = append(targets, direct)
	}
	if relay, err := startRelay(ctx, m, &cl, log); err != nil {
		log.Error("target failed to start", "target", mariaRelay, "err", err)
		unavailable = append(unavailable, result{target: mariaRelay, unavailable: "failed to start", err: err})
	} else {
		targets = append(targets, relay)
	}
	t, err := startIAMDBMySQL(ctx, m, opt, &cl, log)
	var na *notAvailableError
	switch {
	case errors.As(err, &na):
		unavailable = append(unavailable, result{target: mariaIAMDB, unavailable: na.reason})
	case err != nil:
		log.Error("target failed to start", "target", mariaIAMDB, "err", err)
		unavailable = append(unavailable, result{target: mariaIAMDB, unavailable: "failed to start", err: err})
	default:
		targets = append(targets, t)
	}
	measured := measureMySQL(ctx, targets, opt, log)
	for _, name := range []string{mariaDirect, mariaRelay, mariaIAMDB} {
		for _, r := range append(measured, unavailable...) {
			if r.target == name {
				rep.add(r)
			}
		}
	}
}
