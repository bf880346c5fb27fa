package apply

import (
	"context"
	"fmt"
	"strings"

	"github.com/iamdb/iamdb/internal/identity"
)

// storeTarget accepts a policy that exists only in the store, unless
// --prune is about to delete it.
func (p *planner) storeTarget(mp identity.ManagedPolicy, ref Ref, where string) (policyTarget, bool) {
	if p.opts.Prune && p.prunedPolicy(mp) {
		p.fail(ref.Line, "%s: policy %q is not defined in this file, so --prune would delete it: define it under policies:", where, mp.Name)
		return policyTarget{}, false
	}
	return policyTarget{Name: mp.Name, ARN: mp.ARN()}, true
}

// prunedPolicy reports whether --prune deletes a stored policy.
func (p *planner) prunedPolicy(mp identity.ManagedPolicy) bool {
	if mp.AccountID != p.account || p.filePolicies[strings.ToLower(mp.Name)] != nil {
		return false
	}
	_, kept := p.kept("policy", mp.Name)
	return !kept
}

func (p *planner) boundary(ref *Ref, where string) (*policyTarget, bool) {
	if ref == nil {
		return nil, true
	}
	t, ok := p.resolvePolicy(*ref, where+".permissions_boundary")
	if !ok {
		return nil, false
	}
	return &t, true
}

// holderPolicies plans the managed policy attachments and inline policies
// of a user, group or role so they are exactly the file's.
func (p *planner) holderPolicies(h identity.PolicyHolder, exists bool, refs []Ref, inline map[string]*Document, where string) error {
	label := string(h.Kind) + " " + h.Name
	var (
		attached []identity.AttachedPolicy
		inlines  []identity.InlinePolicy
		err      error
	)
	if exists {
		if attached, err = p.store.ListAttachedPolicies(p.ctx, h); err != nil {
			return err
		}
		if inlines, err = p.store.ListInlinePolicies(p.ctx, h); err != nil {
			return err
		}
	}
	have := map[string]identity.AttachedPolicy{}
	for _, ap := range attached {
		have[ap.ARN] = ap
	}
	want := map[string]bool{}
	for _, ref := range refs {
		t, ok := p.resolvePolicy(ref, where+".policies")
		if !ok {
			continue
		}
		if want[t.key()] {
			p.fail(ref.Line, "%s: %q names policy %s a second time (once by name, once by ARN): keep one", where+".policies", ref.Name, t.Name)
			continue
		}
		want[t.key()] = true
		if _, ok := have[t.ARN]; ok && t.ARN != "" {
			continue
		}
		p.add(Change{Action: Create, Type: "attachment", Name: "policy " + t.Name + " to " + label, Line: ref.Line, phase: phaseAttach,
			run: func(ctx context.Context, a *applier) error {
				arn, err := a.arn(t)
				if err != nil {
					return err
				}
				return a.store.AttachPolicy(ctx, h, arn)
			}})
	}
	for _, ap := range attached {
		if want[ap.ARN] {
			continue
		}
		arn := ap.ARN
		p.add(Change{Action: Delete, Type: "attachment", Name: "policy " + ap.Name + " from " + label, phase: phaseDetach,
			run: func(ctx context.Context, a *applier) error { return a.store.DetachPolicy(ctx, h, arn) }})
	}

	cur := map[string]string{}
	for _, ip := range inlines {
		cur[ip.Name] = ip.Document
	}
	for _, name := range sortedKeys(inline) {
		d := inline[name]
		doc, ok := p.desiredDoc(d)
		if !ok {
			continue
		}
		action := Create
		if old, ok := cur[name]; ok {
			if storedDoc(old) == doc {
				continue
			}
			action = Update
		}
		detail := ""
		if action == Update {
			detail = "document changed"
		}
		p.add(Change{Action: action, Type: "inline policy", Name: name + " on " + label, Detail: detail, Line: d.Line, phase: phaseInline,
			run: func(ctx context.Context, a *applier) error { return a.store.PutInlinePolicy(ctx, h, name, doc) }})
	}
	for _, name := range sortedKeys(cur) {
		if _, ok := inline[name]; ok {
			continue
		}
		p.add(Change{Action: Delete, Type: "inline policy", Name: name + " on " + label, phase: phaseDropInline,
			run: func(ctx context.Context, a *applier) error { return a.store.DeleteInlinePolicy(ctx, h, name) }})
	}
	return nil
}

