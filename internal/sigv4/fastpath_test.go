package sigv4

import (
	"bytes"
	"math/rand/v2"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestHMACSmallMatchesStdlib pins the allocation-free HMAC to crypto/hmac
// for every data length around the stack-buffer boundary.
func TestHMACSmallMatchesStdlib(t *testing.T) {
	key := DeriveSigningKey(testSecret, "20261122", "us-east-1", Service)
	for n := 0; n <= 400; n++ {
		data := bytes.Repeat([]byte{byte(n)}, n)
		got := hmacSmall(key, data)
		if want := hmacSHA256(key, string(data)); !bytes.Equal(got[:], want) {
			t.Fatalf("length %d: hmacSmall differs from crypto/hmac", n)
		}
	}
}

// TestEncodedLessMatchesEncoding pins encodedLess to comparing the encoded
// strings, which is the order SigV4 signs in.
func TestEncodedLessMatchesEncoding(t *testing.T) {
	alphabet := []string{"a", "A", "z", "-", "_", "~", ".", " ", "%", "+", "/", "é", "0", "9", "X-Amz-", "DB"}
	r := rand.New(rand.NewPCG(1, 2))
	word := func() string {
		var b strings.Builder
		for i := r.IntN(4); i >= 0; i-- {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		return b.String()
	}
	for i := 0; i < 20000; i++ {
		a, b := word(), word()
		if got, want := encodedLess(a, b), URIEncode(a) < URIEncode(b); got != want {
			t.Fatalf("encodedLess(%q, %q) = %v, want %v", a, b, got, want)
		}
	}
	params := []param{{key: "b", value: "2"}, {key: "X-Amz-Date", value: "d"}, {key: "a b", value: "x y"}, {key: "Action", value: "connect"}, {key: "a+b", value: "/"}}
	keys := make([]string, len(params))
	for i, p := range params {
		keys[i] = URIEncode(p.key) + "=" + URIEncode(p.value)
	}
	sort.Strings(keys)
	if got, want := canonicalQuery(params), strings.Join(keys, "&"); got != want {
		t.Fatalf("canonicalQuery = %s, want %s", got, want)
	}
}

// TestQueryUnescapeMatchesStdlib pins the parser's unescaping to
// net/url's, including what each rejects.
func TestQueryUnescapeMatchesStdlib(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	pieces := []string{"a", "%2F", "%2f", "%", "%2", "%zz", "+", " ", "%20", "%E2%82%AC", "x", "%4"}
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for j := r.IntN(5); j >= 0; j-- {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		s := b.String()
		got, ok := queryUnescape(s)
		want, err := url.QueryUnescape(s)
		if ok != (err == nil) || (ok && got != want) {
			t.Fatalf("queryUnescape(%q) = %q, %v; net/url gives %q, %v", s, got, ok, want, err)
		}
	}
}

// TestParseDateMatchesStdlib pins parseDate to time.Parse on valid and
// out-of-range dates.
func TestParseDateMatchesStdlib(t *testing.T) {
	for _, v := range []string{"20261122T010218Z", "20240229T235959Z", "20230229T000000Z", "20261322T010218Z",
		"20261100T000000Z", "20261131T000000Z", "20261122T240000Z", "20261122T006000Z", "20261122T000060Z",
		"00010101T000000Z", "20261122X010218Z", "20261122T010218z"} {
		got, err := parseDate(v)
		want, werr := time.Parse(dateLayout, v)
		if (err == nil) != (werr == nil) || (err == nil && !got.Equal(want)) {
			t.Errorf("parseDate(%q) = %v, %v; time.Parse gives %v, %v", v, got, err, want, werr)
		}
	}
}

// TestUnescapeValue pins the one-pass decoder to queryUnescape and its
// canonical flag to URIEncode.
func TestUnescapeValue(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	pieces := []string{"a", "%2F", "%2f", "%41", "%", "%zz", "+", "%20", "%E2%82%AC", "~", "-", "!", "/", "%7E"}
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for j := r.IntN(5); j >= 0; j-- {
			b.WriteString(pieces[r.IntN(len(pieces))])
		}
		s := b.String()
		got, canonical, ok := unescapeValue(s)
		want, wok := queryUnescape(s)
		if ok != wok || (ok && got != want) {
			t.Fatalf("unescapeValue(%q) = %q, %v; queryUnescape gives %q, %v", s, got, ok, want, wok)
		}
		if ok && canonical != (URIEncode(got) == s) {
			t.Fatalf("unescapeValue(%q) canonical = %v, but URIEncode of %q is %q", s, canonical, got, URIEncode(got))
		}
	}
}

// TestFirstUnprintable pins the eight-at-a-time scan to the byte loop for
// every byte value at every position of a 17-byte string.
func TestFirstUnprintable(t *testing.T) {
	slow := func(s string) int {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c <= ' ' || c >= 0x7f {
				return i
			}
		}
		return -1
	}
	base := []byte("abcdefghijklmnopq")
	for pos := range base {
		for c := 0; c < 256; c++ {
			b := append([]byte(nil), base...)
			b[pos] = byte(c)
			if got, want := firstUnprintable(string(b)), slow(string(b)); got != want {
				t.Fatalf("byte %#x at %d: got %d, want %d", c, pos, got, want)
			}
		}
	}
}
