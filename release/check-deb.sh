#!/usr/bin/env bash
# CI check of the packages: builds them for linux/amd64 (release/build.sh),
# installs the .deb with dpkg, checks `leproxy -version`, the installed unit
# (systemd-analyze verify, when systemd-analyze is installed), and that the
# unit's ExecStart line starts leproxy and serves HTTPS; then removes the
# package. Runs as root on Debian or Ubuntu; leaves the machine as it was
# (a leproxy package that was installed before makes it refuse to run).
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

if dpkg-query -W -f='${Status}' leproxy 2>/dev/null | grep -q "install ok"; then
	echo "check-deb: a leproxy package is installed already; not touching it" >&2
	exit 1
fi
DIST="$(mktemp -d)"
work="$(mktemp -d)"
pid=""
cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
	if dpkg-query -W -f='${Status}' leproxy 2>/dev/null | grep -q "install ok"; then
		$sudo dpkg --purge leproxy >/dev/null || true
	fi
	rm -rf "$DIST" "$work"
}
trap cleanup EXIT

export VERSION="0.0.0-ci+g$(git rev-parse --short=12 HEAD)"
DIST="$DIST" PLATFORMS=linux/amd64 release/build.sh
(cd "$DIST" && sha256sum -c --quiet SHA256SUMS)

deb="$(ls "$DIST"/leproxy_*_amd64.deb)"
$sudo dpkg -i "$deb"

echo "--- leproxy -version"
got="$(/usr/bin/leproxy -version)"
echo "$got"
case "$got" in
"leproxy $VERSION, commit $(git rev-parse HEAD), go"*) ;;
*) echo "check-deb: -version does not name $VERSION and the commit" >&2; exit 1 ;;
esac

unit=/usr/lib/systemd/system/leproxy.service
if command -v systemd-analyze >/dev/null; then
	echo "--- systemd-analyze verify $unit"
	systemd-analyze verify "$unit"
	systemd-analyze security --offline=yes "$unit" | tail -1 || true
else
	echo "--- systemd-analyze not installed: unit not verified"
fi

echo "--- the unit's ExecStart line"
# As systemd would run it, with the cache directory it would make; the
# HTTPS address moved to a free loopback port chosen by the kernel, and no
# plain HTTP, so that it needs no privileged port (later flags win).
exec_start="$(sed -n 's/^ExecStart=//p' "$unit")"
cmd="${exec_start//\$\{CACHE_DIRECTORY\}/$work/cache}"
echo "$cmd"
# shellcheck disable=SC2086 # the line is split into words as systemd does
$cmd -addr 127.0.0.1:0 -http "" >"$work/log" 2>&1 &
pid=$!
addr=""
for _ in $(seq 1 100); do
	# The start-up line of the HTTPS listener: its only 127.0.0.1 address.
	addr="$(grep https "$work/log" | grep -o '127\.0\.0\.1:[0-9]*' | head -n 1 || true)"
	[ -n "$addr" ] && break
	kill -0 "$pid" 2>/dev/null || { cat "$work/log"; echo "check-deb: leproxy exited" >&2; exit 1; }
	sleep 0.1
done
[ -n "$addr" ] || { cat "$work/log"; echo "check-deb: leproxy not serving after 10s" >&2; exit 1; }
port="${addr##*:}"
# The packaged mapping's one name, leproxy.localhost, has a local-CA
# certificate; its backend (127.0.0.1:8080) is not running: 502.
status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$work/cache/local-ca/root.pem" \
	--resolve "leproxy.localhost:$port:127.0.0.1" "https://leproxy.localhost:$port/")"
echo "HTTPS on $addr for leproxy.localhost: $status"
[ "$status" = 502 ] || { cat "$work/log"; exit 1; }
kill -TERM "$pid"
wait "$pid"
pid=""

echo "--- dpkg -r"
$sudo dpkg -r leproxy
[ ! -e /usr/bin/leproxy ] || { echo "check-deb: /usr/bin/leproxy left after dpkg -r" >&2; exit 1; }
[ -e /etc/leproxy/mapping.yml ] || { echo "check-deb: dpkg -r removed the conffile" >&2; exit 1; }
$sudo dpkg --purge leproxy
[ ! -e /etc/leproxy/mapping.yml ] || { echo "check-deb: dpkg --purge left the conffile" >&2; exit 1; }
echo "--- packages OK"
