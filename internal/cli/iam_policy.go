package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/identity"
)

func newPolicyCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Manage managed policies: create, list, get, delete, versions",
		Long: `Manage customer managed policies: standalone, versioned policy documents
that can be attached to users, groups and roles or used as permissions
boundaries. A POLICY argument is a policy name in the current account or a
full ARN (arn:aws:iam::ACCOUNT:policy/NAME).

Documents are given with --document as a file path, file://PATH, - for
standard input, or inline JSON, and are checked with the same parser the
authorizer uses before anything is stored.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		newPolicyCreateCmd(g),
		newPolicyListCmd(g),
		newPolicyGetCmd(g),
		newPolicyDeleteCmd(g),
		newPolicyCreateVersionCmd(g),
		newPolicySetDefaultVersionCmd(g),
		newPolicyDeleteVersionCmd(g),
	)
	cmd.AddCommand(newPolicySimulateCmd(g))
	return cmd
}

func newPolicyCreateCmd(g *globalFlags) *cobra.Command {
	var docFlag, path, description, doc string
	cmd := iamCommand(g, "create NAME --document FILE|JSON [--path PATH] [--description TEXT]",
		"Create a managed policy; its document becomes version v1", iamArgs("NAME"),
		func(e *iamEnv, args []string) error {
			p, err := e.store.CreatePolicy(e.ctx, identity.ManagedPolicy{
				AccountID: e.account, Name: args[0], Path: path, Description: description,
			}, doc)
			if err != nil {
				return e.failCreate(err, iamRef{"policy", args[0], args[0]})
			}
			return printPolicy(e, p, nil)
		})
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) (err error) {
		doc, err = iamLoadDocument(cmd.InOrStdin(), "--document", docFlag, false)
		return err
	}
	cmd.Flags().StringVar(&docFlag, "document", "", "policy document: file path, file://PATH, - or inline JSON (required)")
	cmd.Flags().StringVar(&path, "path", "/", "IAM path, e.g. /engineering/")
	cmd.Flags().StringVar(&description, "description", "", "what the policy is for")
	return cmd
}

func newPolicyListCmd(g *globalFlags) *cobra.Command {
	var prefix string
	cmd := iamCommand(g, "list [--path-prefix PATH]", "List the account's managed policies", noArgs,
		func(e *iamEnv, _ []string) error {
			ps, err := e.store.ListPolicies(e.ctx, e.account, prefix)
			if err != nil {
				return e.fail(err)
			}
			if e.json {
				out := make([]policyJSON, 0, len(ps))
				for _, p := range ps {
					out = append(out, toPolicyJSON(p))
				}
				return writeJSON(e.out, map[string]any{"Policies": out})
			}
			if len(ps) == 0 {
				fmt.Fprintf(e.out, "No managed policies in account %s.\n", e.account)
				return nil
			}
			tw := iamTable(e.out)
			fmt.Fprintln(tw, "NAME\tDEFAULT\tATTACHMENTS\tARN")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", p.Name, p.DefaultVersion, p.AttachmentCount, p.ARN())
			}
			return tw.Flush()
		})
	cmd.Flags().StringVar(&prefix, "path-prefix", "", "only policies whose path starts with this")
	return cmd
}

// policyVersion finds version id ("v2", or "2") of p.
func policyVersion(p identity.ManagedPolicy, id string) (identity.PolicyVersion, error) {
	if id != "" && !strings.HasPrefix(id, "v") {
		id = "v" + id
	}
	var have []string
	for _, v := range p.Versions {
		if v.VersionID == id {
			return v, nil
		}
		have = append(have, v.VersionID)
	}
	return identity.PolicyVersion{}, &iamError{fmt.Sprintf("policy %s has no version %s: its versions are %s",
		p.Name, id, strings.Join(have, ", ")), identity.ErrNotFound}
}

// printPolicy prints a policy and, when v is set, one of its documents.
func printPolicy(e *iamEnv, p identity.ManagedPolicy, v *identity.PolicyVersion) error {
	if e.json {
		out := map[string]any{"Policy": toPolicyJSON(p)}
		if v != nil {
			out["PolicyVersion"] = toPolicyVersionJSON(*v, true)
		}
		return writeJSON(e.out, out)
	}
	var versions []string
	for _, pv := range p.Versions {
		versions = append(versions, pv.VersionID)
	}
	if err := iamFields(e.out,
		"Policy", p.Name,
		"ARN", p.ARN(),
		"ID", p.ID,
		"Path", p.Path,
		"Description", iamOrNone(p.Description),
		"Default version", p.DefaultVersion,
		"Versions", strings.Join(versions, ", "),
		"Attachments", fmt.Sprint(p.AttachmentCount),
		"Used as boundary", fmt.Sprint(p.BoundaryCount),
		"Created", iamTime(p.CreatedAt),
	); err != nil {
		return err
	}
	if v != nil {
		def := ""
		if v.IsDefault {
			def = ", the default"
		}
		fmt.Fprintf(e.out, "\nDocument (%s%s):\n%s\n", v.VersionID, def, iamPrettyDocument(v.Document))
	}
	return nil
}

func newPolicyGetCmd(g *globalFlags) *cobra.Command {
	var version string
	cmd := iamCommand(g, "get POLICY [--version vN]", "Show a managed policy and its default (or given) document",
		iamArgs("POLICY"),
		func(e *iamEnv, args []string) error {
			p, _, err := e.getPolicy(args[0])
			if err != nil {
				return err
			}
			if version == "" {
				version = p.DefaultVersion
			}
			v, err := policyVersion(p, version)
			if err != nil {
				return err
			}
			return printPolicy(e, p, &v)
		})
	cmd.Flags().StringVar(&version, "version", "", "version to show, e.g. v2 (default: the default version)")
	return cmd
}

func newPolicyDeleteCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "delete POLICY", "Delete a managed policy and all its versions", iamArgs("POLICY"),
		func(e *iamEnv, args []string) error {
			p, r, err := e.getPolicy(args[0])
			if err != nil {
				return err
			}
			if err := e.store.DeletePolicy(e.ctx, r.key); err != nil {
				if errors.Is(err, identity.ErrConflict) {
					return &iamError{fmt.Sprintf("cannot delete policy %s: %s (see 'iamdb user|group|role list-policies NAME', then detach-policy or set-boundary --remove)",
						p.Name, iamStoreDetail(err)), err}
				}
				return e.fail(err, r)
			}
			e.done("Deleted policy %s.", p.ARN())
			return nil
		})
}

func newPolicyCreateVersionCmd(g *globalFlags) *cobra.Command {
	var docFlag, doc string
	var setDefault bool
	cmd := iamCommand(g, "create-version POLICY --document FILE|JSON [--set-default]",
		"Add a version to a managed policy (at most five are kept)", iamArgs("POLICY"),
		func(e *iamEnv, args []string) error {
			p, r, err := e.getPolicy(args[0])
			if err != nil {
				return err
			}
			v, err := e.store.CreatePolicyVersion(e.ctx, r.key, doc, setDefault)
			if errors.Is(err, identity.ErrLimitExceeded) {
				return &iamError{fmt.Sprintf("policy %s already has %d versions, the maximum: delete one that is not the default first ('iamdb policy delete-version %s vN')",
					p.Name, identity.MaxPolicyVersions, p.Name), err}
			}
			if err != nil {
				return e.fail(err, r)
			}
			if e.json {
				return writeJSON(e.out, map[string]any{"PolicyVersion": toPolicyVersionJSON(v, false)})
			}
			def := ""
			if v.IsDefault {
				def = ", now the default"
			}
			fmt.Fprintf(e.out, "Created version %s of policy %s%s.\n", v.VersionID, p.Name, def)
			return nil
		})
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) (err error) {
		doc, err = iamLoadDocument(cmd.InOrStdin(), "--document", docFlag, false)
		return err
	}
	cmd.Flags().StringVar(&docFlag, "document", "", "policy document: file path, file://PATH, - or inline JSON (required)")
	cmd.Flags().BoolVar(&setDefault, "set-default", false, "make the new version the one in force")
	return cmd
}

func newPolicySetDefaultVersionCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "set-default-version POLICY vN", "Make a version of a managed policy the one in force",
		iamArgs("POLICY", "VERSION"),
		func(e *iamEnv, args []string) error {
			p, r, err := e.getPolicy(args[0])
			if err != nil {
				return err
			}
			v, err := policyVersion(p, args[1])
			if err != nil {
				return err
			}
			if err := e.store.SetDefaultPolicyVersion(e.ctx, r.key, v.VersionID); err != nil {
				return e.fail(err, r)
			}
			e.done("Version %s of policy %s is now the default.", v.VersionID, p.Name)
			return nil
		})
}

func newPolicyDeleteVersionCmd(g *globalFlags) *cobra.Command {
	return iamCommand(g, "delete-version POLICY vN", "Delete a version of a managed policy that is not the default",
		iamArgs("POLICY", "VERSION"),
		func(e *iamEnv, args []string) error {
			p, r, err := e.getPolicy(args[0])
			if err != nil {
				return err
			}
			v, err := policyVersion(p, args[1])
			if err != nil {
				return err
			}
			if v.IsDefault {
				return &iamError{fmt.Sprintf("%s is the default version of policy %s: make another version the default first ('iamdb policy set-default-version %s vN')",
					v.VersionID, p.Name, p.Name), identity.ErrConflict}
			}
			if err := e.store.DeletePolicyVersion(e.ctx, r.key, v.VersionID); err != nil {
				return e.fail(err, r)
			}
			e.done("Deleted version %s of policy %s.", v.VersionID, p.Name)
			return nil
		})
}

// ---- policies of users, groups and roles ----

// holderCommands are the policy subcommands shared by user, group and role:
// attach-policy, detach-policy, put-policy, get-policy, delete-policy and
// list-policies.
func holderCommands(g *globalFlags, kind identity.PrincipalKind) []*cobra.Command {
	k := string(kind)
	upper := strings.ToUpper(k)
	holder := func(e *iamEnv, name string) (identity.PolicyHolder, iamRef) {
		return identity.PolicyHolder{Kind: kind, AccountID: e.account, Name: name}, iamRef{k, name, name}
	}

	attach := iamCommand(g, "attach-policy "+upper+" POLICY", "Attach a managed policy to a "+k,
		iamArgs(upper, "POLICY"),
		func(e *iamEnv, args []string) error {
			h, hr := holder(e, args[0])
			pr, err := e.policyRef(args[1])
			if err != nil {
				return err
			}
			if err := e.store.AttachPolicy(e.ctx, h, pr.key); err != nil {
				return e.fail(err, hr, pr)
			}
			e.done("Attached policy %s to %s %s.", pr.key, k, args[0])
			return nil
		})

	detach := iamCommand(g, "detach-policy "+upper+" POLICY", "Detach a managed policy from a "+k,
		iamArgs(upper, "POLICY"),
		func(e *iamEnv, args []string) error {
			h, hr := holder(e, args[0])
			pr, err := e.policyRef(args[1])
			if err != nil {
				return err
			}
			err = e.store.DetachPolicy(e.ctx, h, pr.key)
			if errors.Is(err, identity.ErrNotFound) && e.exists(hr) && e.exists(pr) {
				return &iamError{fmt.Sprintf("policy %s is not attached to %s %s: see 'iamdb %s list-policies %s'",
					args[1], k, args[0], k, args[0]), err}
			}
			if err != nil {
				return e.fail(err, hr, pr)
			}
			e.done("Detached policy %s from %s %s.", pr.key, k, args[0])
			return nil
		})

	var docFlag, doc string
	put := iamCommand(g, "put-policy "+upper+" POLICYNAME --document FILE|JSON",
		"Create or replace an inline policy of a "+k, iamArgs(upper, "POLICYNAME"),
		func(e *iamEnv, args []string) error {
			h, hr := holder(e, args[0])
			if err := e.store.PutInlinePolicy(e.ctx, h, args[1], doc); err != nil {
				return e.fail(err, hr)
			}
			e.done("Put inline policy %s on %s %s.", args[1], k, args[0])
			return nil
		})
	put.PreRunE = func(cmd *cobra.Command, _ []string) (err error) {
		doc, err = iamLoadDocument(cmd.InOrStdin(), "--document", docFlag, false)
		return err
	}
	put.Flags().StringVar(&docFlag, "document", "", "policy document: file path, file://PATH, - or inline JSON (required)")

	// inlineMissing explains a missing inline policy of an existing holder.
	inlineMissing := func(e *iamEnv, err error, hr iamRef, name string) error {
		if errors.Is(err, identity.ErrNotFound) && e.exists(hr) {
			return &iamError{fmt.Sprintf("%s %s has no inline policy %q: see 'iamdb %s list-policies %s'",
				k, hr.shown, name, k, hr.shown), err}
		}
		return e.fail(err, hr)
	}

	get := iamCommand(g, "get-policy "+upper+" POLICYNAME", "Show an inline policy of a "+k,
		iamArgs(upper, "POLICYNAME"),
		func(e *iamEnv, args []string) error {
			h, hr := holder(e, args[0])
			p, err := e.store.GetInlinePolicy(e.ctx, h, args[1])
			if err != nil {
				return inlineMissing(e, err, hr, args[1])
			}
			if e.json {
				// The shape of aws iam get-user-policy / get-group-policy / get-role-policy.
				return writeJSON(e.out, map[string]any{
					strings.ToUpper(k[:1]) + k[1:] + "Name": args[0],
					"PolicyName":                            p.Name,
					"PolicyDocument":                        iamDocumentJSON(p.Document),
				})
			}
			fmt.Fprintf(e.out, "Inline policy %s of %s %s:\n%s\n", p.Name, k, args[0], iamPrettyDocument(p.Document))
			return nil
		})

	del := iamCommand(g, "delete-policy "+upper+" POLICYNAME", "Delete an inline policy of a "+k,
		iamArgs(upper, "POLICYNAME"),
		func(e *iamEnv, args []string) error {
			h, hr := holder(e, args[0])
			if err := e.store.DeleteInlinePolicy(e.ctx, h, args[1]); err != nil {
				return inlineMissing(e, err, hr, args[1])
			}
			e.done("Deleted inline policy %s of %s %s.", args[1], k, args[0])
			return nil
		})

	list := iamCommand(g, "list-policies "+upper, "List the managed policies attached to a "+k+" and its inline policies",
		iamArgs(upper),
		func(e *iamEnv, args []string) error {
			h, hr := holder(e, args[0])
			attached, err := e.store.ListAttachedPolicies(e.ctx, h)
			if err != nil {
				return e.fail(err, hr)
			}
			inline, err := e.store.ListInlinePolicies(e.ctx, h)
			if err != nil {
				return e.fail(err, hr)
			}
			if e.json {
				// aws iam list-attached-*-policies and list-*-policies, in one object.
				ap := make([]attachedPolicyJSON, 0, len(attached))
				for _, a := range attached {
					ap = append(ap, attachedPolicyJSON{a.Name, a.ARN})
				}
				names := make([]string, 0, len(inline))
				for _, p := range inline {
					names = append(names, p.Name)
				}
				return writeJSON(e.out, map[string]any{"AttachedPolicies": ap, "PolicyNames": names})
			}
			if len(attached)+len(inline) == 0 {
				fmt.Fprintf(e.out, "%s %s has no policies.\n", strings.ToUpper(k[:1])+k[1:], args[0])
				return nil
			}
			tw := iamTable(e.out)
			fmt.Fprintln(tw, "TYPE\tNAME\tARN")
			for _, a := range attached {
				fmt.Fprintf(tw, "managed\t%s\t%s\n", a.Name, a.ARN)
			}
			for _, p := range inline {
				fmt.Fprintf(tw, "inline\t%s\t-\n", p.Name)
			}
			return tw.Flush()
		})

	return []*cobra.Command{attach, detach, put, get, del, list}
}
