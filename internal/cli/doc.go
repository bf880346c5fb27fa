// Package cli is iamdb's command line: the only place where flags are parsed
// and where errors are turned into messages and exit codes.
//
// Each subcommand lives in its own file and builds a *cobra.Command. Commands
// get their output streams from the root command (cmd.OutOrStdout,
// cmd.ErrOrStderr) so tests can run the whole CLI in-process through Main.
//
// Exit codes: 0 success, 1 the command failed, 2 the command line was wrong
// (unknown flag, missing argument). The error text always says what to do.
package cli
