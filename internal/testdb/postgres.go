package testdb

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PGOptions configures StartPostgres. The zero value is a plain server.
type PGOptions struct {
	// TLS generates a CA and a server certificate in the data directory,
	// turns ssl on, and exposes the CA as PG.CAFile. Clients may still
	// connect without TLS.
	TLS bool
	// BinDir holds initdb and postgres; empty means discover them (see
	// FindPostgresBinDir).
	BinDir string
	// Settings are extra server parameters, passed as `-c name=value`.
	// They override the defaults chosen here.
	Settings map[string]string
}

// PG is a running throwaway PostgreSQL server. TCP connections authenticate
// with scram-sha-256; connections over the Unix socket in SocketDir are
// trusted.
type PG struct {
	Host      string // always 127.0.0.1
	Port      int
	SocketDir string
	Superuser string // "postgres"
	Password  string // superuser password, random per server
	BinDir    string
	DataDir   string
	CAFile    string // CA that signed the server certificate; empty without TLS

	base     string
	proc     *process
	stopOnce sync.Once
	stopErr  error
}

// pgSearchDirs are globbed for PostgreSQL binaries when they are not on
// PATH: Debian and Ubuntu keep them per major version and do not link them
// into /usr/bin; RPM distributions use /usr/pgsql-N.
var pgSearchDirs = []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin"}

// FindPostgresBinDir returns the directory that holds both initdb and
// postgres: the directory of postgres (or initdb) on PATH if its sibling is
// there too, otherwise the highest version under /usr/lib/postgresql/*/bin
// and similar. The two binaries must come from one directory because initdb
// of one major version makes data directories that only its own postgres
// accepts.
func FindPostgresBinDir() (string, error) {
	return findPGBinDir(filepath.SplitList(os.Getenv("PATH")), pgSearchDirs)
}

func findPGBinDir(path, globs []string) (string, error) {
	for _, dir := range path {
		for _, name := range []string{"postgres", "initdb"} {
			p := filepath.Join(dir, name)
			if !isExecutable(p) {
				continue
			}
			// PATH often holds symlinks (e.g. /usr/local/bin/postgres ->
			// /usr/lib/postgresql/15/bin/postgres); the sibling lives next to
			// the target, not the link.
			if real, err := filepath.EvalSymlinks(p); err == nil {
				if d := filepath.Dir(real); hasPGBinaries(d) {
					return d, nil
				}
			}
			if hasPGBinaries(dir) {
				return dir, nil
			}
		}
	}
	var candidates []string
	for _, g := range globs {
		m, _ := filepath.Glob(g)
		for _, d := range m {
			if hasPGBinaries(d) {
				candidates = append(candidates, d)
			}
		}
	}
	if len(candidates) == 0 {
		return "", fmt.Errorf("PostgreSQL server %w: initdb and postgres are neither on PATH nor in %s (Debian: apt-get install postgresql)",
			ErrNotInstalled, strings.Join(globs, ", "))
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		return versionLess(candidates[j], candidates[i])
	})
	return candidates[0], nil
}

func hasPGBinaries(dir string) bool {
	return isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres"))
}

var versionRE = regexp.MustCompile(`\d+(\.\d+)*`)

// versionLess orders installation directories by their version numerically,
// so that /usr/lib/postgresql/16/bin beats /usr/lib/postgresql/9.6/bin. The
// version is taken from the last path element containing a digit ("16",
// "pgsql-16"), not from digits elsewhere in the path.
func versionLess(a, b string) bool {
	va, vb := versionParts(a), versionParts(b)
	for i := 0; i < len(va) && i < len(vb); i++ {
		if va[i] != vb[i] {
			return va[i] < vb[i]
		}
	}
	if len(va) != len(vb) {
		return len(va) < len(vb)
	}
	return a < b
}

func versionParts(path string) []int {
	elems := strings.Split(filepath.Clean(path), string(filepath.Separator))
	for i := len(elems) - 1; i >= 0; i-- {
		m := versionRE.FindString(elems[i])
		if m == "" {
			continue
		}
		var out []int
		for _, f := range strings.Split(m, ".") {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
		return out
	}
	return nil
}

// StartPostgres initialises a data directory in a private temp directory and
// starts postgres on a free loopback port. The server is tuned for tests
// (fsync off and friends): its data does not survive a crash, and is removed
// by Stop anyway.
func StartPostgres(ctx context.Context, opt PGOptions) (*PG, error) {
	ctx, cancel := startDeadline(ctx)
	defer cancel()
	binDir := opt.BinDir
	if binDir == "" {
		var err error
		if binDir, err = FindPostgresBinDir(); err != nil {
			return nil, err
		}
	}
	owner, err := serviceAccount("postgres", "PostgreSQL")
	if err != nil {
		return nil, err
	}
	base, err := makeBaseDir("pg", owner)
	if err != nil {
		return nil, err
	}
	p := &PG{
		Host:      "127.0.0.1",
		SocketDir: filepath.Join(base, "run"),
		Superuser: "postgres",
		Password:  randomPassword(),
		BinDir:    binDir,
		DataDir:   filepath.Join(base, "data"),
		base:      base,
	}
	if err := p.start(ctx, opt, owner); err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("start PostgreSQL from %s: %w", binDir, err)
	}
	running.add(p)
	return p, nil
}

