package sigv4

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// Fixed values of every RDS authentication token.
const (
	// MaxTokenSize bounds the work an unauthenticated client can cause.
	MaxTokenSize = 16 << 10
	// MaxExpires is the longest X-Amz-Expires RDS accepts, and what every SDK sends.
	MaxExpires = 900 * time.Second

	Algorithm     = "AWS4-HMAC-SHA256"
	Service       = "rds-db"
	Action        = "connect"
	scopeTerm     = "aws4_request"
	signedHeaders = "host"
	dateLayout    = "20060102T150405Z"
	// emptyPayloadHash is SHA-256 of the empty string: SDKs sign an empty
	// body, not UNSIGNED-PAYLOAD.
	emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

	// maxParams is far above the 9 parameters any SDK sends; it keeps the
	// duplicate check quadratic in a small number.
	maxParams = 32
)

// Query parameter names.
const (
	paramAction        = "Action"
	paramDBUser        = "DBUser"
	paramAlgorithm     = "X-Amz-Algorithm"
	paramCredential    = "X-Amz-Credential"
	paramDate          = "X-Amz-Date"
	paramExpires       = "X-Amz-Expires"
	paramSignedHeaders = "X-Amz-SignedHeaders"
	paramSecurityToken = "X-Amz-Security-Token"
	paramSignature     = "X-Amz-Signature"
)

// param is one decoded query parameter. canon is the raw token text of the
// value when it is already in AWS's canonical encoding (what every SDK
// writes), so the canonical query can reuse it instead of re-encoding.
type param struct{ key, value, canon string }

// canonicalKeys reports whether every key is written as URIEncode writes
// it; then the keys sort as plain strings.
func canonicalKeys(ps []param) bool {
	for _, p := range ps {
		for i := 0; i < len(p.key); i++ {
			if !unreservedByte[p.key[i]] {
				return false
			}
		}
	}
	return true
}

// Token is a parsed authentication token. Parsing checks its form only; a
// Verifier decides whether it is accepted.
//
// The signature and the session token are unexported and never printed:
// Token formats itself (fmt, slog) with its ID in their place.
type Token struct {
	Endpoint    string // host:port as written in the token
	Host        string // host part of Endpoint, without IPv6 brackets
	Port        string
	DBUser      string
	AccessKeyID string
	Region      string
	Date        time.Time     // X-Amz-Date
	Expires     time.Duration // X-Amz-Expires

	rawDate      string // X-Amz-Date as signed; its first 8 bytes are the scope date
	sessionToken string
	signature    [sha256.Size]byte
	// params holds every parameter except X-Amz-Signature, decoded, in token
	// order: the signature covers them all, known or not.
	params []param
	// paramBuf backs params for tokens of the usual size, so parsing one
	// allocates no slice.
	paramBuf [10]param
}

// Temporary reports whether the token carries a session token, i.e. was
// signed with temporary credentials.
func (t *Token) Temporary() bool { return t.sessionToken != "" }

// ExpiresAt is when the token stops being accepted, ignoring the
// expiry of the credentials that signed it.
func (t *Token) ExpiresAt() time.Time { return t.Date.Add(t.Expires) }

// ID names the token in logs and audit events without revealing it: the
// first 12 hex digits of SHA-256 of its signature. Two connections with one
// token share an ID, which is how reuse is correlated and not throttled.
func (t *Token) ID() string {
	sig := hex.EncodeToString(t.signature[:])
	sum := sha256.Sum256([]byte(sig))
	return hex.EncodeToString(sum[:6])
}

// String describes the token without its secrets.
func (t Token) String() string {
	return fmt.Sprintf("token %s for %s@%s key %s region %s signed %s valid %s temporary=%t",
		t.ID(), t.DBUser, t.Endpoint, t.AccessKeyID, t.Region,
		t.Date.Format(time.RFC3339), t.Expires, t.Temporary())
}

// Format routes every verb, %#v and %+v included, through String so that a
// careless Printf cannot reveal the unexported signature or session token.
func (t Token) Format(f fmt.State, _ rune) { _, _ = fmt.Fprint(f, t.String()) }

