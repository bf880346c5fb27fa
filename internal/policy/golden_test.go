package policy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// goldenFile is one file of testdata/golden: named policies and the cases
// that evaluate them.
type goldenFile struct {
	Comment  string                     `json:"comment"`
	Policies map[string]json.RawMessage `json:"policies"`
	Cases    []goldenCase               `json:"cases"`
}

type goldenCase struct {
	Name      string               `json:"name"`
	Identity  []string             `json:"identity"`
	Boundary  []string             `json:"boundary"`
	Session   []string             `json:"session"`
	Trust     string               `json:"trust"` // evaluate with EvaluateTrust instead
	Action    string               `json:"action"`
	Resource  string               `json:"resource"`
	Context   map[string]strOrList `json:"context"`
	Principal *PrincipalRef        `json:"principal"`
	Want      Decision             `json:"want"`
	// Matched lists "POLICY:Sid", or "POLICY:#INDEX" for a statement
	// without Sid, in evaluation order.
	Matched []string          `json:"matched"`
	Vars    map[string]string `json:"vars"` // checked when present
}

type strOrList []string

func (s *strOrList) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		return json.Unmarshal(b, (*[]string)(s))
	}
	var one string
	if err := json.Unmarshal(b, &one); err != nil {
		return err
	}
	*s = []string{one}
	return nil
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	total := 0
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var gf goldenFile
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&gf); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		docs := map[string]*Document{}
		for name, src := range gf.Policies {
			d, err := Parse(src)
			if err != nil {
				t.Fatalf("%s: policy %s: %v", file, name, err)
			}
			docs[name] = d
		}
		set := func(tc goldenCase, names []string) []Policy {
			var out []Policy
			for _, n := range names {
				d, ok := docs[n]
				if !ok {
					t.Fatalf("%s: case %q: unknown policy %q", file, tc.Name, n)
				}
				out = append(out, Policy{ID: n, Doc: d})
			}
			return out
		}
		base := strings.TrimSuffix(filepath.Base(file), ".json")
		seen := map[string]bool{}
		for _, tc := range gf.Cases {
			total++
			if seen[tc.Name] {
				t.Errorf("%s: duplicate case name %q", file, tc.Name)
			}
			seen[tc.Name] = true
			t.Run(base+"/"+tc.Name, func(t *testing.T) {
				req := Request{Action: tc.Action, Resource: tc.Resource, Context: Context{}, Principal: tc.Principal}
				if req.Action == "" {
					req.Action = "rds-db:connect"
				}
				for k, v := range tc.Context {
					req.Context[k] = v
				}
				var res Result
				if tc.Trust != "" {
					d, ok := docs[tc.Trust]
					if !ok {
						t.Fatalf("unknown trust policy %q", tc.Trust)
					}
					res = EvaluateTrust(d, req)
				} else {
					res = Evaluate(Set{
						Identity: set(tc, tc.Identity),
						Boundary: set(tc, tc.Boundary),
						Session:  set(tc, tc.Session),
					}, req)
				}
				if res.Decision != tc.Want {
					t.Errorf("decision = %s, want %s\nexplanation: %s", res.Decision, tc.Want, res.Explanation)
				}
				got := make([]string, 0, len(res.Matched))
				for _, m := range res.Matched {
					got = append(got, matchLabel(m))
				}
				want := tc.Matched
				if want == nil {
					want = []string{}
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("matched = %q, want %q\nexplanation: %s", got, want, res.Explanation)
				}
				if tc.Vars != nil && !reflect.DeepEqual(res.ResolvedVariables, tc.Vars) {
					t.Errorf("resolved variables = %v, want %v", res.ResolvedVariables, tc.Vars)
				}
				if !strings.HasPrefix(res.Explanation, string(tc.Want)+": ") {
					t.Errorf("explanation %q does not start with the decision", res.Explanation)
				}
			})
		}
	}
	if total < 150 {
		t.Errorf("only %d golden cases; the suite promises at least 150", total)
	}
}

func matchLabel(m Match) string {
	if m.Sid != "" {
		return m.SourcePolicyID + ":" + m.Sid
	}
	return fmt.Sprintf("%s:#%d", m.SourcePolicyID, m.Index)
}
