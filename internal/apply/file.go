package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
)

// File is a parsed identities file: the desired state of one account.
// Every element records the line it was written on so that plan-time
// errors can point back into the file.
type File struct {
	Users         []User
	Groups        []Group
	Roles         []Role
	Policies      []Policy
	OIDCProviders []OIDCProvider
}

// Ref is a name written in the file (a group, or a managed policy by name
// or ARN) with its line.
type Ref struct {
	Name string
	Line int
}

// User is the desired state of an IAM user. Omitted keys mean "none":
// no tags, no groups, no policies, no boundary, path "/".
type User struct {
	Name                string
	Path                string
	Tags                map[string]string
	Groups              []Ref
	Policies            []Ref
	InlinePolicies      map[string]*Document
	PermissionsBoundary *Ref
	Line                int
	where               string // "users[0]", for messages
}

// Group is the desired state of an IAM group.
type Group struct {
	Name           string
	Path           string
	Policies       []Ref
	InlinePolicies map[string]*Document
	Line           int
	where          string
}

// Role is the desired state of an IAM role. MaxSessionDuration is one hour
// when the file leaves it out.
type Role struct {
	Name                string
	Path                string
	TrustPolicy         *Document
	MaxSessionDuration  time.Duration
	Tags                map[string]string
	Policies            []Ref
	InlinePolicies      map[string]*Document
	PermissionsBoundary *Ref
	Line                int
	where               string
}

// Policy is the desired state of a customer managed policy: its default
// version's document.
type Policy struct {
	Name     string
	Path     string
	Document *Document
	Line     int
	where    string
}

// OIDCProvider is the desired state of a trusted OpenID Connect issuer.
type OIDCProvider struct {
	URL         string
	Audiences   []string
	JWKSURL     string
	JWKSFile    string
	Thumbprints []string
	Line        int
	where       string
}

// Document is a policy document from the file, converted to JSON text as
// written (a YAML mapping becomes the equivalent JSON object; a JSON string
// is kept). It has been checked with the policy parser.
type Document struct {
	JSON  string
	Line  int
	Trust bool   // a role trust policy rather than an identity policy
	where string // "roles[0].trust_policy"
	node  *yaml.Node
}

// AccountPlaceholder is replaced by the account id in policy documents and
// policy ARNs when a plan is made, so that one file serves any data dir.
// It is not an IAM policy variable (those are namespaced, like
// ${aws:username}) and IAM variables are left exactly as written.
const AccountPlaceholder = "${account}"

// Errors is every problem found in a file, in file order. Its message has
// one line per problem, each starting with "line N:".
type Errors []error

