package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/identity"
)

func newAccessKeyCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "access-key",
		Short: "Manage users' access keys: create, list, update, delete",
		Long: `Manage the long-term access keys users sign tokens with. A user may hold
two keys, active or inactive; inactive keys count too, so rotate by creating
the new key, switching clients over, then deleting the old one.

The secret access key is printed once, by 'access-key create', and is
stored only sealed under the data directory's master key.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newAccessKeyCreateCmd(g),
		newAccessKeyListCmd(g),
		newAccessKeyUpdateCmd(g),
		newAccessKeyDeleteCmd(g),
	)
	return cmd
}

// iamRequireUser makes --user mandatory, as a usage error.
func iamRequireUser(user *string) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if *user == "" {
			return usagef("%s needs --user NAME", cmd.CommandPath())
		}
		return nil
	}
}

type accessKeyJSON struct {
	UserName        string `json:"UserName"`
	AccessKeyID     string `json:"AccessKeyId"`
	Status          string `json:"Status"`
	SecretAccessKey string `json:"SecretAccessKey"`
	CreateDate      string `json:"CreateDate"`
}

type accessKeyMetadataJSON struct {
	UserName    string `json:"UserName"`
	AccessKeyID string `json:"AccessKeyId"`
	Status      string `json:"Status"`
	CreateDate  string `json:"CreateDate"`
}

func newAccessKeyCreateCmd(g *globalFlags) *cobra.Command {
	var user string
	cmd := iamCommand(g, "create --user NAME [--output json|text]",
		"Create an access key for a user and print its secret, once", noArgs,
		func(e *iamEnv, _ []string) error {
			k, secret, err := e.store.CreateAccessKey(e.ctx, e.account, user)
			if errors.Is(err, identity.ErrLimitExceeded) {
				return &iamError{fmt.Sprintf("user %s already has %d access keys, the maximum (inactive keys count too): delete one first (see 'iamdb access-key list --user %s', then 'iamdb access-key delete ID')",
					user, identity.MaxAccessKeysPerUser, user), err}
			}
			if err != nil {
				return e.fail(err, userRef(user))
			}
			// This is the one place a secret is printed: the operator must
			// receive it now, as from aws iam create-access-key.
			if e.json {
				return writeJSON(e.out, map[string]any{"AccessKey": accessKeyJSON{
					UserName: k.UserName, AccessKeyID: k.ID, Status: string(k.Status),
					SecretAccessKey: secret, CreateDate: iamTime(k.CreatedAt),
				}})
			}
			fmt.Fprintf(e.out, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", k.ID, secret)
			return nil
		})
	cmd.PreRunE = iamRequireUser(&user)
	cmd.Flags().StringVar(&user, "user", "", "user the key belongs to (required)")
	// Unlike the other commands the default is JSON, the AWS CLI's shape,
	// so scripts written for aws iam create-access-key work unchanged.
	output := cmd.Flags().Lookup("output")
	_ = output.Value.Set("json") // a string flag accepts any value
	output.DefValue = "json"
	output.Usage = "json (the AWS CLI's shape) or text (AWS_ACCESS_KEY_ID=… lines for a shell)"
	return cmd
}

func newAccessKeyListCmd(g *globalFlags) *cobra.Command {
	var user string
	cmd := iamCommand(g, "list [--user NAME]", "List access keys (never their secrets): a user's, or every user's",
		noArgs,
		func(e *iamEnv, _ []string) error {
			var keys []identity.AccessKey
			if user != "" {
				ks, err := e.store.ListAccessKeys(e.ctx, e.account, user)
				if err != nil {
					return e.fail(err, userRef(user))
				}
				keys = ks
			} else {
				us, err := e.store.ListUsers(e.ctx, e.account, "")
				if err != nil {
					return e.fail(err)
				}
				for _, u := range us {
					ks, err := e.store.ListAccessKeys(e.ctx, e.account, u.Name)
					if err != nil {
						return e.fail(err, userRef(u.Name))
					}
					keys = append(keys, ks...)
				}
			}
			if e.json {
				out := make([]accessKeyMetadataJSON, 0, len(keys))
				for _, k := range keys {
					out = append(out, accessKeyMetadataJSON{k.UserName, k.ID, string(k.Status), iamTime(k.CreatedAt)})
				}
				return writeJSON(e.out, map[string]any{"AccessKeyMetadata": out})
			}
			if len(keys) == 0 {
				if user != "" {
					fmt.Fprintf(e.out, "User %s has no access keys.\n", user)
				} else {
					fmt.Fprintf(e.out, "No access keys in account %s.\n", e.account)
				}
				return nil
			}
			tw := iamTable(e.out)
			fmt.Fprintln(tw, "USER\tACCESS KEY ID\tSTATUS\tCREATED\tLAST USED")
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.UserName, k.ID, k.Status, iamTime(k.CreatedAt), iamOrNone(iamTime(k.LastUsedAt)))
			}
			return tw.Flush()
		})
	cmd.Flags().StringVar(&user, "user", "", "only this user's keys")
	return cmd
}

// accountKey finds a key of the current account, so that an id from another
// account is reported as not found rather than changed.
func (e *iamEnv) accountKey(id, user string) (identity.AccessKey, error) {
	k, err := e.store.GetAccessKey(e.ctx, id)
	if err == nil && k.AccountID != e.account {
		err = identity.ErrNotFound
	}
	if err != nil {
		return identity.AccessKey{}, e.fail(err, keyRef(id))
	}
	if user != "" && !strings.EqualFold(k.UserName, user) {
		return identity.AccessKey{}, &iamError{fmt.Sprintf("access key %s belongs to user %s, not %s: see 'iamdb access-key list --user %s'",
			id, k.UserName, user, user), identity.ErrNotFound}
	}
	return k, nil
}

func newAccessKeyUpdateCmd(g *globalFlags) *cobra.Command {
	var status, user string
	cmd := iamCommand(g, "update ID --status Active|Inactive [--user NAME]",
		"Activate or deactivate an access key", iamArgs("ID"),
		func(e *iamEnv, args []string) error {
			k, err := e.accountKey(args[0], user)
			if err != nil {
				return err
			}
			if err := e.store.UpdateAccessKeyStatus(e.ctx, k.ID, identity.AccessKeyStatus(status)); err != nil {
				return e.fail(err, keyRef(args[0]))
			}
			e.done("Access key %s of user %s is now %s.", k.ID, k.UserName, status)
			return nil
		})
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		switch status {
		case string(identity.KeyActive), string(identity.KeyInactive):
			return nil
		case "active":
			status = string(identity.KeyActive)
		case "inactive":
			status = string(identity.KeyInactive)
		default:
			return usagef("--status %q: use Active or Inactive", status)
		}
		return nil
	}
	cmd.Flags().StringVar(&status, "status", "", "Active or Inactive (required)")
	cmd.Flags().StringVar(&user, "user", "", "check that the key belongs to this user")
	return cmd
}

func newAccessKeyDeleteCmd(g *globalFlags) *cobra.Command {
	var user string
	cmd := iamCommand(g, "delete ID [--user NAME]", "Delete an access key and end the sessions it obtained",
		iamArgs("ID"),
		func(e *iamEnv, args []string) error {
			k, err := e.accountKey(args[0], user)
			if err != nil {
				return err
			}
			if err := e.store.DeleteAccessKey(e.ctx, k.ID); err != nil {
				return e.fail(err, keyRef(args[0]))
			}
			e.done("Deleted access key %s of user %s.", k.ID, k.UserName)
			return nil
		})
	cmd.Flags().StringVar(&user, "user", "", "check that the key belongs to this user")
	return cmd
}
