package apply

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/iamdb/iamdb/internal/identity"
)

// applier carries what steps share while a plan runs.
type applier struct {
	store   identity.Store
	account string
	arns    map[string]string // lower-case policy name → ARN, grows as policies are created
}

func (a *applier) arn(t policyTarget) (string, error) {
	if t.ARN != "" {
		return t.ARN, nil
	}
	if arn, ok := a.arns[strings.ToLower(t.Name)]; ok {
		return arn, nil
	}
	return "", fmt.Errorf("policy %q does not exist yet (its create step did not run)", t.Name)
}

func (a *applier) boundaryARN(t *policyTarget) (string, error) {
	if t == nil {
		return "", nil
	}
	return a.arn(*t)
}

// StepError reports the step at which Apply stopped. The steps before it
// were applied and stay applied; the store has no transaction spanning
// steps, but every step is atomic and a new plan starts from what is there,
// so running apply again converges.
type StepError struct {
	Step   int // 1-based
	Total  int
	Change Change
	Err    error
}

func (e *StepError) Error() string {
	return fmt.Sprintf("step %d of %d (%s) failed: %v\n%d earlier step%s applied and kept; fix the cause and run apply again: it plans from what is now in the store",
		e.Step, e.Total, e.Change, e.Err, e.Step-1, map[bool]string{true: " was", false: "s were"}[e.Step == 2])
}

func (e *StepError) Unwrap() error { return e.Err }

// Apply runs the plan's changes in order against store and stops at the
// first failure with a *StepError.
func (p *Plan) Apply(ctx context.Context, store identity.Store) error {
	a := &applier{store: store, account: p.Account, arns: map[string]string{}}
	for k, v := range p.policyARNs {
		a.arns[k] = v
	}
	for i, c := range p.Changes {
		if err := ctx.Err(); err != nil {
			return &StepError{Step: i + 1, Total: len(p.Changes), Change: c, Err: err}
		}
		if err := c.run(ctx, a); err != nil {
			return &StepError{Step: i + 1, Total: len(p.Changes), Change: c, Err: err}
		}
	}
	return nil
}

// Counts returns how many changes create, update and delete.
func (p *Plan) Counts() (create, update, del int) {
	for _, c := range p.Changes {
		switch c.Action {
		case Create:
			create++
		case Update:
			update++
		case Delete:
			del++
		}
	}
	return create, update, del
}

// Empty reports whether the account already matches the file.
func (p *Plan) Empty() bool { return len(p.Changes) == 0 }

// Summary is the plan's last line: "Plan: 3 to create, 1 to update, 0 to
// delete." or "No changes. Identities match the file."
func (p *Plan) Summary() string {
	if p.Empty() {
		return "No changes. Identities match the file."
	}
	c, u, d := p.Counts()
	return fmt.Sprintf("Plan: %d to create, %d to update, %d to delete.", c, u, d)
}

// String renders the plan for people, one change per line in the order
// Apply runs them, then what --prune kept, then the summary.
func (p *Plan) String() string {
	var b strings.Builder
	for _, c := range p.Changes {
		b.WriteString(c.String())
		b.WriteByte('\n')
	}
	for _, k := range p.Kept {
		fmt.Fprintf(&b, "kept: %s %s (%s)\n", k.Type, k.Name, k.Reason)
	}
	if b.Len() > 0 {
		b.WriteByte('\n')
	}
	b.WriteString(p.Summary())
	b.WriteByte('\n')
	return b.String()
}

type jsonChange struct {
	Action Action `json:"Action"`
	Type   string `json:"Type"`
	Name   string `json:"Name"`
	Detail string `json:"Detail,omitempty"`
	Line   int    `json:"Line,omitempty"`
}

type jsonKept struct {
	Type   string `json:"Type"`
	Name   string `json:"Name"`
	Reason string `json:"Reason"`
}

type jsonCounts struct {
	Create int `json:"Create"`
	Update int `json:"Update"`
	Delete int `json:"Delete"`
}

// MarshalJSON writes the plan for --output json:
// {"Account", "Prune", "Changes": [{"Action", "Type", "Name", "Detail", "Line"}],
// "Kept": [{"Type", "Name", "Reason"}], "Summary": {"Create", "Update", "Delete"}}.
func (p *Plan) MarshalJSON() ([]byte, error) {
	out := struct {
		Account string       `json:"Account"`
		Prune   bool         `json:"Prune"`
		Changes []jsonChange `json:"Changes"`
		Kept    []jsonKept   `json:"Kept"`
		Summary jsonCounts   `json:"Summary"`
	}{Account: p.Account, Prune: p.Prune, Changes: []jsonChange{}, Kept: []jsonKept{}}
	for _, c := range p.Changes {
		out.Changes = append(out.Changes, jsonChange{Action: c.Action, Type: c.Type, Name: c.Name, Detail: c.Detail, Line: c.Line})
	}
	for _, k := range p.Kept {
		out.Kept = append(out.Kept, jsonKept(k))
	}
	out.Summary.Create, out.Summary.Update, out.Summary.Delete = p.Counts()
	return json.Marshal(out)
}
