#!/usr/bin/env bash
# bench/http.sh: the HTTPS reverse proxies side by side, each pinned to one
# core (taskset -c $PROXY_CPU), in front of one nginx backend serving a
# 4 KiB static body over plain HTTP, driven by h2load:
#
#   h1       HTTP/1.1 keep-alive, C connections
#   h2       HTTP/2, C connections x M concurrent streams
#   newconn  one request per TLS connection (full handshake each time)
#
# Proxies: nginx, leproxy (this checkout), Caddy, and minproxy (bench/minproxy,
# ~50 lines of net/http + httputil.ReverseProxy: the floor for Go). TLS 1.3
# TLS_AES_128_GCM_SHA256, X25519, a P-256 certificate everywhere (leproxy's
# from its local CA, the others self-signed), one access log line per
# request written to a file by every proxy (ACCESS_LOG=0: off for all).
# Rounds are interleaved (A B C D A B C D ...) and the figures are medians.
#
# Printed per mode x proxy: req/s, proxy CPU us/req (utime+stime from
# /proc/PID/stat over the run, divided by the requests that succeeded), the
# ratio of that to nginx's, and peak RSS (VmHWM). Then the memory of IDLE
# idle keep-alive TLS connections (bench/idleconns): RSS delta / IDLE.
#
# Usage: bench/http.sh
# Knobs (environment): ROUNDS=3 C=32 M=16 N_H1=40000 N_H2=80000 N_NEW=4000
#   NEW_RATE=40 (connections per 10 ms in newconn mode) IDLE=5000
#   PROXIES="nginx leproxy caddy minproxy" MODES="h1 h2 newconn"
#   BASE=REV: also leproxy built from git revision REV, as leproxy-base
#   ACCESS_LOG=1 ADMIN=1 (leproxy with -admin, so request metrics are kept)
#   PROXY_CPU=1 LOAD_CPU=0 CADDY=caddy binary (default: caddy in PATH, or
#   /tmp/caddybin/caddy)  PROFILE=DIR: save leproxy CPU and allocation
#   profiles of each mode in DIR (in a round 0 of its own, not counted)
# Needs: nginx, h2load (nghttp2-client), openssl, go, taskset; caddy optional.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
. bench/lib.sh

ROUNDS=${ROUNDS:-3}
C=${C:-32}
M=${M:-16}
N_H1=${N_H1:-40000}
N_H2=${N_H2:-80000}
N_NEW=${N_NEW:-4000}
NEW_RATE=${NEW_RATE:-40}
IDLE=${IDLE:-5000}
PROXIES=${PROXIES:-nginx leproxy caddy minproxy}
MODES=${MODES:-h1 h2 newconn}
ACCESS_LOG=${ACCESS_LOG:-1}
ADMIN=${ADMIN:-1}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PROFILE=${PROFILE:-}
BASE=${BASE:-}
POOL=512 # idle backend connections kept per proxy: leproxy's own limit, set alike for the others
HOST=bench.localhost # a .localhost name: leproxy's local CA issues it

for bin in nginx h2load openssl go taskset; do
	command -v "$bin" >/dev/null || { echo "http.sh: $bin not found (Debian: nginx, nghttp2-client, openssl)" >&2; exit 1; }
