package policy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics and that every document it
// accepts survives the canonical round trip unchanged. The committed corpus
// in testdata/fuzz/FuzzParse is complemented by every golden policy.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var gf goldenFile
		if err := json.Unmarshal(raw, &gf); err != nil {
			f.Fatal(err)
		}
		for _, p := range gf.Policies {
			f.Add([]byte(p))
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		d, err := Parse(doc)
		if err != nil {
			if _, ok := err.(*ParseError); !ok {
				t.Fatalf("error %T is not a *ParseError: %v", err, err)
			}
			return
		}
		out, err := d.MarshalJSON()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(d, back) {
			t.Fatalf("round trip changed the document\nin:  %s\nout: %s", doc, out)
		}
		again, _ := back.MarshalJSON()
		if string(again) != string(out) {
			t.Fatalf("canonical form is not stable:\n%s\n%s", out, again)
		}
	})
}