// LogValue keeps slog from reflecting over the unexported secrets.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", t.ID()),
		slog.String("endpoint", t.Endpoint),
		slog.String("db_user", t.DBUser),
		slog.String("access_key_id", t.AccessKeyID),
		slog.String("region", t.Region),
		slog.Time("date", t.Date),
		slog.Duration("expires", t.Expires),
		slog.Bool("temporary", t.Temporary()),
	)
}

// Parse checks the form of a token as every AWS SDK emits it (botocore, Go,
// JavaScript and Java shapes alike): its size, host:port[/]?query shape,
// unique parameters, Action, algorithm, signed headers and credential scope
// structure. The checks that need the instance, the clock or the key are the
// Verifier's. Errors are *Error with a Kind of the shape checks (TooLarge, Malformed,
// WrongAction, WrongAlgorithm, Unsupported, InvalidScope, WrongService).
func Parse(s string) (*Token, error) {
	if len(s) > MaxTokenSize {
		return nil, refuse(TooLarge, "token is %d bytes, more than the %d allowed", len(s), MaxTokenSize)
	}
	if s == "" {
		return nil, refuse(Malformed, "token is empty")
	}
	if i := firstUnprintable(s); i >= 0 {
		return nil, refuse(Malformed, "token contains a space, control or non-ASCII character at byte %d; pass the token exactly as generated", i)
	}
	if strings.IndexByte(s, '#') >= 0 {
		return nil, refuse(Malformed, "token contains a fragment (#)")
	}
	if params := strings.Count(s, "&") + 1; params > maxParams {
		return nil, refuse(Malformed, "token has %d query parameters, more than the %d allowed", params, maxParams)
	}
	if strings.Contains(s, "://") {
		return nil, refuse(Malformed, "token starts with a URL scheme; it must start with host:port as generate-db-auth-token prints it")
	}
	endpoint, query, ok := strings.Cut(s, "?")
	if !ok {
		return nil, refuse(Malformed, "token has no query string; expected host:port/?Action=connect&DBUser=…")
	}
	// Go's BuildAuthToken omits the slash before "?", the other SDKs keep it.
	endpoint = strings.TrimSuffix(endpoint, "/")
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil || host == "" || strings.ContainsAny(host, "/@") {
		return nil, refuse(Malformed, "token does not start with host:port")
	}
	if !validPort(port) {
		return nil, refuse(Malformed, "token's port is not a number between 1 and 65535")
	}

	t := &Token{Endpoint: endpoint, Host: host, Port: port}
	if err := t.parseQuery(query); err != nil {
		return nil, err
	}
	return t, nil
}

