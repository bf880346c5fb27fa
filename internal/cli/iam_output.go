package cli

// Helpers shared by the identity commands (user, group, role, policy,
// access-key): opening the store, turning store errors into messages that
// say what to do, reading policy documents, and printing records in the
// shapes the AWS CLI prints for the same calls.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/iamdb/iamdb/internal/datadir"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/policy"
)

// iamEnv is what one identity command works with: the opened store, the
// account it acts in and where it prints.
type iamEnv struct {
	ctx       context.Context
	dir       *datadir.Dir
	store     identity.Store
	account   string
	partition string
	json      bool
	out       io.Writer
	in        io.Reader
}

// iamCommand builds a leaf command that opens the data directory, runs fn and
// closes the store. Every such command takes --output, so scripts can pass
// it uniformly; commands that return no record print nothing in JSON mode,
// as the AWS CLI does.
func iamCommand(g *globalFlags, use, short string, args cobra.PositionalArgs, fn func(e *iamEnv, args []string) error) *cobra.Command {
	var out outputFlag
	cmd := &cobra.Command{Use: use, Short: short, Args: args}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		asJSON, err := out.json()
		if err != nil {
			return err
		}
		d, err := g.openDataDir(cmd.Context())
		if err != nil {
			return err
		}
		defer d.Close()
		partition := d.Meta.Partition
		if g.cfg != nil && g.cfg.Partition != "" {
			partition = g.cfg.Partition
		}
		if partition == "" {
			partition = identity.DefaultPartition
		}
		e := &iamEnv{
			ctx: cmd.Context(), dir: d, store: g.identityStore(d), account: g.account(d), partition: partition,
			json: asJSON, out: cmd.OutOrStdout(), in: cmd.InOrStdin(),
		}
		return fn(e, args)
	}
	cmd.Flags().StringVar(&out.format, "output", "text", "text or json")
	return cmd
}

// iamArgs requires the named positional arguments, as a usage error.
func iamArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("%s needs %s, got %d argument(s)", cmd.CommandPath(), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// iamArgsAtLeast requires the named arguments followed by at least one more.
func iamArgsAtLeast(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			return usagef("%s needs %s, got %d argument(s)", cmd.CommandPath(), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// done prints a confirmation for commands that return no record.
func (e *iamEnv) done(format string, args ...any) {
	if !e.json {
		fmt.Fprintf(e.out, format+"\n", args...)
	}
}

// ---- errors ----

// iamError is a store error rewritten for a person; it still matches the
// store's sentinel with errors.Is.
type iamError struct {
	msg string
	err error
}

func (e *iamError) Error() string { return e.msg }
func (e *iamError) Unwrap() error { return e.err }

// iamRef names a record a command touches, so that a not-found error can say
// which of several records is missing. key is what the store is asked
// (policy ARN, key id, name), shown is what the person typed.
type iamRef struct {
	kind  string // "user", "group", "role", "policy", "access key"
	key   string
	shown string
}

func userRef(name string) iamRef  { return iamRef{"user", name, name} }
func groupRef(name string) iamRef { return iamRef{"group", name, name} }
func roleRef(name string) iamRef  { return iamRef{"role", name, name} }
func keyRef(id string) iamRef     { return iamRef{"access key", id, id} }

// listCommand is the command that shows the records of a kind.
func (r iamRef) listCommand() string {
	if r.kind == "access key" {
		return "iamdb access-key list"
	}
	return "iamdb " + r.kind + " list"
}

// iamSentinels are the store's error categories; their text is dropped from
// messages because the message itself already says what went wrong.
var iamSentinels = []error{
	identity.ErrNotFound, identity.ErrAlreadyExists, identity.ErrLimitExceeded,
	identity.ErrConflict, identity.ErrInvalidInput,
}

// iamStoreMessage is the store's message without the bare category words
// ("conflict: ", ": not found") that mean nothing to a person.
func iamStoreMessage(err error) string {
	msg := err.Error()
	for _, s := range iamSentinels {
		if errors.Is(err, s) {
			msg = strings.Replace(msg, s.Error()+": ", "", 1)
			msg = strings.TrimSuffix(msg, ": "+s.Error())
		}
	}
	return msg
}

// iamStoreDetail is the explanation the store gives after its category word
// ("…: conflict: user \"alice\" still has …"), without the operation it
// was wrapped in, for messages that name the operation themselves.
func iamStoreDetail(err error) string {
	msg := err.Error()
	for _, s := range iamSentinels {
		if _, after, ok := strings.Cut(msg, s.Error()+": "); ok && errors.Is(err, s) {
			return after
		}
	}
	return iamStoreMessage(err)
}

// fail turns a store error into a message that names the missing or
// clashing record and the command that helps. refs are the records the
// failed call involved, in the order they should be blamed.
func (e *iamEnv) fail(err error, refs ...iamRef) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, identity.ErrNotFound):
		// The store's message names the record, but not in a way that
		// says which argument was wrong; look each one up to find out.
		for _, r := range refs {
			if !e.exists(r) {
				return e.notFound(r, err)
			}
		}
	case errors.Is(err, identity.ErrAlreadyExists) && len(refs) > 0:
		r := refs[0]
		return &iamError{fmt.Sprintf("%s %q already exists in account %s (names are not case-sensitive): choose another name, or see 'iamdb %s get %s'",
			r.kind, r.shown, e.account, r.kind, r.shown), err}
	}
	return &iamError{iamStoreMessage(err), err}
}

