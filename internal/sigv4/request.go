package sigv4

// Verification of API requests signed in the Authorization header, as the
// AWS CLI and SDKs sign calls to STS:
//
//	Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261122/us-east-1/sts/aws4_request,
//	    SignedHeaders=content-type;host;x-amz-date, Signature=<64 hex>
//	X-Amz-Date: 20261122T010218Z
//	[X-Amz-Security-Token: …]   temporary credentials
//	[X-Amz-Content-Sha256: …]   otherwise the body is hashed here
//
// The canonical request is the one of the SigV4 specification
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html):
//
//	METHOD \n CANONICAL_URI \n CANONICAL_QUERY \n CANONICAL_HEADERS \n SIGNED_HEADERS \n PAYLOAD_HASH
//
// Key state (unknown, inactive, session token, expiry, revocation) is
// checked exactly as for database tokens, through the same KeyLookup.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MaxAuthorizationSize bounds the Authorization header. SDKs send about 250
// bytes; the bound keeps parsing of hostile headers cheap.
const MaxAuthorizationSize = 4 << 10

// RequestScope is what a header-signed request must be scoped to.
type RequestScope struct {
	Region  string // the configured region
	Service string // e.g. "sts"
}

// VerifiedRequest is an accepted header-signed request.
type VerifiedRequest struct {
	AccessKeyID string
	Date        time.Time // X-Amz-Date
	Temporary   bool      // signed with temporary credentials (ASIA…)
	// Owner is Credentials.Owner of the signing key.
	Owner any
}

// authorization is a parsed Authorization header. The signature is kept
// decoded and never printed.
type authorization struct {
	accessKeyID   string
	scopeDate     string
	region        string
	service       string
	signedHeaders []string
	rawSigned     string
	signature     [sha256.Size]byte
}

// parseAuthorization parses
// "AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…".
func parseAuthorization(h string) (*authorization, error) {
	if len(h) > MaxAuthorizationSize {
		return nil, refuse(Malformed, "Authorization header is %d bytes; at most %d are accepted", len(h), MaxAuthorizationSize)
	}
	alg, rest, ok := strings.Cut(h, " ")
	if !ok {
		return nil, refuse(Malformed, "Authorization header is not \"AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…\"")
	}
	if alg != Algorithm {
		return nil, refuse(WrongAlgorithm, "Authorization algorithm is %s; only %s is supported", quote(alg), Algorithm)
	}
	var a authorization
	var cred, signed, sig string
	var seen [3]bool
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, refuse(Malformed, "Authorization component %s is not KEY=VALUE", quote(strings.TrimSpace(part)))
		}
		var slot int
		switch k {
		case "Credential":
			cred, slot = v, 0
		case "SignedHeaders":
			signed, slot = v, 1
		case "Signature":
			sig, slot = v, 2
		default:
			return nil, refuse(Malformed, "Authorization has an unknown component %s", quote(k))
		}
		if seen[slot] {
			return nil, refuse(Malformed, "Authorization repeats %s", k)
		}
		seen[slot] = true
	}
	if !seen[0] || !seen[1] || !seen[2] {
		return nil, refuse(Malformed, "Authorization needs Credential, SignedHeaders and Signature")
	}
	parts := strings.Split(cred, "/")
	if len(parts) != 5 || parts[0] == "" || parts[4] != scopeTerm || len(parts[1]) != 8 || !allDigits(parts[1]) || parts[2] == "" {
		return nil, refuse(InvalidScope, "Credential %s is not ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request", quote(cred))
	}
	a.accessKeyID, a.scopeDate, a.region, a.service = parts[0], parts[1], parts[2], parts[3]
	if signed == "" {
		return nil, refuse(Malformed, "SignedHeaders is empty")
	}
	a.rawSigned = signed
	a.signedHeaders = strings.Split(signed, ";")
	hasHost := false
	for _, name := range a.signedHeaders {
		if name == "" || name != strings.ToLower(name) || strings.ContainsAny(name, " \t") {
			return nil, refuse(Malformed, "SignedHeaders %s must list lowercase header names separated by ';'", quote(signed))
		}
		hasHost = hasHost || name == "host"
	}
	if !hasHost {
		return nil, refuse(Unsupported, "SignedHeaders %s must include host", quote(signed))
	}
	if err := parseSignature(sig, &a.signature); err != nil {
		return nil, err
	}
	return &a, nil
}

