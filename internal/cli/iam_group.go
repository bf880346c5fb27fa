package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/identity"
)

func newGroupCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group",
		Short: "Manage IAM groups: create, list, get, delete, members, policies",
		Long: `Manage IAM groups: sets of users that share policies. A group is not a
principal; its members get its policies in addition to their own.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newGroupCreateCmd(g),
		newGroupListCmd(g),
		newGroupGetCmd(g),
		newGroupDeleteCmd(g),
		newGroupAddUserCmd(g),
		newGroupRemoveUserCmd(g),
	)
	cmd.AddCommand(holderCommands(g, identity.KindGroup)...)
	return cmd
}

func newGroupCreateCmd(g *globalFlags) *cobra.Command {
	var path string
	cmd := iamCommand(g, "create NAME [--path PATH]", "Create a group", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			gr, err := e.store.CreateGroup(e.ctx, identity.Group{AccountID: e.account, Name: args[0], Path: path})
			if err != nil {
				return e.failCreate(err, groupRef(args[0]))
			}
			return printGroup(e, gr, nil)
		})
	cmd.Flags().StringVar(&path, "path", "/", "IAM path, e.g. /engineering/")
	return cmd
}

// printGroup prints a group and, when members is not nil, its users (the
// shape of aws iam get-group).
func printGroup(e *iamEnv, gr identity.Group, members []identity.User) error {
	if e.json {
		out := map[string]any{"Group": toGroupJSON(gr)}
		if members != nil {
			users := make([]userJSON, 0, len(members))
			for _, u := range members {
				users = append(users, toUserJSON(u))
			}
			out["Users"] = users
		}
		return writeJSON(e.out, out)
	}
	names := make([]string, 0, len(members))
	for _, u := range members {
		names = append(names, u.Name)
	}
	kv := []string{
		"Group", gr.Name,
		"ARN", gr.ARN(),
		"ID", gr.ID,
		"Path", gr.Path,
		"Created", iamTime(gr.CreatedAt),
	}
	if members != nil {
		kv = append(kv, "Members", iamOrNone(strings.Join(names, ", ")))
	}
	return iamFields(e.out, kv...)
}

func newGroupListCmd(g *globalFlags) *cobra.Command {
	var prefix string
	cmd := iamCommand(g, "list [--path-prefix PATH]", "List the account's groups", noArgs,
		func(e *iamEnv, _ []string) error {
			gs, err := e.store.ListGroups(e.ctx, e.account, prefix)
			if err != nil {
				return e.fail(err)
			}
			if e.json {
				out := make([]groupJSON, 0, len(gs))
				for _, gr := range gs {
					out = append(out, toGroupJSON(gr))
				}
				return writeJSON(e.out, map[string]any{"Groups": out})
			}
			if len(gs) == 0 {
				fmt.Fprintf(e.out, "No groups in account %s.\n", e.account)
				return nil
			}
			tw := iamTable(e.out)
			fmt.Fprintln(tw, "NAME\tPATH\tID\tCREATED")
			for _, gr := range gs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", gr.Name, gr.Path, gr.ID, iamTime(gr.CreatedAt))
			}
			return tw.Flush()
		})
	cmd.Flags().StringVar(&prefix, "path-prefix", "", "only groups whose path starts with this")
	return cmd
}

func newGroupGetCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "get NAME", "Show a group and its members", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			gr, err := e.store.GetGroup(e.ctx, e.account, args[0])
			if err != nil {
				return e.fail(err, groupRef(args[0]))
			}
			members, err := e.store.ListUsersInGroup(e.ctx, e.account, args[0])
			if err != nil {
				return e.fail(err, groupRef(args[0]))
			}
			if members == nil {
				members = []identity.User{}
			}
			return printGroup(e, gr, members)
		})
}

func newGroupDeleteCmd(g *globalFlags) *cobra.Command {
	var force bool
	cmd := iamCommand(g, "delete NAME [--force]", "Delete a group", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			err := e.store.DeleteGroup(e.ctx, e.account, args[0], identity.DeleteOptions{Force: force})
			if errors.Is(err, identity.ErrConflict) {
				return iamDeleteConflict(err, "group", args[0])
			}
			if err != nil {
				return e.fail(err, groupRef(args[0]))
			}
			e.done("Deleted group %s.", args[0])
			return nil
		})
	cmd.Flags().BoolVar(&force, "force", false, "also remove the group's members, inline policies and attachments")
	return cmd
}

func newGroupAddUserCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "add-user GROUP USER", "Add a user to a group (adding a member again changes nothing)",
		iamArgs("GROUP", "USER"),
		func(e *iamEnv, args []string) error {
			if err := e.store.AddUserToGroup(e.ctx, e.account, args[0], args[1]); err != nil {
				return e.fail(err, groupRef(args[0]), userRef(args[1]))
			}
			e.done("Added user %s to group %s.", args[1], args[0])
			return nil
		})
}

func newGroupRemoveUserCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "remove-user GROUP USER", "Remove a user from a group", iamArgs("GROUP", "USER"),
		func(e *iamEnv, args []string) error {
			err := e.store.RemoveUserFromGroup(e.ctx, e.account, args[0], args[1])
			gr, ur := groupRef(args[0]), userRef(args[1])
			if errors.Is(err, identity.ErrNotFound) && e.exists(gr) && e.exists(ur) {
				return &iamError{fmt.Sprintf("user %s is not a member of group %s: see 'iamdb group get %s'",
					args[1], args[0], args[0]), err}
			}
			if err != nil {
				return e.fail(err, gr, ur)
			}
			e.done("Removed user %s from group %s.", args[1], args[0])
			return nil
		})
}
