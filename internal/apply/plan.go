package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
)

// Action is what a Change does to its object.
type Action string

// The three actions of a plan.
const (
	Create Action = "create"
	Update Action = "update"
	Delete Action = "delete"
)

// Change is one step of a plan: one atomic store call (two for a policy
// at its version limit). Type names the object changed: "user", "group",
// "role", "policy", "oidc provider", "membership", "attachment" or
// "inline policy".
type Change struct {
	Action Action
	Type   string
	Name   string // "alice"; "user alice in group developers"; "policy x to user alice"
	Detail string // what changes, for updates: "tags team=payments→platform"
	Line   int    // line of the file that asks for it; 0 for prune deletes

	phase int
	run   func(ctx context.Context, a *applier) error
}

// String renders the change as a plan line, e.g.
// "~ update user alice: tags team=payments→platform".
func (c Change) String() string {
	sym := map[Action]string{Create: "+", Update: "~", Delete: "-"}[c.Action]
	s := sym + " " + string(c.Action) + " " + c.Type + " " + c.Name
	if c.Detail != "" {
		s += ": " + c.Detail
	}
	return s
}

// KeepRule protects an object that the file does not name from --prune.
// Type is "user", "group", "role", "policy" or "oidc-provider"; Name is
// compared without regard to case (an OIDC provider by issuer host/path).
type KeepRule struct {
	Type   string
	Name   string
	Reason string
}

// DefaultKeep protects what `iamdb init` creates, so that pruning with a
// file that does not mention them cannot lock the operator out. Naming them
// in the file puts them under the file's control like anything else.
func DefaultKeep() []KeepRule {
	return []KeepRule{
		{Type: "user", Name: "admin", Reason: "created by iamdb init"},
		{Type: "policy", Name: "AdministratorAccess", Reason: "created by iamdb init"},
	}
}

// ParseKeepRule reads a --keep value: TYPE/NAME, e.g. "role/break-glass".
func ParseKeepRule(s string) (KeepRule, error) {
	typ, name, ok := strings.Cut(s, "/")
	switch {
	case !ok || name == "":
		return KeepRule{}, fmt.Errorf("--keep %q: use TYPE/NAME, e.g. user/ci or role/break-glass", s)
	case typ != "user" && typ != "group" && typ != "role" && typ != "policy" && typ != "oidc-provider":
		return KeepRule{}, fmt.Errorf("--keep %q: type %q: use user, group, role, policy or oidc-provider", s, typ)
	}
	return KeepRule{Type: typ, Name: name, Reason: "--keep"}, nil
}

// Options tune a plan.
type Options struct {
	// Prune deletes users, groups, roles, policies and OIDC providers of
	// the account that the file does not name, except those kept.
	Prune bool
	// Keep adds to DefaultKeep.
	Keep []KeepRule
}

// Kept is an object --prune left alone because of a KeepRule.
type Kept struct {
	Type   string
	Name   string
	Reason string
}

// Plan is the list of changes that makes an account match a file, in the
// order Apply runs them.
type Plan struct {
	Account string
	Prune   bool
	Changes []Change
	Kept    []Kept

	// policyARNs maps lower-case policy names of the account to their ARN,
	// for steps that refer to a policy created earlier in the plan.
	policyARNs map[string]string
}

// Execution phases: whatever a step needs exists before it runs, and
// nothing is deleted while something still refers to it.
const (
	phasePolicy = iota
	phaseOIDC
	phaseGroup
	phaseUser
	phaseRole
	phaseInline
	phaseAttach
	phaseJoin
	phaseLeave
	phaseDetach
	phaseDropInline
	phaseDeletePrincipal
	phaseDeleteGroup
	phaseDeletePolicy
	phaseDeleteOIDC
)

// policyTarget is a managed policy a holder should have. ARN is empty for
// a policy this plan creates; the step looks it up when it runs.
type policyTarget struct {
	Name string
	ARN  string
}

func (t policyTarget) key() string {
	if t.ARN != "" {
		return t.ARN
	}
	return "new:" + strings.ToLower(t.Name)
}

type planner struct {
	ctx     context.Context
	store   identity.Store
	account string
	f       *File
	opts    Options
	plan    *Plan
	errs    Errors

	policies     map[string]identity.ManagedPolicy // lower name
	policyByARN  map[string]identity.ManagedPolicy
	filePolicies map[string]*Policy // lower name
	groups       map[string]identity.Group
	fileGroups   map[string]*Group
	users        map[string]identity.User
	roles        map[string]identity.Role
	oidc         map[string]identity.OIDCProvider // issuer host/path
	keep         map[string]KeepRule              // "type/lower name"
}