// failCreate is fail for a call that creates created: a clash is blamed on
// it, a missing record only on the others it refers to.
func (e *iamEnv) failCreate(err error, created iamRef, others ...iamRef) error {
	if errors.Is(err, identity.ErrAlreadyExists) {
		return e.fail(err, created)
	}
	return e.fail(err, others...)
}

func (e *iamEnv) notFound(r iamRef, err error) error {
	return &iamError{fmt.Sprintf("%s %q not found in account %s: see '%s'", r.kind, r.shown, e.account, r.listCommand()), err}
}

// exists reports whether r is in the store. Errors other than not-found
// count as existing, so fail falls back to the store's own message.
func (e *iamEnv) exists(r iamRef) bool {
	var err error
	switch r.kind {
	case "user":
		_, err = e.store.GetUser(e.ctx, e.account, r.key)
	case "group":
		_, err = e.store.GetGroup(e.ctx, e.account, r.key)
	case "role":
		_, err = e.store.GetRole(e.ctx, e.account, r.key)
	case "policy":
		_, err = e.store.GetPolicy(e.ctx, r.key)
	case "access key":
		var k identity.AccessKey
		k, err = e.store.GetAccessKey(e.ctx, r.key)
		if err == nil && k.AccountID != e.account {
			return false
		}
	}
	return !errors.Is(err, identity.ErrNotFound)
}

// policyRef resolves a POLICY argument: a full ARN is used as given, a name
// is looked up among the account's managed policies (whatever their path),
// and an unknown name becomes the ARN it would have at path "/", which the
// store then reports as not found.
func (e *iamEnv) policyRef(arg string) (iamRef, error) {
	if arg == "" {
		return iamRef{}, usagef("empty policy: pass a managed policy name or ARN")
	}
	if strings.HasPrefix(arg, "arn:") {
		return iamRef{"policy", arg, arg}, nil
	}
	ps, err := e.store.ListPolicies(e.ctx, e.account, "")
	if err != nil {
		return iamRef{}, e.fail(err)
	}
	for _, p := range ps {
		if strings.EqualFold(p.Name, arg) {
			return iamRef{"policy", p.ARN(), arg}, nil
		}
	}
	return iamRef{"policy", identity.PrincipalARN(e.partition, e.account, "policy", "/", arg), arg}, nil
}

// getPolicy loads a managed policy named by name or ARN.
func (e *iamEnv) getPolicy(arg string) (identity.ManagedPolicy, iamRef, error) {
	r, err := e.policyRef(arg)
	if err != nil {
		return identity.ManagedPolicy{}, r, err
	}
	p, err := e.store.GetPolicy(e.ctx, r.key)
	if err != nil {
		return identity.ManagedPolicy{}, r, e.fail(err, r)
	}
	return p, r, nil
}

// ---- input ----

// iamParseTags reads KEY=VALUE arguments; the value may be empty, as AWS allows.
func iamParseTags(args []string) (map[string]string, error) {
	tags := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usagef("tag %q: use KEY=VALUE (for example team=payments)", a)
		}
		tags[k] = v
	}
	return tags, nil
}

