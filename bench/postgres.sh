#!/usr/bin/env bash
# bench/postgres.sh: pgbench select-only (-S) against a throwaway PostgreSQL
#   1. directly, in plaintext;
#   2. through leproxy, sslmode=verify-full with leproxy's local-CA certificate;
#   3. with PostgreSQL's own TLS (ssl=on, self-signed ECDSA P-256), verify-full;
# and prints the three TPS figures and their ratios.
#
# Usage: bench/postgres.sh            (from anywhere; builds leproxy from this checkout)
# Knobs (environment): DURATION=10 CLIENTS=4 JOBS=2 SCALE=1
#   CONNECT=1  reconnect for every transaction (pgbench -C): measures the handshakes
#   PGBIN=/usr/lib/postgresql/15/bin  PostgreSQL server binaries (default: the newest installed)
# Needs: PostgreSQL server and client (Debian: postgresql), openssl, go. Run as root
# (the server runs as the postgres user through runuser) or as an ordinary user.
set -euo pipefail

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-4}
JOBS=${JOBS:-2}
SCALE=${SCALE:-1}
CONNECT=${CONNECT:-0}
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
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 1; }

WORK=$(mktemp -d /tmp/leproxy-bench.XXXXXX)
chmod 755 "$WORK"
PGDATA=$WORK/pgdata
CACHE=$WORK/cache
LEPROXY_PID=

as_pg() {
	if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cleanup() {
	[[ -n $LEPROXY_PID ]] && kill "$LEPROXY_PID" 2>/dev/null && wait "$LEPROXY_PID" 2>/dev/null
	[[ -f $PGDATA/postmaster.pid ]] && (cd "$WORK" && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1)
	rm -rf "$WORK"
}
trap cleanup EXIT

PG_PORT=$(free_port)
PROXY_PORT=$(free_port)
HTTPS_PORT=$(free_port)

echo "== PostgreSQL $(basename "$(dirname "$PGBIN")") on 127.0.0.1:$PG_PORT, work dir $WORK"
[[ $(id -u) -eq 0 ]] && chown postgres: "$WORK"
(cd "$WORK" && as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null)
self_signed "$PGDATA/server.key" "$PGDATA/server.crt" DNS:localhost
chmod 600 "$PGDATA/server.key"
cp "$PGDATA/server.crt" "$WORK/pg-root.pem"
[[ $(id -u) -eq 0 ]] && chown postgres: "$PGDATA/server.key" "$PGDATA/server.crt"
(cd "$WORK" && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w \
	-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $WORK -c ssl=on -c max_connections=200" start >/dev/null)

DIRECT="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres sslmode=disable"
NATIVE="host=localhost hostaddr=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres sslmode=verify-full sslrootcert=$WORK/pg-root.pem"
PROXY="host=$PROXY_HOST hostaddr=127.0.0.1 port=$PROXY_PORT user=postgres dbname=postgres sslmode=verify-full sslrootcert=$CACHE/$LOCAL_CA_ROOT"

"$PGBENCH" -i -q -s "$SCALE" "$DIRECT" >/dev/null 2>&1

echo "== leproxy on 127.0.0.1:$PROXY_PORT -> 127.0.0.1:$PG_PORT"
(cd "$REPO" && go build -o "$WORK/leproxy" .)
cat >"$WORK/mapping.yml" <<YAML
tcp:
  - listen: "127.0.0.1:$PROXY_PORT"
    protocol: postgres
    default: $PROXY_HOST
    routes:
      $PROXY_HOST: "127.0.0.1:$PG_PORT"
YAML
"$WORK/leproxy" -map "$WORK/mapping.yml" -cache "$CACHE" -acme local \
	-addr "127.0.0.1:$HTTPS_PORT" -http "" -log-level warn 2>"$WORK/leproxy.log" &
LEPROXY_PID=$!
ready=
for _ in $(seq 100); do
	if [[ -f $CACHE/$LOCAL_CA_ROOT ]] && "$PSQL" -X -Atq -d "$PROXY" -c 'select 1' >/dev/null 2>&1; then
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

bench() { # name conninfo
	local flags=(-S -n -T "$DURATION" -c "$CLIENTS" -j "$JOBS")
	[[ $CONNECT == 1 ]] && flags+=(-C)
	local out
	out=$("$PGBENCH" "${flags[@]}" "$2" 2>&1) || { echo "pgbench $1 failed:" >&2; echo "$out" >&2; exit 1; }
	awk '/^tps = / { print $3; exit }' <<<"$out"
}

mode="select-only, $CLIENTS clients, $JOBS threads, ${DURATION}s"
[[ $CONNECT == 1 ]] && mode+=", new connection per transaction"
echo "== pgbench ($mode)"
TPS_DIRECT=$(bench direct "$DIRECT")
echo "direct (plaintext)        $TPS_DIRECT tps"
TPS_PROXY=$(bench leproxy "$PROXY")
echo "leproxy (verify-full)     $TPS_PROXY tps"
TPS_NATIVE=$(bench native "$NATIVE")
echo "PostgreSQL TLS (verify-full) $TPS_NATIVE tps"

awk -v d="$TPS_DIRECT" -v p="$TPS_PROXY" -v n="$TPS_NATIVE" 'BEGIN {
	printf "leproxy / direct          %.3f\n", p / d
	printf "PostgreSQL TLS / direct   %.3f\n", n / d
	printf "leproxy / PostgreSQL TLS  %.3f\n", p / n
}'
