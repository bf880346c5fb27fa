package cli

import (
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
	cmd.AddCommand(newConnectPostgresCmd(g), newConnectMySQLCmd())
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

func newConnectMySQLCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "mysql",
		Short:              "Run the mysql client against an instance (not available yet)",
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("iamdb connect mysql is not available yet in this version: MySQL/MariaDB listeners are not built yet; use 'iamdb connect postgres'")
		},
	}
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
	rootCert := f.sslRootCert
	if rootCert == "" {
		dir, err := g.dataDir_()
		if err != nil {
			return err
		}
		rootCert = filepath.Join(dir, pki.BundleFile)
	}
	if rootCert, err = filepath.Abs(rootCert); err != nil {
		return fmt.Errorf("resolving the CA bundle path: %w", err)
	}
	if _, err := os.Stat(rootCert); err != nil {
		return fmt.Errorf("CA bundle %s: %w (run 'iamdb init' for a data directory, or pass --sslrootcert)", rootCert, err)
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
	c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	// psql handles Ctrl-C itself (it cancels the running query); the
	// terminal sends it to iamdb too, which must not die and leave psql
	// orphaned. Catching (not ignoring) it keeps psql's default disposition.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		exitProcess(ee.ExitCode())
		return fmt.Errorf("psql exited with status %d", ee.ExitCode())
	}
	if err != nil {
		return fmt.Errorf("running psql: %w", err)
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
