package sts

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"time"

	"github.com/iamdb/iamdb/internal/authn"
	"github.com/iamdb/iamdb/internal/identity"
	"github.com/iamdb/iamdb/internal/sigv4"
)

// ServiceName is the SigV4 service requests must be scoped to.
const ServiceName = "sts"

// Config configures a Service. Store, Sealer and Region are required.
type Config struct {
	// Store is the identity store: principals, keys, sessions, OIDC
	// providers and policies.
	Store identity.Store
	// Sealer opens the sealed secrets of access keys and sessions to check
	// signatures (an *identity.Sealer).
	Sealer authn.Opener
	// Region is the region requests must be signed for, e.g. us-east-1.
	Region string
	// Partition is the ARN partition; default "aws".
	Partition string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// ClockSkew is how far a request's X-Amz-Date, and a web identity
	// token's times, may be from Now; default 5 minutes.
	ClockSkew time.Duration
	// Logger receives one line per call, with its request id; default
	// slog.Default().
	Logger *slog.Logger
	// HTTPClient fetches OIDC discovery documents and JWKS; default a
	// client with a 10 second timeout.
	HTTPClient *http.Client
	// JWKSCacheTTL is how long fetched signing keys are reused; default 10
	// minutes. A token with an unknown key id refreshes them earlier.
	JWKSCacheTTL time.Duration
	// OnCall, if set, is called once per request, success or failure, with
	// what an audit event records. It runs on the request's goroutine
	// after the response is written.
	OnCall func(CallRecord)
	// Rand is the source of request ids; default crypto/rand.
	Rand io.Reader
}

// CallRecord describes one API call for audit: who called, what was asked,
// what was issued or why it was refused. It never holds a token,
// signature, secret or web identity token.
type CallRecord struct {
	RequestID string
	Action    string
	Time      time.Time
	SourceIP  string
	UserAgent string
	// AccessKeyID is the key the request was signed with, when it named
	// one (also for refused requests).
	AccessKeyID string
	// Caller is the authenticated principal; nil for unsigned calls
	// (AssumeRoleWithWebIdentity) and for requests refused before the
	// signature was accepted.
	Caller *authn.Principal
	// Parameters are the request parameters an audit event shows:
	// RoleArn, RoleSessionName, DurationSeconds, tag keys and values,
	// SourceIdentity, PolicyArns … (never WebIdentityToken; Policy is
	// kept, it is not secret).
	Parameters map[string]string
	// Issued is set when temporary credentials were issued.
	Issued *IssuedSession
	// Status is the HTTP status; ErrorCode and ErrorMessage are set on
	// failure. ErrorMessage is the operator's reason, which may be more
	// precise than what the client was told.
	Status       int
	ErrorCode    string
	ErrorMessage string
}

// IssuedSession describes temporary credentials issued by a call.
type IssuedSession struct {
	AccessKeyID       string
	ARN               string // assumed-role ARN, or the user's for GetSessionToken
	PrincipalID       string // AROA…:session or AIDA…
	Expiration        time.Time
	RoleARN           string
	SessionName       string
	SourceIdentity    string
	SessionTags       map[string]string
	FederatedProvider string
	FederatedSubject  string
}

// Service is the STS-compatible HTTP API. It is an http.Handler, safe for
// concurrent use.
type Service struct {
	store     identity.Store
	opener    authn.Opener
	region    string
	partition string
	now       func() time.Time
	skew      time.Duration
	log       *slog.Logger
	onCall    func(CallRecord)
	rand      io.Reader
	verifier  *sigv4.Verifier
	jwks      *jwksCache
	actions   map[string]action
}

var _ http.Handler = (*Service)(nil)

// action is one STS operation.
type action struct {
	// unsigned actions are called without credentials, as
	// AssumeRoleWithWebIdentity is in AWS: the web identity token is the
	// credential.
	unsigned bool
	run      func(ctx context.Context, c *call) (any, error)
}