func (e Errors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.Is and errors.As look at each problem.
func (e Errors) Unwrap() []error { return e }

// LineError is one problem at a line of the file.
type LineError struct {
	Line int
	Msg  string
}

func (e *LineError) Error() string {
	if e.Line <= 0 {
		return e.Msg
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
}

// maxErrors bounds how many problems Parse reports at once; past that the
// rest are usually consequences of the first ones.
const maxErrors = 20

type parser struct {
	errs Errors
}

func (p *parser) fail(line int, format string, args ...any) {
	if len(p.errs) < maxErrors {
		p.errs = append(p.errs, &LineError{Line: line, Msg: fmt.Sprintf(format, args...)})
	}
}

// Load reads and parses the identities file at path ("-" reads stdin). A relative jwks_file is taken relative to the file's directory and
// must exist.
func Load(path string, stdin io.Reader) (*File, error) {
	var (
		data []byte
		err  error
		base string
	)
	if path == "-" {
		data, err = io.ReadAll(stdin)
		base = "."
	} else {
		data, err = os.ReadFile(path)
		base = filepath.Dir(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read identities file: %w", err)
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("identities file %s:\n%w", path, err)
	}
	var p parser
	for i := range f.OIDCProviders {
		o := &f.OIDCProviders[i]
		if o.JWKSFile == "" {
			continue
		}
		if !filepath.IsAbs(o.JWKSFile) {
			abs, err := filepath.Abs(filepath.Join(base, o.JWKSFile))
			if err != nil {
				return nil, fmt.Errorf("identities file %s: %s.jwks_file: %w", path, o.where, err)
			}
			o.JWKSFile = abs
		}
		if _, err := os.Stat(o.JWKSFile); err != nil {
			p.fail(o.Line, "%s.jwks_file: %v (give the path of a JWKS file, relative to the identities file, or use jwks_url)", o.where, err)
		}
	}
	if len(p.errs) > 0 {
		return nil, fmt.Errorf("identities file %s:\n%w", path, p.errs)
	}
	return f, nil
}

// Parse reads an identities file strictly: unknown or duplicate keys, wrong
// types, invalid names, tags, paths or durations, and malformed policy
// documents are all reported with their line. It returns Errors listing
// every problem found.
func Parse(data []byte) (*File, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return &File{}, nil // an empty file names nothing
		}
		return nil, Errors{fmt.Errorf("%s (fix the YAML syntax)", strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{&LineError{Line: extra.Line, Msg: "a second YAML document (---): put everything in one document"}}
	} else if !errors.Is(err, io.EOF) {
		return nil, Errors{fmt.Errorf("%s (fix the YAML syntax)", strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	p := &parser{}
	f := p.file(&root)
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return f, nil
}

func (p *parser) file(root *yaml.Node) *File {
	f := &File{}
	doc := root
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return f
		}
		doc = doc.Content[0]
	}
	if doc.Kind == yaml.ScalarNode && doc.Tag == "!!null" {
		return f
	}
	top := p.mapping(doc, "the file", "users", "groups", "roles", "policies", "oidc_providers")
	if top == nil {
		return f
	}
	if n := top["users"]; n != nil {
		for i, item := range p.sequence(n, "users") {
			f.Users = append(f.Users, p.user(item, fmt.Sprintf("users[%d]", i)))
		}
	}
	if n := top["groups"]; n != nil {
		for i, item := range p.sequence(n, "groups") {
			f.Groups = append(f.Groups, p.group(item, fmt.Sprintf("groups[%d]", i)))
		}
	}
	if n := top["roles"]; n != nil {
		for i, item := range p.sequence(n, "roles") {
			f.Roles = append(f.Roles, p.role(item, fmt.Sprintf("roles[%d]", i)))
		}
	}
	if n := top["policies"]; n != nil {
		for i, item := range p.sequence(n, "policies") {
			f.Policies = append(f.Policies, p.policy(item, fmt.Sprintf("policies[%d]", i)))
		}
	}
	if n := top["oidc_providers"]; n != nil {
		for i, item := range p.sequence(n, "oidc_providers") {
			f.OIDCProviders = append(f.OIDCProviders, p.oidc(item, fmt.Sprintf("oidc_providers[%d]", i)))
		}
	}
	p.duplicates(f)
	return f
}

func (p *parser) user(n *yaml.Node, where string) User {
	m := p.mapping(n, where, "name", "path", "tags", "groups", "policies", "inline_policies", "permissions_boundary")
	u := User{Line: n.Line, where: where, Path: "/"}
	if m == nil {
		return u
	}
	u.Name = p.name(m, n, where, identity.KindUser)
	u.Path = p.path(m, where)
	u.Tags = p.tags(m["tags"], where+".tags")
	u.Groups = p.refs(m["groups"], where+".groups", func(s string) error { return identity.ValidateName(identity.KindGroup, s) })
	u.Policies = p.refs(m["policies"], where+".policies", validPolicyRef)
	u.InlinePolicies = p.inline(m["inline_policies"], where+".inline_policies")
	u.PermissionsBoundary = p.boundary(m["permissions_boundary"], where+".permissions_boundary")
	return u
}

func (p *parser) group(n *yaml.Node, where string) Group {
	m := p.mapping(n, where, "name", "path", "policies", "inline_policies")
	g := Group{Line: n.Line, where: where, Path: "/"}
	if m == nil {
		return g
	}
	g.Name = p.name(m, n, where, identity.KindGroup)
	g.Path = p.path(m, where)
	g.Policies = p.refs(m["policies"], where+".policies", validPolicyRef)
	g.InlinePolicies = p.inline(m["inline_policies"], where+".inline_policies")
	return g
}

func (p *parser) role(n *yaml.Node, where string) Role {
	m := p.mapping(n, where, "name", "path", "trust_policy", "max_session_duration", "tags", "policies",
		"inline_policies", "permissions_boundary")
	r := Role{Line: n.Line, where: where, Path: "/", MaxSessionDuration: identity.DefaultMaxSessionDuration}
	if m == nil {
		return r
	}
	r.Name = p.name(m, n, where, identity.KindRole)
	r.Path = p.path(m, where)
	if t := m["trust_policy"]; t != nil {
		r.TrustPolicy = p.document(t, where+".trust_policy", true)
	} else {
		p.fail(n.Line, "%s: trust_policy is required: say who may assume role %q (a policy document with a Principal)", where, r.Name)
	}
	if d := m["max_session_duration"]; d != nil {
		r.MaxSessionDuration = p.duration(d, where+".max_session_duration")
	}
	r.Tags = p.tags(m["tags"], where+".tags")
	r.Policies = p.refs(m["policies"], where+".policies", validPolicyRef)
	r.InlinePolicies = p.inline(m["inline_policies"], where+".inline_policies")
	r.PermissionsBoundary = p.boundary(m["permissions_boundary"], where+".permissions_boundary")
	return r
}

func (p *parser) policy(n *yaml.Node, where string) Policy {
	m := p.mapping(n, where, "name", "path", "document")
	pol := Policy{Line: n.Line, where: where, Path: "/"}
	if m == nil {
		return pol
	}
	if v := p.scalar(m["name"], where+".name"); v == "" {
		p.fail(n.Line, "%s: name is required", where)
	} else if err := identity.ValidatePolicyName(v); err != nil {
		p.fail(m["name"].Line, "%s.name: %s", where, plain(err))
	} else {
		pol.Name = v
	}
	pol.Path = p.path(m, where)
	if d := m["document"]; d != nil {
		pol.Document = p.document(d, where+".document", false)
	} else {
		p.fail(n.Line, "%s: document is required: the policy's JSON document, as a YAML mapping or a JSON string", where)
	}
	return pol
}

func (p *parser) oidc(n *yaml.Node, where string) OIDCProvider {
	m := p.mapping(n, where, "url", "audiences", "jwks_url", "jwks_file", "thumbprints")
	o := OIDCProvider{Line: n.Line, where: where}
	if m == nil {
		return o
	}
	if v := p.scalar(m["url"], where+".url"); v == "" {
		p.fail(n.Line, "%s: url is required: the issuer URL, as in the tokens' iss claim", where)
	} else if err := identity.ValidateIssuerURL(v); err != nil {
		p.fail(m["url"].Line, "%s.url: %s", where, plain(err))
	} else {
		o.URL = v
	}
	o.Audiences = p.strings(m["audiences"], where+".audiences")
	if len(o.Audiences) == 0 {
		p.fail(n.Line, "%s: audiences is required: list the client ids (aud claims) the provider issues tokens for", where)
	}
	o.JWKSURL = p.scalar(m["jwks_url"], where+".jwks_url")
	o.JWKSFile = p.scalar(m["jwks_file"], where+".jwks_file")
	if (o.JWKSURL == "") == (o.JWKSFile == "") {
		p.fail(n.Line, "%s: give exactly one of jwks_url and jwks_file (where the provider's signing keys come from)", where)
	}
	if o.JWKSURL != "" && !strings.HasPrefix(o.JWKSURL, "https://") && !strings.HasPrefix(o.JWKSURL, "http://localhost") &&
		!strings.HasPrefix(o.JWKSURL, "http://127.0.0.1") {
		p.fail(m["jwks_url"].Line, "%s.jwks_url %q: use an https:// URL (http only for localhost)", where, o.JWKSURL)
	}
	o.Thumbprints = p.strings(m["thumbprints"], where+".thumbprints")
	return o
}

// duplicates reports names given twice; the store compares names without
// regard to case, so the file does too.
func (p *parser) duplicates(f *File) {
	check := func(kind, name, where string, line int, seen map[string]string) {
		if name == "" {
			return
		}
		k := strings.ToLower(name)
		if prev, ok := seen[k]; ok {
			p.fail(line, "%s: %s %q is defined twice (also in %s); names are unique without regard to case: merge them", where, kind, name, prev)
			return
		}
		seen[k] = where
	}
	seen := map[string]string{}
	for _, u := range f.Users {
		check("user", u.Name, u.where, u.Line, seen)
	}
	seen = map[string]string{}
	for _, g := range f.Groups {
		check("group", g.Name, g.where, g.Line, seen)
	}
	seen = map[string]string{}
	for _, r := range f.Roles {
		check("role", r.Name, r.where, r.Line, seen)
	}
	seen = map[string]string{}
	for _, pol := range f.Policies {
		check("policy", pol.Name, pol.where, pol.Line, seen)
	}
	seen = map[string]string{}
	for _, o := range f.OIDCProviders {
		if o.URL != "" {
			check("OIDC provider", identity.IssuerHostPath(o.URL), o.where, o.Line, seen)
		}
	}
}

// mapping checks that n is a mapping with only the allowed keys, each once.
func (p *parser) mapping(n *yaml.Node, where string, allowed ...string) map[string]*yaml.Node {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n.Line, "%s must be a mapping of keys (%s), got %s", where, strings.Join(allowed, ", "), kindName(n))
		return nil
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		known := false
		for _, a := range allowed {
			if a == key {
				known = true
				break
			}
		}
		switch {
		case !known:
			hint := ""
			if s := closest(key, allowed); s != "" {
				hint = fmt.Sprintf(": did you mean %q?", s)
			}
			p.fail(k.Line, "unknown key %q in %s (check spelling; see docs)%s", key, where, hint)
		case out[key] != nil:
			p.fail(k.Line, "key %q appears twice in %s: keep one", key, where)
		default:
			out[key] = v
		}
	}
	return out
}

func (p *parser) sequence(n *yaml.Node, where string) []*yaml.Node {
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.fail(n.Line, "%s must be a list (- item), got %s", where, kindName(n))
		return nil
	}
	return n.Content
}

// scalar returns a scalar's text ("" for a missing key or null). Numbers
// and booleans are taken as the text written, so `team: 42` is the tag
// value "42".
func (p *parser) scalar(n *yaml.Node, where string) string {
	if n == nil {
		return ""
	}
	n = deref(n)
	if n.Kind != yaml.ScalarNode {
		p.fail(n.Line, "%s must be a single value, got %s", where, kindName(n))
		return ""
	}
	if n.Tag == "!!null" {
		return ""
	}
	return n.Value
}

func (p *parser) strings(n *yaml.Node, where string) []string {
	if n == nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for i, item := range p.sequence(n, where) {
		v := p.scalar(item, fmt.Sprintf("%s[%d]", where, i))
		if v == "" {
			p.fail(item.Line, "%s[%d] is empty", where, i)
			continue
		}
		if seen[v] {
			p.fail(item.Line, "%s lists %q twice: keep one", where, v)
			continue
		}
		seen[v] = true
		out = append(out, v)
	}
	return out
}

func (p *parser) name(m map[string]*yaml.Node, parent *yaml.Node, where string, kind identity.PrincipalKind) string {
	v := p.scalar(m["name"], where+".name")
	if v == "" {
		p.fail(parent.Line, "%s: name is required", where)
		return ""
	}
	if err := identity.ValidateName(kind, v); err != nil {
		p.fail(m["name"].Line, "%s.name: %s", where, plain(err))
		return ""
	}
	return v
}

func (p *parser) path(m map[string]*yaml.Node, where string) string {
	v := p.scalar(m["path"], where+".path")
	if v == "" {
		return "/"
	}
	if err := identity.ValidatePath(v); err != nil {
		p.fail(m["path"].Line, "%s.path: %s", where, plain(err))
		return "/"
	}
	return v
}

func (p *parser) tags(n *yaml.Node, where string) map[string]string {
	out := map[string]string{}
	if n == nil || (deref(n).Kind == yaml.ScalarNode && deref(n).Tag == "!!null") {
		return out
	}
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n.Line, "%s must be a mapping of tag keys to values, like {team: payments}, got %s", where, kindName(n))
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if _, dup := out[k.Value]; dup {
			p.fail(k.Line, "%s: tag %q appears twice: keep one", where, k.Value)
			continue
		}
		out[k.Value] = p.scalar(v, where+"."+k.Value)
		if err := identity.ValidateTags(map[string]string{k.Value: out[k.Value]}); err != nil {
			p.fail(k.Line, "%s: %s", where, plain(err))
		}
	}
	if len(out) > 50 {
		p.fail(n.Line, "%s: %d tags: at most 50 are allowed", where, len(out))
	}
	return out
}

