package identity

import (
	"fmt"
	"strings"
)

// DefaultPartition keeps unmodified AWS SDK code and policies working.
const DefaultPartition = "aws"

func partitionOr(p string) string {
	if p == "" {
		return DefaultPartition
	}
	return p
}

// PrincipalARN builds the ARN of an IAM user, group, role or policy:
// arn:PARTITION:iam::ACCOUNT:KIND/NAME for path "/" and
// arn:PARTITION:iam::ACCOUNT:KIND/a/b/NAME for path "/a/b/".
func PrincipalARN(partition, account, kind, path, name string) string {
	if path == "" {
		path = "/"
	}
	return "arn:" + partitionOr(partition) + ":iam::" + account + ":" + kind + path + name
}

// AssumedRoleARN builds arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION,
// the ARN of a role session (role paths are not part of it, as in AWS).
func AssumedRoleARN(partition, account, roleName, sessionName string) string {
	return "arn:" + partitionOr(partition) + ":sts::" + account + ":assumed-role/" + roleName + "/" + sessionName
}

// OIDCProviderARN builds arn:PARTITION:iam::ACCOUNT:oidc-provider/HOST_PATH
// from an issuer URL.
func OIDCProviderARN(partition, account, issuerURL string) string {
	return "arn:" + partitionOr(partition) + ":iam::" + account + ":oidc-provider/" + IssuerHostPath(issuerURL)
}

// IssuerHostPath strips the scheme and trailing slash of an issuer URL:
// "https://idp.example.com/realms/x/" → "idp.example.com/realms/x". It is the
// form AWS uses in provider ARNs and in the condition keys
// HOST_PATH:sub and HOST_PATH:aud.
func IssuerHostPath(issuerURL string) string {
	s := strings.TrimPrefix(issuerURL, "https://")
	s = strings.TrimPrefix(s, "http://")
	return strings.TrimRight(s, "/")
}

// ARN is a parsed Amazon Resource Name. For IAM resources Type, Path and
// Name are split out of Resource; for assumed-role ARNs Name is the role
// name and SessionName the session.
type ARN struct {
	Partition string
	Service   string
	Region    string
	Account   string
	Resource  string

	Type        string // "user", "group", "role", "policy", "assumed-role", "oidc-provider", … or "" when Resource is not TYPE/…
	Path        string // "/" or "/a/b/" for user, group, role, policy
	Name        string
	SessionName string
}

// String reassembles the ARN.
func (a ARN) String() string {
	return "arn:" + a.Partition + ":" + a.Service + ":" + a.Region + ":" + a.Account + ":" + a.Resource
}

// ParseARN splits arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE. The resource
// may itself contain ":".
func ParseARN(s string) (ARN, error) {
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return ARN{}, fmt.Errorf("%w: %q is not an ARN: expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE", ErrInvalidInput, s)
	}
	a := ARN{Partition: parts[1], Service: parts[2], Region: parts[3], Account: parts[4], Resource: parts[5]}
	if a.Partition == "" || a.Service == "" || a.Resource == "" {
		return ARN{}, fmt.Errorf("%w: ARN %q needs a partition, a service and a resource", ErrInvalidInput, s)
	}
	typ, rest, ok := strings.Cut(a.Resource, "/")
	if !ok || strings.Contains(typ, ":") {
		// Not TYPE/..., e.g. rds-db's dbuser:RESOURCE_ID/DBUSER.
		return a, nil
	}
	a.Type = typ
	switch {
	case a.Service == "iam" && (typ == "user" || typ == "group" || typ == "role" || typ == "policy"):
		i := strings.LastIndex(rest, "/")
		a.Path, a.Name = "/"+rest[:i+1], rest[i+1:]
		if a.Name == "" {
			return ARN{}, fmt.Errorf("%w: ARN %q has no %s name after the path", ErrInvalidInput, s, typ)
		}
	case a.Service == "sts" && typ == "assumed-role":
		role, session, ok := strings.Cut(rest, "/")
		if !ok || role == "" || session == "" {
			return ARN{}, fmt.Errorf("%w: ARN %q: expected assumed-role/ROLE/SESSION", ErrInvalidInput, s)
		}
		a.Name, a.SessionName = role, session
	default:
		a.Name = rest
	}
	return a, nil
}