func (p *PG) start(ctx context.Context, opt PGOptions, owner *account) error {
	if err := os.Mkdir(p.SocketDir, 0o700); err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	pwfile := filepath.Join(p.base, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("write password file: %w", err)
	}
	if err := owner.chown(p.SocketDir, pwfile); err != nil {
		return err
	}
	initdb := command(owner, p.base, filepath.Join(p.BinDir, "initdb"),
		"-D", p.DataDir,
		"-U", p.Superuser,
		"--pwfile="+pwfile,
		"--auth-local=trust",
		"--auth-host=scram-sha-256",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync", // the data is thrown away; syncing costs seconds
	)
	err := run(ctx, initdb, filepath.Join(p.base, "initdb.log"))
	os.Remove(pwfile)
	if err != nil {
		return err
	}

	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": p.SocketDir,
		"password_encryption":     "scram-sha-256",
		"fsync":                   "off",
		"synchronous_commit":      "off",
		"full_page_writes":        "off",
		"max_connections":         "300",
		"shared_buffers":          "64MB",
		"logging_collector":       "off",
	}
	if opt.TLS {
		certs, err := writeServerCerts(p.DataDir, owner)
		if err != nil {
			return err
		}
		p.CAFile = certs.CA
		settings["ssl"] = "on"
		settings["ssl_cert_file"] = certs.Cert
		settings["ssl_key_file"] = certs.Key
		settings["ssl_ca_file"] = certs.CA
	}
	for k, v := range opt.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	logPath := filepath.Join(p.DataDir, "postgres.log")
	var lastErr error
	for attempt := 0; attempt < maxPortAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		args := []string{"-D", p.DataDir, "-p", strconv.Itoa(port)}
		for _, k := range keys {
			args = append(args, "-c", k+"="+settings[k])
		}
		proc, err := startProcess(command(owner, p.base, filepath.Join(p.BinDir, "postgres"), args...), logPath, owner)
		if err != nil {
			return err
		}
		p.Port = port
		err = waitReady(ctx, proc, p.probe)
		if err == nil {
			p.proc = proc
			return nil
		}
		proc.kill()
		lastErr = err
		if !addrInUse(proc.log()) {
			break
		}
	}
	return lastErr
}

// probe connects as the superuser over TCP and checks that the server that
// answers is ours: between choosing a port and binding it another server
// may have taken it.
func (p *PG) probe(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, p.AdminDSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var dir string
	if err := conn.QueryRow(ctx, "SELECT current_setting('data_directory')").Scan(&dir); err != nil {
		return err
	}
	if dir != p.DataDir {
		return fmt.Errorf("port %d is served by another PostgreSQL (data directory %s)", p.Port, dir)
	}
	return nil
}

// DSN returns a URL for pgx, lib/pq or psql that connects over TCP without
// TLS. User, password and database are escaped.
func (p *PG) DSN(user, password, database string) string {
	return p.dsn(user, password, database, url.Values{"sslmode": {"disable"}})
}

// TLSDSN is like DSN but requires TLS and verifies the server certificate
// against CAFile (sslmode=verify-full). It is only useful with PGOptions.TLS.
func (p *PG) TLSDSN(user, password, database string) string {
	return p.dsn(user, password, database, url.Values{"sslmode": {"verify-full"}, "sslrootcert": {p.CAFile}})
}

func (p *PG) dsn(user, password, database string, q url.Values) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		Path:     "/" + database,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// AdminDSN connects as the superuser to the postgres database.
func (p *PG) AdminDSN() string { return p.DSN(p.Superuser, p.Password, "postgres") }

// Addr is host:port of the TCP listener.
func (p *PG) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// TLSConfig returns a client TLS configuration that trusts CAFile only.
func (p *PG) TLSConfig() (*tls.Config, error) {
	if p.CAFile == "" {
		return nil, errors.New("PostgreSQL server was started without TLS")
	}
	return clientTLSConfig(p.CAFile)
}

var dbSeq atomic.Int64

// NewDatabase creates a database with a unique name, drops it when tb ends,
// and returns a superuser DSN for it. Tests sharing one server use it to stay
// out of each other's way.
func (p *PG) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := uniqueName(tb.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("testdb: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE ends sessions a test left open instead of failing the drop.
		if err := p.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("testdb: drop database %s: %v", name, err)
		}
	})
	return p.DSN(p.Superuser, p.Password, name)
}

func (p *PG) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, p.AdminDSN())
	if err != nil {
		return fmt.Errorf("connect as superuser: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

var nonIdent = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueName turns a test name into a database name that is readable in
// server logs, unique within the server, and within the 63-byte limit of
// PostgreSQL identifiers (MySQL allows 64).
func uniqueName(testName string) string {
	s := strings.Trim(nonIdent.ReplaceAllString(strings.ToLower(testName), "_"), "_")
	suffix := fmt.Sprintf("_%d_%d", os.Getpid(), dbSeq.Add(1))
	if max := 63 - len("t_") - len(suffix); len(s) > max {
		s = s[:max]
	}
	return "t_" + s + suffix
}

// Stop shuts the server down (fast shutdown: clients are disconnected) and
// removes its directory. It is safe to call more than once.
func (p *PG) Stop() error {
	p.stopOnce.Do(func() {
		running.remove(p)
		var err error
		if p.proc != nil {
			err = p.proc.stop(syscall.SIGINT, 30*time.Second)
		}
		if rmErr := os.RemoveAll(p.base); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove PostgreSQL directory: %w", rmErr))
		}
		if err != nil {
			p.stopErr = fmt.Errorf("stop PostgreSQL on port %d: %w", p.Port, err)
		}
	})
	return p.stopErr
}

// randomPassword returns a password that needs no quoting in DSNs or SQL
// but is unguessable: tests must not pass by accident with a wrong one.
func randomPassword() string { return rand.Text() }