func validPolicyRef(s string) error {
	if strings.HasPrefix(s, "arn:") {
		a, err := identity.ParseARN(strings.ReplaceAll(s, AccountPlaceholder, "000000000000"))
		if err != nil {
			return err
		}
		if a.Service != "iam" || a.Type != "policy" {
			return fmt.Errorf("%q is not a managed policy ARN: use arn:aws:iam::ACCOUNT:policy/NAME or just the policy name", s)
		}
		return nil
	}
	return identity.ValidatePolicyName(s)
}

func (p *parser) refs(n *yaml.Node, where string, valid func(string) error) []Ref {
	if n == nil {
		return nil
	}
	var out []Ref
	seen := map[string]bool{}
	for i, item := range p.sequence(n, where) {
		v := p.scalar(item, fmt.Sprintf("%s[%d]", where, i))
		switch {
		case v == "":
			p.fail(item.Line, "%s[%d] is empty: give a name", where, i)
		case valid(v) != nil:
			p.fail(item.Line, "%s[%d]: %s", where, i, plain(valid(v)))
		case seen[strings.ToLower(v)]:
			p.fail(item.Line, "%s lists %q twice: keep one", where, v)
		default:
			seen[strings.ToLower(v)] = true
			out = append(out, Ref{Name: v, Line: item.Line})
		}
	}
	return out
}

