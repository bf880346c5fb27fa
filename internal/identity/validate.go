package identity

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

var (
	nameRE        = regexp.MustCompile(`^[\w+=,.@-]+$`)
	policyNameRE  = regexp.MustCompile(`^[\w+=,.@-]+$`)
	pathRE        = regexp.MustCompile(`^/([\x21-\x7e]+/)?$`)
	accountRE     = regexp.MustCompile(`^[0-9]{12}$`)
	tagKeyRE      = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$`)
	sessionNameRE = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
)

const nameChars = "letters, digits and + = , . @ _ -"

// ValidateName checks a user, group or role name as AWS does: 1–64
// characters of letters, digits and + = , . @ _ -.
func ValidateName(kind PrincipalKind, name string) error {
	if name == "" || len(name) > 64 || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %s name %q: use 1 to 64 %s", ErrInvalidInput, kind, name, nameChars)
	}
	return nil
}

// ValidatePolicyName checks managed and inline policy names: 1–128
// characters of letters, digits and + = , . @ _ -.
func ValidatePolicyName(name string) error {
	if name == "" || len(name) > 128 || !policyNameRE.MatchString(name) {
		return fmt.Errorf("%w: policy name %q: use 1 to 128 %s", ErrInvalidInput, name, nameChars)
	}
	return nil
}

// ValidatePath checks an IAM path: "/" or "/a/b/" (printable ASCII without
// spaces, at most 512 characters, starting and ending with "/").
func ValidatePath(path string) error {
	if len(path) > 512 || !pathRE.MatchString(path) || strings.Contains(path, "//") {
		return fmt.Errorf("%w: path %q: use \"/\" or a path that starts and ends with \"/\" like \"/engineering/\" (printable ASCII, no spaces or empty segments, at most 512 characters)", ErrInvalidInput, path)
	}
	return nil
}

// ValidateAccountID checks a 12-digit account id.
func ValidateAccountID(id string) error {
	if !accountRE.MatchString(id) {
		return fmt.Errorf("%w: account id %q: use exactly 12 digits", ErrInvalidInput, id)
	}
	return nil
}

// ValidateSessionName checks a role session name: 2–64 characters of
// letters, digits and + = , . @ _ -.
func ValidateSessionName(name string) error {
	if !sessionNameRE.MatchString(name) {
		return fmt.Errorf("%w: role session name %q: use 2 to 64 %s", ErrInvalidInput, name, nameChars)
	}
	return nil
}

// ValidateMaxSessionDuration checks a role's maximum session duration
// (1 to 12 hours).
func ValidateMaxSessionDuration(d time.Duration) error {
	if d < MinMaxSessionDuration || d > MaxMaxSessionDuration || d%time.Second != 0 {
		return fmt.Errorf("%w: max session duration %s: use whole seconds from 3600 (1h) to 43200 (12h)", ErrInvalidInput, d)
	}
	return nil
}

// ValidateTags checks tags as AWS: at most 50, keys 1–128 and values 0–256
// characters of letters, digits, spaces and _ . : / = + - @, keys not
// starting with "aws:".
func ValidateTags(tags map[string]string) error {
	if len(tags) > 50 {
		return fmt.Errorf("%w: %d tags: at most 50 are allowed", ErrInvalidInput, len(tags))
	}
	for k, v := range tags {
		if k == "" || len(k) > 128 || !tagKeyRE.MatchString(k) {
			return fmt.Errorf("%w: tag key %q: use 1 to 128 letters, digits, spaces and _ . : / = + - @", ErrInvalidInput, k)
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return fmt.Errorf("%w: tag key %q: the aws: prefix is reserved", ErrInvalidInput, k)
		}
		if len(v) > 256 || (v != "" && !tagKeyRE.MatchString(v)) {
			return fmt.Errorf("%w: value of tag %q: use at most 256 letters, digits, spaces and _ . : / = + - @", ErrInvalidInput, k)
		}
	}
	return nil
}

// ValidateIssuerURL checks an OIDC issuer: https://host[/path], no query or
// fragment. Plain http is accepted only for localhost, for development.
func ValidateIssuerURL(u string) error {
	parsed, err := url.Parse(u)
	ok := err == nil && parsed.Host != "" && parsed.User == nil &&
		(parsed.Scheme == "https" ||
			(parsed.Scheme == "http" && (parsed.Hostname() == "localhost" || parsed.Hostname() == "127.0.0.1")))
	if !ok || strings.ContainsAny(u, "?# ") || len(u) > 255 {
		return fmt.Errorf("%w: OIDC provider URL %q: use https://host[/path] without query or fragment (http only for localhost)", ErrInvalidInput, u)
	}
	return nil
}

// MaxDocumentSize bounds stored policy documents. AWS's limits are smaller
// and depend on the holder; full grammar checks belong to the policy
// package, the store only refuses what is not JSON at all.
const MaxDocumentSize = 128 << 10

// ValidateDocument checks that a policy document is a JSON object.
func ValidateDocument(what, doc string) error {
	trimmed := strings.TrimSpace(doc)
	if len(doc) > MaxDocumentSize {
		return fmt.Errorf("%w: %s is %d bytes: at most %d are allowed", ErrInvalidInput, what, len(doc), MaxDocumentSize)
	}
	if !strings.HasPrefix(trimmed, "{") || !json.Valid([]byte(trimmed)) {
		return fmt.Errorf("%w: %s is not a JSON object", ErrInvalidInput, what)
	}
	return nil
}