func validPort(p string) bool {
	if p == "" || len(p) > 5 || p[0] == '0' {
		return false
	}
	if len(p) == 0 || len(p) > 5 || p[0] == '0' || !allDigits(p) {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n <= 65535
}

func (t *Token) parseQuery(query string) error {
	t.params = t.paramBuf[:0]
	var (
		action, algorithm, credential, headers, expires string
		haveUser, haveSig                               bool
	)
	for rest, more := query, true; more; {
		var seg string
		seg, rest, more = strings.Cut(rest, "&")
		rawKey, rawValue, ok := strings.Cut(seg, "=")
		if !ok || rawKey == "" {
			return refuse(Malformed, "token has a query parameter that is not key=value")
		}
		key, ok := queryUnescape(rawKey)
		if !ok {
			return refuse(Malformed, "token has a query parameter name that is not valid percent-encoding")
		}
		value, canonical, ok := unescapeValue(rawValue)
		if !ok {
			return refuse(Malformed, "%s is not valid percent-encoding", displayName(key))
		}
		for _, p := range t.params {
			if p.key == key {
				return refuse(Malformed, "%s appears more than once", displayName(key))
			}
		}
		if key == paramSignature {
			if haveSig {
				return refuse(Malformed, "%s appears more than once", paramSignature)
			}
			haveSig = true
			if err := parseSignature(value, &t.signature); err != nil {
				return err
			}
			continue // the one parameter the signature does not cover
		}
		canon := ""
		if canonical {
			canon = rawValue
		}
		t.params = append(t.params, param{key, value, canon})
		switch key {
		case paramAction:
			action = value
		case paramDBUser:
			t.DBUser, haveUser = value, true
		case paramAlgorithm:
			algorithm = value
		case paramCredential:
			credential = value
		case paramDate:
			t.rawDate = value
		case paramExpires:
			expires = value
		case paramSignedHeaders:
			headers = value
		case paramSecurityToken:
			if value == "" {
				return refuse(Malformed, "%s is empty", paramSecurityToken)
			}
			t.sessionToken = value
		}
	}

	// Report the first missing parameter in the order the SDKs write them.
	for _, req := range []struct {
		name    string
		present bool
	}{
		{paramAction, action != ""},
		{paramDBUser, haveUser},
		{paramAlgorithm, algorithm != ""},
		{paramCredential, credential != ""},
		{paramDate, t.rawDate != ""},
		{paramExpires, expires != ""},
		{paramSignedHeaders, headers != ""},
		{paramSignature, haveSig},
	} {
		if !req.present {
			return refuse(Malformed, "token has no %s (or it is empty)", req.name)
		}
	}
	if t.DBUser == "" {
		return refuse(Malformed, "DBUser is empty")
	}

	if action != Action {
		return refuse(WrongAction, "Action is %s; a database token has Action=connect", quote(action))
	}
	if algorithm != Algorithm {
		return refuse(WrongAlgorithm, "X-Amz-Algorithm is %s; only %s is supported", quote(algorithm), Algorithm)
	}
	if headers != signedHeaders {
		return refuse(Unsupported, "X-Amz-SignedHeaders is %s; a database token signs only the host header", quote(headers))
	}

	date, err := parseDate(t.rawDate)
	if err != nil {
		return err
	}
	t.Date = date
	secs, err := parseExpires(expires)
	if err != nil {
		return err
	}
	t.Expires = secs
	return t.parseCredential(credential)
}

func parseSignature(v string, dst *[sha256.Size]byte) error {
	// Lowercase only, as every SDK writes it: accepting other spellings of
	// one signature would give one token several IDs.
	if len(v) != 2*sha256.Size {
		return refuse(Malformed, "X-Amz-Signature is not 64 lowercase hex digits")
	}
	for i := range dst {
		hi, ok1 := lowerHex(v[2*i])
		lo, ok2 := lowerHex(v[2*i+1])
		if !ok1 || !ok2 {
			return refuse(Malformed, "X-Amz-Signature is not 64 lowercase hex digits")
		}
		dst[i] = hi<<4 | lo
	}
	return nil
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// parseDate reads YYYYMMDDTHHMMSSZ. It is time.Parse(dateLayout, v) without
// the layout interpretation: this runs on every login.
func parseDate(v string) (time.Time, error) {
	if len(v) == len(dateLayout) && v[8] == 'T' && v[15] == 'Z' && allDigits(v[:8]) && allDigits(v[9:15]) {
		num := func(s string) int {
			n := 0
			for i := 0; i < len(s); i++ {
				n = n*10 + int(s[i]-'0')
			}
			return n
		}
		y, mo, d := num(v[0:4]), num(v[4:6]), num(v[6:8])
		h, mi, sec := num(v[9:11]), num(v[11:13]), num(v[13:15])
		t := time.Date(y, time.Month(mo), d, h, mi, sec, 0, time.UTC)
		// time.Date normalises 30 February into March: a round trip that
		// changes a field means the field was out of range.
		if ty, tm, td := t.Date(); ty == y && int(tm) == mo && td == d && t.Hour() == h && t.Minute() == mi && t.Second() == sec {
			return t, nil
		}
	}
	return time.Time{}, refuse(Malformed, "X-Amz-Date is %s, not of the form YYYYMMDDTHHMMSSZ", quote(v))
}

func parseExpires(v string) (time.Duration, error) {
	// Range is checked during verification, with the time checks; here only
	// the number. Six digits keep the Duration from overflowing.
	if len(v) > 6 || !allDigits(v) {
		return 0, refuse(Malformed, "X-Amz-Expires is %s, not a whole number of seconds", quote(v))
	}
	n, _ := strconv.Atoi(v)
	return time.Duration(n) * time.Second, nil
}

func (t *Token) parseCredential(v string) error {
	if n := strings.Count(v, "/") + 1; n != 5 {
		return refuse(InvalidScope, "X-Amz-Credential has %d parts; expected AKID/YYYYMMDD/REGION/rds-db/aws4_request", n)
	}
	akid, rest, _ := strings.Cut(v, "/")
	date, rest, _ := strings.Cut(rest, "/")
	region, rest, _ := strings.Cut(rest, "/")
	service, term, _ := strings.Cut(rest, "/")
	if akid == "" {
		return refuse(InvalidScope, "X-Amz-Credential has an empty access key id")
	}
	if date != t.rawDate[:8] {
		return refuse(InvalidScope, "credential scope date %s is not the date of X-Amz-Date %s", quote(date), t.rawDate)
	}
	if region == "" {
		return refuse(InvalidScope, "credential scope has an empty region")
	}
	if service != Service {
		return refuse(WrongService, "credential scope service is %s; a database token is signed for %s", quote(service), Service)
	}
	if term != scopeTerm {
		return refuse(InvalidScope, "credential scope ends in %s, not %s", quote(term), scopeTerm)
	}
	t.AccessKeyID, t.Region = akid, region
	return nil
}

// firstUnprintable returns the index of the first byte outside visible
// ASCII ('!' … '~'), or -1. It tests eight bytes at a time: every token
// byte is checked on every login.
func firstUnprintable(s string) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		// A byte below 0x21, or above 0x7e (0x7f…0xff), sets its high bit
		// in one of the two terms.
		below := (w - ones*0x21) & ^w & highs
		above := ((w + ones*(0x7f-0x7e)) | w) & highs
		if below|above != 0 {
			break
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return i
		}
	}
	return -1
}