func (p *parser) boundary(n *yaml.Node, where string) *Ref {
	v := p.scalar(n, where)
	if v == "" {
		return nil
	}
	if err := validPolicyRef(v); err != nil {
		p.fail(n.Line, "%s: %s", where, plain(err))
		return nil
	}
	return &Ref{Name: v, Line: n.Line}
}

func (p *parser) inline(n *yaml.Node, where string) map[string]*Document {
	out := map[string]*Document{}
	if n == nil || (deref(n).Kind == yaml.ScalarNode && deref(n).Tag == "!!null") {
		return out
	}
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n.Line, "%s must be a mapping of policy names to documents, like {extra: {Version: \"2012-10-17\", Statement: [...]}}, got %s", where, kindName(n))
		return out
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := identity.ValidatePolicyName(k.Value); err != nil {
			p.fail(k.Line, "%s: %s", where, plain(err))
			continue
		}
		if seen[strings.ToLower(k.Value)] {
			p.fail(k.Line, "%s: inline policy %q appears twice: keep one", where, k.Value)
			continue
		}
		seen[strings.ToLower(k.Value)] = true
		if d := p.document(v, where+"."+k.Value, false); d != nil {
			out[k.Value] = d
		}
	}
	return out
}

func (p *parser) duration(n *yaml.Node, where string) time.Duration {
	v := p.scalar(n, where)
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(secs) * time.Second
	} else if pd, err := time.ParseDuration(v); err == nil {
		d = pd
	} else {
		p.fail(n.Line, "%s %q: give seconds (3600 to 43200) or a duration like 2h", where, v)
		return identity.DefaultMaxSessionDuration
	}
	if err := identity.ValidateMaxSessionDuration(d); err != nil {
		p.fail(n.Line, "%s: %s", where, plain(err))
		return identity.DefaultMaxSessionDuration
	}
	return d
}