// planPrune deletes what the file does not name, except kept objects.
// Principals are deleted with Force: their keys, memberships, attachments
// and inline policies go with them and their live sessions are revoked,
// which the plan line says.
func (p *planner) planPrune() error {
	named := func(kind string) map[string]bool {
		m := map[string]bool{}
		switch kind {
		case "user":
			for _, u := range p.f.Users {
				m[strings.ToLower(u.Name)] = true
			}
		case "role":
			for _, r := range p.f.Roles {
				m[strings.ToLower(r.Name)] = true
			}
		}
		return m
	}
	keep := func(typ, name string) bool {
		k, ok := p.kept(typ, name)
		if ok {
			p.plan.Kept = append(p.plan.Kept, Kept{Type: typ, Name: name, Reason: k.Reason})
		}
		return ok
	}

	fileUsers := named("user")
	for _, key := range sortedKeys(p.users) {
		u := p.users[key]
		if fileUsers[key] {
			continue
		}
		if keep("user", u.Name) {
			if err := p.keptHolder(identity.UserRef(p.account, u.Name), u.PermissionsBoundary); err != nil {
				return err
			}
			continue
		}
		keys, err := p.store.ListAccessKeys(p.ctx, p.account, u.Name)
		if err != nil {
			return err
		}
		detail := "not in the file (--prune)"
		if n := len(keys); n > 0 {
			detail += fmt.Sprintf("; also deletes its %d access key%s", n, plural(n))
		}
		name := u.Name
		p.add(Change{Action: Delete, Type: "user", Name: name, Detail: detail, phase: phaseDeletePrincipal,
			run: func(ctx context.Context, a *applier) error {
				return a.store.DeleteUser(ctx, a.account, name, identity.DeleteOptions{Force: true})
			}})
	}
	fileRoles := named("role")
	for _, key := range sortedKeys(p.roles) {
		r := p.roles[key]
		if fileRoles[key] {
			continue
		}
		if keep("role", r.Name) {
			if err := p.keptHolder(identity.RoleRef(p.account, r.Name), r.PermissionsBoundary); err != nil {
				return err
			}
			continue
		}
		name := r.Name
		p.add(Change{Action: Delete, Type: "role", Name: name, Detail: "not in the file (--prune); revokes its live sessions", phase: phaseDeletePrincipal,
			run: func(ctx context.Context, a *applier) error {
				return a.store.DeleteRole(ctx, a.account, name, identity.DeleteOptions{Force: true})
			}})
	}
	for _, key := range sortedKeys(p.groups) {
		g := p.groups[key]
		if p.fileGroups[key] != nil {
			continue
		}
		if keep("group", g.Name) {
			if err := p.keptHolder(identity.GroupRef(p.account, g.Name), ""); err != nil {
				return err
			}
			continue
		}
		name := g.Name
		p.add(Change{Action: Delete, Type: "group", Name: name, Detail: "not in the file (--prune)", phase: phaseDeleteGroup,
			run: func(ctx context.Context, a *applier) error {
				return a.store.DeleteGroup(ctx, a.account, name, identity.DeleteOptions{Force: true})
			}})
	}
	for _, key := range sortedKeys(p.policies) {
		mp := p.policies[key]
		if p.filePolicies[key] != nil || keep("policy", mp.Name) {
			continue
		}
		arn := mp.ARN()
		p.add(Change{Action: Delete, Type: "policy", Name: mp.Name, Detail: "not in the file (--prune)", phase: phaseDeletePolicy,
			run: func(ctx context.Context, a *applier) error { return a.store.DeletePolicy(ctx, arn) }})
	}
	fileOIDC := map[string]bool{}
	for _, o := range p.f.OIDCProviders {
		fileOIDC[identity.IssuerHostPath(o.URL)] = true
	}
	for _, key := range sortedKeys(p.oidc) {
		o := p.oidc[key]
		if fileOIDC[key] || keep("oidc-provider", key) {
			continue
		}
		url := o.URL
		p.add(Change{Action: Delete, Type: "oidc provider", Name: url, Detail: "not in the file (--prune)", phase: phaseDeleteOIDC,
			run: func(ctx context.Context, a *applier) error { return a.store.DeleteOIDCProvider(ctx, a.account, url) }})
	}
	return nil
}

// keptHolder detaches policies that --prune deletes from a kept user,
// group or role; the store refuses to delete an attached policy.
func (p *planner) keptHolder(h identity.PolicyHolder, boundaryARN string) error {
	attached, err := p.store.ListAttachedPolicies(p.ctx, h)
	if err != nil {
		return err
	}
	for _, ap := range attached {
		mp, ok := p.policyByARN[ap.ARN]
		if !ok || !p.prunedPolicy(mp) {
			continue
		}
		arn := ap.ARN
		p.add(Change{Action: Delete, Type: "attachment", Name: "policy " + ap.Name + " from " + string(h.Kind) + " " + h.Name + " (kept)",
			phase: phaseDetach,
			run:   func(ctx context.Context, a *applier) error { return a.store.DetachPolicy(ctx, h, arn) }})
	}
	if mp, ok := p.policyByARN[boundaryARN]; ok && p.prunedPolicy(mp) {
		p.fail(0, "%s %s is kept but uses policy %q as its permissions boundary, which --prune would delete: add the policy to the file under policies:, or remove the boundary first",
			h.Kind, h.Name, mp.Name)
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