func (p *planner) fail(line int, format string, args ...any) {
	p.errs = append(p.errs, &LineError{Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *planner) add(c Change) { p.plan.Changes = append(p.plan.Changes, c) }

func (p *planner) kept(typ, name string) (KeepRule, bool) {
	k, ok := p.keep[typ+"/"+strings.ToLower(name)]
	return k, ok
}

// Plan compares the file with what the store holds for account and
// returns the changes that make them match. Documents are compared by
// their canonical JSON, so formatting, key order and "string or list"
// spelling never cause a change. Problems a person can fix (a reference to
// a policy or group that exists neither in the file nor in the store, a
// path that cannot change) are returned as Errors with the file's lines.
func (f *File) Plan(ctx context.Context, store identity.Store, account string, opts Options) (*Plan, error) {
	if _, err := store.GetAccount(ctx, account); err != nil {
		return nil, fmt.Errorf("plan: account %s: %w (check account_id in the configuration, or the data dir)", account, err)
	}
	p := &planner{
		ctx: ctx, store: store, account: account, f: f, opts: opts,
		plan:         &Plan{Account: account, Prune: opts.Prune, policyARNs: map[string]string{}},
		policies:     map[string]identity.ManagedPolicy{},
		policyByARN:  map[string]identity.ManagedPolicy{},
		filePolicies: map[string]*Policy{},
		groups:       map[string]identity.Group{},
		fileGroups:   map[string]*Group{},
		users:        map[string]identity.User{},
		roles:        map[string]identity.Role{},
		oidc:         map[string]identity.OIDCProvider{},
		keep:         map[string]KeepRule{},
	}
	for _, k := range append(DefaultKeep(), opts.Keep...) {
		name := k.Name
		if k.Type == "oidc-provider" {
			name = identity.IssuerHostPath(name)
		}
		p.keep[k.Type+"/"+strings.ToLower(name)] = k
	}
	if err := p.load(); err != nil {
		return nil, fmt.Errorf("plan: reading account %s: %w", account, err)
	}
	steps := []func() error{p.planPolicies, p.planOIDC, p.planGroups, p.planUsers, p.planRoles}
	if opts.Prune {
		steps = append(steps, p.planPrune)
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("plan: reading account %s: %w", account, err)
		}
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return lineOf(p.errs[i]) < lineOf(p.errs[j]) })
		return nil, p.errs
	}
	sort.SliceStable(p.plan.Changes, func(i, j int) bool { return p.plan.Changes[i].phase < p.plan.Changes[j].phase })
	return p.plan, nil
}

func lineOf(err error) int {
	var le *LineError
	if errors.As(err, &le) {
		return le.Line
	}
	return 0
}

func (p *planner) load() error {
	pols, err := p.store.ListPolicies(p.ctx, p.account, "")
	if err != nil {
		return err
	}
	for _, mp := range pols {
		p.policies[strings.ToLower(mp.Name)] = mp
		p.policyByARN[mp.ARN()] = mp
		p.plan.policyARNs[strings.ToLower(mp.Name)] = mp.ARN()
	}
	for i := range p.f.Policies {
		p.filePolicies[strings.ToLower(p.f.Policies[i].Name)] = &p.f.Policies[i]
	}
	groups, err := p.store.ListGroups(p.ctx, p.account, "")
	if err != nil {
		return err
	}
	for _, g := range groups {
		p.groups[strings.ToLower(g.Name)] = g
	}
	for i := range p.f.Groups {
		p.fileGroups[strings.ToLower(p.f.Groups[i].Name)] = &p.f.Groups[i]
	}
	users, err := p.store.ListUsers(p.ctx, p.account, "")
	if err != nil {
		return err
	}
	for _, u := range users {
		p.users[strings.ToLower(u.Name)] = u
	}
	roles, err := p.store.ListRoles(p.ctx, p.account, "")
	if err != nil {
		return err
	}
	for _, r := range roles {
		p.roles[strings.ToLower(r.Name)] = r
	}
	provs, err := p.store.ListOIDCProviders(p.ctx, p.account)
	if err != nil {
		return err
	}
	for _, o := range provs {
		p.oidc[identity.IssuerHostPath(o.URL)] = o
	}
	return nil
}

