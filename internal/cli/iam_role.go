package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/identity"
)

func newRoleCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "role",
		Short: "Manage IAM roles: create, list, get, update, delete, tags, policies, boundary",
		Long: `Manage IAM roles: principals that whoever their trust policy admits can
assume, receiving temporary credentials with the role's permissions. The
trust policy is given with --trust-policy as a file path, file://PATH, - for
standard input, or inline JSON; every statement must name a Principal.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newRoleCreateCmd(g),
		newRoleListCmd(g),
		newRoleGetCmd(g),
		newRoleUpdateCmd(g),
		newRoleDeleteCmd(g),
		newRoleTagCmd(g),
		newRoleUntagCmd(g),
		newRoleSetBoundaryCmd(g),
	)
	cmd.AddCommand(holderCommands(g, identity.KindRole)...)
	return cmd
}

func newRoleCreateCmd(g *globalFlags) *cobra.Command {
	var (
		trustFlag, trust, path, boundary, duration, description string
		tagArgs                                                 []string
		tags                                                    map[string]string
		maxDuration                                             time.Duration
	)
	cmd := iamCommand(g, "create NAME --trust-policy FILE|JSON [--max-session-duration 3600|1h] [--path PATH] [--tag KEY=VALUE …] [--permissions-boundary POLICY]",
		"Create a role", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			barn, br, err := e.boundaryARN(boundary)
			if err != nil {
				return err
			}
			r, err := e.store.CreateRole(e.ctx, identity.Role{
				AccountID: e.account, Name: args[0], Path: path, Description: description, TrustPolicy: trust,
				MaxSessionDuration: maxDuration, Tags: tags, PermissionsBoundary: barn,
			})
			if err != nil {
				return e.failCreate(err, roleRef(args[0]), br)
			}
			return printRole(e, r)
		})
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) (err error) {
		if tags, err = iamParseTags(tagArgs); err != nil {
			return err
		}
		if duration != "" {
			if maxDuration, err = iamParseDuration(duration); err != nil {
				return err
			}
		}
		trust, err = iamLoadDocument(cmd.InOrStdin(), "--trust-policy", trustFlag, true)
		return err
	}
	fl := cmd.Flags()
	fl.StringVar(&trustFlag, "trust-policy", "", "trust policy: file path, file://PATH, - or inline JSON (required)")
	fl.StringVar(&duration, "max-session-duration", "", "longest session the role grants: seconds (3600) or a duration (1h), 1h to 12h (default 1h)")
	fl.StringVar(&path, "path", "/", "IAM path, e.g. /service/")
	fl.StringVar(&description, "description", "", "what the role is for")
	fl.StringArrayVar(&tagArgs, "tag", nil, "tag KEY=VALUE (repeatable); sessions inherit it as ${aws:PrincipalTag/KEY}")
	fl.StringVar(&boundary, "permissions-boundary", "", "managed policy (name or ARN) capping the role's permissions")
	return cmd
}

func printRole(e *iamEnv, r identity.Role) error {
	if e.json {
		return writeJSON(e.out, map[string]any{"Role": toRoleJSON(r)})
	}
	if err := iamFields(e.out,
		"Role", r.Name,
		"ARN", r.ARN(),
		"ID", r.ID,
		"Path", r.Path,
		"Description", iamOrNone(r.Description),
		"Max session duration", fmt.Sprintf("%s (%d seconds)", r.MaxSessionDuration, int64(r.MaxSessionDuration/time.Second)),
		"Tags", iamTagsText(r.Tags),
		"Permissions boundary", iamOrNone(r.PermissionsBoundary),
		"Created", iamTime(r.CreatedAt),
	); err != nil {
		return err
	}
	fmt.Fprintf(e.out, "\nTrust policy:\n%s\n", iamPrettyDocument(r.TrustPolicy))
	return nil
}

func newRoleListCmd(g *globalFlags) *cobra.Command {
	var prefix string
	cmd := iamCommand(g, "list [--path-prefix PATH]", "List the account's roles", noArgs,
		func(e *iamEnv, _ []string) error {
			rs, err := e.store.ListRoles(e.ctx, e.account, prefix)
			if err != nil {
				return e.fail(err)
			}
			if e.json {
				out := make([]roleJSON, 0, len(rs))
				for _, r := range rs {
					out = append(out, toRoleJSON(r))
				}
				return writeJSON(e.out, map[string]any{"Roles": out})
			}
			if len(rs) == 0 {
				fmt.Fprintf(e.out, "No roles in account %s.\n", e.account)
				return nil
			}
			tw := iamTable(e.out)
			fmt.Fprintln(tw, "NAME\tPATH\tID\tMAX SESSION\tCREATED")
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Path, r.ID, r.MaxSessionDuration, iamTime(r.CreatedAt))
			}
			return tw.Flush()
		})
	cmd.Flags().StringVar(&prefix, "path-prefix", "", "only roles whose path starts with this")
	return cmd
}

func newRoleGetCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "get NAME", "Show a role with its trust policy", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			r, err := e.store.GetRole(e.ctx, e.account, args[0])
			if err != nil {
				return e.fail(err, roleRef(args[0]))
			}
			return printRole(e, r)
		})
}

func newRoleUpdateCmd(g *globalFlags) *cobra.Command {
	var (
		trustFlag, duration, description string
		upd                              identity.RoleUpdate
	)
	cmd := iamCommand(g, "update NAME [--trust-policy FILE|JSON] [--max-session-duration 3600|1h] [--description TEXT]",
		"Change a role's trust policy, maximum session duration or description", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			r, err := e.store.UpdateRole(e.ctx, e.account, args[0], upd)
			if err != nil {
				return e.fail(err, roleRef(args[0]))
			}
			return printRole(e, r)
		})
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		fl := cmd.Flags()
		if !fl.Changed("trust-policy") && !fl.Changed("max-session-duration") && !fl.Changed("description") {
			return usagef("%s: nothing to change: pass --trust-policy, --max-session-duration or --description", cmd.CommandPath())
		}
		if fl.Changed("trust-policy") {
			trust, err := iamLoadDocument(cmd.InOrStdin(), "--trust-policy", trustFlag, true)
			if err != nil {
				return err
			}
			upd.TrustPolicy = &trust
		}
		if fl.Changed("max-session-duration") {
			d, err := iamParseDuration(duration)
			if err != nil {
				return err
			}
			upd.MaxSessionDuration = &d
		}
		if fl.Changed("description") {
			upd.Description = &description
		}
		return nil
	}
	fl := cmd.Flags()
	fl.StringVar(&trustFlag, "trust-policy", "", "new trust policy: file path, file://PATH, - or inline JSON")
	fl.StringVar(&duration, "max-session-duration", "", "new maximum session duration: seconds (3600) or a duration (1h), 1h to 12h")
	fl.StringVar(&description, "description", "", "new description")
	return cmd
}

func newRoleDeleteCmd(g *globalFlags) *cobra.Command {
	var force bool
	cmd := iamCommand(g, "delete NAME [--force]", "Delete a role and end its live sessions", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			err := e.store.DeleteRole(e.ctx, e.account, args[0], identity.DeleteOptions{Force: force})
			if errors.Is(err, identity.ErrConflict) {
				return iamDeleteConflict(err, "role", args[0])
			}
			if err != nil {
				return e.fail(err, roleRef(args[0]))
			}
			e.done("Deleted role %s; its sessions are revoked.", args[0])
			return nil
		})
	cmd.Flags().BoolVar(&force, "force", false, "also delete the role's inline policies and attachments")
	return cmd
}

func newRoleTagCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "tag NAME KEY=VALUE …", "Add or change tags of a role", iamArgsAtLeast("NAME", "KEY=VALUE"),
		func(e *iamEnv, args []string) error {
			add, err := iamParseTags(args[1:])
			if err != nil {
				return err
			}
			return retagRole(e, args[0], add, nil)
		})
}

func newRoleUntagCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "untag NAME KEY …", "Remove tags from a role (absent keys are ignored)", iamArgsAtLeast("NAME", "KEY"),
		func(e *iamEnv, args []string) error {
			return retagRole(e, args[0], nil, args[1:])
		})
}

// retagRole merges tag changes into the role's tags, as TagRole and
// UntagRole do; the store only replaces the whole set.
func retagRole(e *iamEnv, name string, add map[string]string, remove []string) error {
	r, err := e.store.GetRole(e.ctx, e.account, name)
	if err != nil {
		return e.fail(err, roleRef(name))
	}
	tags := iamMergeTags(r.Tags, add, remove)
	if _, err := e.store.UpdateRole(e.ctx, e.account, name, identity.RoleUpdate{Tags: &tags}); err != nil {
		return e.fail(err, roleRef(name))
	}
	e.done("Tags of role %s: %s.", r.Name, iamTagsText(tags))
	return nil
}

func newRoleSetBoundaryCmd(g *globalFlags) *cobra.Command {
	var remove bool
	cmd := iamCommand(g, "set-boundary NAME POLICY | set-boundary NAME --remove",
		"Set or remove the permissions boundary of a role", iamBoundaryArgs,
		func(e *iamEnv, args []string) error {
			arn, br, err := iamBoundary(e, args, remove)
			if err != nil {
				return err
			}
			if _, err := e.store.UpdateRole(e.ctx, e.account, args[0], identity.RoleUpdate{PermissionsBoundary: &arn}); err != nil {
				return e.fail(err, roleRef(args[0]), br)
			}
			if remove {
				e.done("Removed the permissions boundary of role %s.", args[0])
			} else {
				e.done("Permissions boundary of role %s: %s.", args[0], arn)
			}
			return nil
		})
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the boundary instead of setting one")
	return cmd
}
