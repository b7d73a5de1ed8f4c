#!/usr/bin/env bash
# bench/postgres.sh: pgbench select-only (-S) against a throwaway PostgreSQL
#   direct     plaintext to PostgreSQL;
#   pg-tls     PostgreSQL's own TLS (ssl=on, self-signed ECDSA P-256), verify-full;
#   leproxy    through leproxy, verify-full with leproxy's local-CA certificate,
#              plaintext from leproxy to PostgreSQL;
#   pgbouncer  through pgbouncer in session mode with client TLS (the same
#              certificate as pg-tls), plaintext to PostgreSQL: the peer a
#              user would pick instead;
#   floor      through bench/floor, the smallest Go TLS-to-TCP relay: the
#              floor of what a Go relay costs;
# in ROUNDS interleaved rounds (each column once per round), and prints the
# median rate of each, the median CPU each proxy used per transaction (its
# utime+stime from /proc over the run, divided by the transactions), and
# the ratios.
#
# Usage: bench/postgres.sh            (from anywhere; builds leproxy from this checkout)
# Knobs (environment): DURATION=10 CLIENTS=4 JOBS=2 SCALE=1 ROUNDS=3
#   CONNECT=1  reconnect for every transaction (pgbench -C): measures the handshakes
#   COLUMNS="direct pg-tls leproxy pgbouncer floor"  which to run
#   PPROF=dir  save leproxy's CPU and allocation profiles of the first round there
#   PGBIN=/usr/lib/postgresql/15/bin  PostgreSQL server binaries (default: the newest installed)
# Needs: PostgreSQL server and client (Debian: postgresql), pgbouncer, openssl,
# curl (for PPROF), go. Run as root (the servers run as the postgres user
# through runuser) or as an ordinary user.
set -euo pipefail

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-4}
JOBS=${JOBS:-2}
SCALE=${SCALE:-1}
CONNECT=${CONNECT:-0}
ROUNDS=${ROUNDS:-3}
COLUMNS=${COLUMNS:-direct pg-tls leproxy pgbouncer floor}
PPROF=${PPROF:-}
PROXY_HOST=db.localhost          # a .localhost name: leproxy's local CA issues it
# Where leproxy keeps its local CA's root certificate, relative to -cache.
LOCAL_CA_ROOT=${LOCAL_CA_ROOT:-local-ca/root.pem}

REPO=$(cd "$(dirname "$0")/.." && pwd)
. "$REPO/bench/lib.sh"
if [[ -z ${PGBIN:-} ]]; then
	PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
	[[ -n $PGBIN ]] || PGBIN=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
fi
for tool in "$PGBIN/initdb" "$PGBIN/pg_ctl"; do
	[[ -x $tool ]] || { echo "no $tool: install the Debian package postgresql (or set PGBIN)" >&2; exit 1; }