// desiredDoc returns the canonical form of a document from the file, or
// records the problem.
func (p *planner) desiredDoc(d *Document) (string, bool) {
	c, err := d.canonical(p.account)
	if err != nil {
		p.errs = append(p.errs, err)
		return "", false
	}
	return c, true
}

// storedDoc is the canonical form of a stored document; a document the
// parser no longer accepts compares unequal, so the file's replaces it.
func storedDoc(doc string) string {
	d, err := policy.Parse([]byte(doc))
	if err != nil {
		return "unparsable:" + doc
	}
	b, err := d.MarshalJSON()
	if err != nil {
		return "unparsable:" + doc
	}
	return string(b)
}

func (p *planner) planPolicies() error {
	for i := range p.f.Policies {
		fp := &p.f.Policies[i]
		doc, ok := p.desiredDoc(fp.Document)
		if !ok {
			continue
		}
		mp, exists := p.policies[strings.ToLower(fp.Name)]
		if !exists {
			name, path := fp.Name, fp.Path
			p.add(Change{Action: Create, Type: "policy", Name: name, Line: fp.Line, phase: phasePolicy,
				run: func(ctx context.Context, a *applier) error {
					created, err := a.store.CreatePolicy(ctx, identity.ManagedPolicy{AccountID: a.account, Name: name, Path: path}, doc)
					if err != nil {
						return err
					}
					a.arns[strings.ToLower(name)] = created.ARN()
					return nil
				}})
			continue
		}
		if mp.Path != fp.Path {
			p.fail(fp.Line, "%s: policy %q exists with path %s, the file says %s: a policy's path cannot change; write path: %s, or delete the policy and apply again",
				fp.where, fp.Name, mp.Path, fp.Path, mp.Path)
			continue
		}
		if storedDoc(mp.DefaultDocument()) == doc {
			continue
		}
		arn := mp.ARN()
		detail := fmt.Sprintf("new default version (document differs from %s)", mp.DefaultVersion)
		drop := ""
		if len(mp.Versions) >= identity.MaxPolicyVersions {
			for _, v := range mp.Versions {
				if !v.IsDefault {
					drop = v.VersionID
					break
				}
			}
			detail += fmt.Sprintf("; first deletes the oldest non-default version %s (a policy keeps at most %d)", drop, identity.MaxPolicyVersions)
		}
		p.add(Change{Action: Update, Type: "policy", Name: fp.Name, Detail: detail, Line: fp.Document.Line, phase: phasePolicy,
			run: func(ctx context.Context, a *applier) error {
				if drop != "" {
					err := a.store.DeletePolicyVersion(ctx, arn, drop)
					if err != nil && !errors.Is(err, identity.ErrNotFound) {
						return err
					}
				}
				_, err := a.store.CreatePolicyVersion(ctx, arn, doc, true)
				return err
			}})
	}
	return nil
}

func sortedCopy(l []string) []string {
	out := append([]string{}, l...)
	sort.Strings(out)
	return out
}

func (p *planner) planOIDC() error {
	for i := range p.f.OIDCProviders {
		o := p.f.OIDCProviders[i]
		want := identity.OIDCProvider{AccountID: p.account, URL: o.URL, Audiences: o.Audiences, JWKSURL: o.JWKSURL,
			JWKSFile: o.JWKSFile, Thumbprints: o.Thumbprints}
		cur, exists := p.oidc[identity.IssuerHostPath(o.URL)]
		if !exists {
			p.add(Change{Action: Create, Type: "oidc provider", Name: o.URL, Line: o.Line, phase: phaseOIDC,
				run: func(ctx context.Context, a *applier) error {
					_, err := a.store.CreateOIDCProvider(ctx, want)
					return err
				}})
			continue
		}
		var diffs []string
		if !slices.Equal(sortedCopy(cur.Audiences), sortedCopy(o.Audiences)) {
			diffs = append(diffs, fmt.Sprintf("audiences %s→%s", listText(cur.Audiences), listText(o.Audiences)))
		}
		if cur.JWKSURL != o.JWKSURL {
			diffs = append(diffs, fmt.Sprintf("jwks_url %s→%s", orNone(cur.JWKSURL), orNone(o.JWKSURL)))
		}
		if cur.JWKSFile != o.JWKSFile {
			diffs = append(diffs, fmt.Sprintf("jwks_file %s→%s", orNone(cur.JWKSFile), orNone(o.JWKSFile)))
		}
		if !slices.Equal(sortedCopy(cur.Thumbprints), sortedCopy(o.Thumbprints)) {
			diffs = append(diffs, fmt.Sprintf("thumbprints %s→%s", listText(cur.Thumbprints), listText(o.Thumbprints)))
		}
		if len(diffs) == 0 {
			continue
		}
		want.URL = cur.URL // the store keys providers by host/path; keep its spelling
		p.add(Change{Action: Update, Type: "oidc provider", Name: o.URL, Detail: strings.Join(diffs, "; "), Line: o.Line, phase: phaseOIDC,
			run: func(ctx context.Context, a *applier) error {
				_, err := a.store.UpdateOIDCProvider(ctx, want)
				return err
			}})
	}
	return nil
}

