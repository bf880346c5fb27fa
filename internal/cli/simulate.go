package cli

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
)

func newPolicySimulateCmd(g *globalFlags) *cobra.Command {
	var (
		principal, action, resource string
		contextKV                   []string
	)
	cmd := iamCommand(g, "simulate --principal ARN --resource ARN [--action rds-db:connect] [--context KEY=VALUE …]",
		"Explain the decision of the policies for a principal, action, resource and context", noArgs,
		func(e *iamEnv, _ []string) error {
			if principal == "" || resource == "" {
				return usagef("--principal and --resource are required, e.g. --principal arn:aws:iam::%s:user/alice --resource arn:aws:rds-db:us-east-1:%s:dbuser:db-ABC/alice", e.account, e.account)
			}
			p, err := simulationPrincipal(e, principal)
			if err != nil {
				return err
			}
			set, err := authn.LoadPolicySet(e.ctx, e.store, p)
			if err != nil {
				return err
			}
			pc := p.Context(time.Now())
			// The first --context for a key replaces the principal's own
			// value; repeating the key adds values.
			seen := map[string]bool{}
			for _, kv := range contextKV {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--context %q: use KEY=VALUE, e.g. --context aws:SourceIp=10.0.0.5 (repeat a key for several values)", kv)
				}
				if seen[strings.ToLower(k)] {
					old, _ := pc.Get(k)
					pc.Set(k, append(old, v)...)
				} else {
					pc.Set(k, v)
				}
				seen[strings.ToLower(k)] = true
			}
			res := policy.Evaluate(*set, policy.Request{Action: action, Resource: resource, Context: pc})
			if e.json {
				return writeJSON(e.out, res)
			}
			return printSimulation(e, p, res)
		})
	cmd.Flags().StringVar(&principal, "principal", "", "ARN of a user, role or assumed-role session (required)")
	cmd.Flags().StringVar(&action, "action", authn.ConnectAction, "action to decide")
	cmd.Flags().StringVar(&resource, "resource", "", "resource ARN, e.g. arn:aws:rds-db:REGION:ACCOUNT:dbuser:RESOURCE_ID/DBUSER (required)")
	cmd.Flags().StringArrayVar(&contextKV, "context", nil, "condition key value KEY=VALUE, added to the principal's own keys (repeatable)")
	return cmd
}

// simulationPrincipal resolves a user, role or assumed-role ARN to the
// principal authn would see for it.
func simulationPrincipal(e *iamEnv, arn string) (*authn.Principal, error) {
	a, err := identity.ParseARN(arn)
	if err != nil {
		return nil, usagef("--principal %q is not an ARN: %v", arn, err)
	}
	switch a.Type {
	case "user":
		u, err := e.store.GetUser(e.ctx, a.Account, a.Name)
		if err != nil {
			return nil, e.fail(err, userRef(a.Name))
		}
		return authn.UserPrincipal(u), nil
	case "role", "assumed-role":
		r, err := e.store.GetRole(e.ctx, a.Account, a.Name)
		if err != nil {
			return nil, e.fail(err, roleRef(a.Name))
		}
		session := a.SessionName
		if session == "" {
			session = "simulation"
		}
		return authn.RolePrincipal(r, session), nil
	}
	return nil, usagef("--principal %q: simulate a user (…:user/NAME), a role (…:role/NAME) or a role session (…:assumed-role/ROLE/SESSION)", arn)
}

func printSimulation(e *iamEnv, p *authn.Principal, res policy.Result) error {
	w := e.out
	fmt.Fprintf(w, "Decision:  %s\n", res.Decision)
	fmt.Fprintf(w, "Principal: %s\n", p.ARN)
	fmt.Fprintf(w, "Why:       %s\n", res.Explanation)
	if len(res.Matched) > 0 {
		fmt.Fprintln(w, "Statements:")
		for _, m := range res.Matched {
			sid := m.Sid
			if sid == "" {
				sid = fmt.Sprintf("#%d", m.Index)
			}
			fmt.Fprintf(w, "  %-6s %s %s (%s)\n", m.Effect, m.SourcePolicyID, sid, m.Layer)
		}
	}
	if len(res.ResolvedVariables) > 0 {
		fmt.Fprintln(w, "Variables:")
		keys := make([]string, 0, len(res.ResolvedVariables))
		for k := range res.ResolvedVariables {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  ${%s} = %s\n", k, res.ResolvedVariables[k])
		}
	}
	return nil
}
