package cli

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/config"
	"github.com/iamdb/iamdb/internal/sigv4"
)

type verifyFlags struct {
	token, hostname, username, region string
	instance, resourceID, database    string
	sourceIP                          string
	port                              int
	out                               outputFlag
}

func newTokenVerifyCmd(g *globalFlags) *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify --token TOKEN|- --hostname HOST --port PORT --username USER [--region R] [--instance NAME]",
		Short: "Explain why a token is or is not accepted",
		Long: `Run every check a listener makes on a login with this token and say which
passed and which failed: format, credential scope and region, time, endpoint,
database user, access key, signature, and the rds-db:connect policy decision
with the statement that decided it.

The instance (its region, endpoints and resource id) comes from --instance, or
from the configured instance that lists --hostname:--port among its
endpoints; without a configuration, --region and --resource-id describe it.
Pass --token - to read the token from standard input instead of the command
line. The exit status is 0 when the token would be accepted, 1 when not.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runTokenVerify(cmd, g, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.token, "token", "", "the token, or - to read it from standard input (required)")
	fl.StringVar(&f.hostname, "hostname", "", "host the client connects to (required)")
	fl.IntVar(&f.port, "port", 0, "port the client connects to (required)")
	fl.StringVar(&f.username, "username", "", "database user the client logs in as (required)")
	fl.StringVar(&f.region, "region", "", "instance region when no configured instance matches")
	fl.StringVar(&f.instance, "instance", "", "configured instance to check against")
	fl.StringVar(&f.resourceID, "resource-id", "", "instance resource id (db-…) when no configured instance matches")
	fl.StringVar(&f.database, "database", "", "database name, for iamdb:Database conditions")
	fl.StringVar(&f.sourceIP, "source-ip", "", "client address, for aws:SourceIp conditions")
	fl.StringVar(&f.out.format, "output", "text", "text or json")
	return cmd
}

func runTokenVerify(cmd *cobra.Command, g *globalFlags, f *verifyFlags) error {
	asJSON, err := f.out.json()
	if err != nil {
		return err
	}
	var missing []string
	for _, m := range []struct {
		name string
		set  bool
	}{{"--token", f.token != ""}, {"--hostname", f.hostname != ""}, {"--port", f.port != 0}, {"--username", f.username != ""}} {
		if !m.set {
			missing = append(missing, m.name)
		}
	}
	if len(missing) > 0 {
		return usagef("missing required flags: %s", strings.Join(missing, ", "))
	}
	token := f.token
	if token == "-" {
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && line == "" {
			return fmt.Errorf("reading the token from standard input: %w", err)
		}
		token = strings.TrimSpace(line)
	}
	cfg, err := g.loadConfig(false)
	if err != nil {
		return err
	}
	d, err := g.openDataDir(cmd.Context())
	if err != nil {
		return err
	}
	defer d.Close()
	inst, err := verifyInstance(cfg, f, g.account(d))
	if err != nil {
		return err
	}
	a := authn.New(d.Store, d.Sealer, authn.Options{})
	ex := a.Explain(cmd.Context(), authn.Request{
		Token: token, Instance: inst, DBUser: f.username, Database: f.database,
		SourceIP: f.sourceIP, SecureTransport: true,
	})
	if asJSON {
		if err := writeJSON(cmd.OutOrStdout(), verifyJSON(ex)); err != nil {
			return err
		}
	} else {
		printVerify(cmd, inst, ex)
	}
	if !ex.Accepted {
		return errors.New("the token would be refused: " + refusalCode(ex))
	}
	return nil
}

// verifyInstance finds the instance a login at hostname:port would reach.
func verifyInstance(cfg *config.Config, f *verifyFlags, account string) (*authn.Instance, error) {
	endpoint := net.JoinHostPort(f.hostname, strconv.Itoa(f.port))
	var in *config.Instance
	if f.instance != "" {
		var err error
		if in, err = cfg.Instance(f.instance); err != nil {
			return nil, err
		}
	} else {
		for i := range cfg.Instances {
			for _, e := range cfg.Instances[i].Endpoints {
				if strings.EqualFold(e, endpoint) {
					in = &cfg.Instances[i]
				}
			}
		}
	}
	if in != nil {
		return &authn.Instance{Name: in.Name, Engine: in.Engine, Region: in.Region, AccountID: account,
			Partition: cfg.Partition, ResourceID: in.ResourceID, Endpoints: in.Endpoints}, nil
	}
	region := f.region
	if region == "" {
		region = cfg.Region
	}
	return &authn.Instance{Region: region, AccountID: account, Partition: cfg.Partition,
		ResourceID: f.resourceID, Endpoints: []string{endpoint}}, nil
}

func refusalCode(ex *authn.Explanation) string {
	for _, c := range ex.Checks {
		if c.Err != nil {
			if k, ok := sigv4KindOf(c.Err); ok {
				return k.String()
			}
			return "InternalError"
		}
	}
	switch {
	case ex.Policy != nil:
		return authn.CodeAccessDenied + " (" + string(ex.Policy.Decision) + ")"
	case ex.Resource == "" && ex.Principal != nil:
		return "no resource id to evaluate rds-db:connect: pass --instance or --resource-id"
	}
	return "InternalError"
}

func sigv4KindOf(err error) (sigv4.Kind, bool) {
	var se *sigv4.Error
	if errors.As(err, &se) {
		return se.Kind, true
	}
	return 0, false
}

func printVerify(cmd *cobra.Command, inst *authn.Instance, ex *authn.Explanation) {
	w := cmd.OutOrStdout()
	if t := ex.Token; t != nil {
		fmt.Fprintf(w, "Token %s: db user %q, endpoint %s, key %s, region %s, signed %s, expires %s\n",
			t.ID(), t.DBUser, t.Endpoint, t.AccessKeyID, t.Region,
			t.Date.UTC().Format(time.RFC3339), t.ExpiresAt().UTC().Format(time.RFC3339))
	}
	for _, c := range ex.Checks {
		if c.Err == nil {
			fmt.Fprintf(w, "  ok    %s\n", c.Step)
		} else {
			fmt.Fprintf(w, "  FAIL  %-9s %s\n", c.Step, c.Err)
		}
	}
	switch {
	case ex.Policy != nil:
		mark := "ok  "
		if !ex.Accepted {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "  %s  policy    %s\n", mark, ex.Policy.Explanation)
	case ex.Principal != nil && inst.ResourceID == "":
		fmt.Fprintln(w, "  -     policy    not evaluated: no instance matches; pass --instance or --resource-id")
	}
	if ex.Principal != nil {
		fmt.Fprintf(w, "Principal: %s\n", ex.Principal.ARN)
	}
	if ex.Resource != "" {
		fmt.Fprintf(w, "Resource:  %s\n", ex.Resource)
	}
	if ex.Accepted {
		fmt.Fprintln(w, "Result: ACCEPTED")
	} else {
		fmt.Fprintf(w, "Result: REFUSED (%s)\n", refusalCode(ex))
	}
}

type verifyCheckJSON struct {
	Step   string `json:"Step"`
	Result string `json:"Result"` // "ok" or the refusal code
	Detail string `json:"Detail,omitempty"`
}

func verifyJSON(ex *authn.Explanation) map[string]any {
	checks := make([]verifyCheckJSON, 0, len(ex.Checks))
	for _, c := range ex.Checks {
		j := verifyCheckJSON{Step: c.Step, Result: "ok"}
		if c.Err != nil {
			j.Result, j.Detail = "InternalError", c.Err.Error()
			if k, ok := sigv4KindOf(c.Err); ok {
				j.Result = k.String()
			}
		}
		checks = append(checks, j)
	}
	out := map[string]any{"Accepted": ex.Accepted, "Checks": checks}
	if ex.Token != nil {
		out["TokenId"] = ex.Token.ID()
		out["DBUser"] = ex.Token.DBUser
		out["AccessKeyId"] = ex.Token.AccessKeyID
	}
	if ex.Principal != nil {
		out["Principal"] = ex.Principal.ARN
	}
	if ex.Resource != "" {
		out["Resource"] = ex.Resource
	}
	if ex.Policy != nil {
		out["Policy"] = ex.Policy
	}
	if !ex.Accepted {
		out["Reason"] = refusalCode(ex)
	}
	return out
}
