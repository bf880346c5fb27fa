package sts

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeForm(t *testing.T) {
	f, err := DecodeForm("Action=AssumeRole&Version=2011-06-15&Tags.member.2.Key=b&Tags.member.2.Value=2&" +
		"Tags.member.1.Key=a&Tags.member.1.Value=1%20%2B&TransitiveTagKeys.member.10=z&TransitiveTagKeys.member.9=y&" +
		"PolicyArns.member.1.arn=arn%3Aaws%3Aiam%3A%3A1%3Apolicy%2Fp&Empty=")
	if err != nil {
		t.Fatal(err)
	}
	if f["Action"] != "AssumeRole" || !f.Has("Empty") || f.Has("Missing") {
		t.Fatalf("form %v", f)
	}
	pairs, err := f.Pairs("Tags", "Key", "Value")
	if err != nil || !reflect.DeepEqual(pairs, [][2]string{{"a", "1 +"}, {"b", "2"}}) {
		t.Fatalf("tags %v %v", pairs, err)
	}
	keys, err := f.Members("TransitiveTagKeys", "")
	if err != nil || !reflect.DeepEqual(keys, []string{"y", "z"}) {
		t.Fatalf("numeric order: %v %v", keys, err)
	}
	arns, err := f.Members("PolicyArns", "arn")
	if err != nil || !reflect.DeepEqual(arns, []string{"arn:aws:iam::1:policy/p"}) {
		t.Fatalf("policy arns %v %v", arns, err)
	}
	if none, err := f.Members("Nothing", ""); err != nil || len(none) != 0 {
		t.Fatalf("absent list: %v %v", none, err)
	}

	for name, bad := range map[string]string{
		"duplicate":  "a=1&a=2",
		"bad escape": "a=%zz",
		"empty name": "=x",
		"too large":  "a=" + strings.Repeat("x", MaxBodySize),
		"too many":   manyParams(MaxFormParams + 1),
	} {
		if _, err := DecodeForm(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, raw := range map[string]string{
		"leading zero":  "Tags.member.01.Key=a&Tags.member.01.Value=b",
		"zero":          "Tags.member.0.Key=a&Tags.member.0.Value=b",
		"not a number":  "Tags.member.x.Key=a&Tags.member.x.Value=b",
		"key only":      "Tags.member.1.Key=a",
		"unknown field": "Tags.member.1.Key=a&Tags.member.1.Value=b&Tags.member.1.Other=c",
	} {
		f, err := DecodeForm(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Pairs("Tags", "Key", "Value"); err == nil {
			t.Errorf("%s: list accepted", name)
		}
	}
	f, _ = DecodeForm("TransitiveTagKeys.member.1.Key=a")
	if _, err := f.Members("TransitiveTagKeys", ""); err == nil {
		t.Error("a field under a plain list was accepted")
	}
}

func manyParams(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString("p")
		b.WriteString(strings.Repeat("x", i%5))
		b.WriteString(string(rune('a' + i%26)))
		b.WriteString(string(rune('a' + i/26%26)))
		b.WriteString("=v")
	}
	return b.String()
}

// FuzzDecodeForm: the decoder never panics, honours its limits, and what
// it accepts survives a round trip through url.Values encoding. The list
// readers never panic on what it accepts.
func FuzzDecodeForm(f *testing.F) {
	f.Add("Action=GetCallerIdentity&Version=2011-06-15")
	f.Fuzz(func(t *testing.T, s string) {
		form, err := DecodeForm(s)
		if err != nil {
			return
		}
		if len(form) > MaxFormParams {
			t.Fatalf("%d parameters accepted", len(form))
		}
		v := url.Values{}
		for k, val := range form {
			v.Set(k, val)
		}
		again, err := DecodeForm(v.Encode())
		if err != nil || !reflect.DeepEqual(again, form) {
			t.Fatalf("round trip: %v\n%v\n%v", err, form, again)
		}
		_, _ = form.Pairs("Tags", "Key", "Value")
		_, _ = form.Members("TransitiveTagKeys", "")
		_, _ = form.Members("PolicyArns", "arn")
	})
}
