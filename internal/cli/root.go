package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/config"
)

// usageError marks errors caused by the command line itself, so Main can exit
// with status 2 as conventional Unix tools do.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// globalFlags are accepted by every command (product.md: --config, --data-dir).
type globalFlags struct {
	configPath string
	dataDir    string
	cfg        *config.Config // loaded once per command
}

// Main runs the CLI with args (without the program name) and returns the
// process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "iamdb: %s\n", strings.TrimSpace(err.Error()))
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Run 'iamdb help' for usage.")
		return 2
	}
	return 1
}

func newRoot() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "iamdb",
		Short: "IAM database authentication for PostgreSQL, MySQL and MariaDB",
		Long: `iamdb lets applications and people log in to PostgreSQL, MySQL and MariaDB
with short-lived IAM authentication tokens instead of passwords, exactly as
Amazon RDS IAM database authentication does, on any server you run.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "configuration file (default ./iamdb.yaml, or $IAMDB_CONFIG)")
	pf.StringVar(&g.dataDir, "data-dir", "", "data directory (default from the configuration, or $IAMDB_DATA_DIR)")

	root.AddCommand(
		newVersionCmd(),
		newTokenCmd(g),
		newInitCmd(g),
		newUserCmd(g),
		newGroupCmd(g),
		newRoleCmd(g),
		newPolicyCmd(g),
		newAccessKeyCmd(g),
		newApplyCmd(g),
		newDBCmd(g),
		newServeCmd(g),
		newConnectCmd(g),
		newSessionCmd(g),
		newAuditCmd(g),
		newDemoCmd(),
	)
	// Unknown subcommands and stray arguments are usage errors too.
	root.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q", args[0])
		}
		return nil
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	return root
}
