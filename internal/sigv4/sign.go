package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// URIEncode is AWS's UriEncode: every byte except the unreserved
// A-Z a-z 0-9 - . _ ~ becomes %XX with uppercase hex, space included
// (%20, never +). Signers and verifiers must agree on it byte for byte.
func URIEncode(s string) string {
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			return string(appendURIEncode(make([]byte, 0, len(s)+16), s))
		}
	}
	return s
}

func appendURIEncode(dst []byte, s string) []byte {
	const hexUpper = "0123456789ABCDEF"
	if plain := func() bool {
		for i := 0; i < len(s); i++ {
			if !unreservedByte[s[i]] {
				return false
			}
		}
		return true
	}(); plain {
		return append(dst, s...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			dst = append(dst, c)
			continue
		}
		dst = append(dst, '%', hexUpper[c>>4], hexUpper[c&0xf])
	}
	return dst
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// DeriveSigningKey is the SigV4 key chain
// HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request")
// for a date of the form YYYYMMDD.
func DeriveSigningKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, scopeTerm)
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// hmacSmall is HMAC-SHA256 for a key of at most one block (a derived
// signing key is 32 bytes) without heap allocations: the login path runs it
// for every token. It is RFC 2104 spelled out; hmacSHA256 is the reference
// it is tested against.
func hmacSmall(key, data []byte) [sha256.Size]byte {
	p := newHMACPads(key)
	return p.sum(data)
}

const hmacBlock = 64

// hmacPads are a key's inner and outer HMAC pads, computed once per derived
// signing key and kept with it in the key cache.
type hmacPads struct{ ipad, opad [hmacBlock]byte }

func newHMACPads(key []byte) *hmacPads {
	p := &hmacPads{}
	copy(p.ipad[:], key)
	copy(p.opad[:], key)
	for i := range p.ipad {
		p.ipad[i] ^= 0x36
		p.opad[i] ^= 0x5c
	}
	return p
}

func (p *hmacPads) sum(data []byte) [sha256.Size]byte {
	const block = hmacBlock
	ipad, opad := &p.ipad, &p.opad
	var inner [sha256.Size]byte
	var buf [block + 256]byte
	if len(data) <= 256 {
		n := copy(buf[:], ipad[:])
		n += copy(buf[n:], data)
		inner = sha256.Sum256(buf[:n])
	} else {
		h := sha256.New()
		h.Write(ipad[:])
		h.Write(data)
		h.Sum(inner[:0])
	}
	var outer [block + sha256.Size]byte
	copy(outer[:], opad[:])
	copy(outer[block:], inner[:])
	return sha256.Sum256(outer[:])
}

// appendCanonicalQuery appends every parameter encoded with URIEncode and
// sorted by encoded key: what every SDK signs, whatever order its token
// text uses. Keys are unique (Parse refuses duplicates), so the key alone
// orders them.
func appendCanonicalQuery(dst []byte, params []param) []byte {
	var order [maxParams]int
	n := len(params)
	if n > maxParams {
		n = maxParams // Parse never produces more; never index past the array
	}
	for i := 0; i < n; i++ {
		order[i] = i
	}
	less := func(a, b int) bool { return encodedLess(params[a].key, params[b].key) }
	if canonicalKeys(params[:n]) {
		// Every SDK writes plain ASCII names: compare them directly.
		less = func(a, b int) bool { return params[a].key < params[b].key }
	}
	for i := 1; i < n; i++ { // insertion sort: n ≤ 32 and usually already sorted
		for j := i; j > 0 && less(order[j], order[j-1]); j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, '&')
		}
		p := params[order[i]]
		dst = appendURIEncode(dst, p.key) // a plain copy for the usual ASCII names
		dst = append(dst, '=')
		if p.canon != "" {
			dst = append(dst, p.canon...)
		} else {
			dst = appendURIEncode(dst, p.value)
		}
	}
	return dst
}

// encodedLess compares URIEncode(a) < URIEncode(b) without building them.
func encodedLess(a, b string) bool {
	var ba, bb [3]byte
	i, j := 0, 0
	ea, eb := []byte(nil), []byte(nil)
	for {
		if len(ea) == 0 {
			if i == len(a) {
				return len(eb) > 0 || j < len(b)
			}
			ea = encodeByte(ba[:0], a[i])
			i++
		}
		if len(eb) == 0 {
			if j == len(b) {
				return false
			}
			eb = encodeByte(bb[:0], b[j])
			j++
		}
		if ea[0] != eb[0] {
			return ea[0] < eb[0]
		}
		ea, eb = ea[1:], eb[1:]
	}
}

func encodeByte(dst []byte, c byte) []byte {
	const hexUpper = "0123456789ABCDEF"
	if unreserved(c) {
		return append(dst, c)
	}
	return append(dst, '%', hexUpper[c>>4], hexUpper[c&0xf])
}

