// Package apply implements `iamdb apply -f identities.yaml`: declarative,
// idempotent management of an account's users, groups, roles, customer
// managed policies and OIDC providers, in the manner of a small Terraform
// for IAM.
//
// # Three steps
//
//  1. [Parse] (or [Load], which also resolves jwks_file paths) reads the
//     identities file strictly. Unknown or repeated keys, wrong types,
//     invalid names, paths, tags and durations, and policy documents the
//     policy parser rejects are reported with their line, all at once:
//
//     line 7: unknown key "polices" in users[0] (check spelling; see docs): did you mean "policies"?
//     line 31: roles[0].trust_policy: statement 0: field "Principal": a trust policy statement must name a Principal or NotPrincipal
//
//     Policy documents may be written as YAML mappings or as JSON strings;
//     a mapping is converted to the equivalent JSON (an unquoted
//     `Version: 2012-10-17` stays the string it looks like). IAM policy
//     variables such as ${aws:username} are kept literally.
//
//  2. [File.Plan] reads the account from the store and lists the [Change]s
//     that make it match the file. References to groups and policies must
//     name something in the file or already in the account; otherwise the
//     plan fails with the referencing line. Documents are compared by the
//     canonical JSON of [policy.Document.MarshalJSON], so re-applying the
//     file, reformatting it or reordering keys plans nothing. ${account} in
//     documents and policy ARNs is replaced by the account id here, so one
//     file serves every data dir.
//
//  3. [Plan.Apply] runs the changes in plan order and stops at the first
//     failure with a [*StepError] naming the step.
//
// # What "match" means
//
// The file is the whole desired state of each object it names: an omitted
// key means "none" (no tags, no groups, no policies, no boundary, path "/",
// a one-hour max session duration). Objects the file does not name are left
// alone, unless [Options.Prune] is set: then users, groups, roles, managed
// policies and OIDC providers of the account that the file does not name
// are deleted (principals with their keys, memberships and policies, as
// `--force` would). Pruning never deletes what [DefaultKeep] protects — the
// user admin and the policy AdministratorAccess that `iamdb init` creates —
// unless the file names them, in which case the file governs them like any
// other object; the plan says so ("kept: user admin (created by iamdb
// init)"). Access keys are never created: secrets are never in the file.
//
// A managed policy whose document changed gets a new default version; at
// the limit of five versions the oldest non-default version is deleted
// first. Paths of groups, roles and policies cannot change in the store, so
// a different path in the file is an error that says what to do.
//
// # Order and failure
//
// Changes run in phases, so that everything a step refers to exists and
// nothing is deleted while something refers to it: policies, OIDC
// providers, groups, users, roles, inline policies, attachments,
// memberships; then removals of memberships, attachments and inline
// policies; then deletes of principals, groups, policies and providers.
// The store has no transaction across calls, but every step is one atomic
// store call (a policy at its version limit takes two, each safe to
// repeat), and a new plan always starts from what is in the store, so
// running apply again after a failure finishes the job.
package apply
