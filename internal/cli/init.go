package cli

import (
	"fmt"
	"net"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/datadir"
)

var accountIDRE = regexp.MustCompile(`^[0-9]{12}$`)

func newInitCmd(g *globalFlags) *cobra.Command {
	var (
		accountID string
		hosts     []string
		out       outputFlag
	)
	cmd := &cobra.Command{
		Use:   "init [--data-dir DIR] [--account-id ID] [--host NAME …]",
		Short: "Create a data directory: master key, CA and server certificate, default account, admin key",
		Long: `Create an iamdb data directory: a master key that seals secrets at rest,
a certificate authority and a server certificate (valid for localhost,
127.0.0.1 and every --host), the default account and an admin user with a
first access key.

The admin's secret access key is printed once, now, and is stored nowhere in
plaintext: keep it. The CA bundle it prints is what clients pin, as with
Amazon's rds-ca-bundle.pem.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, err := out.json()
			if err != nil {
				return err
			}
			if accountID != "" && !accountIDRE.MatchString(accountID) {
				return usagef("--account-id %q: an account id is 12 digits", accountID)
			}
			dir, err := g.dataDir_()
			if err != nil {
				return err
			}
			cfg, err := g.loadConfig(false)
			if err != nil {
				return err
			}
			if accountID == "" {
				accountID = cfg.AccountID
			}
			for _, in := range cfg.Instances {
				for _, e := range in.Endpoints {
					if h, _, err := net.SplitHostPort(e); err == nil {
						hosts = append(hosts, h)
					}
				}
			}
			res, err := datadir.Init(cmd.Context(), dir, datadir.InitOptions{
				AccountID: accountID, Partition: cfg.Partition, Hosts: hosts, Store: cfg.Store,
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(w, map[string]any{
					"DataDir":   res.Dir,
					"AccountId": res.AccountID,
					"CABundle":  res.CABundle,
					"AdminUser": res.AdminARN,
					"AccessKey": map[string]string{
						"AccessKeyId":     res.AccessKeyID,
						"SecretAccessKey": res.SecretAccessKey,
					},
				})
			}
			fmt.Fprintf(w, `Created iamdb data directory %s
  account:    %s
  admin user: %s
  CA bundle:  %s
              (clients pin it: psql "sslmode=verify-full sslrootcert=…", mariadb --ssl-ca=…)

Admin access key. The secret is shown only this once; store it now:
  export AWS_ACCESS_KEY_ID=%s
  export AWS_SECRET_ACCESS_KEY=%s
`, res.Dir, res.AccountID, res.AdminARN, res.CABundle, res.AccessKeyID, res.SecretAccessKey)
			return nil
		},
	}
	cmd.Flags().StringVar(&accountID, "account-id", "", "12-digit id of the default account (default: account_id from the configuration, else random)")
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "extra host name or IP address for the server certificate (repeatable)")
	cmd.Flags().StringVar(&out.format, "output", "text", "text or json")
	return cmd
}
