package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/identity"
)

func newSessionCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "List and revoke temporary credentials (role and user sessions)",
		Long: `List and revoke the temporary credentials (ASIA… keys) the STS-compatible API
issued with AssumeRole, AssumeRoleWithWebIdentity and GetSessionToken.

Revoking a session makes its API calls and its database tokens fail at once,
even before the credentials expire. Deleting a role, or the access key that
obtained a session, revokes its sessions too.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSessionListCmd(g), newSessionRevokeCmd(g))
	return cmd
}

// sessionJSON is one session as `iamdb session list --output json` prints
// it. It never carries the secret or the session token.
type sessionJSON struct {
	AccessKeyID       string            `json:"AccessKeyId"`
	Arn               string            `json:"Arn"`
	RoleArn           string            `json:"RoleArn,omitempty"`
	RoleSessionName   string            `json:"RoleSessionName,omitempty"`
	UserName          string            `json:"UserName,omitempty"`
	SourceIdentity    string            `json:"SourceIdentity,omitempty"`
	SessionTags       map[string]string `json:"SessionTags,omitempty"`
	TransitiveTagKeys []string          `json:"TransitiveTagKeys,omitempty"`
	FederatedProvider string            `json:"FederatedProvider,omitempty"`
	FederatedSubject  string            `json:"FederatedSubject,omitempty"`
	ParentAccessKeyID string            `json:"ParentAccessKeyId,omitempty"`
	CreateDate        string            `json:"CreateDate"`
	Expiration        string            `json:"Expiration"`
}

func newSessionListCmd(g *globalFlags) *cobra.Command {
	var role string
	cmd := iamCommand(g, "list [--role NAME] [--output json|text]",
		"List live sessions (never their secrets): the account's, or one role's", noArgs,
		func(e *iamEnv, _ []string) error {
			roleID := ""
			if role != "" {
				r, err := e.store.GetRole(e.ctx, e.account, role)
				if err != nil {
					return e.fail(err, roleRef(role))
				}
				roleID = r.ID
			}
			sessions, err := e.store.ListSessions(e.ctx, e.account, time.Now())
			if err != nil {
				return err
			}
			out := make([]sessionJSON, 0, len(sessions))
			for _, s := range sessions {
				if roleID != "" && s.RoleID != roleID {
					continue
				}
				out = append(out, e.sessionRecord(s))
			}
			if e.json {
				return writeJSON(e.out, map[string]any{"Sessions": out})
			}
			if len(out) == 0 {
				if role != "" {
					fmt.Fprintf(e.out, "Role %s has no live sessions.\n", role)
				} else {
					fmt.Fprintf(e.out, "No live sessions in account %s.\n", e.account)
				}
				return nil
			}
			tw := iamTable(e.out)
			fmt.Fprintln(tw, "ACCESS KEY ID\tPRINCIPAL\tSOURCE IDENTITY\tFEDERATED SUBJECT\tTAGS\tEXPIRES")
			for _, s := range out {
				tags := make([]string, 0, len(s.SessionTags))
				for _, k := range iamSortedKeys(s.SessionTags) {
					tags = append(tags, k+"="+s.SessionTags[k])
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.AccessKeyID, s.Arn, iamOrNone(s.SourceIdentity),
					iamOrNone(s.FederatedSubject), iamOrNone(strings.Join(tags, ",")), s.Expiration)
			}
			return tw.Flush()
		})
	cmd.Flags().StringVar(&role, "role", "", "only this role's sessions")
	return cmd
}

func newSessionRevokeCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "revoke ACCESS_KEY_ID",
		"Revoke a session: its API calls and database tokens are refused from now on", iamArgs("ACCESS_KEY_ID"),
		func(e *iamEnv, args []string) error {
			id := args[0]
			if !strings.HasPrefix(id, identity.PrefixTemporaryKey) {
				return usagef("%s is not a temporary access key id (ASIA…); to disable a long-term key use 'iamdb access-key update %s --status Inactive'", id, id)
			}
			s, err := e.store.GetSession(e.ctx, id)
			if err == nil && s.AccountID != e.account {
				err = identity.ErrNotFound
			}
			if errors.Is(err, identity.ErrNotFound) {
				return &iamError{fmt.Sprintf("session %q not found in account %s: see 'iamdb session list'", id, e.account), err}
			}
			if err != nil {
				return e.fail(err)
			}
			if s.Revoked {
				e.done("Session %s (%s) was already revoked.", id, e.sessionRecord(s).Arn)
				return nil
			}
			if err := e.store.RevokeSession(e.ctx, id); err != nil {
				return e.fail(err)
			}
			e.done("Revoked session %s (%s): its API calls and database tokens are refused from now on.", id, e.sessionRecord(s).Arn)
			return nil
		})
}

// sessionRecord describes a session for output, naming its principal.
func (e *iamEnv) sessionRecord(s identity.Session) sessionJSON {
	out := sessionJSON{
		AccessKeyID: s.AccessKeyID, RoleArn: s.RoleARN, SourceIdentity: s.SourceIdentity,
		SessionTags: s.SessionTags, TransitiveTagKeys: s.TransitiveTagKeys,
		FederatedProvider: s.FederatedProvider, FederatedSubject: s.FederatedSubject,
		ParentAccessKeyID: s.ParentAccessKeyID, CreateDate: iamTime(s.CreatedAt), Expiration: iamTime(s.Expiration),
	}
	if s.RoleID != "" {
		out.RoleSessionName = s.SessionName
		roleName := s.RoleARN[strings.LastIndex(s.RoleARN, "/")+1:]
		out.Arn = identity.AssumedRoleARN(e.partition, s.AccountID, roleName, s.SessionName)
	} else if u, err := e.store.GetUserByID(e.ctx, s.UserID); err == nil {
		out.UserName, out.Arn = u.Name, u.ARN()
	} else {
		out.Arn = s.UserID
	}
	return out
}