done
CADDY=${CADDY:-$(command -v caddy || echo /tmp/caddybin/caddy)}
if [[ " $PROXIES " == *" caddy "* && ! -x $CADDY ]]; then
	echo "http.sh: no caddy ($CADDY); skipping it" >&2
	PROXIES=${PROXIES//caddy/}
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/leproxy-bench-http.XXXXXX)
PIDS=()
PROXY_PID=
cleanup() {
	set +e # a process already gone must not stop the rest being cleaned up
	[[ -n $PROXY_PID ]] && kill "$PROXY_PID" 2>/dev/null
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# low_port prints a free port below the ephemeral range (32768 and up on
# Linux), which the load's own outgoing connections take from: a port
# free_port finds there may be some client socket's by the time a proxy
# binds it.
low_port() {
	local p
	while :; do
		p=$((10000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# wait_tcp PORT waits until something accepts on 127.0.0.1:PORT.
wait_tcp() {
	for _ in $(seq 200); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "http.sh: nothing listening on 127.0.0.1:$1" >&2
	return 1
}

# cpu_ticks PID prints utime+stime of PID in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# status_kib PID FIELD prints a /proc/PID/status field (VmHWM, VmRSS) in KiB.
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

echo "== building leproxy, minproxy, idleconns in $WORK"
go build -o "$WORK/leproxy" .
if [[ -n $BASE ]]; then
	# leproxy-base: the same, built from revision BASE, for before/after figures.
	mkdir -p "$WORK/base-src"
	git archive "$BASE" | tar -x -C "$WORK/base-src"
	(cd "$WORK/base-src" && go build -o "$WORK/leproxy-base" .)
	PROXIES=${PROXIES/leproxy/leproxy-base leproxy}
	echo "leproxy-base: $(git rev-parse --short "$BASE")"
fi
go build -o "$WORK/minproxy" ./bench/minproxy
go build -o "$WORK/idleconns" ./bench/idleconns
[[ -x $CADDY ]] && echo "caddy: $(go version -m "$CADDY" | awk '$2 == "github.com/caddyserver/caddy/v2" { print $3; exit }') ($CADDY)"
echo "nginx: $(nginx -v 2>&1)"

self_signed "$WORK/key.pem" "$WORK/cert.pem" "DNS:$HOST"
head -c 4096 /dev/urandom | base64 -w 0 | head -c 4096 >"$WORK/4k"
mkdir -p "$WORK/www" && mv "$WORK/4k" "$WORK/www/4k"

# --- the backend: nginx, plain HTTP, on the load generator's core.
BACKEND_PORT=$(low_port)
mkdir -p "$WORK/backend"
cat >"$WORK/backend/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	keepalive_requests 10000000;
	keepalive_timeout 300s;
	client_body_temp_path $WORK/backend;
	proxy_temp_path $WORK/backend;
	fastcgi_temp_path $WORK/backend;
	uwsgi_temp_path $WORK/backend;
	scgi_temp_path $WORK/backend;
	server {
		listen 127.0.0.1:$BACKEND_PORT reuseport;
		root $WORK/www;
	}
}
EOF
taskset -c "$LOAD_CPU" nginx -p "$WORK/backend" -e "$WORK/backend/error.log" -c "$WORK/backend/nginx.conf" &
PIDS+=($!)
wait_tcp "$BACKEND_PORT"

PROXY_PORT=$(low_port)
DEBUG_PORT= # leproxy's, chosen at each start
ADMIN_PORT=

# --- proxy configurations.
mkdir -p "$WORK/nginx"
if [[ $ACCESS_LOG == 1 ]]; then nginx_log="access_log $WORK/nginx/access.log;"; else nginx_log="access_log off;"; fi
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 20000; }
http {
	$nginx_log
	keepalive_requests 10000000;
	keepalive_timeout 120s;
	client_body_temp_path $WORK/nginx;
	proxy_temp_path $WORK/nginx;
	fastcgi_temp_path $WORK/nginx;
	uwsgi_temp_path $WORK/nginx;
	scgi_temp_path $WORK/nginx;
	upstream backend {
		server 127.0.0.1:$BACKEND_PORT;
		keepalive $POOL;
	}
	server {
		listen 127.0.0.1:$PROXY_PORT ssl http2;
		server_name $HOST;
		ssl_certificate $WORK/cert.pem;
		ssl_certificate_key $WORK/key.pem;
		ssl_protocols TLSv1.2 TLSv1.3;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$host;
			proxy_set_header X-Forwarded-For \$remote_addr;
			proxy_set_header X-Forwarded-Host \$host;
			proxy_set_header X-Forwarded-Proto https;
		}
	}
}
EOF

cat >"$WORK/mapping.yml" <<EOF
$HOST: 127.0.0.1:$BACKEND_PORT
EOF

mkdir -p "$WORK/caddy"
if [[ $ACCESS_LOG == 1 ]]; then caddy_log="log {
		output file $WORK/caddy/access.log
	}"; else caddy_log=""; fi
cat >"$WORK/caddy/Caddyfile" <<EOF
{
	admin off
	persist_config off
	auto_https disable_redirects
	http_port $(low_port)
	servers {
		protocols h1 h2
	}
	storage file_system $WORK/caddy/data
}
https://$HOST:$PROXY_PORT {
	bind 127.0.0.1
	tls $WORK/cert.pem $WORK/key.pem
	reverse_proxy 127.0.0.1:$BACKEND_PORT {
		transport http {
			keepalive_idle_conns_per_host $POOL
		}
	}
	$caddy_log
}
EOF