func listText(l []string) string { return "[" + strings.Join(l, " ") + "]" }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (p *planner) planGroups() error {
	for i := range p.f.Groups {
		g := &p.f.Groups[i]
		cur, exists := p.groups[strings.ToLower(g.Name)]
		if !exists {
			name, path := g.Name, g.Path
			p.add(Change{Action: Create, Type: "group", Name: name, Line: g.Line, phase: phaseGroup,
				run: func(ctx context.Context, a *applier) error {
					_, err := a.store.CreateGroup(ctx, identity.Group{AccountID: a.account, Name: name, Path: path})
					return err
				}})
		} else if cur.Path != g.Path {
			p.fail(g.Line, "%s: group %q exists with path %s, the file says %s: a group's path cannot change; write path: %s, or delete the group and apply again",
				g.where, g.Name, cur.Path, g.Path, cur.Path)
			continue
		}
		if err := p.holderPolicies(identity.GroupRef(p.account, g.Name), exists, g.Policies, g.InlinePolicies, g.where); err != nil {
			return err
		}
	}
	return nil
}

func (p *planner) planUsers() error {
	for i := range p.f.Users {
		u := &p.f.Users[i]
		boundary, ok := p.boundary(u.PermissionsBoundary, u.where)
		if !ok {
			continue
		}
		cur, exists := p.users[strings.ToLower(u.Name)]
		h := identity.UserRef(p.account, u.Name)
		if !exists {
			name, path, tags := u.Name, u.Path, u.Tags
			p.add(Change{Action: Create, Type: "user", Name: name, Detail: createDetail(path, tags, boundary), Line: u.Line, phase: phaseUser,
				run: func(ctx context.Context, a *applier) error {
					b, err := a.boundaryARN(boundary)
					if err != nil {
						return err
					}
					_, err = a.store.CreateUser(ctx, identity.User{AccountID: a.account, Name: name, Path: path, Tags: tags, PermissionsBoundary: b})
					return err
				}})
		} else {
			p.updatePrincipal(h, u.Line, cur.Path, u.Path, cur.Tags, u.Tags, cur.PermissionsBoundary, boundary)
		}
		// Memberships.
		have := map[string]string{}
		if exists {
			for _, g := range cur.Groups {
				have[strings.ToLower(g)] = g
			}
		}
		want := map[string]bool{}
		for _, ref := range u.Groups {
			key := strings.ToLower(ref.Name)
			want[key] = true
			if !p.groupExists(ref, u.where+".groups") {
				continue
			}
			if _, ok := have[key]; ok {
				continue
			}
			user, group := u.Name, ref.Name
			p.add(Change{Action: Create, Type: "membership", Name: "user " + user + " in group " + group, Line: ref.Line, phase: phaseJoin,
				run: func(ctx context.Context, a *applier) error {
					err := a.store.AddUserToGroup(ctx, a.account, group, user)
					if errors.Is(err, identity.ErrAlreadyExists) {
						return nil
					}
					return err
				}})
		}
		for _, key := range sortedKeys(have) {
			if want[key] {
				continue
			}
			user, group := u.Name, have[key]
			p.add(Change{Action: Delete, Type: "membership", Name: "user " + user + " from group " + group, Line: u.Line, phase: phaseLeave,
				run: func(ctx context.Context, a *applier) error {
					err := a.store.RemoveUserFromGroup(ctx, a.account, group, user)
					if errors.Is(err, identity.ErrNotFound) {
						return nil
					}
					return err
				}})
		}
		if err := p.holderPolicies(h, exists, u.Policies, u.InlinePolicies, u.where); err != nil {
			return err
		}
	}
	return nil
}

