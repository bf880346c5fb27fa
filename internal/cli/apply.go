package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/apply"
)

func newApplyCmd(g *globalFlags) *cobra.Command {
	var (
		file   string
		prune  bool
		dryRun bool
		keep   []string
		out    outputFlag
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--prune] [--dry-run] [--output text|json]",
		Short: "Make users, groups, roles, policies and OIDC providers match an identities file",
		Long: `Read an identities file (YAML: users, groups, roles, policies, oidc_providers),
print the plan of changes that makes the account match it, and apply them.
Applying the same file again changes nothing.

Objects the file does not name are left alone unless --prune is given; then
they are deleted, except the admin user and the AdministratorAccess policy
created by 'iamdb init' (and anything named with --keep TYPE/NAME) unless the
file names them. ${account} in documents and ARNs stands for the account id.
Secrets never go in the file: create access keys with 'iamdb access-key create'.

A file with errors changes nothing. If a step fails, the steps before it stay
applied; fix the cause and run apply again.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			if file == "" {
				return usagef("-f FILE is required: the identities file to apply (- reads stdin)")
			}
			opts := apply.Options{Prune: prune}
			for _, k := range keep {
				rule, err := apply.ParseKeepRule(k)
				if err != nil {
					return usagef("%v", err)
				}
				opts.Keep = append(opts.Keep, rule)
			}
			f, err := apply.Load(file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			d, err := g.openDataDir(ctx)
			if err != nil {
				return err
			}
			defer d.Close()
			account := g.account(d)
			plan, err := f.Plan(ctx, g.identityStore(d), account, opts)
			if err != nil {
				return fmt.Errorf("%s: nothing was changed:\n%w", file, err)
			}
			w := cmd.OutOrStdout()
			if !asJSON {
				fmt.Fprint(w, plan.String())
			}
			applied := false
			if !dryRun && !plan.Empty() {
				if err := plan.Apply(ctx, g.identityStore(d)); err != nil {
					return fmt.Errorf("apply %s: %w", file, err)
				}
				applied = true
			}
			if asJSON {
				return writeJSON(w, map[string]any{"Plan": plan, "DryRun": dryRun, "Applied": applied})
			}
			c, u, del := plan.Counts()
			switch {
			case dryRun && !plan.Empty():
				fmt.Fprintln(w, "Dry run: nothing was changed. Run without --dry-run to apply.")
			case applied:
				fmt.Fprintf(w, "Applied: %d created, %d updated, %d deleted in account %s.\n", c, u, del, account)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "identities file to apply (YAML; - reads stdin)")
	cmd.Flags().BoolVar(&prune, "prune", false, "delete users, groups, roles, policies and OIDC providers the file does not name")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	cmd.Flags().StringArrayVar(&keep, "keep", nil, "with --prune, also keep TYPE/NAME (user, group, role, policy, oidc-provider); repeatable")
	cmd.Flags().StringVar(&out.format, "output", "text", "text or json")
	return cmd
}
