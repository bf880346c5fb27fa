package testdb

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MariaDBOptions configures StartMariaDB. The zero value is a plain server.
type MariaDBOptions struct {
	// TLS generates a CA and a server certificate, configures ssl_cert,
	// ssl_key and ssl_ca, and exposes the CA as MariaDBServer.CAFile.
	// Clients may still connect without TLS.
	TLS bool
	// Args are extra mariadbd options (e.g. "--max-allowed-packet=64M");
	// later options override the defaults chosen here.
	Args []string
}

// MariaDBServer is a running throwaway MariaDB server. root authenticates
// with RootPassword over TCP and over the Unix socket.
type MariaDBServer struct {
	Host         string // always 127.0.0.1
	Port         int
	Socket       string // Unix socket path
	RootUser     string // "root"
	RootPassword string // random per server
	BaseDir      string // private directory holding data, socket, logs
	DataDir      string
	CAFile       string // CA that signed the server certificate; empty without TLS

	proc     *process
	stopOnce sync.Once
	stopErr  error
}

// MariaDB binaries: Debian ships the daemon in /usr/sbin, which is not on a
// normal user's PATH, and keeps the historical mysql* names as links.
var (
	mariaInstallNames = []string{"mariadb-install-db", "mysql_install_db"}
	mariaInstallDirs  = []string{"/usr/bin", "/usr/local/bin", "/usr/local/mysql/scripts", "/usr/local/mysql/bin"}
	mariaServerNames  = []string{"mariadbd", "mysqld"}
	mariaServerDirs   = []string{"/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/usr/local/mysql/bin"}
)

// StartMariaDB initialises a data directory in a private temp directory and
// starts mariadbd on a free loopback port, tuned for tests (no durable
// flushes, small buffer pool).
//
// When running as root, both mariadb-install-db and mariadbd run as the
// mysql OS user. We drop privileges ourselves instead of passing --user:
// that keeps the parent-death signal (Linux clears it when a process changes
// its own user), and stops mariadb-install-db from chown-ing system plugin
// directories, as it does when root passes --user.
func StartMariaDB(ctx context.Context, opt MariaDBOptions) (*MariaDBServer, error) {
	ctx, cancel := startDeadline(ctx)
	defer cancel()
	installDB, ok := lookPath(mariaInstallNames, mariaInstallDirs)
	if !ok {
		return nil, fmt.Errorf("MariaDB server %w: mariadb-install-db not found on PATH or in %v (Debian: apt-get install mariadb-server)", ErrNotInstalled, mariaInstallDirs)
	}
	server, ok := lookPath(mariaServerNames, mariaServerDirs)
	if !ok {
		return nil, fmt.Errorf("MariaDB server %w: mariadbd not found on PATH or in %v (Debian: apt-get install mariadb-server)", ErrNotInstalled, mariaServerDirs)
	}
	owner, err := serviceAccount("mysql", "MariaDB")
	if err != nil {
		return nil, err
	}
	base, err := makeBaseDir("mariadb", owner)
	if err != nil {
		return nil, err
	}
	m := &MariaDBServer{
		Host:         "127.0.0.1",
		Socket:       filepath.Join(base, "mysqld.sock"),
		RootUser:     "root",
		RootPassword: randomPassword(),
		BaseDir:      base,
		DataDir:      filepath.Join(base, "data"),
	}
	if err := m.start(ctx, opt, owner, installDB, server); err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("start MariaDB (%s): %w", server, err)
	}
	running.add(m)
	return m, nil
}