// queryUnescape decodes %XX (either hex case) and '+' as a space, as
// url.QueryUnescape does, returning s itself when there is nothing to decode
// so most parameters cost no allocation.
func queryUnescape(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, true
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", false
			}
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		case '+':
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return string(b), true
}

// unescapeValue is queryUnescape that also reports whether s is exactly
// URIEncode of its decoding (unreserved bytes as they are, every other byte
// as %XX in uppercase hex), in one pass: the canonical query can then reuse
// the token's own text, which is what every SDK writes.
func unescapeValue(s string) (value string, canonical, ok bool) {
	canonical = true
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; !unreservedByte[c] {
			if c == '%' || c == '+' {
				plain = false
				break
			}
			canonical = false
		}
	}
	if plain {
		return s, canonical, true
	}
	canonical = true
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", false, false
			}
			d := unhex(s[i+1])<<4 | unhex(s[i+2])
			if !isUpperHex(s[i+1]) || !isUpperHex(s[i+2]) || unreservedByte[d] {
				canonical = false
			}
			b = append(b, d)
			i += 2
		case c == '+':
			canonical = false
			b = append(b, ' ')
		default:
			if !unreservedByte[c] {
				canonical = false
			}
			b = append(b, c)
		}
	}
	return string(b), canonical, true
}

var unreservedByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = unreserved(byte(c))
	}
	return t
}()

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// displayName names a parameter in an error only when it is one of ours:
// an unknown name is attacker-chosen text.
func displayName(key string) string {
	switch key {
	case paramAction, paramDBUser, paramAlgorithm, paramCredential, paramDate,
		paramExpires, paramSignedHeaders, paramSecurityToken, paramSignature:
		return key
	}
	return "a query parameter"
}

// scope is the credential scope without the access key id.
func (t *Token) scope() string {
	return t.rawDate[:8] + "/" + t.Region + "/" + Service + "/" + scopeTerm
}

// signedHostForms lists the host header values a signer may have used.
// Port 443 is ambiguous: botocore and Go drop the default HTTPS port from the
// signed header (Go also drops IPv6 brackets) while the text keeps it, and
// the JavaScript signer signs host:443.
func (t *Token) signedHostForms() []string {
	if t.Port != "443" {
		return []string{t.Endpoint}
	}
	forms := []string{t.Endpoint, strings.TrimSuffix(t.Endpoint, ":443")}
	if forms[1] != t.Host {
		forms = append(forms, t.Host)
	}
	return forms
}
