package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/pki"
)

// exitProcess ends iamdb with the client's exit status, so scripts see
// psql's own codes (1 error, 2 connection lost, 3 script error).
var exitProcess = os.Exit

type connectFlags struct {
	instance    string
	user        string
	database    string
	profile     string
	sslRootCert string
}

func newConnectCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connect postgres|mysql",
		Short: "Run psql or mysql with a fresh token and the right TLS settings",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown database client %q: use 'iamdb connect postgres' (or mysql)", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newConnectPostgresCmd(g), newConnectMySQLCmd(g))
	return cmd
}

func newConnectPostgresCmd(g *globalFlags) *cobra.Command {
	f := &connectFlags{}
	cmd := &cobra.Command{
		Use:   "postgres --instance NAME --user USER [--database DB] [-- PSQL-ARGS...]",
		Short: "Run psql against an instance with a fresh IAM token",
		Long: `Generate an IAM authentication token with your AWS credentials for the
instance's first endpoint and run psql with it, verifying the server's
certificate against the data directory's ca-bundle.pem (sslmode=verify-full).

The token is handed to psql in the PGPASSWORD environment variable, never on
its command line, where other users of the machine could read it. Arguments
after -- go to psql unchanged; iamdb exits with psql's exit status.

Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, a profile with --profile or AWS_PROFILE, ...).

Example:
  iamdb connect postgres --instance orders --user alice -- -c 'select current_user'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); len(args) > 0 && dash != 0 {
				return usagef("unexpected argument %q: put psql's arguments after --", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConnectPostgres(cmd, g, f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.instance, "instance", "", "instance name from the configuration (default: the only postgres instance)")
	fl.StringVar(&f.user, "user", "", "database user to log in as (required)")
	fl.StringVar(&f.database, "database", "", "database to connect to (default: the user name)")
	fl.StringVar(&f.profile, "profile", "", "AWS profile to take credentials from")
	fl.StringVar(&f.sslRootCert, "sslrootcert", "", "CA bundle to verify the listener with (default: ca-bundle.pem in the data directory)")
	return cmd
}

func runConnectPostgres(cmd *cobra.Command, g *globalFlags, f *connectFlags, extra []string) error {
	if f.user == "" {
		return usagef("missing required flag: --user")
	}
	cfg, err := g.loadConfig(true)
	if err != nil {
		return err
	}
	in, err := connectInstance(cfg, f.instance, "postgres")
	if err != nil {
		return err
	}
	host, port, err := instanceEndpoint(in)
	if err != nil {
		return err
	}
	rootCert, err := caBundle(g, f.sslRootCert, "--sslrootcert")
	if err != nil {
		return err
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		return errors.New("psql was not found on PATH: install the PostgreSQL client (Debian: apt-get install postgresql-client)")
	}
	token, err := generateToken(cmd.Context(), &tokenFlags{
		hostname: host, port: port, username: f.user, region: in.Region, profile: f.profile,
	})
	if err != nil {
		return err
	}

	c := exec.Command(psql, psqlArgs(host, port, f.user, f.database, rootCert, extra)...)
	c.Env = append(withoutEnv(os.Environ(), "PGPASSWORD"), "PGPASSWORD="+token)
	return runClient(cmd, c, "psql")
}

// caBundle is the CA bundle a client verifies the listener with: flagValue
// (the client flag named flagName), else the data directory's
// ca-bundle.pem, as an absolute path that exists.
func caBundle(g *globalFlags, flagValue, flagName string) (string, error) {
	rootCert := flagValue
	if rootCert == "" {
		dir, err := g.dataDir_()
		if err != nil {
			return "", err
		}
		rootCert = filepath.Join(dir, pki.BundleFile)
	}
	rootCert, err := filepath.Abs(rootCert)
	if err != nil {
		return "", fmt.Errorf("resolving the CA bundle path: %w", err)
	}
	if _, err := os.Stat(rootCert); err != nil {
		return "", fmt.Errorf("CA bundle %s: %w (run 'iamdb init' for a data directory, or pass %s)", rootCert, err, flagName)
	}
	return rootCert, nil
}

// runClient runs a database client in the foreground and passes its exit
// status on.
func runClient(cmd *cobra.Command, c *exec.Cmd, name string) error {
	c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	// psql and mariadb handle Ctrl-C themselves (they cancel the running
	// query); the terminal sends it to iamdb too, which must not die and
	// leave the client orphaned. Catching (not ignoring) it keeps the
	// client's default disposition.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		exitProcess(ee.ExitCode())
		return fmt.Errorf("%s exited with status %d", name, ee.ExitCode())
	}
	if err != nil {
		return fmt.Errorf("running %s: %w", name, err)
	}
	return nil
}

// connectInstance finds the named instance of engine, or the only one when no
// name is given.
func connectInstance(cfg *config.Config, name, engine string) (config.Instance, error) {
	var names []string
	var only []config.Instance
	for _, in := range cfg.Instances {
		names = append(names, in.Name)
		if name != "" && in.Name == name {
			if in.Engine != engine {
				return config.Instance{}, usagef("instance %s is a %s instance, not %s", name, in.Engine, engine)
			}
			return in, nil
		}
		if in.Engine == engine {
			only = append(only, in)
		}
	}
	if name == "" {
		if len(only) == 1 {
			return only[0], nil
		}
		return config.Instance{}, usagef("missing --instance: the configuration has %d %s instances (%s)", len(only), engine, strings.Join(names, ", "))
	}
	if len(names) == 0 {
		return config.Instance{}, usagef("no instance %q: the configuration %s has no instances", name, cfg.Path)
	}
	return config.Instance{}, usagef("no instance %q in the configuration; instances: %s", name, strings.Join(names, ", "))
}

// instanceEndpoint is the host and port clients use for in: its first
// endpoint, the name the token is signed for.
func instanceEndpoint(in config.Instance) (string, int, error) {
	if len(in.Endpoints) == 0 {
		return "", 0, fmt.Errorf("instance %s has no endpoints: add endpoints: [host:port] to it", in.Name)
	}
	host, p, err := net.SplitHostPort(in.Endpoints[0])
	port, perr := strconv.Atoi(p)
	if err != nil || perr != nil {
		return "", 0, fmt.Errorf("instance %s: endpoint %q is not host:port", in.Name, in.Endpoints[0])
	}
	return host, port, nil
}

// psqlArgs is psql's command line: the connection as one conninfo string
// (so option order in extra cannot change it), then the user's arguments.
// It never holds the token.
func psqlArgs(host string, port int, user, database, rootCert string, extra []string) []string {
	kv := []string{
		"host=" + conninfoValue(host),
		"port=" + strconv.Itoa(port),
		"user=" + conninfoValue(user),
	}
	if database != "" {
		kv = append(kv, "dbname="+conninfoValue(database))
	}
	kv = append(kv, "sslmode=verify-full", "sslrootcert="+conninfoValue(rootCert))
	return append([]string{"--dbname", strings.Join(kv, " ")}, extra...)
}

// conninfoValue quotes a libpq keyword value: single quotes, with \ and '
// escaped by a backslash.
func conninfoValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " '\\\t\n\r\f\v") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// withoutEnv drops the variables named keys from env.
func withoutEnv(env []string, keys ...string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, key := range keys {
			if k == key {
				drop = true
			}
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

type connectMySQLFlags struct {
	instance string
	user     string
	database string
	profile  string
	sslCA    string
}

func newConnectMySQLCmd(g *globalFlags) *cobra.Command {
	f := &connectMySQLFlags{}
	cmd := &cobra.Command{
		Use:   "mysql --instance NAME --user USER [--database DB] [-- MARIADB-ARGS...]",
		Short: "Run the mariadb (or mysql) client against an instance with a fresh IAM token",
		Long: `Generate an IAM authentication token with your AWS credentials for the
instance's first endpoint and run the mariadb client (or mysql when mariadb
is not installed) with it over TCP and TLS, verifying the server's
certificate against the data directory's ca-bundle.pem and with the
cleartext plugin enabled, as Amazon RDS IAM authentication requires:

  --ssl --ssl-ca=<data dir>/ca-bundle.pem --ssl-verify-server-cert

(MariaDB's client always allows the cleartext plugin; MySQL's own client
gets --ssl-mode=VERIFY_IDENTITY --ssl-ca=... --enable-cleartext-plugin.)
The token is handed to the client in the
MYSQL_PWD environment variable, never on its command line, where other
users of the machine could read it. Arguments after -- go to the client
unchanged; iamdb exits with the client's exit status.

Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, a profile with --profile or AWS_PROFILE, ...).

