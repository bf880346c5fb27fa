package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/iamdb/iamdb/internal/testdb"
)

const (
	benchDB   = "bench"
	benchUser = "app"
)

// postgres is the throwaway server every target ends at, with the bench
// database, pgbench's tables and the user app.
type postgres struct {
	*testdb.PG
	appPassword string
	// appVerifier is app's SCRAM-SHA-256 verifier from pg_authid; PgBouncer
	// needs it to run SCRAM with clients and to log in to PostgreSQL.
	appVerifier string
	version     string
	pgbench     string // path of the pgbench matching the server
}

// startPostgres starts PostgreSQL with TLS (scram-sha-256 for TCP clients,
// as testdb sets it up), creates the bench database, the user app with a
// SCRAM password, pgbench's tables (scale 1) and app's grants on them.
func startPostgres(ctx context.Context, cl *cleanups, log *slog.Logger) (*postgres, error) {
	log.Info("starting PostgreSQL")
	pg, err := testdb.StartPostgres(ctx, testdb.PGOptions{
		TLS:      true,
		Settings: map[string]string{"max_connections": strconv.Itoa(pgMaxConnections)},
	})
	if err != nil {
		if errors.Is(err, testdb.ErrNotInstalled) {
			return nil, fmt.Errorf("%w (install it with scripts/deps.sh)", err)
		}
		return nil, err
	}
	cl.add(pg.Stop)
	p := &postgres{PG: pg, appPassword: rand.Text()}
	log.Info("PostgreSQL started", "addr", pg.Addr(), "data_dir", pg.DataDir)

	p.pgbench = filepath.Join(pg.BinDir, "pgbench")
	if !isExecutable(p.pgbench) {
		if p.pgbench, err = exec.LookPath("pgbench"); err != nil {
			return nil, errors.New("pgbench not found next to postgres nor on PATH (Debian: apt-get install postgresql-contrib or postgresql-client)")
		}
	}

	admin, err := pgx.Connect(ctx, pg.AdminDSN())
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL as superuser: %w", err)
	}
	defer admin.Close(context.Background())
	// rand.Text is base32, so the password needs no escaping in SQL; DDL
	// takes no bind parameters.
	for _, stmt := range []string{
		"CREATE DATABASE " + benchDB,
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", benchUser, p.appPassword),
		fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s", benchDB, benchUser),
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("set up PostgreSQL: %s: %w", strings.SplitN(stmt, " PASSWORD", 2)[0], err)
		}
	}
	if err := admin.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", benchUser).Scan(&p.appVerifier); err != nil {
		return nil, fmt.Errorf("read %s's SCRAM verifier: %w", benchUser, err)
	}
	if !strings.HasPrefix(p.appVerifier, "SCRAM-SHA-256$") {
		return nil, fmt.Errorf("%s's password is not stored as a SCRAM-SHA-256 verifier (password_encryption?)", benchUser)
	}
	if err := admin.QueryRow(ctx, "SELECT current_setting('server_version')").Scan(&p.version); err != nil {
		return nil, fmt.Errorf("read PostgreSQL version: %w", err)
	}

	log.Info("creating pgbench tables", "scale", 1)
	if _, err := runCommand(ctx, p.superuserEnv(), p.pgbench, "-i", "-s", "1", "-q", benchDB); err != nil {
		return nil, fmt.Errorf("pgbench -i: %w", err)
	}
	db, err := pgx.Connect(ctx, pg.DSN(pg.Superuser, pg.Password, benchDB))
	if err != nil {
		return nil, fmt.Errorf("connect to database %s: %w", benchDB, err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(ctx, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO "+benchUser); err != nil {
		return nil, fmt.Errorf("grant %s SELECT on the pgbench tables: %w", benchUser, err)
	}
	return p, nil
}

// superuserEnv is the libpq environment of the superuser over TCP.
func (p *postgres) superuserEnv() []string {
	return append(cleanEnv(),
		"PGHOST="+p.Host, "PGPORT="+strconv.Itoa(p.Port),
		"PGUSER="+p.Superuser, "PGPASSWORD="+p.Password, "PGSSLMODE=require")
}

// directTarget is PostgreSQL itself: TLS and scram-sha-256 as app.
func (p *postgres) directTarget() *target {
	return &target{
		name:     "direct PostgreSQL",
		host:     p.Host,
		port:     p.Port,
		sslmode:  "require",
		password: func() (string, error) { return p.appPassword, nil },
		pgbench:  p.pgbench,
	}
}

// cleanEnv is the environment for child processes without libpq and AWS
// settings of the caller's shell, which would change what is measured or
// whose credentials sign tokens.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "IAMDB_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// runCommand runs a short command and returns its standard output; on
// failure the error carries the tail of its combined output.
func runCommand(ctx context.Context, env []string, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(path), firstArg(args), err, tail(stdout.String()+stderr.String(), 20))
	}
	return stdout.String(), nil
}

func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before the server binds it; start-up then fails with the server's
// log in the error, which is rare enough for a benchmark.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// serviceUser returns the credentials of the OS user a daemon that refuses
// root must run as, or nil when this program is not root.
func serviceUser(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("running as root, so this needs the OS user %q (created by the postgresql package): %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of %s: %w", name, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of %s: %w", name, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// chown hands paths to cred's user; a no-op for nil (not root).
func chown(cred *syscall.Credential, paths ...string) error {
	if cred == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Lchown(p, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	return nil
}

// process is a long-running child (PgBouncer, iamdb serve) in its own
// process group, with its output in a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

var (
	spawnOnce sync.Once
	spawnCh   chan func()
)

// spawn runs start on one OS thread that lives as long as the program:
// Linux sends the parent-death signal when the forking thread exits, and
// Go may retire threads, so children would otherwise die at random.
func spawn(start func() error) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan func())
		go func() {
			runtime.LockOSThread()
			for fn := range spawnCh {
				fn()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnCh <- func() { errc <- start() }
	return <-errc
}

// startProcess starts path in its own process group (a terminal's Ctrl-C
// reaches only this program, which then stops the child in order), killed
// with this program if it dies, as cred's user when cred is not nil.
func startProcess(name, logPath string, cred *syscall.Credential, env []string, path string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer logFile.Close()
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Dir = filepath.Dir(logPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := spawn(cmd.Start); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// log returns the tail of the process's output, for errors.
func (p *process) log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	return tail(string(b), 30)
}

// stop sends sig to the process group, waits up to grace, then kills it.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = syscall.Kill(-p.pid(), sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("%s did not stop within %s after %s; killed", p.name, grace, sig)
}

// waitReady polls probe until it succeeds, the process exits or timeout
// passes; the error then carries the last probe error and the process log.
func waitReady(ctx context.Context, p *process, timeout time.Duration, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited during start-up (%v):\n%s", p.name, p.waitErr, p.log())
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		last = probe(pctx)
		pcancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s: %v\n%s", p.name, timeout, last, p.log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeSelfSigned writes a self-signed certificate for localhost and
// 127.0.0.1 and its key (0600) into dir, for PgBouncer's client TLS; the
// clients use sslmode=require, as against PostgreSQL, so nobody verifies it.
func writeSelfSigned(dir string) (certPath, keyPath string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return "", "", fmt.Errorf("serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("marshal key: %w", err)
	}
	certPath, keyPath = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}
