package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo [--keep]",
		Short: "Walk through iamdb on throwaway local PostgreSQL and MariaDB",
		Long: `Run a narrated walkthrough of iamdb on throwaway databases: start a
PostgreSQL and a MariaDB from this machine's binaries in a temporary
directory on free ports, create a data directory, apply identities (a user,
a federated role with session tags, policies), create database users, run
iamdb serve, get tokens from the AWS CLI and from iamdb token, log in with
psql and mariadb, show a refused login and why, and print the audit trail.
Every command is shown as you would type it.

Databases you already run are never touched. Everything the demo started is
stopped and removed at the end, on an error, and on Ctrl-C.

It needs the PostgreSQL and MariaDB servers and clients and the AWS CLI
(scripts/deps.sh installs them; make demo runs it first).

With --keep, everything stays up after the walkthrough; the demo prints
commands to try in another terminal and cleans up on Ctrl-C.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("locating the iamdb binary the demo runs: %w", err)
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			return demo.Run(ctx, demo.Options{Out: cmd.OutOrStdout(), Keep: keep, Executable: exe})
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave everything running after the walkthrough, until Ctrl-C")
	return cmd
}
