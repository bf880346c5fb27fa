package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/dbauth"
)

func newDBCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "db",
		Short: "Prepare upstream databases for IAM logins and rotate the passwords iamdb manages",
		Long: `Work on the upstream database of a configured instance, as iamdb's admin
user (backend_auth.admin_user).

  iamdb db setup --instance NAME    create role rds_iam, as on Amazon RDS (postgres)
  iamdb db rotate --instance NAME   give managed users new passwords now (postgres, mysql)`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newDBSetupCmd(g), newDBRotateCmd(g))
	return cmd
}

func newDBSetupCmd(g *globalFlags) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "setup --instance NAME",
		Short: "Create role rds_iam on an instance's upstream PostgreSQL",
		Long: `Create role rds_iam (NOLOGIN) on the upstream PostgreSQL of an instance, as
Amazon RDS provides it. Members of rds_iam log in through iamdb with IAM
authentication tokens only:

  CREATE USER app; GRANT rds_iam TO app;

Running it again changes nothing. The instance's iam_users list, when set,
decides instead of rds_iam membership. For a mysql instance (MySQL, MariaDB)
there is nothing to set up: its iam_users list decides.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			in, err := dbInstance(g, name, "postgres")
			if err != nil {
				return err
			}
			if in.Engine == "mysql" {
				fmt.Fprintf(cmd.OutOrStdout(), "Instance %s is a mysql instance: there is nothing to set up. MySQL and MariaDB have no rds_iam role;\n"+
					"the instance's iam_users (%s) decides which database users log in with IAM tokens.\n",
					in.Name, strings.Join(in.IAMUsers, ", "))
				return nil
			}
			p, closeAll, err := openBackend(ctx, g, in)
			if err != nil {
				return err
			}
			defer closeAll()
			created, err := p.EnsureIAMRole(ctx)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if created {
				fmt.Fprintf(w, "Created role %s (NOLOGIN) on %s (instance %s).\n", dbauth.IAMRole, in.Upstream.Address, in.Name)
			} else {
				fmt.Fprintf(w, "Role %s already exists on %s (instance %s): nothing to do.\n", dbauth.IAMRole, in.Upstream.Address, in.Name)
			}
			fmt.Fprintf(w, "\nTo let a database user log in with IAM authentication tokens, run as a superuser:\n\n    CREATE USER app; GRANT %s TO app;\n\n", dbauth.IAMRole)
			switch in.BackendAuth.Mode {
			case "managed":
				fmt.Fprintf(w, "backend_auth is managed: iamdb gives app a random password at its first IAM login,\nstores it sealed and rotates it every %s; nobody needs to know it.\n", in.BackendAuth.RotateEvery.D())
			case "secrets":
				fmt.Fprintf(w, "backend_auth is secrets: add app's password to %s\n(app: PASSWORD) and reload iamdb (SIGHUP).\n", in.BackendAuth.SecretsFile)
			case "trust":
				fmt.Fprintln(w, "backend_auth is trust: the upstream must trust iamdb's address for app (pg_hba.conf);\nonly safe on a private network path.")
			}
			if len(in.IAMUsers) > 0 {
				fmt.Fprintf(w, "\nNote: instance %s lists iam_users (%s); that list, not %s membership, decides who is IAM-enabled.\n",
					in.Name, strings.Join(in.IAMUsers, ", "), dbauth.IAMRole)
			}
			fmt.Fprintf(w, "A member of %s can no longer log in through iamdb with a password.\n", dbauth.IAMRole)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "instance", "", "instance name from the configuration (may be left out when there is one postgres instance)")
	return cmd
}

func newDBRotateCmd(g *globalFlags) *cobra.Command {
	var name, user string
	cmd := &cobra.Command{
		Use:   "rotate --instance NAME [--user DBUSER]",
		Short: "Give database users new passwords now (backend_auth mode managed)",
		Long: `Replace the passwords iamdb set for database users (backend_auth mode
managed) now, instead of waiting for rotate_every: for one --user, or for
every user iamdb holds a password for on the instance. Sessions already
open are not affected; new logins use the new password at once.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			in, err := dbInstance(g, name, "")
			if err != nil {
				return err
			}
			if in.BackendAuth.Mode != "managed" {
				return fmt.Errorf("instance %s uses backend_auth mode %s: iamdb only sets and rotates passwords in mode managed (in mode secrets, change the database password and the secrets file, then reload iamdb)", in.Name, in.BackendAuth.Mode)
			}
			p, closeAll, err := openRotator(ctx, g, in)
			if err != nil {
				return err
			}
			defer closeAll()
			w := cmd.OutOrStdout()
			if user != "" {
				if err := p.Rotate(ctx, user); err != nil {
					return err
				}
				fmt.Fprintf(w, "Rotated the password of database user %s on instance %s.\n", user, in.Name)
				return nil
			}
			done, err := p.RotateAll(ctx)
			for _, u := range done {
				fmt.Fprintf(w, "Rotated the password of database user %s on instance %s.\n", u, in.Name)
			}
			if err != nil {
				return err
			}
			if len(done) == 0 {
				fmt.Fprintf(w, "No database user of instance %s has a password from iamdb yet: nothing to rotate.\n", in.Name)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "instance", "", "instance name from the configuration (may be left out when there is one instance)")
	cmd.Flags().StringVar(&user, "user", "", "database user to rotate (default: every user with a managed password)")
	return cmd
}