// document converts a policy document written as a YAML mapping or as a
// JSON string, and checks it with the policy parser.
func (p *parser) document(n *yaml.Node, where string, trust bool) *Document {
	n = deref(n)
	d := &Document{Line: n.Line, Trust: trust, where: where}
	switch {
	case n.Kind == yaml.MappingNode:
		var b strings.Builder
		if err := writeJSON(&b, n); err != nil {
			p.fail(n.Line, "%s: %v", where, err)
			return nil
		}
		d.JSON, d.node = b.String(), n
	case n.Kind == yaml.ScalarNode && n.Tag == "!!str" && strings.HasPrefix(strings.TrimSpace(n.Value), "{"):
		d.JSON = n.Value
	default:
		p.fail(n.Line, "%s must be a policy document: a YAML mapping (Version: ..., Statement: [...]) or a JSON object in a string, got %s", where, kindName(n))
		return nil
	}
	if err := d.check(d.JSON); err != nil {
		var le *LineError
		if errors.As(err, &le) {
			p.errs = append(p.errs, le)
		}
		return nil
	}
	return d
}

// check parses doc (the document, possibly with the account substituted)
// and returns a LineError pointing at the offending statement.
func (d *Document) check(doc string) error {
	parsed, err := policy.Parse([]byte(doc))
	if err == nil {
		if d.Trust {
			err = parsed.ValidateTrust()
		} else {
			err = parsed.ValidateIdentity()
		}
	}
	if err == nil {
		return nil
	}
	line := d.Line
	var pe *policy.ParseError
	if errors.As(err, &pe) && pe.Statement >= 0 {
		line = d.statementLine(pe.Statement)
	}
	return &LineError{Line: line, Msg: d.where + ": " + strings.TrimPrefix(err.Error(), "policy: ")}
}