// New returns a Service for cfg.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("sts: Config.Store is required")
	case cfg.Sealer == nil:
		return nil, errors.New("sts: Config.Sealer is required to check signatures")
	case cfg.Region == "":
		return nil, errors.New("sts: Config.Region is required")
	}
	s := &Service{
		store: cfg.Store, opener: cfg.Sealer, region: cfg.Region, partition: cfg.Partition,
		now: cfg.Now, skew: cfg.ClockSkew, log: cfg.Logger, onCall: cfg.OnCall, rand: cfg.Rand,
	}
	if s.partition == "" {
		s.partition = identity.DefaultPartition
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.skew <= 0 {
		s.skew = sigv4.DefaultClockSkew
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	ttl := cfg.JWKSCacheTTL
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	s.jwks = newJWKSCache(client, ttl, s.now)
	s.verifier = sigv4.NewVerifier(sigv4.KeyLookupFunc(s.lookupKey), sigv4.Options{Now: s.now, ClockSkew: s.skew})
	s.actions = map[string]action{
		"GetCallerIdentity":         {run: s.getCallerIdentity},
		"GetSessionToken":           {run: s.getSessionToken},
		"AssumeRole":                {run: s.assumeRole},
		"AssumeRoleWithWebIdentity": {unsigned: true, run: s.assumeRoleWithWebIdentity},
	}
	return s, nil
}

// call is the state of one request.
type call struct {
	r      *http.Request
	form   Form
	caller *caller
	rec    CallRecord
	log    *slog.Logger
}

// ServeHTTP decodes an AWS Query request, authenticates it, runs the
// action and writes the XML response. Exactly one CallRecord is produced.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{r: r, rec: CallRecord{
		RequestID: s.requestID(), Time: s.now().UTC(), SourceIP: sourceIP(r), UserAgent: r.UserAgent(),
	}}
	c.log = s.log.With("request_id", c.rec.RequestID)
	resp, err := s.handle(r.Context(), c)
	if err != nil {
		ae := asAPIError(err)
		s.writeError(w, c, ae)
		c.rec.Status, c.rec.ErrorCode, c.rec.ErrorMessage = ae.Status, ae.Code, ae.Message
		if ae.Detail != "" {
			c.rec.ErrorMessage = ae.Detail
		}
		level := slog.LevelInfo
		if ae.Status >= 500 {
			level = slog.LevelError
		}
		c.log.Log(r.Context(), level, "sts call refused", s.logAttrs(c, slog.String("code", ae.Code), slog.String("reason", c.rec.ErrorMessage))...)
	} else {
		s.writeXML(w, c, http.StatusOK, resp)
		c.rec.Status = http.StatusOK
		c.log.Info("sts call", s.logAttrs(c)...)
	}
	if s.onCall != nil {
		s.onCall(c.rec)
	}
}

func (s *Service) logAttrs(c *call, extra ...any) []any {
	attrs := []any{slog.String("action", c.rec.Action), slog.String("source_ip", c.rec.SourceIP)}
	if c.rec.AccessKeyID != "" {
		attrs = append(attrs, slog.String("access_key_id", c.rec.AccessKeyID))
	}
	if c.rec.Caller != nil {
		attrs = append(attrs, slog.String("caller", c.rec.Caller.ARN))
	}
	if c.rec.Issued != nil {
		attrs = append(attrs, slog.String("issued", c.rec.Issued.AccessKeyID), slog.String("arn", c.rec.Issued.ARN),
			slog.Time("expiration", c.rec.Issued.Expiration))
	}
	return append(attrs, extra...)
}