func (p *planner) planRoles() error {
	for i := range p.f.Roles {
		r := &p.f.Roles[i]
		boundary, ok := p.boundary(r.PermissionsBoundary, r.where)
		trust, ok2 := p.desiredDoc(r.TrustPolicy)
		if !ok || !ok2 {
			continue
		}
		cur, exists := p.roles[strings.ToLower(r.Name)]
		h := identity.RoleRef(p.account, r.Name)
		if !exists {
			name, path, tags, msd := r.Name, r.Path, r.Tags, r.MaxSessionDuration
			detail := createDetail(path, tags, boundary)
			if msd != identity.DefaultMaxSessionDuration {
				detail = joinDetail(detail, fmt.Sprintf("max session duration %ds", int64(msd/time.Second)))
			}
			p.add(Change{Action: Create, Type: "role", Name: name, Detail: detail, Line: r.Line, phase: phaseRole,
				run: func(ctx context.Context, a *applier) error {
					b, err := a.boundaryARN(boundary)
					if err != nil {
						return err
					}
					_, err = a.store.CreateRole(ctx, identity.Role{AccountID: a.account, Name: name, Path: path, TrustPolicy: trust,
						MaxSessionDuration: msd, Tags: tags, PermissionsBoundary: b})
					return err
				}})
		} else {
			if cur.Path != r.Path {
				p.fail(r.Line, "%s: role %q exists with path %s, the file says %s: a role's path cannot change; write path: %s, or delete the role and apply again",
					r.where, r.Name, cur.Path, r.Path, cur.Path)
				continue
			}
			p.updatePrincipal(h, r.Line, cur.Path, r.Path, cur.Tags, r.Tags, cur.PermissionsBoundary, boundary)
			if storedDoc(cur.TrustPolicy) != trust {
				name := r.Name
				p.add(Change{Action: Update, Type: "role", Name: name, Detail: "trust policy (document changed)", Line: r.TrustPolicy.Line, phase: phaseRole,
					run: func(ctx context.Context, a *applier) error {
						_, err := a.store.UpdateRole(ctx, a.account, name, identity.RoleUpdate{TrustPolicy: &trust})
						return err
					}})
			}
			if cur.MaxSessionDuration != r.MaxSessionDuration {
				name, msd := r.Name, r.MaxSessionDuration
				p.add(Change{Action: Update, Type: "role", Name: name, Line: r.Line, phase: phaseRole,
					Detail: fmt.Sprintf("max session duration %ds→%ds", int64(cur.MaxSessionDuration/time.Second), int64(msd/time.Second)),
					run: func(ctx context.Context, a *applier) error {
						_, err := a.store.UpdateRole(ctx, a.account, name, identity.RoleUpdate{MaxSessionDuration: &msd})
						return err
					}})
			}
		}
		if err := p.holderPolicies(h, exists, r.Policies, r.InlinePolicies, r.where); err != nil {
			return err
		}
	}
	return nil
}