done
PGBENCH=$(command -v pgbench || echo "$PGBIN/pgbench")
PSQL=$(command -v psql || echo "$PGBIN/psql")
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 1; }
[[ " $COLUMNS " != *" pgbouncer "* || -x $PGBOUNCER ]] || { echo "pgbouncer not found (Debian: pgbouncer)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/leproxy-bench.XXXXXX)
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
CACHE=$WORK/cache
pids=()

as_pg() {
	if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
	# pgbouncer runs under runuser, which does not pass a signal on.
	[[ -s $WORK/pgbouncer.pid ]] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[[ -f $PGDATA/postmaster.pid ]] && (cd "$WORK" && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1)
	rm -rf "$WORK" "/tmp/bench-ports.$$"
}
trap cleanup EXIT

PG_PORT=$(free_port)
PROXY_PORT=$(free_port)
HTTPS_PORT=$(free_port)
DEBUG_PORT=$(free_port)
BOUNCER_PORT=$(free_port)
FLOOR_PORT=$(free_port)

echo "== PostgreSQL $(basename "$(dirname "$PGBIN")") on 127.0.0.1:$PG_PORT, work dir $WORK"
[[ $(id -u) -eq 0 ]] && chown postgres: "$WORK"
(cd "$WORK" && as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null)
self_signed "$WORK/server.key" "$WORK/server.crt" DNS:localhost
chmod 600 "$WORK/server.key"
cp "$WORK/server.key" "$WORK/server.crt" "$PGDATA/"
cp "$WORK/server.crt" "$WORK/pg-root.pem"
[[ $(id -u) -eq 0 ]] && chown postgres: "$PGDATA/server.key" "$PGDATA/server.crt" "$WORK/server.key" "$WORK/server.crt"
(cd "$WORK" && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w \
	-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $WORK -c ssl=on -c max_connections=200" start >/dev/null)

DIRECT="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres sslmode=disable"
"$PGBENCH" -i -q -s "$SCALE" "$DIRECT" >/dev/null 2>&1

echo "== leproxy on 127.0.0.1:$PROXY_PORT, pgbouncer on :$BOUNCER_PORT, floor on :$FLOOR_PORT -> 127.0.0.1:$PG_PORT"
(cd "$REPO" && go build -o "$WORK/leproxy" . && go build -o "$WORK/floor" ./bench/floor)
cat >"$WORK/mapping.yml" <<YAML
tcp:
  - listen: "127.0.0.1:$PROXY_PORT"
    protocol: postgres
    default: $PROXY_HOST
    routes:
      $PROXY_HOST: "127.0.0.1:$PG_PORT"
YAML
"$WORK/leproxy" -map "$WORK/mapping.yml" -cache "$CACHE" -acme local -debug-addr "127.0.0.1:$DEBUG_PORT" \
	-addr "127.0.0.1:$HTTPS_PORT" -http "" -log-level warn 2>"$WORK/leproxy.log" &
LEPROXY_PID=$!
pids+=("$LEPROXY_PID")

echo '"postgres" ""' >"$WORK/userlist.txt"
cat >"$WORK/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
client_tls_sslmode = require
client_tls_cert_file = $WORK/server.crt
client_tls_key_file = $WORK/server.key
logfile = $WORK/pgbouncer.log
log_connections = 0
log_disconnections = 0
pidfile = $WORK/pgbouncer.pid
INI
[[ $(id -u) -eq 0 ]] && chown postgres: "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
BOUNCER_PID=
if [[ " $COLUMNS " == *" pgbouncer "* ]]; then
	as_pg "$PGBOUNCER" "$WORK/pgbouncer.ini" 2>"$WORK/pgbouncer-stderr.log" &
	pids+=($!)
fi

"$WORK/floor" -pg -listen "127.0.0.1:$FLOOR_PORT" -backend "127.0.0.1:$PG_PORT" \
	-cert "$WORK/server.crt" -key "$WORK/server.key" 2>"$WORK/floor.log" &
FLOOR_PID=$!
pids+=("$FLOOR_PID")

declare -A CONNINFO PID
CONNINFO[direct]=$DIRECT
CONNINFO[pg-tls]="host=localhost hostaddr=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres sslmode=verify-full sslrootcert=$WORK/pg-root.pem"
CONNINFO[leproxy]="host=$PROXY_HOST hostaddr=127.0.0.1 port=$PROXY_PORT user=postgres dbname=postgres sslmode=verify-full sslrootcert=$CACHE/$LOCAL_CA_ROOT"
CONNINFO[pgbouncer]="host=localhost hostaddr=127.0.0.1 port=$BOUNCER_PORT user=postgres dbname=postgres sslmode=verify-full sslrootcert=$WORK/pg-root.pem"
CONNINFO[floor]="host=localhost hostaddr=127.0.0.1 port=$FLOOR_PORT user=postgres dbname=postgres sslmode=verify-full sslrootcert=$WORK/pg-root.pem"
PID[leproxy]=$LEPROXY_PID
PID[floor]=$FLOOR_PID

for col in $COLUMNS; do
	ready=
	for _ in $(seq 100); do
		if { [[ $col != leproxy ]] || [[ -f $CACHE/$LOCAL_CA_ROOT ]]; } && "$PSQL" -X -Atq -d "${CONNINFO[$col]}" -c 'select 1' >/dev/null 2>&1; then
			ready=1
			break
		fi
		sleep 0.1
	done
	[[ -n $ready ]] || { echo "$col did not come up; logs:" >&2; cat "$WORK"/*.log >&2; exit 1; }
done
# pgbouncer's own process, not runuser's.
[[ " $COLUMNS " == *" pgbouncer "* ]] && PID[pgbouncer]=$(cat "$WORK/pgbouncer.pid")

# run NAME ROUND: one pgbench run; records its rate and, for a proxy, its
# CPU per transaction.
declare -A TPS CPU
run() {
	local col=$1 round=$2 flags=(-S -n -T "$DURATION" -c "$CLIENTS" -j "$JOBS")
	[[ $CONNECT == 1 ]] && flags+=(-C)
	local pid=${PID[$col]:-} t0=0 t1 out prof=
	[[ -n $pid ]] && t0=$(cpu_ticks "$pid")
	if [[ -n $PPROF && $col == leproxy && $round == 1 ]]; then
		mkdir -p "$PPROF"
		curl -s -o "$PPROF/postgres$([[ $CONNECT == 1 ]] && echo -C).cpu.pprof" \
			"http://127.0.0.1:$DEBUG_PORT/debug/pprof/profile?seconds=$((DURATION - 2))" &
		prof=$!
	fi
	out=$("$PGBENCH" "${flags[@]}" "${CONNINFO[$col]}" 2>&1) || { echo "pgbench $col failed:" >&2; echo "$out" >&2; exit 1; }
	[[ -n $pid ]] && t1=$(cpu_ticks "$pid")
	if [[ -n $prof ]]; then
		wait "$prof"
		curl -s -o "$PPROF/postgres$([[ $CONNECT == 1 ]] && echo -C).allocs.pprof" "http://127.0.0.1:$DEBUG_PORT/debug/pprof/allocs"
	fi
	local tps n
	tps=$(awk '/^tps = / { print $3; exit }' <<<"$out")
	n=$(awk '/^number of transactions actually processed:/ { print $6; exit }' <<<"$out")
	TPS[$col]+=" $tps"
	local cpu=-
	[[ -n $pid ]] && cpu=$(us_per $((t1 - t0)) "$n") && CPU[$col]+=" $cpu"
	printf '  round %d %-10s %10.0f tps  %8s us CPU/txn\n' "$round" "$col" "$tps" "$cpu"
}

mode="select-only, $CLIENTS clients, $JOBS threads, ${DURATION}s, $ROUNDS rounds"
[[ $CONNECT == 1 ]] && mode+=", new connection per transaction"
echo "== pgbench ($mode)"
for round in $(seq "$ROUNDS"); do
	for col in $COLUMNS; do run "$col" "$round"; done
done

echo "== medians"
declare -A M C
for col in $COLUMNS; do
	# shellcheck disable=SC2086
	M[$col]=$(median ${TPS[$col]})
	# shellcheck disable=SC2086
	C[$col]=$(median ${CPU[$col]:-})
	printf '%-10s %10.0f tps  %8s us proxy CPU/txn\n' "$col" "${M[$col]}" "${C[$col]}"
done
echo "== ratios (rate; CPU per transaction)"
pr() { printf '%-28s %s\n' "$1" "$2"; }
has() { [[ " $COLUMNS " == *" $1 "* ]]; }
for p in leproxy pgbouncer floor; do
	has "$p" || continue
	has direct && pr "$p / direct" "$(ratio "${M[$p]}" "${M[direct]}")"
	has pg-tls && pr "$p / pg-tls" "$(ratio "${M[$p]}" "${M[pg-tls]}")"
done
has pg-tls && has direct && pr "pg-tls / direct" "$(ratio "${M[pg-tls]}" "${M[direct]}")"
if has leproxy && has pgbouncer; then
	pr "leproxy / pgbouncer rate" "$(ratio "${M[leproxy]}" "${M[pgbouncer]}")   (target >= 1.0)"
	pr "leproxy / pgbouncer CPU" "$(ratio "${C[leproxy]}" "${C[pgbouncer]}")   (target <= $([[ $CONNECT == 1 ]] && echo 1.2 || echo 1.0))"
fi
if has leproxy && has floor; then
	pr "leproxy / floor rate" "$(ratio "${M[leproxy]}" "${M[floor]}")"
	pr "leproxy / floor CPU" "$(ratio "${C[leproxy]}" "${C[floor]}")"
fi
