// Command benchtable turns `go test -bench` output into the Markdown table
// that bench/run prints after its end-to-end measurements: every
// benchmark with its figures, and for each one the ratio to the baseline it
// is meant to be compared with, measured in the same run.
//
// The baseline of a sub-benchmark is its sibling named "direct" (the
// database without iamdb) or "off" (the feature switched off); a few
// top-level benchmarks have a named baseline (Verify against the crypto
// floor of SigV4, the cached token check against the uncached one). The
// ratio is taken on the benchmark's throughput metric when it reports one
// (logins/s, queries/s, events/s: higher is better) and otherwise on ns/op
// (time: lower is better).
//
//	go test -run '^$' -bench . ./internal/sigv4 | go run ./bench/cmd/benchtable
package main
