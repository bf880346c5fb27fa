package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// GenesisHash is the prevHash of the first event of a log.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// A line of the log is the event's JSON object with prevHash as its
// second-to-last member and hash as its last:
//
//	{"eventVersion":…,…,"prevHash":"<hex>","hash":"<hex>"}\n
//
// The canonical form of the event is that line without `,"hash":"<hex>"`
// (so it still ends in "}"), and hash = hex(sha256(prevHash || canonical)).
// Verification works on the bytes as stored, never on a re-encoding, so
// any edit — a changed value, an added or removed member, a different
// spacing — changes the hash.

const (
	prevHashKey = `,"prevHash":"`
	hashKey     = `,"hash":"`
	hashHexLen  = sha256.Size * 2
	// hashSuffixLen is len(`,"hash":"` + 64 hex + `"}`).
	hashSuffixLen = len(hashKey) + hashHexLen + 2
)

// chainHash is hex(sha256(prev || canonical)).
func chainHash(prev string, canonical []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil))
}

// appendLine appends the stored line of an event whose JSON encoding
// (without prevHash and hash) is body, chained to prev, and returns the
// new line's hash.
func appendLine(dst, body []byte, prev string) ([]byte, string) {
	start := len(dst)
	dst = append(dst, body[:len(body)-1]...)
	dst = append(dst, prevHashKey...)
	dst = append(dst, prev...)
	dst = append(dst, `"}`...)
	h := chainHash(prev, dst[start:])
	dst = dst[:len(dst)-1]
	dst = append(dst, hashKey...)
	dst = append(dst, h...)
	dst = append(dst, `"}`...)
	dst = append(dst, '\n')
	return dst, h
}

// parsedLine is a stored line split into what the chain needs.
type parsedLine struct {
	canonical []byte // the event without hash, as hashed
	prev      string // its prevHash
	hash      string // its hash as stored
}

var errNotEvent = errors.New("not an audit event line (no prevHash and hash at its end)")

// splitLine splits a stored line (without its newline).
func splitLine(line []byte) (parsedLine, error) {
	n := len(line)
	if n < hashSuffixLen+len(prevHashKey)+hashHexLen+3 || !bytes.HasSuffix(line, []byte(`"}`)) {
		return parsedLine{}, errNotEvent
	}
	hs := n - hashSuffixLen
	if !bytes.Equal(line[hs:hs+len(hashKey)], []byte(hashKey)) {
		return parsedLine{}, errNotEvent
	}
	hash := string(line[hs+len(hashKey) : n-2])
	if !isHex(hash) {
		return parsedLine{}, errNotEvent
	}
	canonical := make([]byte, 0, hs+1)
	canonical = append(canonical, line[:hs]...)
	canonical = append(canonical, '}')
	// …,"prevHash":"<64 hex>"}
	ps := len(canonical) - 2 - hashHexLen - len(prevHashKey)
	if ps < 1 || !bytes.Equal(canonical[ps:ps+len(prevHashKey)], []byte(prevHashKey)) {
		return parsedLine{}, errNotEvent
	}
	prev := string(canonical[ps+len(prevHashKey) : len(canonical)-2])
	if !isHex(prev) {
		return parsedLine{}, errNotEvent
	}
	return parsedLine{canonical: canonical, prev: prev, hash: hash}, nil
}

func isHex(s string) bool {
	if len(s) != hashHexLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// check reports whether the line's stored hash matches its content.
func (p parsedLine) check() error {
	if got := chainHash(p.prev, p.canonical); got != p.hash {
		return fmt.Errorf("the event was altered: its content hashes to %.12s…, the stored hash is %.12s…", got, p.hash)
	}
	return nil
}
