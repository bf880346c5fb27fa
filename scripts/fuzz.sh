#!/usr/bin/env bash
# Runs every Go fuzz target in the module for $FUZZTIME (default 20s) each.
# Seed corpora live in each package's testdata/fuzz/<Target>/ and also run as
# ordinary tests in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-20s}
found=0
for pkg in $(go list ./...); do
	targets=$(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true)
	for target in $targets; do
		found=1
		echo "== $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done
if [ "$found" = 0 ]; then
	echo "no fuzz targets found" >&2
	exit 1
fi
