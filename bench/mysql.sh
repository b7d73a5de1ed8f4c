#!/usr/bin/env bash
# bench/mysql.sh: a primary-key lookup workload (bench/mysqlbench, with
# go-sql-driver/mysql) against a throwaway MariaDB
#   1. directly, in plaintext;
#   2. through leproxy (protocol mysql, local CA), TLS verified for the
#      route's name, plaintext from leproxy to MariaDB;
#   3. with MariaDB's own TLS (self-signed ECDSA P-256), verified;
#   4. through bench/floor -mysql, the smallest Go relay that does MySQL's
#      TLS upgrade: the floor of what a Go relay costs;
# in ROUNDS interleaved rounds, and prints the median rates, the median CPU
# leproxy and the floor used per query (its utime+stime from /proc over the run, divided
# by the queries) and the ratios.
#
# Usage: bench/mysql.sh            (from anywhere; builds leproxy from this checkout)
# Knobs (environment): DURATION=10s CLIENTS=4 KEYS=1000 ROUNDS=3
#   COLUMNS="direct mariadb-tls leproxy floor"  which to run
#   PPROF=dir  save leproxy's CPU and allocation profiles of the first round there
#   CONNECT=1  a new connection for every query: measures the handshakes
#   PREPARE=1  prepared statements (prepare, execute, close: two round trips
#              per query); by default each query is one COM_QUERY, one round
#              trip, the shape of pgbench -S
# Needs: MariaDB server (Debian: mariadb-server, mariadb-client), openssl, go.
# Run as root (the server runs as the mysql user) or as an ordinary user.
set -euo pipefail

DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-4}
KEYS=${KEYS:-1000}
CONNECT=${CONNECT:-0}
PREPARE=${PREPARE:-0}
ROUNDS=${ROUNDS:-3}
PPROF=${PPROF:-}
PROXY_HOST=db.localhost          # a .localhost name: leproxy's local CA issues it
# Where leproxy keeps its local CA's root certificate, relative to -cache.
LOCAL_CA_ROOT=${LOCAL_CA_ROOT:-local-ca/root.pem}

REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
PATH=$PATH:/usr/sbin
for tool in mariadbd mariadb-install-db mariadb openssl go; do
	command -v "$tool" >/dev/null || { echo "mysql.sh: $tool not found (Debian: mariadb-server, mariadb-client, openssl)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/leproxy-bench.XXXXXX)
chmod 755 "$WORK"
DATA=$WORK/data
CACHE=$WORK/cache
SOCK=$WORK/my.sock
MARIADB_PID=
LEPROXY_PID=
FLOOR_PID=

cleanup() {
	[[ -n $LEPROXY_PID ]] && kill "$LEPROXY_PID" 2>/dev/null && wait "$LEPROXY_PID" 2>/dev/null
	[[ -n $FLOOR_PID ]] && kill "$FLOOR_PID" 2>/dev/null && wait "$FLOOR_PID" 2>/dev/null
	[[ -n $MARIADB_PID ]] && kill "$MARIADB_PID" 2>/dev/null && wait "$MARIADB_PID" 2>/dev/null
	rm -rf "$WORK" "/tmp/bench-ports.$$"
}
trap cleanup EXIT

DB_PORT=$(free_port)
PROXY_PORT=$(free_port)
FLOOR_PORT=$(free_port)
HTTPS_PORT=$(free_port)
DEBUG_PORT=$(free_port)

user_args=()
if [[ $(id -u) -eq 0 ]]; then
	user_args=(--user=mysql)
	chown mysql: "$WORK"
fi
common=(--datadir="$DATA" --skip-name-resolve --innodb-log-file-size=32M --innodb-buffer-pool-size=128M)

echo "== MariaDB $(mariadbd --version | awk '{print $3}') on 127.0.0.1:$DB_PORT, work dir $WORK"
mariadb-install-db --no-defaults "${user_args[@]}" "${common[@]}" --skip-test-db >"$WORK/install.log" 2>&1 ||
	{ cat "$WORK/install.log" >&2; exit 1; }
self_signed "$WORK/server.key" "$WORK/server.crt" DNS:localhost
[[ $(id -u) -eq 0 ]] && chown mysql: "$WORK/server.key" "$WORK/server.crt"
mariadbd --no-defaults "${user_args[@]}" "${common[@]}" --bind-address=127.0.0.1 --port="$DB_PORT" \
	--socket="$SOCK" --pid-file="$WORK/my.pid" --log-error="$WORK/mariadb.log" --max-connections=500 \
	--ssl-cert="$WORK/server.crt" --ssl-key="$WORK/server.key" 2>>"$WORK/mariadb.log" &
MARIADB_PID=$!
sql() { mariadb --no-defaults --socket="$SOCK" --user=root --batch --skip-column-names -e "$1"; }
for _ in $(seq 300); do
	sql 'SELECT 1' >/dev/null 2>&1 && break
	kill -0 "$MARIADB_PID" 2>/dev/null || { cat "$WORK/mariadb.log" >&2; exit 1; }
	sleep 0.1
done
sql "CREATE DATABASE bench;
CREATE USER bench@'%' IDENTIFIED BY 'bench';
GRANT ALL ON bench.* TO bench@'%';
CREATE TABLE bench.kv (k INT PRIMARY KEY, v VARCHAR(64));
INSERT INTO bench.kv SELECT seq, CONCAT('value ', seq) FROM bench.seq_1_to_$KEYS;"

echo "== leproxy on 127.0.0.1:$PROXY_PORT -> 127.0.0.1:$DB_PORT"
(cd "$REPO" && go build -o "$WORK/leproxy" . && go build -o "$WORK/mysqlbench" ./bench/mysqlbench &&
	go build -o "$WORK/floor" ./bench/floor)
cat >"$WORK/mapping.yml" <<YAML
tcp:
  - listen: "127.0.0.1:$PROXY_PORT"
    protocol: mysql
    default: $PROXY_HOST
    routes:
      $PROXY_HOST: "127.0.0.1:$DB_PORT"
YAML
"$WORK/leproxy" -map "$WORK/mapping.yml" -cache "$CACHE" -acme local -debug-addr "127.0.0.1:$DEBUG_PORT" \
	-addr "127.0.0.1:$HTTPS_PORT" -http "" -log-level warn 2>"$WORK/leproxy.log" &
LEPROXY_PID=$!
"$WORK/floor" -mysql -listen "127.0.0.1:$FLOOR_PORT" -backend "127.0.0.1:$DB_PORT" \
	-cert "$WORK/server.crt" -key "$WORK/server.key" 2>"$WORK/floor.log" &
FLOOR_PID=$!
declare -A PID=([leproxy]=$LEPROXY_PID [floor]=$FLOOR_PID)

declare -A ARGS
ARGS[direct]="-addr 127.0.0.1:$DB_PORT"
ARGS[leproxy]="-addr 127.0.0.1:$PROXY_PORT -ca $CACHE/$LOCAL_CA_ROOT -server-name $PROXY_HOST"
ARGS[mariadb-tls]="-addr 127.0.0.1:$DB_PORT -ca $WORK/server.crt -server-name localhost"
ARGS[floor]="-addr 127.0.0.1:$FLOOR_PORT -ca $WORK/server.crt -server-name localhost"
PROXY=(${ARGS[leproxy]})

ready=
for _ in $(seq 100); do
	if [[ -f $CACHE/$LOCAL_CA_ROOT ]] && "$WORK/mysqlbench" "${PROXY[@]}" -duration 100ms -clients 1 >/dev/null 2>&1; then
		ready=1
		break
	fi
	kill -0 "$LEPROXY_PID" 2>/dev/null || break
	sleep 0.1
done
if [[ -z $ready ]]; then
	echo "leproxy did not come up; its log:" >&2
	cat "$WORK/leproxy.log" >&2
	exit 1
fi

# run NAME ROUND: one mysqlbench run; records its rate and, for leproxy,
# its CPU per query.
declare -A QPS CPU
run() {
	local col=$1 round=$2 flags=(-clients "$CLIENTS" -keys "$KEYS" -duration "$DURATION")
	[[ $CONNECT == 1 ]] && flags+=(-connect)
	[[ $PREPARE == 1 ]] && flags+=(-prepare)
	local t0 t1 out prof= tag=mysql$([[ $CONNECT == 1 ]] && echo -C)
	local pid=${PID[$col]:-}
	[[ -n $pid ]] && t0=$(cpu_ticks "$pid")
	if [[ -n $PPROF && $col == leproxy && $round == 1 ]]; then
		mkdir -p "$PPROF"
		curl -s -o "$PPROF/$tag.cpu.pprof" \
			"http://127.0.0.1:$DEBUG_PORT/debug/pprof/profile?seconds=$(( ${DURATION%s} - 2 ))" &
		prof=$!
	fi
	# shellcheck disable=SC2086
	out=$("$WORK/mysqlbench" "${flags[@]}" ${ARGS[$col]} 2>&1) || { echo "mysqlbench $col failed: $out" >&2; exit 1; }
	[[ -n $pid ]] && t1=$(cpu_ticks "$pid")
	if [[ -n $prof ]]; then
		wait "$prof"
		curl -s -o "$PPROF/$tag.allocs.pprof" "http://127.0.0.1:$DEBUG_PORT/debug/pprof/allocs"
	fi
	local qps n cpu=-
	read -r qps n <<<"$out"
	QPS[$col]+=" $qps"
	[[ -n $pid ]] && cpu=$(us_per $((t1 - t0)) "$n") && CPU[$col]+=" $cpu"
	printf '  round %d %-12s %10.0f queries/s  %8s us CPU/query\n' "$round" "$col" "$qps" "$cpu"
}

COLUMNS=${COLUMNS:-direct mariadb-tls leproxy floor}
mode="primary-key lookups, $CLIENTS clients, $DURATION, $ROUNDS rounds"
[[ $CONNECT == 1 ]] && mode+=", new connection per query"
[[ $PREPARE == 1 ]] && mode+=", prepared statements"
echo "== mysqlbench ($mode)"
for round in $(seq "$ROUNDS"); do
	for col in $COLUMNS; do run "$col" "$round"; done
done
echo "== medians"
declare -A M
for col in $COLUMNS; do
	# shellcheck disable=SC2086
	M[$col]=$(median ${QPS[$col]})
	printf '%-12s %10.0f queries/s  %8s us proxy CPU/query\n' "$col" "${M[$col]}" "$(median ${CPU[$col]:-})"
done
echo "== ratios"
printf '%-28s %s\n' "leproxy / direct" "$(ratio "${M[leproxy]}" "${M[direct]}")"
printf '%-28s %s\n' "MariaDB TLS / direct" "$(ratio "${M[mariadb-tls]}" "${M[direct]}")"
printf '%-28s %s\n' "leproxy / MariaDB TLS" "$(ratio "${M[leproxy]}" "${M[mariadb-tls]}")"
printf '%-28s %s\n' "floor / MariaDB TLS" "$(ratio "${M[floor]:-}" "${M[mariadb-tls]}")"
printf '%-28s %s\n' "leproxy / floor rate" "$(ratio "${M[leproxy]}" "${M[floor]:-}")"
printf '%-28s %s\n' "leproxy / floor CPU" "$(ratio "$(median ${CPU[leproxy]:-})" "$(median ${CPU[floor]:-})")"
