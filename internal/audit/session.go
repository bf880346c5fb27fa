package audit

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/iamdb/iamdb/internal/authn"
)

// Conn is what the audit trail knows about one database connection. The
// listeners (PostgreSQL, MySQL) fill it in as the login proceeds and build
// every event of the connection — connect, statement, disconnect — from
// it, so the events of one session carry the same attribution.
type Conn struct {
	Instance  *authn.Instance
	SessionID string
	SourceIP  string
	UserAgent string // application_name, program_name, driver …
	DBUser    string
	Database  string
	TLS       *tls.ConnectionState // nil: plaintext

	// Set by a successful or refused IAM authentication.
	Principal *authn.Principal
	Resource  string
	TokenID   string
	Endpoint  string // host:port the token was signed for
	Decision  *Decision

	BackendPID uint32
}

// SetDecision records an authentication outcome: the decision on success,
// or what a refusal (*authn.Error) knows.
func (c *Conn) SetDecision(d *authn.Decision, err error) {
	if d != nil {
		c.Principal, c.Resource, c.TokenID = d.Principal, d.Resource, d.TokenID
		c.Decision = PolicyDecision(&d.Policy)
		return
	}
	if ae, ok := err.(*authn.Error); ok {
		c.Principal, c.TokenID = ae.Principal, ae.TokenID
		if ae.Policy != nil {
			c.Decision = PolicyDecision(ae.Policy)
		}
	}
}

func (c *Conn) event(name string) *Event {
	e := &Event{
		EventSource:     SourceDB,
		EventName:       name,
		RequestID:       NewID(),
		UserIdentity:    Identity(c.Principal),
		SourceIPAddress: c.SourceIP,
		UserAgent:       c.UserAgent,
		RequestParameters: map[string]any{
			"dbUser": c.DBUser,
		},
		ResponseElements: map[string]any{"sessionId": c.SessionID},
	}
	if e.UserIdentity == nil {
		e.UserIdentity = &UserIdentity{Type: TypeUnknown, UserName: c.DBUser}
	}
	rp := e.RequestParameters
	if c.Instance != nil {
		rp["instance"] = c.Instance.Name
		if c.Resource == "" && c.DBUser != "" {
			rp["resource"] = c.Instance.ResourceARN(c.DBUser)
		}
	}
	if c.Resource != "" {
		rp["resource"] = c.Resource
	}
	if c.Database != "" {
		rp["database"] = c.Database
	}
	if c.TokenID != "" {
		rp["tokenId"] = c.TokenID
	}
	if c.BackendPID != 0 {
		e.ResponseElements["backendPid"] = c.BackendPID
	}
	if c.TLS != nil {
		e.TLSDetails = &TLSDetails{
			TLSVersion:               tlsVersion(c.TLS.Version),
			CipherSuite:              tls.CipherSuiteName(c.TLS.CipherSuite),
			ClientProvidedHostHeader: c.Endpoint,
		}
		if e.TLSDetails.ClientProvidedHostHeader == "" {
			e.TLSDetails.ClientProvidedHostHeader = c.TLS.ServerName
		}
	}
	return e
}

// ConnectEvent is the connect event of a login that reached the password
// step: accepted when code is "", refused otherwise with the refusal code
// (authn.Error codes, proxy.Result* codes) and the operator's reason.
func (c *Conn) ConnectEvent(code, reason string) *Event {
	e := c.event(NameConnect)
	e.ErrorCode, e.ErrorMessage = code, reason
	e.Decision = c.Decision
	return e
}

// Who ended a session.
const (
	ClosedByClient   = "client"
	ClosedByUpstream = "upstream"
	ClosedByShutdown = "shutdown"
)

// DisconnectEvent is the end of an accepted session.
func (c *Conn) DisconnectEvent(d time.Duration, clientToUpstream, upstreamToClient int64, closedBy string) *Event {
	e := c.event(NameDisconnect)
	e.ResponseElements["durationMs"] = d.Milliseconds()
	e.ResponseElements["bytesFromClient"] = clientToUpstream
	e.ResponseElements["bytesToClient"] = upstreamToClient
	e.ResponseElements["closedBy"] = closedBy
	return e
}