func createDetail(path string, tags map[string]string, boundary *policyTarget) string {
	var parts []string
	if path != "/" {
		parts = append(parts, "path "+path)
	}
	if len(tags) > 0 {
		var kv []string
		for _, k := range sortedKeys(tags) {
			kv = append(kv, k+"="+tags[k])
		}
		parts = append(parts, "tags "+strings.Join(kv, ", "))
	}
	if boundary != nil {
		parts = append(parts, "permissions boundary "+boundary.Name)
	}
	return strings.Join(parts, "; ")
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// updatePrincipal plans the path, tag and boundary updates of an existing
// user or role, one step each.
func (p *planner) updatePrincipal(h identity.PolicyHolder, line int, curPath, path string, curTags, tags map[string]string,
	curBoundary string, boundary *policyTarget) {
	name, isUser := h.Name, h.Kind == identity.KindUser
	update := func(detail string, uu identity.UserUpdate, ru identity.RoleUpdate) {
		p.add(Change{Action: Update, Type: string(h.Kind), Name: name, Detail: detail, Line: line,
			phase: map[bool]int{true: phaseUser, false: phaseRole}[isUser],
			run: func(ctx context.Context, a *applier) error {
				if isUser {
					_, err := a.store.UpdateUser(ctx, a.account, name, uu)
					return err
				}
				_, err := a.store.UpdateRole(ctx, a.account, name, ru)
				return err
			}})
	}
	if isUser && curPath != path {
		update(fmt.Sprintf("path %s→%s", curPath, path), identity.UserUpdate{Path: &path}, identity.RoleUpdate{})
	}
	if d := tagDiff(curTags, tags); d != "" {
		t := tags
		update("tags "+d, identity.UserUpdate{Tags: &t}, identity.RoleUpdate{Tags: &t})
	}
	wantKey, curName := "", "none"
	if boundary != nil {
		wantKey = boundary.ARN
	}
	if curBoundary != "" {
		curName = arnName(curBoundary)
	}
	if boundary == nil && curBoundary == "" || boundary != nil && wantKey == curBoundary {
		return
	}
	newName := "none"
	if boundary != nil {
		newName = boundary.Name
	}
	b := boundary
	p.add(Change{Action: Update, Type: string(h.Kind), Name: name, Detail: fmt.Sprintf("permissions boundary %s→%s", curName, newName), Line: line,
		phase: map[bool]int{true: phaseUser, false: phaseRole}[isUser],
		run: func(ctx context.Context, a *applier) error {
			arn, err := a.boundaryARN(b)
			if err != nil {
				return err
			}
			if isUser {
				_, err = a.store.UpdateUser(ctx, a.account, name, identity.UserUpdate{PermissionsBoundary: &arn})
			} else {
				_, err = a.store.UpdateRole(ctx, a.account, name, identity.RoleUpdate{PermissionsBoundary: &arn})
			}
			return err
		}})
}

func arnName(arn string) string {
	if a, err := identity.ParseARN(arn); err == nil && a.Name != "" {
		return a.Name
	}
	return arn
}

// tagDiff describes how tags change: "team=payments→platform, +owner=bob, -cost".
func tagDiff(cur, want map[string]string) string {
	keys := map[string]bool{}
	for k := range cur {
		keys[k] = true
	}
	for k := range want {
		keys[k] = true
	}
	var parts []string
	for _, k := range sortedKeys(keys) {
		c, inCur := cur[k]
		w, inWant := want[k]
		switch {
		case inCur && inWant && c != w:
			parts = append(parts, k+"="+c+"→"+w)
		case inWant && !inCur:
			parts = append(parts, "+"+k+"="+w)
		case inCur && !inWant:
			parts = append(parts, "-"+k+"="+c)
		}
	}
	return strings.Join(parts, ", ")
}

func (p *planner) groupExists(ref Ref, where string) bool {
	key := strings.ToLower(ref.Name)
	if p.fileGroups[key] != nil {
		return true
	}
	if _, ok := p.groups[key]; ok {
		if _, kept := p.kept("group", ref.Name); p.opts.Prune && !kept {
			p.fail(ref.Line, "%s: group %q is not defined in this file, so --prune would delete it: define it under groups:", where, ref.Name)
			return false
		}
		return true
	}
	p.fail(ref.Line, "%s: group %q is neither defined under groups: in this file nor present in account %s: define it, or fix the name",
		where, ref.Name, p.account)
	return false
}

// resolvePolicy finds the managed policy a reference names: a policy of
// the file, or one already in the store (by name in the account, or by ARN).
func (p *planner) resolvePolicy(ref Ref, where string) (policyTarget, bool) {
	name := ref.Name
	if strings.HasPrefix(name, "arn:") {
		arn := strings.ReplaceAll(name, AccountPlaceholder, p.account)
		a, err := identity.ParseARN(arn)
		if err != nil {
			p.fail(ref.Line, "%s: %s", where, plain(err))
			return policyTarget{}, false
		}
		if a.Account == p.account {
			if fp := p.filePolicies[strings.ToLower(a.Name)]; fp != nil && fp.Path == a.Path {
				return p.resolvePolicy(Ref{Name: fp.Name, Line: ref.Line}, where)
			}
		}
		if mp, ok := p.policyByARN[arn]; ok {
			return p.storeTarget(mp, ref, where)
		}
		mp, err := p.store.GetPolicy(p.ctx, arn)
		if err == nil {
			return policyTarget{Name: mp.Name, ARN: mp.ARN()}, true
		}
		p.fail(ref.Line, "%s: policy %s is neither defined under policies: in this file nor present in the store: define it, or fix the ARN", where, arn)
		return policyTarget{}, false
	}
	if fp := p.filePolicies[strings.ToLower(name)]; fp != nil {
		t := policyTarget{Name: fp.Name}
		if mp, ok := p.policies[strings.ToLower(name)]; ok {
			t.ARN = mp.ARN()
		}
		return t, true
	}
	if mp, ok := p.policies[strings.ToLower(name)]; ok {
		return p.storeTarget(mp, ref, where)
	}
	p.fail(ref.Line, "%s: policy %q is neither defined under policies: in this file nor present in account %s: define it, or fix the name",
		where, name, p.account)
	return policyTarget{}, false
}