// iamParseDuration reads seconds ("3600", as the AWS CLI) or a Go
// duration ("1h", "90m"). The range is the store's to check.
func iamParseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, usagef("--max-session-duration %q: use seconds (3600) or a duration (1h, 90m) between 1h and 12h", s)
	}
	return d, nil
}

// iamReadDocument reads a policy document given as inline JSON, file://PATH
// (as the AWS CLI accepts), "-" for standard input, or a file path.
func iamReadDocument(in io.Reader, flag, value string) (string, error) {
	var (
		raw []byte
		err error
	)
	switch trimmed := strings.TrimSpace(value); {
	case trimmed == "":
		return "", usagef("%s is required: pass a file path, file://PATH, - (standard input) or inline JSON", flag)
	case strings.HasPrefix(trimmed, "{") || strings.HasPrefix(trimmed, "["):
		raw = []byte(trimmed)
	case trimmed == "-":
		if raw, err = io.ReadAll(in); err != nil {
			return "", fmt.Errorf("%s: reading standard input: %w", flag, err)
		}
	default:
		path := strings.TrimPrefix(value, "file://")
		raw, err = os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s %s: no such file: pass a file path, file://PATH or inline JSON starting with {", flag, path)
		}
		if err != nil {
			return "", fmt.Errorf("%s: reading %s: %w", flag, path, err)
		}
	}
	return strings.TrimSpace(string(raw)), nil
}

// iamValidateDocument parses a document with the policy engine, so that what
// is stored is exactly what the authorizer can evaluate. trust selects the
// rules of role trust policies.
func iamValidateDocument(doc string, trust bool) error {
	d, err := policy.Parse([]byte(doc))
	if err == nil {
		if trust {
			err = d.ValidateTrust()
		} else {
			err = d.ValidateIdentity()
		}
	}
	if err != nil {
		// The name AWS returns for the same mistake, so people searching
		// for it find both.
		return fmt.Errorf("MalformedPolicyDocument: %s", strings.TrimPrefix(err.Error(), "policy: "))
	}
	return nil
}

// iamLoadDocument reads and validates a --document or --trust-policy value.
func iamLoadDocument(in io.Reader, flag, value string, trust bool) (string, error) {
	doc, err := iamReadDocument(in, flag, value)
	if err != nil {
		return "", err
	}
	if err := iamValidateDocument(doc, trust); err != nil {
		return "", err
	}
	return doc, nil
}

// ---- output: JSON in the AWS CLI's shapes ----

type iamTagJSON struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

type iamBoundaryJSON struct {
	PermissionsBoundaryType string `json:"PermissionsBoundaryType"`
	PermissionsBoundaryArn  string `json:"PermissionsBoundaryArn"`
}

type userJSON struct {
	Path                string           `json:"Path"`
	UserName            string           `json:"UserName"`
	UserID              string           `json:"UserId"`
	Arn                 string           `json:"Arn"`
	CreateDate          string           `json:"CreateDate"`
	PermissionsBoundary *iamBoundaryJSON `json:"PermissionsBoundary,omitempty"`
	Tags                []iamTagJSON     `json:"Tags,omitempty"`
}

type groupJSON struct {
	Path       string `json:"Path"`
	GroupName  string `json:"GroupName"`
	GroupID    string `json:"GroupId"`
	Arn        string `json:"Arn"`
	CreateDate string `json:"CreateDate"`
}

type roleJSON struct {
	Path                     string           `json:"Path"`
	RoleName                 string           `json:"RoleName"`
	RoleID                   string           `json:"RoleId"`
	Arn                      string           `json:"Arn"`
	CreateDate               string           `json:"CreateDate"`
	AssumeRolePolicyDocument json.RawMessage  `json:"AssumeRolePolicyDocument"`
	Description              string           `json:"Description,omitempty"`
	MaxSessionDuration       int64            `json:"MaxSessionDuration"`
	PermissionsBoundary      *iamBoundaryJSON `json:"PermissionsBoundary,omitempty"`
	Tags                     []iamTagJSON     `json:"Tags,omitempty"`
}

type policyJSON struct {
	PolicyName                    string `json:"PolicyName"`
	PolicyID                      string `json:"PolicyId"`
	Arn                           string `json:"Arn"`
	Path                          string `json:"Path"`
	DefaultVersionID              string `json:"DefaultVersionId"`
	AttachmentCount               int    `json:"AttachmentCount"`
	PermissionsBoundaryUsageCount int    `json:"PermissionsBoundaryUsageCount"`
	IsAttachable                  bool   `json:"IsAttachable"`
	Description                   string `json:"Description,omitempty"`
	CreateDate                    string `json:"CreateDate"`
	UpdateDate                    string `json:"UpdateDate"`
}

