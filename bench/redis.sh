#!/usr/bin/env bash
# Redis through leproxy, measured with redis-benchmark three ways:
#
#   direct     plaintext to redis-server
#   leproxy    TLS to leproxy (protocol redis, local CA), plaintext to redis-server
#   redis-tls  TLS to redis-server's own tls-port
#   stunnel    TLS to stunnel4 in front of the plaintext port: the peer a
#              user would pick instead
#   floor      TLS to bench/floor, the smallest Go TLS-to-TCP relay
#
# in ROUNDS interleaved rounds, and prints the median rate of each test,
# the median CPU each proxy used per request (utime+stime from /proc over
# the run, divided by the requests) and the ratios: each proxy against
# direct (the cost of TLS plus the hop), against redis-tls (the hop
# compared with TLS in Redis itself), and leproxy against stunnel.
#
# Needs redis-server, redis-benchmark (redis-tools), stunnel4, openssl,
# curl and Go.
# Knobs (environment): N requests per test (100000), C clients (50),
# P pipeline depth (1), TESTS (ping_mbulk,set,get), THREADS for
# redis-benchmark (1), ROUNDS (3), COLUMNS (direct redis-tls leproxy
# stunnel floor), PPROF=dir (leproxy's CPU profile of the first round's GET).
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
ROUNDS=${ROUNDS:-3}
COLUMNS=${COLUMNS:-direct redis-tls leproxy stunnel floor}
PPROF=${PPROF:-}

