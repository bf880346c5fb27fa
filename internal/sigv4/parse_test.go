package sigv4

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// replaceParam swaps the whole "key=value" segment of key for repl ("" drops it).
func replaceParam(token, key, repl string) string {
	endpoint, query, _ := strings.Cut(token, "?")
	var out []string
	for _, seg := range strings.Split(query, "&") {
		if k, _, _ := strings.Cut(seg, "="); k == key {
			if repl != "" {
				out = append(out, repl)
			}
			continue
		}
		out = append(out, seg)
	}
	return endpoint + "?" + strings.Join(out, "&")
}

func TestParseRejects(t *testing.T) {
	good := signTest(t, nil)
	sig := good[strings.LastIndex(good, "=")+1:]
	cases := []struct {
		name  string
		token string
		want  Kind
	}{
		{"empty", "", Malformed},
		{"too large", good + "&pad=" + strings.Repeat("a", MaxTokenSize), TooLarge},
		{"scheme", "https://" + good, Malformed},
		{"no query", testHost + "/", Malformed},
		{"path", strings.Replace(good, "/?", "/x?", 1), Malformed},
		{"double slash", strings.Replace(good, "/?", "//?", 1), Malformed},
		{"no port", strings.Replace(good, ":5432", "", 1), Malformed},
		{"port zero", strings.Replace(good, ":5432", ":0", 1), Malformed},
		{"port leading zero", strings.Replace(good, ":5432", ":05432", 1), Malformed},
		{"port too big", strings.Replace(good, ":5432", ":65536", 1), Malformed},
		{"empty host", good[strings.Index(good, ":"):], Malformed},
		{"userinfo", "u@" + good, Malformed},
		{"trailing newline", good + "\n", Malformed},
		{"space", strings.Replace(good, "Action", "Act ion", 1), Malformed},
		{"non-ASCII", strings.Replace(good, "db.example", "dé.example", 1), Malformed},
		{"fragment", good + "#x", Malformed},
		{"empty segment", strings.Replace(good, "&", "&&", 1), Malformed},
		{"segment without =", good + "&flag", Malformed},
		{"bad escape in value", strings.Replace(good, "jane%20doe", "jane%2Gdoe", 1), Malformed},
		{"bad escape in key", good + "&%zz=1", Malformed},
		{"duplicate key", good + "&DBUser=root", Malformed},
		{"duplicate key, other spelling", good + "&DB%55ser=root", Malformed},
		{"duplicate signature", good + "&X-Amz-Signature=" + sig, Malformed},
		{"too many parameters", good + strings.Repeat("&p=1", maxParams), Malformed},
		{"missing Action", replaceParam(good, paramAction, ""), Malformed},
		{"missing DBUser", replaceParam(good, paramDBUser, ""), Malformed},
		{"empty DBUser", replaceParam(good, paramDBUser, "DBUser="), Malformed},
		{"missing signature", replaceParam(good, paramSignature, ""), Malformed},
		{"missing date", replaceParam(good, paramDate, ""), Malformed},
		{"missing expires", replaceParam(good, paramExpires, ""), Malformed},
		{"missing credential", replaceParam(good, paramCredential, ""), Malformed},
		{"empty security token", good + "&X-Amz-Security-Token=", Malformed},
		{"uppercase signature", replaceParam(good, paramSignature, "X-Amz-Signature="+strings.ToUpper(sig)), Malformed},
		{"short signature", replaceParam(good, paramSignature, "X-Amz-Signature="+sig[:63]), Malformed},
		{"non-hex signature", replaceParam(good, paramSignature, "X-Amz-Signature="+strings.Repeat("g", 64)), Malformed},
		{"bad date", replaceParam(good, paramDate, "X-Amz-Date=2026-11-22T01:02:18Z"), Malformed},
		{"impossible date", replaceParam(good, paramDate, "X-Amz-Date=20261322T010218Z"), Malformed},
		{"expires not a number", replaceParam(good, paramExpires, "X-Amz-Expires=15m"), Malformed},
		{"expires negative", replaceParam(good, paramExpires, "X-Amz-Expires=-1"), Malformed},
		{"expires huge", replaceParam(good, paramExpires, "X-Amz-Expires=99999999999999999999"), Malformed},

		{"other action", replaceParam(good, paramAction, "Action=Connect"), WrongAction},
		{"other algorithm", replaceParam(good, paramAlgorithm, "X-Amz-Algorithm=AWS4-ECDSA-P256-SHA256"), WrongAlgorithm},
		{"more signed headers", replaceParam(good, paramSignedHeaders, "X-Amz-SignedHeaders=host%3Bx-amz-date"), Unsupported},

		{"scope 4 parts", replaceParam(good, paramCredential, "X-Amz-Credential=AKIDEXAMPLE%2F20261122%2Fus-east-1%2Frds-db"), InvalidScope},
		{"scope empty key", replaceParam(good, paramCredential, "X-Amz-Credential=%2F20261122%2Fus-east-1%2Frds-db%2Faws4_request"), InvalidScope},
		{"scope date", replaceParam(good, paramCredential, "X-Amz-Credential=AKIDEXAMPLE%2F20261121%2Fus-east-1%2Frds-db%2Faws4_request"), InvalidScope},
		{"scope empty region", replaceParam(good, paramCredential, "X-Amz-Credential=AKIDEXAMPLE%2F20261122%2F%2Frds-db%2Faws4_request"), InvalidScope},
		{"scope service", replaceParam(good, paramCredential, "X-Amz-Credential=AKIDEXAMPLE%2F20261122%2Fus-east-1%2Frds%2Faws4_request"), WrongService},
		{"scope terminator", replaceParam(good, paramCredential, "X-Amz-Credential=AKIDEXAMPLE%2F20261122%2Fus-east-1%2Frds-db%2Faws4"), InvalidScope},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := Parse(c.token)
			if err == nil {
				t.Fatalf("Parse accepted %q as %v", c.token, tok)
			}
			if got := kindOf(err); got != c.want {
				t.Fatalf("kind = %v (%v), want %v", got, err, c.want)
			}
			if !errors.Is(err, c.want) {
				t.Errorf("errors.Is(err, %v) = false", c.want)
			}
			if strings.Contains(err.Error(), sig) {
				t.Errorf("error reveals the signature: %v", err)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	text := signTest(t, func(in *SignInput) {
		in.AccessKeyID, in.SecretAccessKey, in.SessionToken = testTempID, testTempSec, testSession
		in.Expires = 300 * time.Second
		in.DBUser = "Ünïcode user/with:odd=chars&more"
		in.Endpoint = "[2001:db8::1]:3306"
	})
	tok, err := Parse(text + "&Extra=kept")
	if err != nil {
		t.Fatal(err)
	}
	want := Token{
		Endpoint: "[2001:db8::1]:3306", Host: "2001:db8::1", Port: "3306",
		DBUser: "Ünïcode user/with:odd=chars&more", AccessKeyID: testTempID, Region: testRegion,
		Date: testNow, Expires: 300 * time.Second,
	}
	if tok.Endpoint != want.Endpoint || tok.Host != want.Host || tok.Port != want.Port ||
		tok.DBUser != want.DBUser || tok.AccessKeyID != want.AccessKeyID || tok.Region != want.Region ||
		!tok.Date.Equal(want.Date) || tok.Expires != want.Expires {
		t.Errorf("Parse = %s\nwant  %s", tok, want)
	}
	if !tok.Temporary() || tok.sessionToken != testSession {
		t.Error("session token not parsed")
	}
	if !tok.ExpiresAt().Equal(testNow.Add(300 * time.Second)) {
		t.Errorf("ExpiresAt = %v", tok.ExpiresAt())
	}
	last := tok.params[len(tok.params)-1]
	if last.key != "Extra" || last.value != "kept" {
		t.Errorf("unknown parameter not kept for signing: %v", last)
	}
}

func TestTokenID(t *testing.T) {
	v := loadVectors(t).Tokens[0]
	tok, err := Parse(v.Token)
	if err != nil {
		t.Fatal(err)
	}
	// sha256("a25863d4…67594")[:6], computed independently with sha256sum.
	const want = "9945fca832af"
	if got := tok.ID(); got != want {
		t.Errorf("ID = %s, want %s", got, want)
	}
	again, _ := Parse(strings.Replace(v.Token, "/?", "?", 1))
	if again.ID() != tok.ID() {
		t.Error("ID depends on more than the signature")
	}
}

func TestTokenNeverPrintsSecrets(t *testing.T) {
	text := signTest(t, func(in *SignInput) {
		in.AccessKeyID, in.SecretAccessKey, in.SessionToken = testTempID, testTempSec, testSession
	})
	tok, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("login", "token", tok, "value", *tok)
	j, _ := json.Marshal(tok)
	outputs := map[string]string{
		"%v": fmt.Sprintf("%v", tok), "%+v": fmt.Sprintf("%+v", tok), "%#v": fmt.Sprintf("%#v", tok),
		"%s": fmt.Sprintf("%s", *tok), "%x": fmt.Sprintf("%x", tok), "slog": logBuf.String(), "json": string(j),
	}
	encodedSession := URIEncode(testSession)
	for name, out := range outputs {
		for _, secret := range []string{sigHex(tok), testSession, encodedSession, testTempSec} {
			if strings.Contains(out, secret) {
				t.Errorf("%s output reveals a secret: %s", name, out)
			}
		}
	}
	if !strings.Contains(outputs["%v"], tok.ID()) || !strings.Contains(logBuf.String(), tok.ID()) {
		t.Errorf("token output lacks its ID: %s / %s", outputs["%v"], logBuf.String())
	}
}

func TestURIEncode(t *testing.T) {
	cases := map[string]string{
		"":                    "",
		"AZaz09-._~":          "AZaz09-._~",
		"jane doe+x":          "jane%20doe%2Bx",
		"a/b=c&d":             "a%2Fb%3Dc%26d",
		"é":                   "%C3%A9",
		"%":                   "%25",
		"*'()!":               "%2A%27%28%29%21",
		"FQoGZXIvYXdzE+/abc=": "FQoGZXIvYXdzE%2B%2Fabc%3D",
	}
	for in, want := range cases {
		if got := URIEncode(in); got != want {
			t.Errorf("URIEncode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKindCodesDistinct(t *testing.T) {
	seen := map[string]Kind{}
	for k := TooLarge; k <= SignatureMismatch; k++ {
		code := k.String()
		if strings.HasPrefix(code, "Kind(") {
			t.Errorf("kind %d has no code", k)
		}
		if prev, dup := seen[code]; dup {
			t.Errorf("kinds %d and %d share code %s", prev, k, code)
		}
		seen[code] = k
	}
	if Expired.String() != "ExpiredToken" || SignatureMismatch.String() != "InvalidSignature" {
		t.Error("codes named in audit.md changed")
	}
	if Kind(200).String() != "Kind(200)" {
		t.Error("unknown kind not shown as a number")
	}
}