# start_proxy NAME starts proxy NAME pinned to PROXY_CPU, sets PROXY_PID and
# waits until it completes a TLS request.
start_proxy() {
	local log="$WORK/$1.log"
	case $1 in
	nginx)
		taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" 2>>"$log" &
		;;
	leproxy | leproxy-base)
		DEBUG_PORT=$(low_port)
		ADMIN_PORT=$(low_port)
		local args=(-map "$WORK/mapping.yml" -cache "$WORK/cache" -acme local
			-addr "127.0.0.1:$PROXY_PORT" -http "" -debug-addr "127.0.0.1:$DEBUG_PORT")
		[[ $ADMIN == 1 ]] && args+=(-admin "127.0.0.1:$ADMIN_PORT")
		[[ $ACCESS_LOG == 1 ]] || args+=(-access-log=false)
		taskset -c "$PROXY_CPU" "$WORK/$1" "${args[@]}" 2>>"$log" &
		;;
	caddy)
		HOME=$WORK/caddy XDG_DATA_HOME=$WORK/caddy XDG_CONFIG_HOME=$WORK/caddy \
			taskset -c "$PROXY_CPU" "$CADDY" run --adapter caddyfile --config "$WORK/caddy/Caddyfile" 2>>"$log" &
		;;
	minproxy)
		taskset -c "$PROXY_CPU" "$WORK/minproxy" -addr "127.0.0.1:$PROXY_PORT" -cert "$WORK/cert.pem" -key "$WORK/key.pem" \
			-backend "http://127.0.0.1:$BACKEND_PORT" -pool "$POOL" -access-log="$([[ $ACCESS_LOG == 1 ]] && echo true || echo false)" 2>>"$log" &
		;;
	esac
	PROXY_PID=$!
	wait_tcp "$PROXY_PORT" || { cat "$log" >&2; exit 1; }
	# The first request gets leproxy its certificate; a few warm every proxy.
	h2load_run --h1 -n 200 -c 4 >/dev/null || { echo "http.sh: $1 does not answer" >&2; cat "$log" >&2; exit 1; }
}

stop_proxy() {
	kill "$PROXY_PID" 2>/dev/null || true
	wait "$PROXY_PID" 2>/dev/null || true
	PROXY_PID=
	# Wait for the port to be free again before the next proxy binds it.
	for _ in $(seq 200); do
		(exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null || return 0
		sleep 0.05
	done
}

# h2load_run ARGS... runs h2load on LOAD_CPU against the proxy and prints its
# "requests:" and "finished in" lines; it fails if not every request got 2xx.
h2load_run() {
	local out
	out=$(timeout "${H2LOAD_TIMEOUT:-600}" taskset -c "$LOAD_CPU" h2load --connect-to="127.0.0.1:$PROXY_PORT" \
		--tls13-ciphers=TLS_AES_128_GCM_SHA256 --groups=X25519 \
		"$@" "https://$HOST:$PROXY_PORT/4k" 2>&1) || { echo "$out" >&2; return 1; }
	echo "$out" | grep -E '^(finished in|requests:|status codes:)'
	local total ok
	total=$(echo "$out" | awk '/^requests:/ { print $2 }')
	ok=$(echo "$out" | awk '/^status codes:/ { print $3 }')
	[[ $total == "$ok" ]] || { echo "$out" >&2; return 1; }
}

# mode_args MODE prints h2load's arguments for MODE.
mode_args() {
	case $1 in
	h1) echo "--h1 -n $N_H1 -c $C" ;;
	h2) echo "-n $N_H2 -c $C -m $M" ;;
	newconn) echo "--h1 -n $N_NEW -c $N_NEW -r $NEW_RATE --rate-period=10ms" ;;
	esac
}