// VerifyRequest checks a request signed in its Authorization header: the
// header's form, the credential scope (scope.Service, scope.Region, the
// date of X-Amz-Date), the time (at most the clock skew away from now, in
// either direction), the key (as for tokens: active, session token,
// expiry, revocation) and the signature over the canonical request. body is
// the request body already read by the caller (at most what it accepts);
// the payload hash is computed from it, and an X-Amz-Content-Sha256 header
// must match it.
//
// A refused request gives an *Error whose Kind says why; any other error is
// a failure to look the key up.
func (v *Verifier) VerifyRequest(ctx context.Context, r *http.Request, body []byte, scope RequestScope) (*VerifiedRequest, error) {
	auth, rawDate, err := parseRequestAuth(r)
	if err != nil {
		return nil, err
	}
	if auth.service != scope.Service {
		return nil, refuse(WrongService, "Credential is scoped to service %s; this endpoint is %s", quote(auth.service), scope.Service)
	}
	if auth.region != scope.Region {
		return nil, refuse(WrongRegion, "Credential is scoped to region %s; this endpoint is in %s", quote(auth.region), quote(scope.Region))
	}
	date, err := parseDate(rawDate)
	if err != nil {
		return nil, err
	}
	if auth.scopeDate != rawDate[:8] {
		return nil, refuse(InvalidScope, "Credential date %s is not the date of X-Amz-Date %s", auth.scopeDate, rawDate)
	}
	now := v.now()
	switch {
	case date.After(now.Add(v.skew)):
		return nil, refuse(NotYetValid, "request is dated %s, more than %s after the server time %s",
			date.Format(time.RFC3339), v.skew, now.UTC().Format(time.RFC3339))
	case now.Sub(date) > v.skew:
		return nil, refuse(Expired, "request is dated %s, more than %s before the server time %s",
			date.Format(time.RFC3339), v.skew, now.UTC().Format(time.RFC3339))
	}
	payloadHash := sha256.Sum256(body)
	payloadHex := hex.EncodeToString(payloadHash[:])
	if claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed != "" && claimed != payloadHex {
		// UNSIGNED-PAYLOAD included: an API call's parameters are its body,
		// so an unsigned body would let anyone replay the signature with
		// other parameters.
		return nil, refuse(SignatureMismatch, "X-Amz-Content-Sha256 is not the SHA-256 of the request body")
	}

	creds, err := v.lookup(ctx, auth.accessKeyID)
	if err != nil {
		return nil, err
	}
	tok := &Token{AccessKeyID: auth.accessKeyID, sessionToken: r.Header.Get("X-Amz-Security-Token")}
	if err := checkCredentials(tok, creds, now); err != nil {
		return nil, err
	}

	key := DeriveSigningKey(creds.SecretAccessKey, auth.scopeDate, auth.region, auth.service)
	scopeStr := auth.scopeDate + "/" + auth.region + "/" + auth.service + "/" + scopeTerm
	headers := canonicalHeaders(r, auth.signedHeaders)
	query := canonicalRequestQuery(r.URL.RawQuery)
	for _, uri := range canonicalURIs(r.URL) {
		creq := r.Method + "\n" + uri + "\n" + query + "\n" + headers + "\n" + auth.rawSigned + "\n" + payloadHex
		sum := sha256.Sum256([]byte(creq))
		sts := Algorithm + "\n" + rawDate + "\n" + scopeStr + "\n" + hex.EncodeToString(sum[:])
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(sts))
		if hmac.Equal(mac.Sum(nil), auth.signature[:]) {
			return &VerifiedRequest{AccessKeyID: auth.accessKeyID, Date: date, Temporary: tok.Temporary(), Owner: creds.Owner}, nil
		}
	}
	return nil, refuse(SignatureMismatch, "signature does not match: the request was altered, or not signed with the secret of access key %s", quote(auth.accessKeyID))
}

// RequestAccessKeyID returns the access key id named by a request's
// Authorization header, or "" when it has none that parses. Callers use it
// to attribute refused requests in logs and audit events.
func RequestAccessKeyID(r *http.Request) string {
	a, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return ""
	}
	return a.accessKeyID
}

// parseRequestAuth reads the Authorization header and the signing time
// (X-Amz-Date, or the Date header in its ISO 8601 basic form).
func parseRequestAuth(r *http.Request) (*authorization, string, error) {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return nil, "", refuse(Malformed, "request needs exactly one Authorization header, got %d", len(h))
	}
	auth, err := parseAuthorization(h[0])
	if err != nil {
		return nil, "", err
	}
	rawDate, dateHeader := r.Header.Get("X-Amz-Date"), "x-amz-date"
	if rawDate == "" {
		// Signers that omit X-Amz-Date sign the Date header; the string to
		// sign still uses the basic ISO 8601 form.
		d, err := http.ParseTime(r.Header.Get("Date"))
		if err != nil {
			return nil, "", refuse(Malformed, "request has neither an X-Amz-Date nor a valid Date header")
		}
		rawDate, dateHeader = d.UTC().Format(dateLayout), "date"
	}
	signed := false
	for _, name := range auth.signedHeaders {
		signed = signed || name == dateHeader
	}
	if !signed {
		return nil, "", refuse(Unsupported, "SignedHeaders %s must include %s", quote(auth.rawSigned), dateHeader)
	}
	return auth, rawDate, nil
}

// canonicalHeaders is "name:value\n" for each signed header in the order
// SignedHeaders lists them: values trimmed, inner runs of spaces collapsed,
// repeated headers joined with ",".
func canonicalHeaders(r *http.Request, names []string) string {
	var b strings.Builder
	for _, name := range names {
		var values []string
		switch name {
		case "host":
			// net/http moves Host out of the header map.
			values = []string{r.Host}
		case "content-length":
			values = r.Header.Values("Content-Length")
			if len(values) == 0 && r.ContentLength >= 0 {
				values = []string{strconv.FormatInt(r.ContentLength, 10)}
			}
		default:
			values = r.Header.Values(name)
		}
		b.WriteString(name)
		b.WriteByte(':')
		for i, v := range values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.Join(strings.Fields(v), " "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// canonicalRequestQuery decodes every query parameter, re-encodes it with
// URIEncode and sorts by key, then value.
func canonicalRequestQuery(raw string) string {
	if raw == "" {
		return ""
	}
	type kv struct{ k, v string }
	var pairs []kv
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		pairs = append(pairs, kv{URIEncode(k), URIEncode(v)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// canonicalURIs are the canonical URI forms a signer may have used: every
// SDK URI-encodes the already-escaped path again for services other than
// S3; the single-encoded form is tried too. For "/" both are "/".
func canonicalURIs(u *url.URL) []string {
	escaped := u.EscapedPath()
	if escaped == "" {
		escaped = "/"
	}
	segs := strings.Split(escaped, "/")
	for i, s := range segs {
		segs[i] = URIEncode(s)
	}
	double := strings.Join(segs, "/")
	if double == escaped {
		return []string{escaped}
	}
	return []string{double, escaped}
}
