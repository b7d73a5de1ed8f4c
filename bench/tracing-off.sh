#!/usr/bin/env bash
# tracing-off.sh: what leproxy's tracing code costs on the HTTPS hot path
# when tracing is off. It builds internal/httpproxy's benchmarks twice,
# from BASE (default main, a tree without the tracing code; this tree's
# serve_bench_test.go is copied in, as it only uses the API both have) and
# from this work tree, runs them in ROUNDS interleaved rounds (base head,
# head base, …; default 10) and prints ns/op and allocs/op of each round
# and their medians. BENCHES lists the benchmarks (NAME/SUB), each run in a
# process of its own so that one's leftovers do not weigh on the next;
# BENCHTIME is their length.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-main}
ROUNDS=${ROUNDS:-10}
BENCHES=${BENCHES:-BenchmarkServeHTTP/notfound BenchmarkServeHTTP/static BenchmarkGET/proxied}
BENCHTIME=${BENCHTIME:-1s}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/base"
git archive "$BASE" | tar -x -C "$work/base"
cp internal/httpproxy/serve_bench_test.go "$work/base/internal/httpproxy/"
(cd "$work/base" && go test -c -o "$work/base.test" ./internal/httpproxy)
go test -c -o "$work/head.test" ./internal/httpproxy
for i in $(seq "$ROUNDS"); do
	order="base head"
	((i % 2)) || order="head base" # ABBA: neither tree always runs second
	for bench in $BENCHES; do for tree in $order; do
		(cd internal/httpproxy && "$work/$tree.test" -test.run '^$' -test.bench "^${bench%%/*}\$/^${bench#*/}\$" -test.benchmem -test.benchtime "$BENCHTIME") |
			awk -v tree="$tree" -v round="$i" '/^Benchmark/ { for (f = 1; f <= NF; f++) { if ($(f+1) == "ns/op") ns = $f; if ($(f+1) == "allocs/op") al = $f } sub(/-[0-9]+$/, "", $1); print tree, round, $1, ns, al }'
	done; done
done | tee "$work/runs"
echo
echo "medians (ns/op, allocs/op):"
sort -k3,3 -k1,1 "$work/runs" | awk '
	function median(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] > t; j--) a[j+1] = a[j]; a[j+1] = t }; return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
	{ k = $3 " " $1; n[k]++; ns[k, n[k]] = $4; al[k] = $5; keys[k] = 1 }
	END { for (k in keys) { delete v; for (i = 1; i <= n[k]; i++) v[i] = ns[k, i]; printf "%-40s %10.1f ns/op %6d allocs/op\n", k, median(v, n[k]), al[k] } }' | sort