declare -A RPS CPU HWM
# measure ROUND MODE PROXY runs one measurement and appends its figures.
measure() {
	local round=$1 mode=$2 p=$3 prof_pid=
	start_proxy "$p"
	local pid=$PROXY_PID
	if [[ $round == 0 ]]; then
		mkdir -p "$PROFILE"
		curl -s -o "$PROFILE/allocs-$mode-before.pb.gz" "http://127.0.0.1:$DEBUG_PORT/debug/pprof/allocs"
		curl -s -o "$PROFILE/cpu-$mode.pb.gz" "http://127.0.0.1:$DEBUG_PORT/debug/pprof/profile?seconds=5" &
		prof_pid=$!
	fi
	local t0 t1 start end out
	t0=$(cpu_ticks "$pid")
	start=$(date +%s.%N)
	# shellcheck disable=SC2046
	out=$(h2load_run $(mode_args "$mode")) || { echo "http.sh: $mode via $p failed" >&2; exit 1; }
	end=$(date +%s.%N)
	t1=$(cpu_ticks "$pid")
	if [[ -n $prof_pid ]]; then
		wait "$prof_pid"
		curl -s -o "$PROFILE/allocs-$mode.pb.gz" "http://127.0.0.1:$DEBUG_PORT/debug/pprof/allocs"
		curl -s -o "$PROFILE/heap-$mode.pb.gz" "http://127.0.0.1:$DEBUG_PORT/debug/pprof/heap"
	fi
	local n
	n=$(echo "$out" | awk '/^status codes:/ { print $3 }')
	local rps cpu hwm
	rps=$(awk -v n="$n" -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", n / (b - a) }')
	cpu=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
	hwm=$(status_kib "$pid" VmHWM)
	if [[ $round == 0 ]]; then
		echo "  profiles of leproxy under $mode in $PROFILE (this run, slowed by the CPU profiler, is not counted)"
		stop_proxy
		return
	fi
	RPS[$mode,$p]+="$rps "
	CPU[$mode,$p]+="$cpu "
	HWM[$mode,$p]+="$hwm "
	printf '  round %d %-8s %-9s %8s req/s %8s us/req %7s KiB peak\n' "$round" "$mode" "$p" "$rps" "$cpu" "$hwm"
	stop_proxy
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "== rounds: $ROUNDS; C=$C M=$M; proxies on CPU $PROXY_CPU, h2load and the backend on CPU $LOAD_CPU; access log $([[ $ACCESS_LOG == 1 ]] && echo on || echo off)"
if [[ -n $PROFILE ]]; then
	for mode in $MODES; do measure 0 "$mode" leproxy; done
fi
for round in $(seq "$ROUNDS"); do
	for mode in $MODES; do
		for p in $PROXIES; do
			measure "$round" "$mode" "$p"
		done
	done
done

# --- idle keep-alive TLS connections.
declare -A IDLEKIB
if [[ $IDLE -gt 0 ]]; then
	echo "== $IDLE idle keep-alive TLS connections (HTTP/1.1, one request each)"
	for p in $PROXIES; do
		start_proxy "$p"
		before=$(status_kib "$PROXY_PID" VmRSS)
		: >"$WORK/idle.out"
		mkfifo "$WORK/idle.in"
		taskset -c "$LOAD_CPU" "$WORK/idleconns" -addr "127.0.0.1:$PROXY_PORT" -sni "$HOST" -n "$IDLE" \
			<"$WORK/idle.in" >"$WORK/idle.out" 2>&1 &
		idle_pid=$!
		exec 4>"$WORK/idle.in" # held open: idleconns holds its connections until it closes
		until grep -q '^ready' "$WORK/idle.out"; do
			kill -0 "$idle_pid" 2>/dev/null || { cat "$WORK/idle.out" >&2; exit 1; }
			sleep 0.1
		done
		sleep 2 # let the last responses' garbage be collected
		after=$(status_kib "$PROXY_PID" VmRSS)
		exec 4>&-
		wait "$idle_pid" || true
		rm -f "$WORK/idle.in"
		IDLEKIB[$p]=$(awk -v a="$after" -v b="$before" -v n="$IDLE" 'BEGIN { printf "%.1f", (a - b) / n }')
		printf '  %-9s RSS %6d -> %6d KiB: %s KiB per connection\n' "$p" "$before" "$after" "${IDLEKIB[$p]}"
		stop_proxy
	done
fi

echo
echo "== medians of $ROUNDS rounds (CPU us/req: proxy utime+stime / requests; ratio: to nginx)"
printf '%-8s %-9s %9s %10s %8s %10s\n' mode proxy req/s cpu_us/req ratio peak_MiB
for mode in $MODES; do
	base=$(echo "${CPU[$mode,nginx]:-}" | median)
	for p in $PROXIES; do
		cpu=$(echo "${CPU[$mode,$p]}" | median)
		printf '%-8s %-9s %9s %10s %8s %10s\n' "$mode" "$p" \
			"$(echo "${RPS[$mode,$p]}" | median)" "$cpu" \
			"$(awk -v a="$cpu" -v b="${base:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')" \
			"$(echo "${HWM[$mode,$p]}" | median | awk '{ printf "%.1f", $1 / 1024 }')"
	done
done
if [[ $IDLE -gt 0 ]]; then
	printf '%-8s' idle
	for p in $PROXIES; do printf ' %s %s KiB/conn;' "$p" "${IDLEKIB[$p]}"; done
	echo
fi
