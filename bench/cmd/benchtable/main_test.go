package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `goos: linux
pkg: github.com/iamdb/iamdb/internal/sigv4
BenchmarkVerify-2                 	  700000	      1720 ns/op	     304 B/op	       5 allocs/op
BenchmarkVerifyCryptoFloorStdlib-2	 1800000	       656 ns/op
PASS
pkg: github.com/iamdb/iamdb/internal/proxy/pgproxy
BenchmarkLogin/iamdb-2            	     400	   5000000 ns/op	       200.0 logins/s
BenchmarkLogin/iamdb+audit-2      	     400	   5263158 ns/op	       190.0 logins/s
BenchmarkLogin/direct-2           	     300	   8000000 ns/op	       125.0 logins/s
BenchmarkLoginAdmission/off-2     	     300	   5000000 ns/op	       200.0 logins/s
BenchmarkLoginAdmission/memory-2  	     300	   5000000 ns/op	       180.0 logins/s
pkg: github.com/iamdb/iamdb/internal/admission
BenchmarkAdmission/off/new-token-2   	 1000	        10 ns/op
BenchmarkAdmission/memory/new-token-2	 1000	      1700 ns/op
--- FAIL: BenchmarkBroken
ok  	github.com/iamdb/iamdb/internal/admission	3.1s
`

func TestTable(t *testing.T) {
	rs, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 9 {
		t.Fatalf("parsed %d results, want 9: %+v", len(rs), rs)
	}
	var out bytes.Buffer
	write(&out, rs)
	got := out.String()
	for _, want := range []string{
		"| internal/sigv4 | Verify | 1,720 |  | 5 | 2.62× the time of VerifyCryptoFloorStdlib |",
		"| internal/proxy/pgproxy | Login/iamdb | 5,000,000 | 200 logins/s |  | 1.60× logins/s of Login/direct |",
		"| internal/proxy/pgproxy | Login/iamdb+audit | 5,263,158 | 190 logins/s |  | 0.95× logins/s of Login/iamdb |",
		"| internal/proxy/pgproxy | Login/direct | 8,000,000 | 125 logins/s |  |  |",
		"| internal/proxy/pgproxy | LoginAdmission/memory | 5,000,000 | 180 logins/s |  | 0.90× logins/s of LoginAdmission/off |",
		"| internal/admission | Admission/memory/new-token | 1,700 |  |  | 170.00× the time of Admission/off/new-token |",
		"| internal/admission | Admission/off/new-token | 10 |  |  |  |",
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}
