package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// result is one benchmark line.
type result struct {
	pkg     string
	name    string // without the Benchmark prefix and the -GOMAXPROCS suffix
	metrics []metric
}

type metric struct {
	value float64
	unit  string
}

// namedBaselines pairs top-level benchmarks with the one they are judged
// against (package-relative names).
var namedBaselines = map[string]string{
	"Verify":             "VerifyCryptoFloorStdlib",
	"Authenticate":       "AuthenticateUncached",
	"VerifyPort443":      "VerifyCryptoFloorStdlib",
	"VerifyRequest":      "VerifyCryptoFloorStdlib",
	"VerifyRefusedEarly": "Verify",
	// The cost of auditing: the same login with the file audit log on.
	"Login/iamdb+audit": "Login/iamdb",
}

// baselineSubs are the sub-benchmark names that are a group's baseline.
var baselineSubs = []string{"direct", "off"}

// throughputUnits are custom metrics where higher is better.
var throughputUnits = []string{"logins/s", "queries/s", "events/s", "tps"}

var procSuffix = regexp.MustCompile(`-\d+$`)

func main() {
	results, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	if len(results) == 0 {
		fmt.Fprintln(os.Stderr, "benchtable: no benchmark results on standard input")
		os.Exit(1)
	}
	write(os.Stdout, results)
}

func parse(r io.Reader) ([]result, error) {
	var out []result
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(strings.TrimSpace(p), "github.com/iamdb/iamdb/")
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		// name, iterations, then value/unit pairs.
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		res := result{pkg: pkg, name: procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			res.metrics = append(res.metrics, metric{v, f[i+1]})
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

func (r result) get(unit string) (float64, bool) {
	for _, m := range r.metrics {
		if m.unit == unit {
			return m.value, true
		}
	}
	return 0, false
}

// throughput is the result's higher-is-better metric, if any.
func (r result) throughput() (metric, bool) {
	for _, u := range throughputUnits {
		if v, ok := r.get(u); ok {
			return metric{v, u}, true
		}
	}
	return metric{}, false
}

// baseline finds the result r is compared with, if any.
func baseline(r result, all []result) (result, bool) {
	find := func(name string) (result, bool) {
		for _, o := range all {
			if o.pkg == r.pkg && o.name == name && name != r.name {
				return o, true
			}
		}
		return result{}, false
	}
	if b, ok := namedBaselines[r.name]; ok {
		return find(b)
	}
	i := strings.LastIndex(r.name, "/")
	if i < 0 {
		return result{}, false
	}
	parent, sub := r.name[:i], r.name[i+1:]
	for _, bs := range baselineSubs {
		if sub == bs {
			return result{}, false // a baseline itself
		}
		if b, ok := find(parent + "/" + bs); ok {
			return b, true
		}
		// Nested groups such as memory/new-token against off/new-token.
		if j := strings.Index(parent, "/"); j >= 0 {
			if b, ok := find(parent[:j] + "/" + bs + "/" + sub); ok {
				return b, true
			}
		}
		if b, ok := find(bs + "/" + sub); ok && strings.Count(r.name, "/") == 1 {
			return b, true
		}
	}
	return result{}, false
}

// ratio describes r against its baseline b.
func ratio(r, b result) string {
	if rt, ok := r.throughput(); ok {
		if bt, ok := b.get(rt.unit); ok && bt > 0 {
			return fmt.Sprintf("%.2f× %s of %s", rt.value/bt, rt.unit, b.name)
		}
	}
	rn, ok1 := r.get("ns/op")
	bn, ok2 := b.get("ns/op")
	if ok1 && ok2 && bn > 0 {
		return fmt.Sprintf("%.2f× the time of %s", rn/bn, b.name)
	}
	return ""
}

func write(w io.Writer, results []result) {
	fmt.Fprintln(w, "| package | benchmark | ns/op | throughput | allocs/op | compared in this run |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---|")
	for _, r := range results {
		ns := ""
		if v, ok := r.get("ns/op"); ok {
			ns = formatFloat(v)
		}
		tp := ""
		if m, ok := r.throughput(); ok {
			tp = formatFloat(m.value) + " " + m.unit
		}
		allocs := ""
		if v, ok := r.get("allocs/op"); ok {
			allocs = formatFloat(v)
		}
		cmp := ""
		if b, ok := baseline(r, results); ok {
			cmp = ratio(r, b)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.pkg, r.name, ns, tp, allocs, cmp)
	}
}

// formatFloat prints figures the way people read them: thousands
// separated, no false precision.
func formatFloat(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1000:
		return group(strconv.FormatFloat(v, 'f', 0, 64))
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func group(s string) string {
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
