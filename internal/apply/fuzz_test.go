package apply

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/iamdb/iamdb/internal/policy"
)

// FuzzParse checks that Parse never panics and that every document it
// accepts is one the policy parser accepts. Seeds: the files in testdata.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		check := func(d *Document) {
			if d == nil {
				return
			}
			if _, err := policy.Parse([]byte(d.JSON)); err != nil {
				t.Fatalf("accepted document %s that the policy parser rejects: %v", d.JSON, err)
			}
		}
		for _, p := range file.Policies {
			check(p.Document)
		}
		for _, r := range file.Roles {
			check(r.TrustPolicy)
			for _, d := range r.InlinePolicies {
				check(d)
			}
		}
		for _, u := range file.Users {
			for _, d := range u.InlinePolicies {
				check(d)
			}
		}
	})
}