type policyVersionJSON struct {
	Document         json.RawMessage `json:"Document,omitempty"`
	VersionID        string          `json:"VersionId"`
	IsDefaultVersion bool            `json:"IsDefaultVersion"`
	CreateDate       string          `json:"CreateDate"`
}

type attachedPolicyJSON struct {
	PolicyName string `json:"PolicyName"`
	PolicyArn  string `json:"PolicyArn"`
}

// iamTime formats a timestamp as RFC 3339 in UTC, as the AWS CLI does.
func iamTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func iamSortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func iamTagsJSON(tags map[string]string) []iamTagJSON {
	var out []iamTagJSON
	for _, k := range iamSortedKeys(tags) {
		out = append(out, iamTagJSON{k, tags[k]})
	}
	return out
}

func iamBoundaryOf(arn string) *iamBoundaryJSON {
	if arn == "" {
		return nil
	}
	return &iamBoundaryJSON{"Policy", arn}
}

// iamDocumentJSON embeds a stored document as an object, as the AWS CLI
// prints documents decoded; a document that is somehow not JSON is kept
// as a string rather than producing invalid output.
func iamDocumentJSON(doc string) json.RawMessage {
	if json.Valid([]byte(doc)) {
		return json.RawMessage(doc)
	}
	b, _ := json.Marshal(doc)
	return b
}

func toUserJSON(u identity.User) userJSON {
	return userJSON{
		Path: u.Path, UserName: u.Name, UserID: u.ID, Arn: u.ARN(), CreateDate: iamTime(u.CreatedAt),
		PermissionsBoundary: iamBoundaryOf(u.PermissionsBoundary), Tags: iamTagsJSON(u.Tags),
	}
}

func toGroupJSON(g identity.Group) groupJSON {
	return groupJSON{Path: g.Path, GroupName: g.Name, GroupID: g.ID, Arn: g.ARN(), CreateDate: iamTime(g.CreatedAt)}
}

func toRoleJSON(r identity.Role) roleJSON {
	return roleJSON{
		Path: r.Path, RoleName: r.Name, RoleID: r.ID, Arn: r.ARN(), CreateDate: iamTime(r.CreatedAt),
		AssumeRolePolicyDocument: iamDocumentJSON(r.TrustPolicy), Description: r.Description,
		MaxSessionDuration:  int64(r.MaxSessionDuration / time.Second),
		PermissionsBoundary: iamBoundaryOf(r.PermissionsBoundary), Tags: iamTagsJSON(r.Tags),
	}
}

func toPolicyJSON(p identity.ManagedPolicy) policyJSON {
	return policyJSON{
		PolicyName: p.Name, PolicyID: p.ID, Arn: p.ARN(), Path: p.Path, DefaultVersionID: p.DefaultVersion,
		AttachmentCount: p.AttachmentCount, PermissionsBoundaryUsageCount: p.BoundaryCount, IsAttachable: true,
		Description: p.Description, CreateDate: iamTime(p.CreatedAt), UpdateDate: iamTime(p.UpdatedAt),
	}
}

func toPolicyVersionJSON(v identity.PolicyVersion, withDocument bool) policyVersionJSON {
	out := policyVersionJSON{VersionID: v.VersionID, IsDefaultVersion: v.IsDefault, CreateDate: iamTime(v.CreatedAt)}
	if withDocument {
		out.Document = iamDocumentJSON(v.Document)
	}
	return out
}

// ---- output: text ----

func iamTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// iamFields prints "key: value" lines with the values aligned.
func iamFields(w io.Writer, kv ...string) error {
	tw := iamTable(w)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], kv[i+1])
	}
	return tw.Flush()
}

func iamOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func iamTagsText(tags map[string]string) string {
	var parts []string
	for _, k := range iamSortedKeys(tags) {
		parts = append(parts, k+"="+tags[k])
	}
	return iamOrNone(strings.Join(parts, ", "))
}

// iamPrettyDocument indents a document for reading; the stored text is
// printed unchanged when it does not parse.
func iamPrettyDocument(doc string) string {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(doc), "", "  "); err != nil {
		return doc
	}
	return b.String()
}
