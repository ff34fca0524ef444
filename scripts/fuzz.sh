#!/usr/bin/env bash
# fuzz.sh: run every Go native fuzz target (func FuzzXxx) of the module,
# each for FUZZTIME (default 5s), one after the other. Targets are found
# with `go test -list '^Fuzz'` in every package whose test files declare
# a Fuzz function, so new ones are picked up without editing this file. A failing input is written by `go test` under the
# package's testdata/fuzz/FuzzXxx/ (commit it: it becomes a regression
# seed) and the script exits non-zero after trying every target.
#
#   scripts/fuzz.sh                      # every target, 5s each (make fuzz-short)
#   FUZZTIME=2m scripts/fuzz.sh          # longer (make fuzz)
#   scripts/fuzz.sh ./internal/oci       # only these packages
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
# Minimizing a new input costs up to a minute by default: keep runs bounded.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-1s}
if [ $# -eq 0 ]; then
	# Only packages with a test file declaring a Fuzz function: listing
	# every package would link every test binary of the module.
	mapfile -t pkgs < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Z0-9_]' . |
		xargs -r -n1 dirname | sort -u)
	set -- "${pkgs[@]}"
fi
[ $# -gt 0 ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }

# `go test -list` prints a package's matching names, then "ok  PKG ...".
targets=$("$GO" test -list '^Fuzz' "$@" | awk '
	/^Fuzz/ { names = names " " $1; next }
	/^ok[ \t]/ { n = split(names, a, " "); for (i = 1; i <= n; i++) print $2, a[i]; names = ""; next }
	/^(\?|FAIL)/ { names = "" }
')
if [ -z "$targets" ]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

failed=""
count=0
echo "$targets" | {
	while read -r pkg name; do
		count=$((count + 1))
		echo "== $pkg $name ($FUZZTIME)"
		if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" \
			-fuzzminimizetime "$FUZZMINIMIZETIME" "$pkg"; then
			failed="$failed $pkg.$name"
		fi
	done
	if [ -n "$failed" ]; then
		echo "fuzz.sh: failing targets:$failed" >&2
		exit 1
	fi
	echo "fuzz.sh: $count targets passed"
}