// canonical returns the document's canonical JSON with the account id
// substituted: the form stored, and the form compared with the store.
func (d *Document) canonical(account string) (string, error) {
	doc := strings.ReplaceAll(d.JSON, AccountPlaceholder, account)
	if err := d.check(doc); err != nil {
		return "", err
	}
	parsed, _ := policy.Parse([]byte(doc))
	b, err := parsed.MarshalJSON()
	if err != nil {
		return "", fmt.Errorf("%s: %w", d.where, err)
	}
	return string(b), nil
}

// statementLine finds the line of statement i in a YAML-mapping document.
func (d *Document) statementLine(i int) int {
	if d.node == nil {
		return d.Line
	}
	for j := 0; j+1 < len(d.node.Content); j += 2 {
		if d.node.Content[j].Value != "Statement" {
			continue
		}
		st := deref(d.node.Content[j+1])
		switch {
		case st.Kind == yaml.SequenceNode && i < len(st.Content):
			return st.Content[i].Line
		case st.Kind == yaml.MappingNode && i == 0:
			return st.Line
		}
		return st.Line
	}
	return d.Line
}

// writeJSON converts a YAML node to JSON text, keeping key order. Scalars
// keep their YAML type where JSON has one; anything JSON cannot represent
// as a number (0x1F, .inf) and timestamps (Version: 2012-10-17 unquoted)
// become strings, which is what a policy author means.
func writeJSON(b *strings.Builder, n *yaml.Node) error {
	n = deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := deref(n.Content[i])
			if k.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: a key must be a plain value, got %s", k.Line, kindName(k))
			}
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Quote(k.Value))
			b.WriteByte(':')
			if err := writeJSON(b, n.Content[i+1]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, c); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			b.WriteString("null")
		case "!!bool":
			b.WriteString(strings.ToLower(n.Value))
		case "!!int", "!!float":
			if isJSONNumber(n.Value) {
				b.WriteString(n.Value)
			} else {
				b.WriteString(jsonString(n.Value))
			}
		default:
			b.WriteString(jsonString(n.Value))
		}
	default:
		return fmt.Errorf("line %d: unsupported YAML %s in a policy document", n.Line, kindName(n))
	}
	return nil
}

// jsonString quotes s as JSON; strconv.Quote's \x escapes are not JSON.
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func isJSONNumber(s string) bool {
	if s == "" {
		return false
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return false
	}
	// JSON forbids a leading '+', leading zeros, "1." and ".5".
	t := strings.TrimPrefix(s, "-")
	if t == "" || t[0] < '0' || t[0] > '9' || (len(t) > 1 && t[0] == '0' && t[1] != '.' && t[1] != 'e' && t[1] != 'E') {
		return false
	}
	if i := strings.IndexByte(t, '.'); i >= 0 && (i+1 == len(t) || t[i+1] < '0' || t[i+1] > '9') {
		return false
	}
	return !strings.ContainsAny(t, "_xXoObB")
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing (null)"
		}
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "something else"
}

// plain drops the sentinel prefix ("invalid input: ") of identity errors:
// in a file error the line already says what is wrong.
func plain(err error) string {
	return strings.TrimPrefix(err.Error(), identity.ErrInvalidInput.Error()+": ")
}

// closest returns the allowed key nearest to key when it is a likely typo.
func closest(key string, allowed []string) string {
	best, bestDist := "", 3
	for _, a := range allowed {
		if d := editDistance(key, a); d < bestDist {
			best, bestDist = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sortedKeys returns the keys of an inline policy map in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