func (s *Service) handle(ctx context.Context, c *call) (any, error) {
	r := c.r
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		return nil, newError(CodeMethodNotAllowed, http.StatusMethodNotAllowed, "The HTTP method %s is not allowed; use POST or GET.", r.Method)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodySize+1))
	if err != nil {
		return nil, validation("The request body could not be read.").withDetail(err.Error())
	}
	if len(body) > MaxBodySize {
		return nil, newError("RequestEntityTooLarge", http.StatusRequestEntityTooLarge, "The request body exceeds %d bytes.", MaxBodySize)
	}
	form, err := requestForm(r, body)
	if err != nil {
		return nil, err
	}
	c.form = form
	name := form["Action"]
	c.rec.Action = name
	c.rec.AccessKeyID = sigv4.RequestAccessKeyID(r)
	if name == "" {
		return nil, newError(CodeMissingAction, http.StatusBadRequest, "Missing Action")
	}
	act, ok := s.actions[name]
	if !ok || form["Version"] != APIVersion {
		if v := form["Version"]; v == "" {
			return nil, newError(CodeMissingParameter, http.StatusBadRequest, "The request must contain the parameter Version")
		}
		return nil, newError(CodeInvalidAction, http.StatusBadRequest, "Could not find operation %s for version %s", shorten(name), shorten(form["Version"]))
	}
	c.rec.Parameters = auditParameters(form)
	if !act.unsigned {
		cl, err := s.authenticate(ctx, r, body)
		if err != nil {
			return nil, err
		}
		c.caller = cl
		c.rec.Caller = cl.principal
		c.rec.AccessKeyID = cl.accessKeyID
	}
	return act.run(ctx, c)
}

// requestForm merges the query string and, for POST, the form body.
func requestForm(r *http.Request, body []byte) (Form, error) {
	form, err := DecodeForm(r.URL.RawQuery)
	if err != nil {
		return nil, validation("%s", err)
	}
	if r.Method != http.MethodPost || len(body) == 0 {
		return form, nil
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, validation("Content-Type must be application/x-www-form-urlencoded.")
	}
	fromBody, err := DecodeForm(string(body))
	if err != nil {
		return nil, validation("%s", err)
	}
	if len(form)+len(fromBody) > MaxFormParams {
		return nil, validation("more than %d request parameters", MaxFormParams)
	}
	for k, v := range fromBody {
		if _, dup := form[k]; dup {
			return nil, validation("parameter %s is given more than once", shorten(k))
		}
		form[k] = v
	}
	return form, nil
}

// auditParameters keeps the parameters an audit event shows. The web
// identity token is a credential and is left out.
func auditParameters(f Form) map[string]string {
	out := map[string]string{}
	for k, v := range f {
		switch {
		case k == "Action" || k == "Version" || k == "WebIdentityToken" || k == "ProviderId":
			continue
		}
		out[k] = v
	}
	return out
}

func (s *Service) requestID() string {
	var b [16]byte
	if _, err := io.ReadFull(s.rand, b[:]); err != nil {
		// A request id only correlates log lines; never fail a call for it.
		return fmt.Sprintf("%032x", s.now().UnixNano())
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Service) writeXML(w http.ResponseWriter, c *call, status int, v any) {
	out, err := xml.Marshal(v)
	if err != nil {
		// Only the fixed response types above are marshalled.
		c.log.Error("sts: encode response", "err", err)
		status, out = http.StatusInternalServerError, nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/xml")
	h.Set("X-Amzn-Requestid", c.rec.RequestID)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(out)
}

func (s *Service) writeError(w http.ResponseWriter, c *call, e *apiError) {
	var resp errorResponse
	resp.Xmlns = Namespace
	resp.Error.Type = "Sender"
	if !e.sender() {
		resp.Error.Type = "Receiver"
	}
	resp.Error.Code, resp.Error.Message = e.Code, e.Message
	resp.RequestID = c.rec.RequestID
	s.writeXML(w, c, e.Status, resp)
}

// metadata is the ResponseMetadata of c's response.
func (c *call) metadata() responseMetadata { return responseMetadata{RequestID: c.rec.RequestID} }