// dbInstance loads the configuration (required) and returns the instance
// the command works on: the named one, else the only one of engine (any
// engine when engine is "").
func dbInstance(g *globalFlags, name, engine string) (*config.Instance, error) {
	cfg, err := g.loadConfig(true)
	if err != nil {
		return nil, err
	}
	in, err := pickInstance(cfg, name, engine)
	if err != nil {
		return nil, err
	}
	switch in.Engine {
	case "postgres", "mysql":
		return in, nil
	}
	return nil, fmt.Errorf("instance %s has engine %q: 'iamdb db' works on postgres and mysql instances", in.Name, in.Engine)
}

// rotator is what 'iamdb db rotate' needs of a backend.
type rotator interface {
	Rotate(ctx context.Context, dbUser string) error
	RotateAll(ctx context.Context) ([]string, error)
}

var (
	_ rotator = (*dbauth.Postgres)(nil)
	_ rotator = (*dbauth.MySQL)(nil)
)

// openRotator prepares backend authentication of in, of either engine.
func openRotator(ctx context.Context, g *globalFlags, in *config.Instance) (rotator, func(), error) {
	if in.Engine != "mysql" {
		return openBackend(ctx, g, in)
	}
	d, err := g.openDataDir(ctx)
	if err != nil {
		return nil, nil, err
	}
	m, err := dbauth.NewMySQL(ctx, dbauth.MySQLOptions{
		Instance: *in,
		Store:    d.Store,
		Sealer:   d.Sealer,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	return m, func() { m.Close(); d.Close() }, nil
}

// openBackend opens the data dir and prepares backend authentication of in.
func openBackend(ctx context.Context, g *globalFlags, in *config.Instance) (*dbauth.Postgres, func(), error) {
	d, err := g.openDataDir(ctx)
	if err != nil {
		return nil, nil, err
	}
	p, err := dbauth.NewPostgres(ctx, dbauth.PostgresOptions{
		Instance: *in,
		Store:    d.Store,
		Sealer:   d.Sealer,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	return p, func() { p.Close(); d.Close() }, nil
}

// pickInstance returns the named instance, or the only instance of engine
// (of any engine when engine is "") when no name is given.
func pickInstance(cfg *config.Config, name, engine string) (*config.Instance, error) {
	if name != "" {
		return cfg.Instance(name)
	}
	var found []*config.Instance
	for i := range cfg.Instances {
		if engine == "" || cfg.Instances[i].Engine == engine {
			found = append(found, &cfg.Instances[i])
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	names := make([]string, len(found))
	for i, in := range found {
		names[i] = in.Name
	}
	kind := engine + " instance"
	if engine == "" {
		kind = "instance"
	}
	if len(found) == 0 {
		return nil, usagef("no %s in %s: add one under instances", kind, cfg.Path)
	}
	return nil, usagef("--instance is required: %s has several %ss (%s)", cfg.Path, kind, strings.Join(names, ", "))
}
