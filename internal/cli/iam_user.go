package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/identity"
)

func newUserCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage IAM users: create, list, get, delete, tags, policies, boundary",
		Long: `Manage IAM users: long-term principals that sign tokens with access keys
('iamdb access-key create --user NAME'). Users get permissions from managed
policies attached to them or to their groups and from inline policies; a
permissions boundary caps them. A POLICY argument is a managed policy name
in the current account or a full ARN.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newUserCreateCmd(g),
		newUserListCmd(g),
		newUserGetCmd(g),
		newUserDeleteCmd(g),
		newUserTagCmd(g),
		newUserUntagCmd(g),
		newUserSetBoundaryCmd(g),
	)
	cmd.AddCommand(holderCommands(g, identity.KindUser)...)
	return cmd
}

// boundaryARN resolves a --permissions-boundary value ("" for none).
func (e *iamEnv) boundaryARN(arg string) (string, iamRef, error) {
	if arg == "" {
		return "", iamRef{}, nil
	}
	r, err := e.policyRef(arg)
	return r.key, r, err
}

func newUserCreateCmd(g *globalFlags) *cobra.Command {
	var (
		path, boundary string
		tagArgs        []string
		tags           map[string]string
	)
	cmd := iamCommand(g, "create NAME [--path PATH] [--tag KEY=VALUE …] [--permissions-boundary POLICY]",
		"Create a user", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			barn, br, err := e.boundaryARN(boundary)
			if err != nil {
				return err
			}
			u, err := e.store.CreateUser(e.ctx, identity.User{
				AccountID: e.account, Name: args[0], Path: path, Tags: tags, PermissionsBoundary: barn,
			})
			if err != nil {
				return e.failCreate(err, userRef(args[0]), br)
			}
			return printUser(e, u)
		})
	cmd.PreRunE = func(*cobra.Command, []string) (err error) {
		tags, err = iamParseTags(tagArgs)
		return err
	}
	cmd.Flags().StringVar(&path, "path", "/", "IAM path, e.g. /engineering/")
	cmd.Flags().StringArrayVar(&tagArgs, "tag", nil, "tag KEY=VALUE (repeatable); policies read it as ${aws:PrincipalTag/KEY}")
	cmd.Flags().StringVar(&boundary, "permissions-boundary", "", "managed policy (name or ARN) capping the user's permissions")
	return cmd
}

func printUser(e *iamEnv, u identity.User) error {
	if e.json {
		return writeJSON(e.out, map[string]any{"User": toUserJSON(u)})
	}
	return iamFields(e.out,
		"User", u.Name,
		"ARN", u.ARN(),
		"ID", u.ID,
		"Path", u.Path,
		"Groups", iamOrNone(strings.Join(u.Groups, ", ")),
		"Tags", iamTagsText(u.Tags),
		"Permissions boundary", iamOrNone(u.PermissionsBoundary),
		"Created", iamTime(u.CreatedAt),
	)
}

func newUserListCmd(g *globalFlags) *cobra.Command {
	var prefix string
	cmd := iamCommand(g, "list [--path-prefix PATH]", "List the account's users", noArgs,
		func(e *iamEnv, _ []string) error {
			us, err := e.store.ListUsers(e.ctx, e.account, prefix)
			if err != nil {
				return e.fail(err)
			}
			if e.json {
				out := make([]userJSON, 0, len(us))
				for _, u := range us {
					out = append(out, toUserJSON(u))
				}
				return writeJSON(e.out, map[string]any{"Users": out})
			}
			if len(us) == 0 {
				fmt.Fprintf(e.out, "No users in account %s.\n", e.account)
				return nil
			}
			tw := iamTable(e.out)
			fmt.Fprintln(tw, "NAME\tPATH\tID\tGROUPS\tCREATED")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Path, u.ID, iamOrNone(strings.Join(u.Groups, ",")), iamTime(u.CreatedAt))
			}
			return tw.Flush()
		})
	cmd.Flags().StringVar(&prefix, "path-prefix", "", "only users whose path starts with this")
	return cmd
}

func newUserGetCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "get NAME", "Show a user", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			u, err := e.store.GetUser(e.ctx, e.account, args[0])
			if err != nil {
				return e.fail(err, userRef(args[0]))
			}
			return printUser(e, u)
		})
}

// iamDeleteConflict adds the command that deletes anyway to the store's list
// of what still hangs off a principal.
func iamDeleteConflict(err error, kind, name string) error {
	return &iamError{fmt.Sprintf("%s ('iamdb %s delete %s --force' removes them together with the %s)",
		iamStoreDetail(err), kind, name, kind), err}
}

func newUserDeleteCmd(g *globalFlags) *cobra.Command {
	var force bool
	cmd := iamCommand(g, "delete NAME [--force]", "Delete a user", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			err := e.store.DeleteUser(e.ctx, e.account, args[0], identity.DeleteOptions{Force: force})
			if errors.Is(err, identity.ErrConflict) {
				return iamDeleteConflict(err, "user", args[0])
			}
			if err != nil {
				return e.fail(err, userRef(args[0]))
			}
			e.done("Deleted user %s.", args[0])
			return nil
		})
	cmd.Flags().BoolVar(&force, "force", false, "also delete the user's access keys, inline policies, attachments and group memberships, and end its sessions")
	return cmd
}

func newUserTagCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "tag NAME KEY=VALUE …", "Add or change tags of a user", iamArgsAtLeast("NAME", "KEY=VALUE"),
		func(e *iamEnv, args []string) error {
			add, err := iamParseTags(args[1:])
			if err != nil {
				return err
			}
			u, err := e.store.GetUser(e.ctx, e.account, args[0])
			if err != nil {
				return e.fail(err, userRef(args[0]))
			}
			// The store replaces all tags at once; merging here keeps the
			// AWS meaning of TagUser (add or overwrite, keep the rest).
			tags := iamMergeTags(u.Tags, add, nil)
			if _, err := e.store.UpdateUser(e.ctx, e.account, args[0], identity.UserUpdate{Tags: &tags}); err != nil {
				return e.fail(err, userRef(args[0]))
			}
			e.done("Tagged user %s: %s.", u.Name, iamTagsText(tags))
			return nil
		})
}

func newUserUntagCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "untag NAME KEY …", "Remove tags from a user (absent keys are ignored)", iamArgsAtLeast("NAME", "KEY"),
		func(e *iamEnv, args []string) error {
			u, err := e.store.GetUser(e.ctx, e.account, args[0])
			if err != nil {
				return e.fail(err, userRef(args[0]))
			}
			tags := iamMergeTags(u.Tags, nil, args[1:])
			if _, err := e.store.UpdateUser(e.ctx, e.account, args[0], identity.UserUpdate{Tags: &tags}); err != nil {
				return e.fail(err, userRef(args[0]))
			}
			e.done("Tags of user %s: %s.", u.Name, iamTagsText(tags))
			return nil
		})
}

// iamMergeTags returns cur with add set and remove deleted, without changing cur.
func iamMergeTags(cur, add map[string]string, remove []string) map[string]string {
	out := make(map[string]string, len(cur)+len(add))
	for k, v := range cur {
		out[k] = v
	}
	for k, v := range add {
		out[k] = v
	}
	for _, k := range remove {
		delete(out, k)
	}
	return out
}

func newUserSetBoundaryCmd(g *globalFlags) *cobra.Command {
	var remove bool
	cmd := iamCommand(g, "set-boundary NAME POLICY | set-boundary NAME --remove",
		"Set or remove the permissions boundary of a user", iamBoundaryArgs,
		func(e *iamEnv, args []string) error {
			arn, br, err := iamBoundary(e, args, remove)
			if err != nil {
				return err
			}
			if _, err := e.store.UpdateUser(e.ctx, e.account, args[0], identity.UserUpdate{PermissionsBoundary: &arn}); err != nil {
				return e.fail(err, userRef(args[0]), br)
			}
			if remove {
				e.done("Removed the permissions boundary of user %s.", args[0])
			} else {
				e.done("Permissions boundary of user %s: %s.", args[0], arn)
			}
			return nil
		})
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the boundary instead of setting one")
	return cmd
}

// iamBoundaryArgs requires NAME POLICY, or NAME alone with --remove.
func iamBoundaryArgs(cmd *cobra.Command, args []string) error {
	remove, _ := cmd.Flags().GetBool("remove")
	switch {
	case remove && len(args) != 1:
		return usagef("%s NAME --remove takes no POLICY", cmd.CommandPath())
	case !remove && len(args) != 2:
		return usagef("%s needs NAME POLICY (or NAME --remove)", cmd.CommandPath())
	}
	return nil
}

// iamBoundary resolves the boundary to set ("" with --remove).
func iamBoundary(e *iamEnv, args []string, remove bool) (string, iamRef, error) {
	if remove {
		return "", iamRef{}, nil
	}
	return e.boundaryARN(args[1])
}
