#!/usr/bin/env bash
# Redis through leproxy, measured with redis-benchmark three ways:
#
#   direct     plaintext to redis-server
#   leproxy    TLS to leproxy (protocol redis, local CA), plaintext to redis-server
#   redis-tls  TLS to redis-server's own tls-port
#
# and the ratios leproxy/direct (the cost of TLS plus the proxy hop) and
# leproxy/redis-tls (the cost of the hop compared with TLS in Redis itself).
#
# Needs redis-server, redis-benchmark (redis-tools), openssl and Go.
# Knobs (environment): N requests per test (100000), C clients (50),
# P pipeline depth (1), TESTS (ping_mbulk,set,get), THREADS for
# redis-benchmark (1).
#
#     bench/redis.sh
#     N=200000 C=100 P=16 bench/redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

N=${N:-100000}
C=${C:-50}
P=${P:-1}
TESTS=${TESTS:-ping_mbulk,set,get}
THREADS=${THREADS:-1}

for bin in redis-server redis-benchmark openssl go; do
	command -v "$bin" >/dev/null || { echo "redis.sh: $bin not found (Debian: redis-server, redis-tools, openssl)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# wait_port waits for a listener on 127.0.0.1:$1.
wait_port() {
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "redis.sh: nothing listening on 127.0.0.1:$1" >&2
	exit 1
}

redis_port=$(free_port)
redis_tls_port=$(free_port)
proxy_port=$(free_port)
https_port=$(free_port)

echo "building leproxy"
go build -o "$work/leproxy" .

# Redis's own TLS uses a P-256 certificate, as leproxy's does.
self_signed "$work/redis.key" "$work/redis.crt" IP:127.0.0.1

redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
	--tls-port "$redis_tls_port" --tls-cert-file "$work/redis.crt" --tls-key-file "$work/redis.key" \
	--tls-auth-clients no --logfile "$work/redis.log" &
pids+=($!)

cat >"$work/mapping.yml" <<EOF
tcp:
  - listen: "127.0.0.1:$proxy_port"
    protocol: redis
    default: redis.localhost
    routes:
      redis.localhost: 127.0.0.1:$redis_port
EOF
"$work/leproxy" -map "$work/mapping.yml" -cache "$work/cache" -acme local \
	-addr "127.0.0.1:$https_port" -http "" -log-level warn 2>"$work/leproxy.log" &
pids+=($!)

wait_port "$redis_port"
wait_port "$redis_tls_port"
wait_port "$proxy_port"
ca="$work/cache/local-ca/root.pem"
for _ in $(seq 100); do [ -s "$ca" ] && break; sleep 0.1; done
[ -s "$ca" ] || { echo "redis.sh: no local CA at $ca" >&2; cat "$work/leproxy.log" >&2; exit 1; }

# bench NAME ARGS... runs redis-benchmark and records requests/s per test.
declare -A rps
bench() {
	local name=$1
	shift
	echo "--- $name"
	local out
	out=$(redis-benchmark -h 127.0.0.1 -n "$N" -c "$C" -P "$P" --threads "$THREADS" -t "$TESTS" --csv "$@")
	while IFS=, read -r test rate _; do
		test=${test//\"/}
		rate=${rate//\"/}
		[ "$test" = test ] && continue
		rps[$name,$test]=$rate
		printf '%-12s %12s requests/s\n' "$test" "$rate"
	done <<<"$out"
}

# One warm-up round through leproxy fetches its certificate.
redis-benchmark -h 127.0.0.1 -p "$proxy_port" --tls --cacert "$ca" --sni redis.localhost -n 1000 -c 1 -t ping -q >/dev/null

bench direct -p "$redis_port"
bench leproxy -p "$proxy_port" --tls --cacert "$ca" --sni redis.localhost
bench redis-tls -p "$redis_tls_port" --tls --cacert "$work/redis.crt"

echo "--- ratios (N=$N C=$C P=$P)"
printf '%-12s %18s %20s\n' test leproxy/direct leproxy/redis-tls
for test in $(redis-benchmark --csv -h 127.0.0.1 -p "$redis_port" -n 1 -t "$TESTS" | tail -n +2 | cut -d, -f1 | tr -d '"'); do
	printf '%-12s %18s %20s\n' "$test" \
		"$(awk -v a="${rps[leproxy,$test]}" -v b="${rps[direct,$test]}" 'BEGIN { printf "%.2f", a / b }')" \
		"$(awk -v a="${rps[leproxy,$test]}" -v b="${rps[redis-tls,$test]}" 'BEGIN { printf "%.2f", a / b }')"
done