// canonicalQuery is appendCanonicalQuery as a string.
func canonicalQuery(params []param) string {
	return string(appendCanonicalQuery(nil, params))
}

// signature computes the SigV4 signature of a presigned GET / whose only
// signed header is host.
func signature(key []byte, rawDate, region, query, host string) []byte {
	sig, _ := computeSignature(newHMACPads(key), rawDate, region, []byte(query), host, nil)
	return sig[:]
}

// computeSignature is signature for the login path: the canonical request
// is built in buf, which is returned for reuse across host forms, and the
// string to sign lives on the stack.
func computeSignature(key *hmacPads, rawDate, region string, query []byte, host string, buf []byte) ([sha256.Size]byte, []byte) {
	buf = append(buf[:0], "GET\n/\n"...)
	buf = append(buf, query...)
	buf = append(buf, "\nhost:"...)
	buf = append(buf, host...)
	buf = append(buf, "\n\n"+signedHeaders+"\n"+emptyPayloadHash...)
	sum := sha256.Sum256(buf)
	var arr [256]byte // the string to sign; append spills to the heap only for absurd regions
	sts := append(arr[:0], Algorithm+"\n"...)
	sts = append(sts, rawDate...)
	sts = append(sts, '\n')
	sts = append(sts, rawDate[:8]...) // the credential scope, built in place
	sts = append(sts, '/')
	sts = append(sts, region...)
	sts = append(sts, "/"+Service+"/"+scopeTerm+"\n"...)
	sts = hex.AppendEncode(sts, sum[:])
	return key.sum(sts), buf
}

// SignInput describes a token to generate, with the same inputs as
// `aws rds generate-db-auth-token`.
type SignInput struct {
	Endpoint        string // host:port the client will connect to
	Region          string
	DBUser          string
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string        // set for temporary credentials
	Time            time.Time     // signing time; callers pass their clock's now
	Expires         time.Duration // zero means MaxExpires, as the SDKs send
}

// Sign generates a token in exactly the form botocore (the AWS CLI) prints,
// so `iamdb token` output is interchangeable with `aws rds
// generate-db-auth-token`: host:port/?, parameters in botocore's order, the
// session token just before the signature, and port 443 left out of the
// signed host header.
func Sign(in SignInput) (string, error) {
	if err := in.validate(); err != nil {
		return "", fmt.Errorf("sign database token: %w", err)
	}
	expires := in.Expires
	if expires == 0 {
		expires = MaxExpires
	}
	rawDate := in.Time.UTC().Format(dateLayout)
	scope := rawDate[:8] + "/" + in.Region + "/" + Service + "/" + scopeTerm
	params := []param{
		{key: paramAction, value: Action},
		{key: paramDBUser, value: in.DBUser},
		{key: paramAlgorithm, value: Algorithm},
		{key: paramCredential, value: in.AccessKeyID + "/" + scope},
		{key: paramDate, value: rawDate},
		{key: paramExpires, value: strconv.Itoa(int(expires / time.Second))},
		{key: paramSignedHeaders, value: signedHeaders},
	}
	if in.SessionToken != "" {
		params = append(params, param{key: paramSecurityToken, value: in.SessionToken})
	}

	host := strings.TrimSuffix(in.Endpoint, ":443")
	key := DeriveSigningKey(in.SecretAccessKey, rawDate[:8], in.Region, Service)
	sig := signature(key, rawDate, in.Region, canonicalQuery(params), host)

	var b strings.Builder
	b.WriteString(in.Endpoint)
	b.WriteString("/?")
	for _, p := range params {
		b.WriteString(URIEncode(p.key))
		b.WriteByte('=')
		b.WriteString(URIEncode(p.value))
		b.WriteByte('&')
	}
	b.WriteString(paramSignature)
	b.WriteByte('=')
	b.WriteString(hex.EncodeToString(sig))
	return b.String(), nil
}

func (in SignInput) validate() error {
	host, port, err := net.SplitHostPort(in.Endpoint)
	switch {
	case err != nil || host == "" || strings.Contains(in.Endpoint, "/"):
		return fmt.Errorf("endpoint %s is not host:port", quote(in.Endpoint))
	case !validPort(port):
		return fmt.Errorf("endpoint %s: port must be a number between 1 and 65535", quote(in.Endpoint))
	case in.Region == "" || strings.Contains(in.Region, "/"):
		return errors.New("region is empty or contains '/'")
	case in.DBUser == "":
		return errors.New("database user is empty")
	case in.AccessKeyID == "" || strings.Contains(in.AccessKeyID, "/"):
		return errors.New("access key id is empty or contains '/'")
	case in.SecretAccessKey == "":
		return errors.New("secret access key is empty")
	case in.Time.IsZero():
		return errors.New("signing time is not set")
	case in.Expires < 0 || in.Expires > MaxExpires || in.Expires%time.Second != 0:
		return fmt.Errorf("expiry %s must be whole seconds between 1s and %s", in.Expires, MaxExpires)
	}
	return nil
}