Example:
  iamdb connect mysql --instance shop --user app -- -e 'select current_user()'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); len(args) > 0 && dash != 0 {
				return usagef("unexpected argument %q: put the mariadb client's arguments after --", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConnectMySQL(cmd, g, f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.instance, "instance", "", "instance name from the configuration (default: the only mysql instance)")
	fl.StringVar(&f.user, "user", "", "database user to log in as (required)")
	fl.StringVar(&f.database, "database", "", "default database")
	fl.StringVar(&f.profile, "profile", "", "AWS profile to take credentials from")
	fl.StringVar(&f.sslCA, "ssl-ca", "", "CA bundle to verify the listener with (default: ca-bundle.pem in the data directory)")
	return cmd
}

// mysqlClients are the client programs tried, in order. MariaDB's is the
// one Debian ships; mysql may be MariaDB's under its old name or MySQL's.
var mysqlClients = []string{"mariadb", "mysql"}

func runConnectMySQL(cmd *cobra.Command, g *globalFlags, f *connectMySQLFlags, extra []string) error {
	if f.user == "" {
		return usagef("missing required flag: --user")
	}
	cfg, err := g.loadConfig(true)
	if err != nil {
		return err
	}
	in, err := connectInstance(cfg, f.instance, "mysql")
	if err != nil {
		return err
	}
	host, port, err := instanceEndpoint(in)
	if err != nil {
		return err
	}
	ca, err := caBundle(g, f.sslCA, "--ssl-ca")
	if err != nil {
		return err
	}
	client, mariadb, err := findMySQLClient(cmd.Context())
	if err != nil {
		return err
	}
	token, err := generateToken(cmd.Context(), &tokenFlags{
		hostname: host, port: port, username: f.user, region: in.Region, profile: f.profile,
	})
	if err != nil {
		return err
	}
	c := exec.Command(client, mysqlArgs(mariadb, host, port, f.user, f.database, ca, extra)...)
	c.Env = append(withoutEnv(os.Environ(), "MYSQL_PWD"), "MYSQL_PWD="+token)
	return runClient(cmd, c, filepath.Base(client))
}

// findMySQLClient returns the client program and whether it is MariaDB's,
// whose TLS flags differ from MySQL's.
func findMySQLClient(ctx context.Context) (path string, mariadb bool, err error) {
	for _, name := range mysqlClients {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		if name == "mariadb" {
			return p, true, nil
		}
		out, err := exec.CommandContext(ctx, p, "--version").Output()
		if err != nil {
			return "", false, fmt.Errorf("%s --version: %w", p, err)
		}
		return p, strings.Contains(string(out), "MariaDB"), nil
	}
	return "", false, errors.New("neither mariadb nor mysql was found on PATH: install a MySQL client (Debian: apt-get install mariadb-client)")
}

// mysqlArgs is the client's command line: the connection first, then the
// user's arguments, which may override anything but never see the token.
// --protocol=TCP keeps "localhost" from meaning the local Unix socket.
func mysqlArgs(mariadb bool, host string, port int, user, database, ca string, extra []string) []string {
	args := []string{
		"--host=" + host,
		"--port=" + strconv.Itoa(port),
		"--protocol=TCP",
		"--user=" + user,
	}
	if mariadb {
		// MariaDB's client always allows mysql_clear_password; it calls
		// --enable-cleartext-plugin obsolete and warns on standard output,
		// which would end up in scripts' results.
		args = append(args, "--ssl", "--ssl-ca="+ca, "--ssl-verify-server-cert")
	} else {
		args = append(args, "--ssl-mode=VERIFY_IDENTITY", "--ssl-ca="+ca, "--enable-cleartext-plugin")
	}
	if database != "" {
		args = append(args, "--database="+database)
	}
	return append(args, extra...)
}