func (m *MariaDBServer) start(ctx context.Context, opt MariaDBOptions, owner *account, installDB, server string) error {
	// Options shared by the bootstrap server that mariadb-install-db runs
	// and the real one, so both agree on the data files' format.
	common := []string{
		"--innodb-buffer-pool-size=32M",
		"--innodb-log-file-size=16M",
		"--innodb-flush-log-at-trx-commit=0",
		"--loose-innodb-doublewrite=0",
		// Native AIO needs a kernel aio context per server; many parallel
		// test servers can exhaust fs.aio-max-nr.
		"--loose-innodb-use-native-aio=0",
	}
	install := command(owner, m.BaseDir, installDB, append([]string{
		"--no-defaults", // must come first: ignore /etc/mysql of the machine's server
		"--datadir=" + m.DataDir,
		"--auth-root-authentication-method=normal",
		"--skip-test-db",
		"--skip-name-resolve",
	}, common...)...)
	if err := run(ctx, install, filepath.Join(m.BaseDir, "install-db.log")); err != nil {
		return err
	}

	var tlsArgs []string
	if opt.TLS {
		certs, err := writeServerCerts(m.BaseDir, owner)
		if err != nil {
			return err
		}
		m.CAFile = certs.CA
		tlsArgs = []string{"--ssl-cert=" + certs.Cert, "--ssl-key=" + certs.Key, "--ssl-ca=" + certs.CA}
	}

	logPath := filepath.Join(m.BaseDir, "mysqld.log")
	var lastErr error
	for attempt := 0; attempt < maxPortAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		args := []string{
			"--no-defaults",
			"--datadir=" + m.DataDir,
			"--port=" + strconv.Itoa(port),
			"--socket=" + m.Socket,
			"--bind-address=127.0.0.1",
			"--skip-name-resolve",
			"--pid-file=" + filepath.Join(m.BaseDir, "mysqld.pid"),
			"--log-error=" + logPath,
			"--max-connections=400",
			"--skip-log-bin",
		}
		args = append(args, common...)
		args = append(args, tlsArgs...)
		args = append(args, opt.Args...)
		proc, err := startProcess(command(owner, m.BaseDir, server, args...), logPath, owner)
		if err != nil {
			return err
		}
		m.Port = port
		err = waitReady(ctx, proc, m.probeSocket)
		if err == nil {
			if err = m.secureRoot(ctx); err == nil {
				err = waitReady(ctx, proc, m.probeTCP)
			}
		}
		if err == nil {
			m.proc = proc
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

// probeSocket waits for the freshly installed server, whose root account
// has no password yet, on its private socket.
func (m *MariaDBServer) probeSocket(ctx context.Context) error {
	cfg := m.config(m.RootUser, "", "")
	cfg.Net, cfg.Addr = "unix", m.Socket
	db, err := quietDB(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.PingContext(ctx)
}

// secureRoot gives root the random password. mariadb-install-db creates
// root@localhost, @127.0.0.1 and @::1 without one, plus root@<hostname>,
// which --skip-name-resolve makes unusable and ALTER USER cannot touch; it
// is deleted so that no passwordless root is left in the grant tables.
func (m *MariaDBServer) secureRoot(ctx context.Context) error {
	cfg := m.config(m.RootUser, "", "mysql")
	cfg.Net, cfg.Addr = "unix", m.Socket
	db, err := quietDB(cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	// One connection: once root@localhost has a password, a new socket
	// connection without it would be refused.
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect as root over the socket: %w", err)
	}
	defer conn.Close()
	const rootHosts = "'localhost', '127.0.0.1', '::1'"
	steps := []struct{ what, stmt string }{
		{"delete root@hostname", "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN (" + rootHosts + ")"},
		{"delete root@hostname proxy grant", "DELETE FROM mysql.proxies_priv WHERE User = 'root' AND Host NOT IN (" + rootHosts + ")"},
		{"reload grants", "FLUSH PRIVILEGES"},
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		steps = append(steps, struct{ what, stmt string }{
			"set password of root@" + h,
			"ALTER USER IF EXISTS 'root'@" + quoteString(h) + " IDENTIFIED BY " + quoteString(m.RootPassword),
		})
	}
	for _, s := range steps {
		// Errors name the step, not the statement, which holds the password.
		if _, err := conn.ExecContext(ctx, s.stmt); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

// probeTCP checks root's password over TCP and that the server answering on
// our port is ours: another process may have taken the port first.
func (m *MariaDBServer) probeTCP(ctx context.Context) error {
	db, err := quietDB(m.config(m.RootUser, m.RootPassword, ""))
	if err != nil {
		return err
	}
	defer db.Close()
	var socket string
	if err := db.QueryRowContext(ctx, "SELECT @@socket").Scan(&socket); err != nil {
		return err
	}
	if socket != m.Socket {
		return fmt.Errorf("port %d is served by another MySQL server (socket %s)", m.Port, socket)
	}
	return nil
}

// quietDB opens a handle whose driver does not log: while a server starts,
// refused and half-open connections are expected, and the driver would
// print each of them to stderr.
func quietDB(cfg *mysql.Config) (*sql.DB, error) {
	cfg.Logger = &mysql.NopLogger{}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("configure MySQL driver: %w", err)
	}
	return sql.OpenDB(connector), nil
}

// quoteString quotes a MySQL string literal. Only used with values we
// generated or read from the server, but quoting is cheap insurance.
func quoteString(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '\\':
			out = append(out, '\\', c)
		default:
			out = append(out, c)
		}
	}
	return string(append(out, '\''))
}

func (m *MariaDBServer) config(user, password, database string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName = user, password, database
	cfg.Net, cfg.Addr = "tcp", m.Addr()
	return cfg
}

// Addr is host:port of the TCP listener.
func (m *MariaDBServer) Addr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// DSN returns a go-sql-driver/mysql DSN for a TCP connection without TLS:
// "user:pass@tcp(127.0.0.1:PORT)/db".
func (m *MariaDBServer) DSN(user, password, database string) string {
	return m.config(user, password, database).FormatDSN()
}

// RootDSN connects as root with no default database.
func (m *MariaDBServer) RootDSN() string { return m.DSN(m.RootUser, m.RootPassword, "") }

// TLSConfig returns a client TLS configuration that trusts CAFile only; use
// it with mysql.RegisterTLSConfig or a mysql.Config's TLS field.
func (m *MariaDBServer) TLSConfig() (*tls.Config, error) {
	if m.CAFile == "" {
		return nil, errors.New("MariaDB server was started without TLS")
	}
	return clientTLSConfig(m.CAFile)
}

// NewDatabase creates a database with a unique name, drops it when tb ends,
// and returns a root DSN for it.
func (m *MariaDBServer) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := uniqueName(tb.Name())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.exec(ctx, "CREATE DATABASE `"+name+"`"); err != nil {
		tb.Fatalf("testdb: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.exec(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			tb.Errorf("testdb: %v", err)
		}
	})
	return m.DSN(m.RootUser, m.RootPassword, name)
}

func (m *MariaDBServer) exec(ctx context.Context, stmt string) error {
	db, err := sql.Open("mysql", m.RootDSN())
	if err != nil {
		return fmt.Errorf("open root connection: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	return nil
}

// Stop shuts the server down and removes its directory. It is safe to call
// more than once.
func (m *MariaDBServer) Stop() error {
	m.stopOnce.Do(func() {
		running.remove(m)
		var err error
		if m.proc != nil {
			err = m.proc.stop(syscall.SIGTERM, 60*time.Second)
		}
		if rmErr := os.RemoveAll(m.BaseDir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove MariaDB directory: %w", rmErr))
		}
		if err != nil {
			m.stopErr = fmt.Errorf("stop MariaDB on port %d: %w", m.Port, err)
		}
	})
	return m.stopErr
}