// Statement is one statement a client sent, as a listener parsed it from
// the client's byte stream.
type Statement struct {
	Text       string
	Protocol   string // "simple", "extended" (PostgreSQL), "query", "execute" (MySQL)
	Name       string // prepared statement name, "" for unnamed
	Parameters []Parameter
	HasParams  bool // parameters were sent (recorded only with audit_parameters)
}

// Parameter is one bound parameter value.
type Parameter struct {
	Value  []byte
	Null   bool
	Binary bool
}

// Limits on what a statement event records.
const (
	MaxStatementText = 32 << 10
	MaxParamValue    = 1 << 10
	MaxParams        = 100
)

// StatementEvent is one statement of a session, attributed to the
// session's principal. Password literals (… PASSWORD '…') are masked.
func (c *Conn) StatementEvent(st Statement, withParams bool) *Event {
	e := c.event(NameStatement)
	text, cut := truncate(st.Text, MaxStatementText)
	rp := e.RequestParameters
	rp["statement"] = RedactStatement(text)
	if cut {
		rp["statementTruncated"] = true
	}
	if st.Protocol != "" {
		rp["protocol"] = st.Protocol
	}
	if st.Name != "" {
		rp["preparedStatement"] = st.Name
	}
	if withParams && len(st.Parameters) > 0 {
		ps := make([]any, 0, min(len(st.Parameters), MaxParams))
		for _, p := range st.Parameters[:min(len(st.Parameters), MaxParams)] {
			ps = append(ps, paramValue(p))
		}
		rp["parameters"] = ps
	}
	return e
}

func paramValue(p Parameter) any {
	if p.Null {
		return nil
	}
	v := p.Value
	cut := len(v) > MaxParamValue
	if cut {
		v = v[:MaxParamValue]
	}
	var s string
	switch {
	case p.Binary:
		s = `\x` + hex.EncodeToString(v)
	case utf8.Valid(v):
		s = string(v)
	default:
		s = "base64:" + base64.StdEncoding.EncodeToString(v)
	}
	if cut {
		s += "…"
	}
	return s
}

func truncate(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], true
}

// passwordLiteral matches the literal after PASSWORD (CREATE/ALTER ROLE,
// ALTER USER … IDENTIFIED BY, SET PASSWORD = …), quoted with ' or ".
var passwordLiteral = regexp.MustCompile(`(?i)\b(password\s*(?:=\s*)?(?:\(\s*)?|identified\s+(?:with\s+\S+\s+)?by\s+(?:password\s+)?)('(?:[^']|'')*'|"(?:[^"]|"")*"|\$[a-zA-Z_]*\$)`)

// RedactStatement masks password literals in a statement, so that the
// audit trail never holds a database password a client set with SQL.
func RedactStatement(s string) string {
	if !strings.Contains(strings.ToLower(s), "password") && !strings.Contains(strings.ToLower(s), "identified") {
		return s
	}
	return passwordLiteral.ReplaceAllString(s, "$1'***'")
}

// StatementPolicy says which sessions of an instance get statement audit
// (instance setting audit_statements: none, all, or a list of database
// users) and whether bound parameter values are recorded
// (audit_parameters).
type StatementPolicy struct {
	All        bool
	Users      []string // patterns as in iam_users
	Parameters bool
}

// Enabled reports whether dbUser's sessions are audited statement by
// statement.
func (p StatementPolicy) Enabled(dbUser string) bool {
	if p.All {
		return true
	}
	return slices.ContainsFunc(p.Users, func(pat string) bool { return matchUser(pat, dbUser) })
}

// matchUser matches a name or a pattern as iam_users does.
func matchUser(pat, name string) bool {
	ok, _ := filepath.Match(pat, name)
	return ok
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1"
	}
	return ""
}