for bin in redis-server redis-benchmark stunnel4 openssl go curl; do
	command -v "$bin" >/dev/null || { echo "redis.sh: $bin not found (Debian: redis-server, redis-tools, stunnel4, openssl, curl)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work" "/tmp/bench-ports.$$"
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
debug_port=$(free_port)
stunnel_port=$(free_port)
floor_port=$(free_port)

echo "building leproxy"
go build -o "$work/leproxy" .
go build -o "$work/floor" ./bench/floor

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
"$work/leproxy" -map "$work/mapping.yml" -cache "$work/cache" -acme local -debug-addr "127.0.0.1:$debug_port" \
	-addr "127.0.0.1:$https_port" -http "" -log-level warn 2>"$work/leproxy.log" &
pids+=($!)
declare -A pid
pid[leproxy]=$!

# stunnel with the certificate Redis's own TLS uses, in the foreground so
# that its pid is the one measured.
cat >"$work/stunnel.conf" <<STUNNEL
foreground = yes
pid =
output = $work/stunnel.log
[redis]
accept = 127.0.0.1:$stunnel_port
connect = 127.0.0.1:$redis_port
cert = $work/redis.crt
key = $work/redis.key
STUNNEL
stunnel4 "$work/stunnel.conf" 2>/dev/null &
pids+=($!)
pid[stunnel]=$!

"$work/floor" -listen "127.0.0.1:$floor_port" -backend "127.0.0.1:$redis_port" \
	-cert "$work/redis.crt" -key "$work/redis.key" 2>"$work/floor.log" &
pids+=($!)
pid[floor]=$!

wait_port "$redis_port"
wait_port "$redis_tls_port"
wait_port "$proxy_port"
wait_port "$stunnel_port"
wait_port "$floor_port"
ca="$work/cache/local-ca/root.pem"
for _ in $(seq 100); do [ -s "$ca" ] && break; sleep 0.1; done
[ -s "$ca" ] || { echo "redis.sh: no local CA at $ca" >&2; cat "$work/leproxy.log" >&2; exit 1; }

# bench NAME ROUND: one redis-benchmark run of every test; records
# requests/s per test and, for a proxy, its CPU per request.
declare -A args rps cpu
args[direct]="-p $redis_port"
args[redis-tls]="-p $redis_tls_port --tls --cacert $work/redis.crt"
args[leproxy]="-p $proxy_port --tls --cacert $ca --sni redis.localhost"
args[stunnel]="-p $stunnel_port --tls --cacert $work/redis.crt"
args[floor]="-p $floor_port --tls --cacert $work/redis.crt"
tests=$(redis-benchmark --csv -h 127.0.0.1 -p "$redis_port" -n 1 -t "$TESTS" | tail -n +2 | cut -d, -f1 | tr -d '"')
bench() {
	local name=$1 round=$2 test out t0=0 t1=0 prof=
	for test in $tests; do
		[[ -n ${pid[$name]:-} ]] && t0=$(cpu_ticks "${pid[$name]}")
		if [[ -n $PPROF && $name == leproxy && $round == 1 && $test == GET ]]; then
			mkdir -p "$PPROF"
			curl -s -o "$PPROF/redis-get.cpu.pprof" "http://127.0.0.1:$debug_port/debug/pprof/profile?seconds=1" &
			prof=$!
		fi
		# shellcheck disable=SC2086
		out=$(redis-benchmark -h 127.0.0.1 -n "$N" -c "$C" -P "$P" --threads "$THREADS" -t "$test" --csv ${args[$name]})
		[[ -n ${pid[$name]:-} ]] && t1=$(cpu_ticks "${pid[$name]}")
		if [[ -n $prof ]]; then wait "$prof"; prof=; fi
		local rate us=-
		rate=$(tail -n 1 <<<"$out" | cut -d, -f2 | tr -d '"')
		rps[$name,$test]+=" $rate"
		if [[ -n ${pid[$name]:-} ]]; then
			us=$(us_per $((t1 - t0)) "$N")
			cpu[$name,$test]+=" $us"
		fi
		printf '  round %d %-10s %-12s %12s requests/s %8s us CPU/request\n' "$round" "$name" "$test" "$rate" "$us"
	done
}

# One warm-up round through leproxy fetches its certificate.
redis-benchmark -h 127.0.0.1 -p "$proxy_port" --tls --cacert "$ca" --sni redis.localhost -n 1000 -c 1 -t ping -q >/dev/null

echo "--- redis-benchmark (N=$N C=$C P=$P, $ROUNDS rounds)"
for round in $(seq "$ROUNDS"); do
	for col in $COLUMNS; do bench "$col" "$round"; done
done

has() { [[ " $COLUMNS " == *" $1 "* ]]; }
declare -A m c
echo "--- medians: requests/s (proxy CPU us/request)"
printf '%-12s' test
for col in $COLUMNS; do printf ' %22s' "$col"; done
echo
for test in $tests; do
	printf '%-12s' "$test"
	for col in $COLUMNS; do
		# shellcheck disable=SC2086
		m[$col,$test]=$(median ${rps[$col,$test]})
		# shellcheck disable=SC2086
		c[$col,$test]=$(median ${cpu[$col,$test]:-})
		printf ' %22s' "${m[$col,$test]} (${c[$col,$test]})"
	done
	echo
done
echo "--- ratios (rate; CPU per request)"
for test in $tests; do
	for p in leproxy stunnel floor; do
		has "$p" || continue
		has direct && printf '%-12s %-26s %s\n' "$test" "$p / direct" "$(ratio "${m[$p,$test]}" "${m[direct,$test]}")"
		has redis-tls && printf '%-12s %-26s %s\n' "$test" "$p / redis-tls" "$(ratio "${m[$p,$test]}" "${m[redis-tls,$test]}")"
	done
	if has leproxy && has stunnel; then
		printf '%-12s %-26s %s\n' "$test" "leproxy / stunnel rate" "$(ratio "${m[leproxy,$test]}" "${m[stunnel,$test]}")   (target >= 1.0)"
		printf '%-12s %-26s %s\n' "$test" "leproxy / stunnel CPU" "$(ratio "${c[leproxy,$test]}" "${c[stunnel,$test]}")   (target < 1.0)"
	fi
	if has leproxy && has floor; then
		printf '%-12s %-26s %s\n' "$test" "leproxy / floor CPU" "$(ratio "${c[leproxy,$test]}" "${c[floor,$test]}")"
	fi
done
